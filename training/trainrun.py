"""The step every ledex trainer ends with (sft, rl, kto): train, resuming from the latest
checkpoint; save only the policy adapter; measure what changed (trainable tensors, tokens/s,
peak memory); draw the loss curve (loss.png); write the run's metrics. Also the hardware
choices trainers share: torch threads (`idle_cores`) and bf16 autocast (`bf16_supported`).

A library, not a command: `ledex.training.sft`, `rl` and `kto` call `train_and_save` and
`write_metrics`; the shared model code is `ledex.training.core`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ledex.training.core import write_json


def idle_cores() -> int:
    """torch CPU threads for a trainer: the cores the 1-minute load average leaves idle, at least 1
    (all of them on an otherwise idle box; 1 on a shared, busy one, where spin-waiting OpenMP
    threads run 4-5x slower: docs/training.md)."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, cores - round(busy)))


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def bf16_supported() -> bool:
    """Whether bf16 autocast pays off here: a CUDA GPU, or a CPU with native bf16 matrix
    instructions (avx512_bf16 or amx_bf16; elsewhere torch emulates bf16 and is slower than fp32)."""
    import torch

    return torch.cuda.is_available() or bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def peak_memory_mb() -> float:
    """Peak memory of this process in MiB: the GPU's allocator peak with CUDA, else the resident set (ru_maxrss)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def eval_losses(log_history: list[dict]) -> list[dict]:
    """The held-back losses of a run's log ({'step', 'loss'}, by step; the last one where a step was
    measured twice)."""
    points = {row["step"]: row["eval_loss"] for row in log_history if "eval_loss" in row and "step" in row}
    return [{"step": step, "loss": loss} for step, loss in sorted(points.items())]


def plot_losses(log_history: list[dict], path: Path, title: str = "training loss") -> bool:
    """loss.png: each logged training loss against its optimizer step, and the held-back loss
    (eval_loss rows, when the run measured one). False without matplotlib or losses."""
    points = [(row["step"], row["loss"]) for row in log_history if "loss" in row and "step" in row]
    held = eval_losses(log_history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not points:
        return False
    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label="training batches")
    if held:
        axis.plot([h["step"] for h in held], [h["loss"] for h in held], marker="s", markersize=4,
                  label="held-back examples")
        axis.legend(fontsize=8)
    axis.set(xlabel="optimizer step", ylabel="loss (answer tokens)", title=title)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def set_threads(threads: int | None) -> None:
    """torch threads for model loading and training (None or 0: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered `checkpoint-N` folder TRL saved in `output_dir`, or None."""
    found = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None


def train_and_save(trainer: Any, output_dir: str, *, resume: bool) -> dict:
    """Run a TRL `trainer` and save the policy adapter (plus tokenizer) to <output_dir>/adapter.

    Returns steps, seconds (wall of training, 0.1 s; held-back evaluations left out), train_loss (mean over the run, as TRL reports it), losses
    (each logged loss), resumed_from (checkpoint or None), adapter_dir, trainable_tensors and how
    many of them changed (a run that changes nothing did not train), tokens_seen / tokens_per_s
    (non-padding input tokens of this run, when the trainer counts them), peak_memory_mb, eval_losses
    (the held-back loss per step, [{'step', 'loss'}], when the trainer has an eval_dataset; measured
    once more after the last step when that step was not already measured), and loss_plot (<output_dir>/loss.png over the whole run, resumed steps included; None without
    matplotlib).
    """
    import torch

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    checkpoint = latest_checkpoint(output_dir) if resume else None
    # Read before training: checkpoint rotation (save_total_limit) may delete the resumed checkpoint.
    restored = _checkpoint_tokens(checkpoint)
    clock = _eval_clock()
    trainer.add_callback(clock)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started - clock.seconds  # training alone: held-back evaluations left out
    seen = max(int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0) - restored, 0)
    if _needs_final_eval(trainer):
        trainer.evaluate()  # the held-back loss of the adapter as saved, when the last step was not a checkpoint
    out = Path(output_dir) / "adapter"
    # Only the policy: a frozen "ref" adapter (the KL reference TRL may add) is not the result.
    trainer.model.save_pretrained(out, selected_adapters=["default"])
    trainer.processing_class.save_pretrained(out)
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    plot = Path(output_dir) / "loss.png"
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "train_loss": result.training_loss,
            "losses": losses, "resumed_from": checkpoint, "trainable_tensors": len(before),
            "trainable_tensors_changed": changed, "adapter_dir": str(out), "tokens_seen": seen,
            "tokens_per_s": round(seen / seconds, 1) if seen and seconds else None, "peak_memory_mb": peak_memory_mb(),
            "eval_losses": eval_losses(trainer.state.log_history),
            "loss_plot": str(plot) if plot_losses(trainer.state.log_history, plot) else None}


def _eval_clock():
    """A transformers TrainerCallback whose `seconds` sums the eval_runtime of held-back evaluations."""
    from transformers import TrainerCallback

    class EvalClock(TrainerCallback):
        seconds = 0.0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seconds += float((metrics or {}).get("eval_runtime", 0.0))

    return EvalClock()


def _needs_final_eval(trainer: Any) -> bool:
    """Whether the trainer has held-back data and its log has no held-back loss at the last step."""
    if getattr(trainer, "eval_dataset", None) is None:
        return False
    done = eval_losses(trainer.state.log_history)
    return not done or done[-1]["step"] != trainer.state.global_step


def _checkpoint_tokens(checkpoint: str | None) -> int:
    """Non-padding input tokens a checkpoint had already trained on (0 without one): what a resumed
    run's count starts from, so that tokens/s covers only the tokens of this call."""
    if not checkpoint:
        return 0
    import json

    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("num_input_tokens_seen", 0) or 0)


def write_metrics(output_dir: str, command: str, metrics: dict) -> dict:
    """Write <output_dir>/ledex-<command>.json atomically; returns `metrics` (non-JSON values as str)."""
    write_json(Path(output_dir) / f"ledex-{command}.json", metrics)
    return metrics
