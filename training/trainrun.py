"""The step every ledex trainer ends with (sft, rl, kto): train, resuming from the latest
checkpoint; save only the policy adapter; measure what changed; write the run's metrics.

A library, not a command: `ledex.training.sft`, `rl` and `kto` call `train_and_save` and
`write_metrics`; the shared model code is `ledex.training.core`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ledex.training.core import write_json


def half_the_cores() -> int:
    """torch CPU threads when none are given: half the cores, at least 1 (torch's OpenMP threads
    spin-wait and run 4-5x slower when other processes share the cores)."""
    return max(1, (os.cpu_count() or 2) // 2)


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

    Returns steps, seconds (wall, 0.1 s), train_loss (mean over the run, as TRL reports it), losses
    (each logged loss), resumed_from (checkpoint or None), adapter_dir, trainable_tensors and how
    many of them changed (a run that changes nothing did not train).
    """
    import torch

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    checkpoint = latest_checkpoint(output_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    out = Path(output_dir) / "adapter"
    # Only the policy: a frozen "ref" adapter (the KL reference TRL may add) is not the result.
    trainer.model.save_pretrained(out, selected_adapters=["default"])
    trainer.processing_class.save_pretrained(out)
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "train_loss": result.training_loss,
            "losses": losses, "resumed_from": checkpoint, "trainable_tensors": len(before),
            "trainable_tensors_changed": changed, "adapter_dir": str(out)}


def write_metrics(output_dir: str, command: str, metrics: dict) -> dict:
    """Write <output_dir>/ledex-<command>.json atomically; returns `metrics` (non-JSON values as str)."""
    write_json(Path(output_dir) / f"ledex-{command}.json", metrics)
    return metrics
