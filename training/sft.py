"""`ledex-train sft`: LoRA / QLoRA supervised fine-tuning on LEDEX trajectories (TRL SFTTrainer).

Trains on the correct refinements (explanation + refined code) and the correct initial
solutions `collect` wrote, as the paper does. The loss covers only the final assistant turn
(explanation + code + end-of-turn token); the task, the wrong code and the feedback are
context. Conversations are built by ledex.engine.format and rendered with `render_chat` and
the chat template stored in the GGUF the server serves, then tokenized exactly as the server
tokenizes prompts (no BOS when the GGUF says so, special tokens parsed): no train/serve skew.

The base is the same GGUF the server serves (transformers dequantises it, Q4_1 included) or
any Hugging Face model path/id. QLoRA (4-bit NF4 through bitsandbytes) with --qlora, default
on GPU.

    ledex-train sft --data data/mbpp.jsonl --output-dir runs/sft
    accelerate launch -m ledex.training.cli sft --data data/mbpp.jsonl --output-dir runs/sft   # multi-GPU
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ledex.engine.format import Mode, build_training_messages, fenced
from ledex.training import records
from ledex.training.config import add_dataclass_arguments, run_command
from ledex.training.core import (LORA_TARGETS, ServeFormat, TrainingError, load_model, load_tokenizer, lora_config,
                                 split_prompt)
from ledex.training.trainrun import (bf16_supported, idle_cores, latest_checkpoint, set_threads, train_and_save,
                                     write_metrics)


@dataclass
class SFTArgs:
    """Options of `ledex-train sft` (one flag per field; the paper's values are in each help)."""

    data: list[str] = field(default_factory=list, metadata={
        "help": "Trajectory files from `collect` (the sibling .initial.jsonl is read too when present)."})
    eval_data: list[str] = field(default_factory=list, metadata={
        "help": "Held-back trajectory files (never trained on): their answer loss is measured before training, "
                "at every checkpoint (--eval-steps) and after the last step; in ledex-sft.json, the log and loss.png."})
    eval_steps: int | None = field(default=None, metadata={
        "help": "Measure the held-back loss every N optimizer steps (default: --save-steps, i.e. at each checkpoint)."})
    model: str = field(default="default", metadata={
        "help": "Base: 'default' (the embedded GGUF the server serves), a .gguf path, or a HF model path/id."})
    output_dir: str = field(default="ledex-runs/sft", metadata={"help": "Checkpoints and the final adapter."})
    max_length: int = field(default=768, metadata={
        "help": "Longest example in tokens; longer ones are dropped, not cut (a cut answer teaches cut answers)."})
    include_initial: bool = field(default=True, metadata={"help": "Also train on correct initial solutions (paper)."})
    max_examples: int | None = field(default=None, metadata={"help": "Use at most N examples (quick runs)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (16: enough for a behaviour, tiny file)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (2*r, the usual scale)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS), metadata={
        "help": "Modules that get LoRA (all linear layers of a llama block: the QLoRA paper's choice)."})
    qlora: bool | None = field(default=None, metadata={
        "help": "4-bit NF4 base through bitsandbytes (default: on with a GPU, off on CPU)."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 autocast over fp32 weights (default: on with a GPU or a CPU with avx512_bf16/amx_bf16, "
                "see bench/bench_sft.py for the speed-up and the loss curves against fp32)."})
    group_by_length: bool = field(default=True, metadata={
        "help": "Batch examples of similar length together (less padding: see bench/bench_sft.py)."})
    learning_rate: float = field(default=2e-4, metadata={
        "help": "LoRA learning rate (the paper's 2e-5 is for full fine-tuning; LoRA needs ~10x)."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs (paper: 2)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after N optimizer steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Per-device batch size."})
    grad_accum: int = field(default=4, metadata={"help": "Gradient accumulation (effective batch 16 on one device)."})
    warmup_ratio: float = field(default=0.03, metadata={
        "help": "Warm-up share of the steps (paper: 500 steps of a much longer run), then cosine decay."})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: the cores other processes leave idle, from the 1-minute load "
                "average, at least 1; torch's OpenMP threads spin-wait and run 4-5x slower on busy cores)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations in backward (saves memory, costs ~30%% time; default: on with a GPU, off on CPU)."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (resume picks the latest)."})
    logging_steps: int = field(default=5, metadata={"help": "Log the loss every N steps."})
    resume: bool = field(default=True, metadata={"help": "Resume from the latest checkpoint in --output-dir."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class SFTError(TrainingError):
    """Bad input for SFT (no data, no usable example); the message says what to fix."""


# --- examples -----------------------------------------------------------------------------------


def conversation(record: records.Trajectory) -> list[dict[str, str]]:
    """The chat for one record: a LEDEX debug turn, or an initial solution (origin 'initial')."""
    if record.origin == "initial":
        from ledex.engine.problems import CodingProblem, initial_messages

        problem = CodingProblem(record.source, record.task, ())
        messages = initial_messages(problem)
        # initial_messages builds the task from prompt+tests; the record already holds that text.
        messages[-1]["content"] = f"{record.task}\nWrite the function in a single ```python code block."
        return messages + [{"role": "assistant", "content": fenced(record.code)}]
    return build_training_messages(record.problem, record.explanation, record.code, Mode(record.mode))


def tokenize_example(tokenizer, fmt: ServeFormat, messages) -> dict:
    """{'input_ids', 'completion_mask'} of one conversation, tokenized as the server does
    (prompt on its own, BOS when the GGUF says so); the mask is 1 on the answer's tokens only.
    """
    prompt, completion = split_prompt(messages, fmt)
    # The prompt is tokenized on its own, as the server does; special tokens are parsed.
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if fmt.add_bos and tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}


def load_records(paths: list[str], include_initial: bool) -> tuple[list[records.Trajectory], list[str]]:
    """Correct trajectories (+ initial solutions); bad lines are skipped and reported."""
    found, errors = [], []
    for path in paths:
        if not Path(path).is_file():
            raise SFTError(f"dataset not found: {path}")
        found += [r for r in records.read(path, skip_bad=True, errors=errors) if r.correct and r.code.strip()]
        sibling = records.initial_path(path)
        if include_initial and sibling.is_file():
            found += list(records.read(sibling, skip_bad=True, errors=errors))
    if not include_initial:
        found = [r for r in found if r.origin != "initial"]
    unique = {r.id: r for r in found}
    return list(unique.values()), errors


def _examples(paths: list[str], include_initial: bool, max_length: int, tokenizer, fmt: ServeFormat):
    """(tokenized examples, records, examples longer than max_length (dropped, not cut), bad lines)."""
    rows, errors = load_records(paths, include_initial)
    for error in errors[:5]:
        print(f"skipped bad record: {error}", file=sys.stderr)
    examples, too_long = [], 0
    for record in rows:
        example = tokenize_example(tokenizer, fmt, conversation(record))
        if len(example["input_ids"]) > max_length:
            too_long += 1
            continue
        examples.append(example | {"length": len(example["input_ids"])})
    return examples, rows, too_long, errors


def build_eval_dataset(args: SFTArgs, tokenizer, fmt: ServeFormat):
    """(Dataset, counts) of the held-back examples in args.eval_data, tokenized and filtered like the
    training data (no --max-examples cut); (None, {}) without eval data. Raises SFTError when the
    files hold no usable example."""
    if not args.eval_data:
        return None, {}
    from datasets import Dataset

    examples, rows, too_long, errors = _examples(args.eval_data, args.include_initial, args.max_length, tokenizer, fmt)
    if not examples:
        raise SFTError(f"no usable held-back examples in {', '.join(args.eval_data)} ({len(rows)} correct records, "
                       f"{too_long} longer than {args.max_length} tokens, {len(errors)} bad lines)")
    return Dataset.from_list(examples), {"eval_examples": len(examples), "eval_dropped_too_long": too_long,
                                         "eval_tokens": sum(len(e["input_ids"]) for e in examples)}


def build_dataset(args: SFTArgs, tokenizer, fmt: ServeFormat):
    """(Dataset of tokenized examples, counts) from args.data. Examples longer than
    args.max_length tokens are dropped, not cut. Raises SFTError when none is usable.
    """
    from datasets import Dataset

    examples, rows, too_long, errors = _examples(args.data, args.include_initial, args.max_length, tokenizer, fmt)
    if args.max_examples:
        import random

        random.Random(args.seed).shuffle(examples)
        examples = examples[: args.max_examples]
    if not examples:
        raise SFTError(f"no usable training examples in {', '.join(args.data)} "
                       f"({len(rows)} correct records, {too_long} longer than {args.max_length} tokens, "
                       f"{len(errors)} bad lines)")
    stats = {"records": len(rows), "examples": len(examples), "dropped_too_long": too_long, "bad_lines": len(errors),
             "tokens": sum(len(e["input_ids"]) for e in examples)}
    return Dataset.from_list(examples), stats


# --- training -----------------------------------------------------------------------------------


def sft_config(args: SFTArgs, n_examples: int, *, evaluate: bool = False, eval_first: bool = False):
    """TRL's SFTConfig for these args: completion-only loss, cosine schedule with
    args.warmup_ratio of the steps as warm-up, bf16 autocast where the hardware has it
    (trainrun.bf16_supported), length-grouped batches, checkpointing on a GPU; with `evaluate`, the
    held-back loss every args.eval_steps (default args.save_steps) steps, and before the first step
    with `eval_first` (a fresh run; a resumed one has those points in its checkpoint's log).
    """
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    checkpointing = on_gpu if args.gradient_checkpointing is None else args.gradient_checkpointing
    steps_per_epoch = max(1, n_examples // (args.batch_size * args.grad_accum))
    total = args.max_steps if args.max_steps > 0 else int(steps_per_epoch * args.epochs)
    return SFTConfig(
        output_dir=args.output_dir, max_length=args.max_length, completion_only_loss=True,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=max(0, round(args.warmup_ratio * total)),
        logging_steps=args.logging_steps, save_steps=args.save_steps, save_total_limit=2,
        report_to="none", seed=args.seed, disable_tqdm=not args.progress,
        bf16=bf16_supported() if args.bf16 is None else args.bf16, use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=on_gpu, gradient_checkpointing=checkpointing,
        # The dataset is already tokenized with its completion mask; TRL only builds labels from it.
        dataset_num_proc=None, packing=False,
        eval_strategy="steps" if evaluate else "no", eval_steps=(args.eval_steps or args.save_steps) if evaluate else None,
        per_device_eval_batch_size=args.batch_size, eval_on_start=evaluate and eval_first)


def train(args: SFTArgs) -> dict:
    """Run SFT; writes <output_dir>/adapter (PEFT) and <output_dir>/ledex-sft.json; returns the metrics
    (dataset counts, `trainrun.train_and_save`'s (eval_losses: the held-back loss per step with
    --eval-data), the serving format, the args).

    Raises SFTError for no data or no usable example, TrainingError for a base that does not load.
    """
    import torch
    from trl import SFTTrainer

    if not args.data:
        raise SFTError("no training data: pass --data <trajectories.jsonl>")
    set_threads(args.threads or (None if torch.cuda.is_available() else idle_cores()))
    qlora = torch.cuda.is_available() if args.qlora is None else args.qlora
    tokenizer, fmt = load_tokenizer(args.model)
    dataset, stats = build_dataset(args, tokenizer, fmt)
    held_back, eval_stats = build_eval_dataset(args, tokenizer, fmt)
    fresh = not (args.resume and latest_checkpoint(args.output_dir))
    config = sft_config(args, len(dataset), evaluate=held_back is not None, eval_first=fresh)
    trainer = SFTTrainer(model=load_model(args.model, qlora=qlora), args=config, train_dataset=dataset,
                         eval_dataset=held_back, processing_class=tokenizer,
                         peft_config=lora_config(args.lora_r, args.lora_alpha, args.lora_dropout, args.target_modules))
    run = train_and_save(trainer, args.output_dir, resume=args.resume)
    return write_metrics(args.output_dir, "sft", {
        **stats, **eval_stats, "qlora": qlora, "bf16": trainer.args.bf16, "threads": torch.get_num_threads(), **run,
        "base": args.model,
        "serve_format": asdict(fmt) | {"chat_template": None}, "args": asdict(args)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train sft` (one per SFTArgs field)."""
    add_dataclass_arguments(parser, SFTArgs)


def summary(metrics: dict) -> str:
    """One line for the terminal: examples, steps, seconds, first -> last logged loss, the adapter."""
    losses = metrics["losses"] or [float("nan")]
    held = metrics.get("eval_losses") or []
    held_text = (f"; held-back loss {held[0]['loss']:.3f} (step {held[0]['step']}) -> {held[-1]['loss']:.3f} "
                 f"(step {held[-1]['step']}) on {metrics.get('eval_examples')} examples") if held else ""
    return (f"{metrics['examples']} examples, {metrics['steps']} steps in {metrics['seconds']} s "
            f"({metrics['tokens_per_s']} tokens/s, {'bf16 autocast' if metrics['bf16'] else 'fp32'}, "
            f"{metrics['threads']} threads); loss {losses[0]:.3f} -> {losses[-1]:.3f}{held_text}; "
            f"adapter: {metrics['adapter_dir']}; loss curve: {metrics['loss_plot']}")


def main(args: argparse.Namespace) -> int:
    """`ledex-train sft`: exit status 0, or 2 with the message for bad input."""
    return run_command("sft", SFTArgs, args, train, summary, (TrainingError, records.RecordError))
