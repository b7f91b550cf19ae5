"""`ledex-train kto`: learn from a user's thumbs alone (TRL KTOTrainer, unpaired labels).

Desirable examples are the fixes a user accepted in the editor, undesirable ones the fixes they
rejected (or accepted and then reverted). They come from trajectory records with origin
"accepted"/"rejected" (what `collect` writes from the feedback log) and/or straight from
feedback logs (`<workspace>/.ledex/episodes.sqlite3`). KTO needs no pairs and no tests, which
is exactly the shape of editor feedback. Works on top of the SFT (or RL) adapter, whose frozen
copy is the KL reference, or directly on the base with a fresh LoRA.

    ledex-train kto --episodes ~/proj/.ledex/episodes.sqlite3 --adapter ledex-runs/sft/adapter
    ledex-train kto --data feedback.jsonl --output-dir ledex-runs/kto
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ledex.engine.format import Mode, Problem, build_training_messages
from ledex.training import records
from ledex.training.config import add_dataclass_arguments, run_command
from ledex.training.core import TrainingError, load_policy, load_tokenizer, split_prompt
from ledex.training.trainrun import set_threads, train_and_save, write_metrics


@dataclass
class KTOArgs:
    """Options of `ledex-train kto` (one flag per field)."""

    data: list[str] = field(default_factory=list, metadata={
        "help": "Trajectory files; records with origin accepted/rejected are used (see --include-sampled)."})
    episodes: list[str] = field(default_factory=list, metadata={"help": "Feedback logs (episodes.sqlite3) to read."})
    adapter: str | None = field(default=None, metadata={
        "help": "Start from this adapter (SFT/RL output); none: a fresh LoRA on the base."})
    model: str = field(default="default", metadata={"help": "Base: 'default', a .gguf path, or a HF model path/id."})
    output_dir: str = field(default="ledex-runs/kto", metadata={"help": "Checkpoints and the final adapter."})
    include_sampled: bool = field(default=False, metadata={
        "help": "Also use sampled trajectories (correct = desirable, failed = undesirable)."})
    beta: float = field(default=0.1, metadata={"help": "KTO beta: higher stays closer to the reference policy."})
    learning_rate: float = field(default=5e-5, metadata={"help": "LoRA learning rate."})
    epochs: float = field(default=3.0, metadata={"help": "Epochs (feedback sets are small)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after N optimizer steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={
        "help": "Per-device batch (>= 2: KTO estimates its KL term from mismatched pairs inside a batch)."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(default=1024, metadata={"help": "Longest prompt + answer in tokens."})
    balance: bool = field(default=True, metadata={
        "help": "Weigh desirable/undesirable losses so both classes count equally (KTO paper's advice)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank when starting without an adapter."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha when starting without an adapter."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps."})
    resume: bool = field(default=True, metadata={"help": "Resume from the latest checkpoint in --output-dir."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class KTOError(TrainingError):
    """Bad input for KTO (no labelled feedback); the message says what to fix."""


@dataclass(frozen=True)
class Example:
    """One labelled answer for KTO: the problem, explanation and code, and whether the user
    wanted it (label True: desirable).
    """

    problem: Problem
    explanation: str
    code: str
    label: bool  # True: the user wanted this fix
    mode: str = Mode.EXPLAIN.value

    @property
    def key(self) -> tuple:
        """(task, wrong code, explanation, code): two examples with one key are one example."""
        return (self.problem.task, self.problem.wrong_code, self.explanation, self.code)


def from_records(paths: list[str], include_sampled: bool) -> list[Example]:
    """Labelled examples from trajectory files: origin accepted/rejected, plus sampled and
    mutation records (correct = desirable) with include_sampled.
    """
    found = []
    for path in paths:
        for t in records.read(path, skip_bad=True):
            if t.origin in ("accepted", "rejected"):
                found.append(Example(t.problem, t.explanation, t.code, t.origin == "accepted", t.mode))
            elif include_sampled and t.origin in ("sampled", "mutation"):
                found.append(Example(t.problem, t.explanation, t.code, t.correct, t.mode))
    return found


def from_episodes(paths: list[str]) -> list[Example]:
    """Accepted: the chosen fix is desirable. Rejected: the chosen fix (or, if none was named, every
    proposed fix) is undesirable. Reverted: accepted, then undone by the user: undesirable."""
    from ledex.engine.episodes import EpisodeLog

    found = []
    for path in paths:
        if not Path(path).is_file():
            raise KTOError(f"feedback log not found: {path}")
        for episode in EpisodeLog(path).episodes():
            if episode.outcome not in ("accepted", "rejected", "reverted"):
                continue
            problem = Problem(episode.task, episode.wrong_code, episode.feedback)
            chosen = [c for c in episode.candidates if c.idx == episode.chosen_candidate]
            if episode.outcome == "rejected" and not chosen:
                chosen = episode.candidates
            for candidate in chosen:
                mode = Mode.EXPLAIN.value if candidate.explanation.strip() else Mode.REFINE.value
                found.append(Example(problem, candidate.explanation, candidate.code,
                                     episode.outcome == "accepted", mode))
    return found


def load_examples(args: KTOArgs) -> tuple[list[Example], dict]:
    """Labelled examples, deduplicated (a record collected from an episode counts once)."""
    from_data, from_log = from_records(args.data, args.include_sampled), from_episodes(args.episodes)
    unique: dict[tuple, Example] = {}
    for example in from_data + from_log:
        unique.setdefault(example.key, example)
    examples = list(unique.values())
    stats = {"desirable": sum(e.label for e in examples), "undesirable": sum(not e.label for e in examples),
             "from_records": len(from_data), "from_episodes": len(from_log)}
    return examples, stats


def build_dataset(examples: list[Example], fmt) -> Any:
    """Text prompt (as served) + completion (the answer through end-of-turn) + label."""
    from datasets import Dataset

    rows = []
    for example in examples:
        messages = build_training_messages(example.problem, example.explanation, example.code, Mode(example.mode))
        prompt, completion = split_prompt(messages, fmt)
        rows.append({"prompt": prompt, "completion": completion, "label": example.label})
    return Dataset.from_list(rows)


def class_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) so that weight * count is equal for both classes.

    >>> class_weights(2, 6), class_weights(4, 2), class_weights(3, 0)
    ((3.0, 1.0), (1.0, 2.0), (1.0, 1.0))
    """
    if not desirable or not undesirable:
        return 1.0, 1.0
    return (undesirable / desirable, 1.0) if desirable < undesirable else (1.0, desirable / undesirable)


