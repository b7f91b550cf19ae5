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
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ledex.engine.format import Mode, build_training_messages, fenced, render_chat
from ledex.training import records
from ledex.training.config import add_dataclass_arguments, from_args


@dataclass
class SFTArgs:
    data: list[str] = field(default_factory=list, metadata={
        "help": "Trajectory files from `collect` (the sibling .initial.jsonl is read too when present)."})
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
    learning_rate: float = field(default=2e-4, metadata={
        "help": "LoRA learning rate (the paper's 2e-5 is for full fine-tuning; LoRA needs ~10x)."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs (paper: 2)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after N optimizer steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Per-device batch size."})
    grad_accum: int = field(default=4, metadata={"help": "Gradient accumulation (effective batch 16 on one device)."})
    warmup_ratio: float = field(default=0.03, metadata={
        "help": "Warm-up share of the steps (paper: 500 steps of a much longer run), then cosine decay."})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: half the cores; torch's OpenMP threads spin-wait and run 4-5x "
                "slower when other processes share the cores)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations in backward (saves memory, costs ~30%% time; default: on with a GPU, off on CPU)."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (resume picks the latest)."})
    logging_steps: int = field(default=5, metadata={"help": "Log the loss every N steps."})
    resume: bool = field(default=True, metadata={"help": "Resume from the latest checkpoint in --output-dir."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SFTError(RuntimeError):
    """Bad input for SFT (no data, missing base); the message says what to fix."""


# --- base model and the serving format ----------------------------------------------------------


@dataclass(frozen=True)
class ServeFormat:
    """How the server renders and tokenizes prompts for this base (read from the GGUF)."""

    chat_template: str
    eos_text: str
    add_bos: bool
    bos_text: str = ""


def resolve_base(model: str) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None)."""
    from ledex.engine.models import ModelError, parse_model_spec

    if model in ("", "default") or model.endswith(".gguf"):
        try:
            path = Path(parse_model_spec(model).location)
        except ModelError as exc:
            raise SFTError(f"base model: {exc}") from exc
        return str(path.parent), path.name
    if model.startswith("/") or model.startswith("."):
        if not Path(model).exists():
            raise SFTError(f"base model not found: {model}")
    return model, None


def gguf_serve_format(path: str | Path) -> ServeFormat:
    """The chat template, end-of-turn text and BOS rule llama.cpp uses for this GGUF."""
    from ledex.engine.backends import CHATML_TEMPLATE
    from ledex.training.export import gguf_header

    meta = gguf_header(path, arrays=("tokenizer.ggml.tokens",))
    tokens = meta["tokenizer.ggml.tokens"]
    eos, bos = meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.bos_token_id")
    # llama.cpp's default: add BOS for sentencepiece ("llama") vocabularies, not for BPE ("gpt2").
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", meta.get("tokenizer.ggml.model") == "llama"))
    return ServeFormat(meta.get("tokenizer.chat_template") or CHATML_TEMPLATE, tokens[eos] if eos is not None else "",
                       add_bos, tokens[bos] if bos is not None else "")


def hf_serve_format(tokenizer) -> ServeFormat:
    from ledex.engine.backends import CHATML_TEMPLATE

    return ServeFormat(tokenizer.chat_template or CHATML_TEMPLATE, tokenizer.eos_token or "",
                       bool(getattr(tokenizer, "add_bos_token", False)), tokenizer.bos_token or "")


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    where, gguf_file = resolve_base(model)
    if gguf_file:
        tokenizer = AutoTokenizer.from_pretrained(str(_gguf_tokenizer_dir(Path(where) / gguf_file)))
    else:
        tokenizer = AutoTokenizer.from_pretrained(where)
    fmt = gguf_serve_format(Path(where) / gguf_file) if gguf_file else hf_serve_format(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = fmt.eos_text or tokenizer.eos_token
    return tokenizer, fmt


def _cache_root() -> Path:
    return Path(os.environ.get("LEDEX_CACHE", Path.home() / ".cache" / "ledex")) / "hf-from-gguf"


def _gguf_tokenizer_dir(path: Path) -> Path:
    """The GGUF's tokenizer as a saved HF tokenizer, cached by content hash. Building it from the
    GGUF vocabulary (49k tokens + merges) takes 30-40 s; loading the saved one takes about 1 s."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    from ledex.engine.models import file_hash

    target = _cache_root() / f"{file_hash(path)[:16]}-tokenizer"
    if (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(model: str, *, qlora: bool = False, dtype=None):
    """The trainable base (float32 on CPU; 4-bit NF4 with qlora)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    where, gguf_file = resolve_base(model)
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    if gguf_file:
        # Dequantise the GGUF once, to a cache keyed by its hash: bitsandbytes quantises from real
        # weights, and reloading safetensors takes seconds where GGUF dequantisation takes a minute.
        where, gguf_file = str(materialize_gguf(Path(where) / gguf_file)), None
    kwargs = {"dtype": dtype}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    try:
        if gguf_file:
            return _dequantized(AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf_file, **kwargs))
        return AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise SFTError(f"could not load base model {model!r}: {exc}") from exc


def _dequantized(model):
    """transformers dequantises GGUF weights to plain tensors but keeps a 'GGUF quantizer' marker that
    refuses training and saving; the weights are ordinary floats, so the marker is dropped."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def materialize_gguf(path: Path) -> Path:
    """A Hugging Face checkpoint of the dequantised GGUF, cached by content hash (written atomically)."""
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ledex.engine.models import file_hash

    cache = _cache_root()
    target = cache / file_hash(path)[:16]
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tmp-"))
    try:
        model = _dequantized(AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name))
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(_gguf_tokenizer_dir(path))).save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def split_prompt(messages: list[dict[str, str]], fmt: ServeFormat) -> tuple[str, str]:
    """(prompt exactly as served, completion = the final assistant turn through end-of-turn)."""
    prompt = render_chat(messages[:-1], fmt.chat_template, add_generation_prompt=True,
                         bos_token=fmt.bos_text, eos_token=fmt.eos_text)
    full = render_chat(messages, fmt.chat_template, add_generation_prompt=False,
                       bos_token=fmt.bos_text, eos_token=fmt.eos_text)
    if not full.startswith(prompt):
        raise SFTError("the chat template renders the prompt differently inside the full conversation")
    completion = full[len(prompt):]
    end = completion.rfind(fmt.eos_text) if fmt.eos_text else -1
    # Train through the end-of-turn token (the server stops there); drop the template's trailing newline.
    completion = completion[: end + len(fmt.eos_text)] if end >= 0 else completion + fmt.eos_text
    return prompt, completion


def tokenize_example(tokenizer, fmt: ServeFormat, messages) -> dict:
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
    from ledex.training.collect import initial_path

    found, errors = [], []
    for path in paths:
        if not Path(path).is_file():
            raise SFTError(f"dataset not found: {path}")
        found += [r for r in records.read(path, skip_bad=True, errors=errors) if r.correct and r.code.strip()]
        sibling = initial_path(path)
        if include_initial and sibling.is_file():
            found += list(records.read(sibling, skip_bad=True, errors=errors))
    if not include_initial:
        found = [r for r in found if r.origin != "initial"]
    unique = {r.id: r for r in found}
    return list(unique.values()), errors


def build_dataset(args: SFTArgs, tokenizer, fmt: ServeFormat):
    from datasets import Dataset

    rows, errors = load_records(args.data, args.include_initial)
    for error in errors[:5]:
        print(f"skipped bad record: {error}", file=sys.stderr)
    examples, too_long = [], 0
    for record in rows:
        example = tokenize_example(tokenizer, fmt, conversation(record))
        if len(example["input_ids"]) > args.max_length:
            too_long += 1
            continue
        examples.append(example)
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


def sft_config(args: SFTArgs, n_examples: int):
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
        bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=on_gpu, gradient_checkpointing=checkpointing,
        # The dataset is already tokenized with its completion mask; TRL only builds labels from it.
        dataset_num_proc=None, packing=False)


def lora_config(args: SFTArgs):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=list(args.target_modules), bias="none", task_type="CAUSAL_LM")


