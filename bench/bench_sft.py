"""SFT speed on this machine: bf16 autocast vs fp32, length-grouped vs random batches, tokens/s, peak memory.

Same data (synthetic LEDEX mutation trajectories over small tasks, rendered in the served
format), same seed, same steps, same machine, same run; each configuration in its own process
so its peak memory (ru_maxrss; the allocator peak on a GPU) is its own. Only ratios against
fp32 in the same run mean anything on a shared CPU.

    python bench/bench_sft.py --steps 6 --examples 24                 # fp32 vs bf16 (LoRA, ledex-train sft)
    python bench/bench_sft.py --kinds fp32 bf16 reference qlora       # + plain TRL full fine-tuning, QLoRA
    python bench/bench_sft.py --plot docs/sft-bf16-vs-fp32.png        # the two loss curves

Configurations:
    fp32       ledex-train sft, LoRA r=16 on all linear layers, fp32
    bf16       the same with bf16 autocast (the default where the CPU has avx512_bf16 / amx_bf16)
    reference  TRL SFTTrainer with its default SFTConfig (full fine-tuning, fp32), same tokenized data
    qlora      ledex-train sft --qlora (4-bit NF4 base; bitsandbytes; may be unsupported on CPU)
Padding: the share of padding tokens in the batches of one epoch of 256 examples, random order
vs length-grouped (transformers' LengthGroupedSampler, what `sft --group-by-length` uses; it
groups within mega-batches of up to 50 batches, so it needs a few hundred examples to act).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine_facts, ratio  # noqa: E402


def _data(path: Path, n: int) -> Path:
    from ledex.training import records
    from ledex.training.mutate import mutants

    sources = ["def add(a, b):\n    return a + b", "def is_even(n):\n    return n % 2 == 0",
               "def count_pos(xs):\n    n = 0\n    for x in xs:\n        if x > 0:\n            n += 1\n    return n",
               "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x"]
    rows = []
    for i, src in enumerate(sources * 16):
        # Task texts of 0-7 extra sentences: lengths spread like real data (MBPP tasks with tests vary 3x).
        task = f"Task {i}: write the function below correctly." + " Every input in the tests must work." * (i * 5 % 8)
        for m in mutants(src, limit=4, seed=i):
            rows.append(records.Trajectory(f"bench/{i}", task, m.code, "AssertionError", m.explanation(), m.original,
                                           True, 1.0, origin="mutation"))
    records.write(path, rows[:n])
    return path


def run_one(kind: str, data: Path, steps: int, out: Path, threads: int | None) -> dict:
    import torch

    from ledex.training.sft import SFTArgs, build_dataset, load_model, load_tokenizer, train
    from ledex.training.trainrun import peak_memory_mb, set_threads

    args = SFTArgs(data=[str(data)], output_dir=str(out), max_steps=steps, batch_size=4, grad_accum=1,
                   logging_steps=1, save_steps=10_000, progress=False, resume=False, include_initial=False,
                   qlora=(kind == "qlora"), bf16=(kind == "bf16"), threads=threads, warmup_ratio=0.0)
    started = time.perf_counter()
    if kind == "reference":
        from trl import SFTConfig, SFTTrainer

        set_threads(threads)
        tokenizer, fmt = load_tokenizer(args.model)
        dataset, _ = build_dataset(args, tokenizer, fmt)
        config = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, report_to="none",
                           save_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                           include_num_input_tokens_seen="non_padding", logging_steps=1)
        trainer = SFTTrainer(model=load_model(args.model), args=config, train_dataset=dataset, processing_class=tokenizer)
        train_started = time.perf_counter()
        trainer.train()
        metrics = {"tokens_seen": trainer.state.num_input_tokens_seen, "seconds": time.perf_counter() - train_started,
                   "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r]}
    else:
        metrics = train(args)
    train_s = metrics["seconds"]
    return {"kind": kind, "train_seconds": round(train_s, 1), "wall_seconds": round(time.perf_counter() - started, 1),
            "tokens": int(metrics["tokens_seen"]), "tokens_per_s": round(metrics["tokens_seen"] / train_s, 2),
            "peak_mb": peak_memory_mb(), "losses": [round(float(x), 4) for x in metrics["losses"]],
            "threads": torch.get_num_threads()}


def padding_shares(data: Path, batch_size: int = 4, seed: int = 0) -> dict:
    """Share of padding tokens over one epoch of batches: random order vs length-grouped."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from ledex.training.sft import SFTArgs, build_dataset, load_tokenizer

    args = SFTArgs(data=[str(data)], include_initial=False)
    tokenizer, fmt = load_tokenizer(args.model)
    dataset, _ = build_dataset(args, tokenizer, fmt)
    lengths = list(dataset["length"])
    generator = torch.Generator().manual_seed(seed)
    orders = {"random": torch.randperm(len(lengths), generator=generator).tolist(),
              "grouped": list(LengthGroupedSampler(batch_size, lengths=lengths,
                                                   generator=torch.Generator().manual_seed(seed)))}
    shares = {}
    for name, order in orders.items():
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        padded = sum(max(lengths[j] for j in b) * len(b) for b in batches)
        shares[f"pad_share_{name}"] = round(1 - sum(lengths) / padded, 4)
    return shares | {"examples": len(lengths), "min_len": min(lengths), "max_len": max(lengths)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.5))
    for kind, row in results.items():
        if isinstance(row, dict) and row.get("losses"):
            axis.plot(range(1, len(row["losses"]) + 1), row["losses"], marker="o", markersize=3,
                      label=f"{kind} ({row['tokens_per_s']} tok/s)")
    axis.set(xlabel="optimizer step", ylabel="loss (answer tokens)", title="LoRA SFT on CPU: bf16 autocast vs fp32")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 steps on 12 examples, fp32 and bf16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: sft's, the idle cores)")
    parser.add_argument("--kinds", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--plot", help="write the loss curves of every configuration to this PNG")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        row = run_one(args.one, Path(args.data), args.steps, Path(tempfile.mkdtemp()), args.threads)
        print("RESULT " + json.dumps(row))
        return row
    if args.quick:
        args.steps, args.examples = 3, 12
    data = _data(Path(tempfile.mkdtemp()) / "bench.jsonl", args.examples)
    runs: dict = {}
    for kind in args.kinds:
        command = [sys.executable, __file__, "--one", kind, "--data", str(data), "--steps", str(args.steps)]
        proc = subprocess.run(command + (["--threads", str(args.threads)] if args.threads else []),
                              capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        runs[kind] = json.loads(lines[-1][7:]) if lines else {"error": (proc.stderr or proc.stdout)[-400:]}
    padding = padding_shares(_data(Path(tempfile.mkdtemp()) / "padding.jsonl", 256))
    return emit(summarize(runs, padding, args))


def summarize(runs: dict, padding: dict, args) -> dict:
    """The bench_<name> convention's dict: metrics per configuration, ratios against fp32, notes."""
    metrics = {f"pad share {k[10:]}": v for k, v in padding.items() if k.startswith("pad_share_")}
    ratios, fp32 = {}, runs.get("fp32", {})
    for kind, row in runs.items():
        if "tokens_per_s" in row:
            metrics |= {f"{kind} tokens/s": row["tokens_per_s"], f"{kind} peak MB": row["peak_mb"],
                        f"{kind} final loss": row["losses"][-1] if row["losses"] else None}
        if kind != "fp32" and "tokens_per_s" in row and "tokens_per_s" in fp32:
            ratios[f"{kind} / fp32 tokens/s"] = ratio(row["tokens_per_s"] / fp32["tokens_per_s"], ">= 1.2")
            metrics[f"{kind} / fp32 peak memory"] = round(row["peak_mb"] / fp32["peak_mb"], 2)
    if padding["pad_share_random"]:
        ratios["padding grouped / random"] = ratio(padding["pad_share_grouped"] / padding["pad_share_random"], "<= 0.5")
    if args.plot:
        plot(runs, Path(args.plot))
    notes = [f"{args.steps} steps, batch 4, {args.examples} examples ({padding['min_len']}-{padding['max_len']} tokens); "
             f"load average {machine_facts()['loadavg_1m']} (shared CPU: ratios only)"]
    notes += [f"{k}: {r['error'][-200:]}" for k, r in runs.items() if "error" in r]
    return {"title": "LoRA SFT on CPU: bf16 autocast vs fp32, length-grouped batches (issue 17)",
            "metrics": metrics, "ratios": ratios, "notes": notes, "runs": runs, "padding": padding,
            "machine": machine_facts()}


if __name__ == "__main__":
    main()
