"""The step every ledex trainer ends with (rl, kto): train, resuming from the latest
checkpoint; save only the policy adapter; measure what changed; write the run's metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def set_threads(threads: int | None) -> None:
    """torch threads for model loading and training (None: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def train_and_save(trainer: Any, output_dir: str, *, resume: bool) -> dict:
    """Run `trainer`; returns seconds, checkpoint resumed from, adapter dir and how many
    trainable tensors changed (a run that changes nothing did not train)."""
    import torch

    from ledex.training.sft import latest_checkpoint

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    checkpoint = latest_checkpoint(output_dir) if resume else None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    out = Path(output_dir) / "adapter"
    # Only the policy: a frozen "ref" adapter (the KL reference TRL may add) is not the result.
    trainer.model.save_pretrained(out, selected_adapters=["default"])
    trainer.processing_class.save_pretrained(out)
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "resumed_from": checkpoint,
            "trainable_tensors": len(before), "trainable_tensors_changed": changed, "adapter_dir": str(out)}