def latest_checkpoint(output_dir: str) -> str | None:
    found = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None


def train(args: SFTArgs) -> dict:
    """Run SFT; writes <output_dir>/adapter (PEFT) and <output_dir>/ledex-sft.json; returns the metrics."""
    import torch
    from trl import SFTTrainer

    if not args.data:
        raise SFTError("no training data: pass --data <trajectories.jsonl>")
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) // 2))
    qlora = torch.cuda.is_available() if args.qlora is None else args.qlora
    tokenizer, fmt = load_tokenizer(args.model)
    dataset, stats = build_dataset(args, tokenizer, fmt)
    model = load_model(args.model, qlora=qlora)
    trainer = SFTTrainer(model=model, args=sft_config(args, len(dataset)), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora_config(args))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    checkpoint = latest_checkpoint(args.output_dir) if args.resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    adapter_dir = Path(args.output_dir) / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    metrics = {**stats, "qlora": qlora, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
               "train_loss": result.training_loss, "losses": losses, "resumed_from": checkpoint,
               "trainable_tensors": len(before), "trainable_tensors_changed": changed,
               "base": args.model, "adapter_dir": str(adapter_dir), "serve_format": asdict(fmt) | {"chat_template": None},
               "args": asdict(args)}
    _atomic_json(Path(args.output_dir) / "ledex-sft.json", metrics)
    return metrics


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, SFTArgs)


def main(args: argparse.Namespace) -> int:
    try:
        metrics = train(from_args(SFTArgs, args))
    except (SFTError, records.RecordError) as exc:
        print(f"ledex-train sft: {exc}", file=sys.stderr)
        return 2
    losses = metrics["losses"]
    print(f"{metrics['examples']} examples, {metrics['steps']} steps in {metrics['seconds']} s; "
          f"loss {losses[0] if losses else float('nan'):.3f} -> {losses[-1] if losses else float('nan'):.3f}; "
          f"adapter: {metrics['adapter_dir']}")
    return 0