def kto_config(args: KTOArgs, stats: dict):
    """TRL's KTOConfig for these args; desirable/undesirable weights from `class_weights`
    when args.balance.
    """
    import torch
    from trl import KTOConfig

    gpu = torch.cuda.is_available()
    desirable_weight, undesirable_weight = (class_weights(stats["desirable"], stats["undesirable"])
                                            if args.balance else (1.0, 1.0))
    return KTOConfig(
        output_dir=args.output_dir, beta=args.beta, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, max_length=args.max_length,
        desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        gradient_checkpointing=gpu, logging_steps=args.logging_steps, save_steps=args.save_steps,
        save_total_limit=2, report_to="none", seed=args.seed, disable_tqdm=not args.progress,
        bf16=gpu, use_cpu=not gpu, dataloader_pin_memory=gpu)


def build_trainer(args: KTOArgs, *, cache_base: bool = False):
    """The TRL KTOTrainer, ready to `.train()`. Raises KTOError for batch size < 2 or no
    labelled feedback, TrainingError for a base or adapter that does not load.
    """
    from trl import KTOTrainer


    if args.batch_size < 2:
        raise KTOError("--batch-size must be at least 2 (KTO's KL estimate pairs answers inside a batch)")
    examples, stats = load_examples(args)
    if not examples:
        raise KTOError("no accepted or rejected fixes found: pass --episodes <episodes.sqlite3> or --data with "
                       "accepted/rejected records (or --include-sampled)")
    tokenizer, fmt = load_tokenizer(args.model)
    model, peft_config = load_policy(args.model, args.adapter, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                     cache=cache_base)
    trainer = KTOTrainer(model=model, args=kto_config(args, stats), train_dataset=build_dataset(examples, fmt),
                         processing_class=tokenizer, peft_config=peft_config)
    trainer.ledex_stats = stats
    return trainer


def train(args: KTOArgs, **build: Any) -> dict:
    """Run KTO; writes <output_dir>/adapter and <output_dir>/ledex-kto.json; returns the metrics
    (class counts, `trainrun.train_and_save`'s, the logged KTO terms) and the trainer.
    Raises KTOError for no labelled feedback, TrainingError for a base or adapter that does not load."""
    set_threads(args.threads)
    trainer = build_trainer(args, **build)
    run = train_and_save(trainer, args.output_dir, resume=args.resume)
    logs = [{k: v for k, v in row.items() if k.startswith(("loss", "rewards/", "kl", "step"))}
            for row in trainer.state.log_history if "loss" in row]
    metrics = write_metrics(args.output_dir, "kto", {
        **trainer.ledex_stats, **run, "log": logs, "base": args.model, "parent_adapter": args.adapter,
        "args": asdict(args)})
    return metrics | {"trainer": trainer}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train kto` (one per KTOArgs field)."""
    add_dataclass_arguments(parser, KTOArgs)


def summary(metrics: dict) -> str:
    """One line for the terminal: accepted/rejected counts, steps, seconds, the adapter."""
    return (f"{metrics['desirable']} accepted / {metrics['undesirable']} rejected fixes, {metrics['steps']} steps in "
            f"{metrics['seconds']} s; adapter: {metrics['adapter_dir']}")


def main(args: argparse.Namespace) -> int:
    """`ledex-train kto`: exit status 0, or 2 with the message for bad input."""
    return run_command("kto", KTOArgs, args, train, summary, (TrainingError, records.RecordError))

