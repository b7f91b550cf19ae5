"""SFT throughput and memory: ledex's LoRA SFT vs a plain TRL SFTTrainer reference, and QLoRA vs LoRA.

Same data (synthetic LEDEX mutation trajectories over MBPP-like tasks, rendered in the served
format), same machine, same run. Each configuration runs in its own process so peak memory
(ru_maxrss; torch.cuda.max_memory_allocated on GPU) is its own.

    python bench/bench_sft.py --steps 4 --examples 16          # prints a JSON table with ratios
Configurations:
    reference  TRL SFTTrainer with default SFTConfig (full fine-tuning), same tokenized data
    lora       ledex-train sft (LoRA r=16 on all linear layers)
    qlora      ledex-train sft --qlora (4-bit NF4 base; bitsandbytes; may be unsupported on CPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _data(path: Path, n: int) -> Path:
    from ledex.training import records
    from ledex.training.mutate import mutants

    sources = ["def add(a, b):\n    return a + b", "def is_even(n):\n    return n % 2 == 0",
               "def count_pos(xs):\n    n = 0\n    for x in xs:\n        if x > 0:\n            n += 1\n    return n",
               "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x"]
    rows = []
    for i, src in enumerate(sources * 8):
        for m in mutants(src, limit=4, seed=i):
            rows.append(records.Trajectory(f"bench/{i}", f"Task {i}: write the function below correctly.", m.code,
                                           "AssertionError", m.explanation(), m.original, True, 1.0, origin="mutation"))
    records.write(path, rows[:n])
    return path


def run_one(kind: str, data: Path, steps: int, out: Path) -> dict:
    import torch

    from ledex.training.sft import SFTArgs, build_dataset, load_model, load_tokenizer, train

    args = SFTArgs(data=[str(data)], output_dir=str(out), max_steps=steps, batch_size=4, grad_accum=1,
                   logging_steps=1, save_steps=10_000, progress=False, resume=False, include_initial=False,
                   qlora=(kind == "qlora"))
    started = time.perf_counter()
    if kind == "reference":
        from trl import SFTConfig, SFTTrainer

        tokenizer, fmt = load_tokenizer(args.model)
        dataset, stats = build_dataset(args, tokenizer, fmt)
        config = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, report_to="none",
                           save_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = SFTTrainer(model=load_model(args.model), args=config, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        tokens = sum(len(x) for x in dataset["input_ids"][: steps * 4])
    else:
        metrics = train(args)
        tokens = metrics["tokens"] * min(1.0, steps * 4 / metrics["examples"])
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"kind": kind, "seconds": round(seconds, 1), "tokens": int(tokens), "tokens_per_s": tokens / seconds,
            "peak_mb": round(peak / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=["reference", "lora", "qlora"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, Path(args.data), args.steps, Path(tempfile.mkdtemp()))))
        return
    data = _data(Path(tempfile.mkdtemp()) / "bench.jsonl", args.examples)
    results = {}
    for kind in args.kinds:
        proc = subprocess.run([sys.executable, __file__, "--one", kind, "--data", str(data), "--steps", str(args.steps)],
                              capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        results[kind] = json.loads(lines[-1][7:]) if lines else {"error": (proc.stderr or proc.stdout)[-400:]}
    ref, lora, qlora = results.get("reference", {}), results.get("lora", {}), results.get("qlora", {})
    if "tokens_per_s" in ref and "tokens_per_s" in lora:
        results["lora_vs_reference"] = {"tokens_per_s_ratio": round(lora["tokens_per_s"] / ref["tokens_per_s"], 2),
                                        "peak_memory_ratio": round(lora["peak_mb"] / ref["peak_mb"], 2)}
    if "peak_mb" in qlora and "peak_mb" in lora:
        results["qlora_vs_lora"] = {"peak_memory_ratio": round(qlora["peak_mb"] / lora["peak_mb"], 2),
                                    "tokens_per_s_ratio": round(qlora["tokens_per_s"] / lora["tokens_per_s"], 2)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
