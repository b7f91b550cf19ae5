"""What every ledex trainer shares (sft, rl, kto, export): the base model, the serving format, LoRA.

- the base: `resolve_base` / `load_model` / `load_tokenizer` read the same GGUF the server
  serves (dequantised once into a cache keyed by the file's hash) or any Hugging Face model;
- the serving format: `ServeFormat` (chat template, end-of-turn text, BOS rule) read from the
  GGUF header (`gguf_header`), and `split_prompt`, which renders a conversation exactly as the
  server renders prompts, so training sees no train/serve skew;
- LoRA: `LORA_TARGETS`, `lora_config`, and `load_policy` (an adapter loaded trainable, or the
  base plus a fresh LoRA config);
- `write_json`: the one atomic JSON writer of training (through `ledex.engine.apply`).

A library, not a command: the `ledex-train` subcommands import it. The step a trainer ends
with (train, checkpoint, save, measure) is `ledex.training.trainrun`.
"""

from __future__ import annotations

import copy
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledex.engine.apply import atomic_write_text
from ledex.engine.format import render_chat
from ledex.engine.models import cache_dir

# All linear layers of a llama block: the QLoRA paper's choice (Dettmers et al. 2023, sec. 4).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingError(RuntimeError):
    """Bad input for a trainer (missing base or adapter, no usable data); the message says what to fix.

    Each subcommand's own error (SFTError, RLError, KTOError, ExportError) is a subclass, and every
    `main` turns one into exit status 2 with the message on stderr.
    """


class GGUFError(TrainingError):
    """The file is not a GGUF file (bad magic) or its header is cut short."""


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON (non-JSON values through `str`) atomically: temp file, fsync,
    rename; the folder must exist. A crash leaves the old file or the new one, never half of one."""
    atomic_write_text(Path(path), json.dumps(data, indent=2, default=str))


# --- the serving format ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeFormat:
    """How the server renders and tokenizes prompts for a base (read from its GGUF or tokenizer).

    chat_template: Jinja chat template (ChatML when the file has none, as llama.cpp does);
    eos_text: the end-of-turn token's text, where the server stops; add_bos / bos_text: whether
    llama.cpp puts a BOS token before the prompt, and its text.
    """

    chat_template: str
    eos_text: str
    add_bos: bool
    bos_text: str = ""

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The conversation as the server renders it (text; special tokens as text)."""
        return render_chat(messages, self.chat_template, add_generation_prompt=add_generation_prompt,
                           bos_token=self.bos_text, eos_token=self.eos_text)


def split_prompt(messages: list[dict[str, str]], fmt: ServeFormat) -> tuple[str, str]:
    """(prompt exactly as served, completion = the final assistant turn through end-of-turn).

    Raises TrainingError when the template renders the prompt differently inside the full chat
    (then no prefix of the training text is what the server would send).
    """
    prompt = fmt.render(messages[:-1], add_generation_prompt=True)
    full = fmt.render(messages, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise TrainingError("the chat template renders the prompt differently inside the full conversation")
    completion = full[len(prompt):]
    end = completion.rfind(fmt.eos_text) if fmt.eos_text else -1
    # Train through the end-of-turn token (the server stops there); drop the template's trailing newline.
    completion = completion[: end + len(fmt.eos_text)] if end >= 0 else completion + fmt.eos_text
    return prompt, completion


# GGUF metadata value types -> struct format (the GGUF spec, ggml/docs/gguf.md: 8 is a string, 9 an array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_header(path: str | Path, arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    """GGUF metadata key -> value, read straight from the header (gguf.GGUFReader takes seconds on a
    vocabulary of 49k tokens; this skips arrays not named in `arrays`, whose value is then None).

    Raises GGUFError for a file that is not GGUF or ends inside the header; OSError if unreadable.
    """
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        try:
            handle.seek(4 + 8, 1)  # version (uint32), tensor count (uint64)
            meta = {}
            for _ in range(_read(handle, "<Q")):
                key = _string(handle)
                meta[key] = _value(handle, _read(handle, "<I"), key in arrays)
        except (struct.error, KeyError) as exc:
            raise GGUFError(f"{path}: GGUF header is cut short or malformed ({exc})") from exc
    return meta


def _read(handle, fmt: str):
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


def _string(handle) -> str:
    return handle.read(_read(handle, "<Q")).decode("utf-8", errors="replace")


def _value(handle, kind: int, keep: bool):
    if kind == 8:
        return _string(handle)
    if kind != 9:
        return _read(handle, _SCALARS[kind])
    item, count = _read(handle, "<I"), _read(handle, "<Q")
    if not keep and item != 8:
        handle.seek(count * struct.calcsize(_SCALARS[item]), 1)
        return None
    items = [_value(handle, item, True) for _ in range(count)]
    return items if keep else None


def gguf_serve_format(path: str | Path) -> ServeFormat:
    """The chat template, end-of-turn text and BOS rule llama.cpp uses for this GGUF."""
    from ledex.engine.backends import CHATML_TEMPLATE

    meta = gguf_header(path, arrays=("tokenizer.ggml.tokens",))
    tokens = meta["tokenizer.ggml.tokens"]
    eos, bos = meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.bos_token_id")
    # llama.cpp's default: add BOS for sentencepiece ("llama") vocabularies, not for BPE ("gpt2").
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", meta.get("tokenizer.ggml.model") == "llama"))
    return ServeFormat(meta.get("tokenizer.chat_template") or CHATML_TEMPLATE, tokens[eos] if eos is not None else "",
                       add_bos, tokens[bos] if bos is not None else "")


def hf_serve_format(tokenizer) -> ServeFormat:
    """The serving format of a Hugging Face tokenizer (for HF bases, which the server does not serve)."""
    from ledex.engine.backends import CHATML_TEMPLATE

    return ServeFormat(tokenizer.chat_template or CHATML_TEMPLATE, tokenizer.eos_token or "",
                       bool(getattr(tokenizer, "add_bos_token", False)), tokenizer.bos_token or "")


# --- the base model -------------------------------------------------------------------------------


def resolve_base(model: str) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for a base spec: 'default' (the embedded GGUF),
    a .gguf path, or a HF model path/id. Raises TrainingError for a missing file."""
    from ledex.engine.models import ModelError, parse_model_spec

    if model in ("", "default") or model.endswith(".gguf"):
        try:
            path = Path(parse_model_spec(model).location)
        except ModelError as exc:
            raise TrainingError(f"base model: {exc}") from exc
        return str(path.parent), path.name
    if model.startswith("/") or model.startswith("."):
        if not Path(model).exists():
            raise TrainingError(f"base model not found: {model}")
    return model, None


def load_tokenizer(model: str):
    """(HF tokenizer, ServeFormat) of a base spec; pad = end-of-turn when the tokenizer has none."""
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
    return cache_dir() / "hf-from-gguf"


def _cached_dir(path: Path, suffix: str, marker: str, build) -> Path:
    """`<cache>/<hash of path>{suffix}`, made once by `build(tmp_dir)` then renamed into place (a
    process that loses the race keeps the winner's identical copy)."""
    import shutil
    import tempfile

    from ledex.engine.models import file_hash

    target = _cache_root() / f"{file_hash(path)[:16]}{suffix}"
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_tokenizer_dir(path: Path) -> Path:
    """The GGUF's tokenizer as a saved HF tokenizer, cached by content hash. Building it from the
    GGUF vocabulary (49k tokens + merges) takes 30-40 s; loading the saved one takes about 1 s."""
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp)

    return _cached_dir(path, "-tokenizer", "tokenizer_config.json", build)


def materialize_gguf(path: Path) -> Path:
    """A Hugging Face checkpoint of the dequantised GGUF, cached by content hash (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        _dequantized(AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(_gguf_tokenizer_dir(path))).save_pretrained(tmp)

    return _cached_dir(path, "", "config.json", build)


def load_model(model: str, *, qlora: bool = False, dtype=None):
    """The trainable base (bfloat16 on a GPU, float32 on CPU; 4-bit NF4 with `qlora`).
    Raises TrainingError when the base is missing or does not load."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    where, gguf_file = resolve_base(model)
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    if gguf_file:
        # Dequantise the GGUF once, to a cache keyed by its hash: bitsandbytes quantises from real
        # weights, and reloading safetensors takes seconds where GGUF dequantisation takes a minute.
        where = str(materialize_gguf(Path(where) / gguf_file))
    kwargs = {"dtype": dtype}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"could not load base model {model!r}: {exc}") from exc


def _dequantized(model):
    """transformers dequantises GGUF weights to plain tensors but keeps a 'GGUF quantizer' marker that
    refuses training and saving; the weights are ordinary floats, so the marker is dropped."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


_BASE_CACHE: dict[str, Any] = {}


def load_base(model: str, *, cache: bool = False):
    """The base model (`load_model`); `cache` keeps one copy in memory and hands out deep copies
    (loading a GGUF dequantises every tensor: tens of seconds even for the 135M default)."""
    if not cache:
        return load_model(model)
    if model not in _BASE_CACHE:
        _BASE_CACHE[model] = load_model(model)
    return copy.deepcopy(_BASE_CACHE[model])


# --- LoRA -----------------------------------------------------------------------------------------


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, targets=LORA_TARGETS):
    """A PEFT LoraConfig for a causal LM: rank `r`, scale alpha/r, no bias training."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none",
                      task_type="CAUSAL_LM")


def adapter_dir(path: str) -> Path:
    """The PEFT adapter folder: `path` itself or its adapter/ subfolder (a trainer's output dir).
    Raises TrainingError when neither holds adapter_config.json."""
    folder = Path(path)
    if (folder / "adapter" / "adapter_config.json").is_file():
        folder = folder / "adapter"
    if not (folder / "adapter_config.json").is_file():
        raise TrainingError(f"no PEFT adapter at {path} (expected adapter_config.json; run `ledex-train sft` first)")
    return folder


def load_policy(model: str, adapter: str | None, *, lora_r: int = 16, lora_alpha: int = 32, cache: bool = False):
    """(model, peft_config): the adapter loaded trainable (config None: TRL keeps its frozen copy as the
    KL reference), or the base plus a fresh LoRA config (rank lora_r, no dropout)."""
    from peft import PeftModel

    base = load_base(model, cache=cache)
    if adapter:
        return PeftModel.from_pretrained(base, str(adapter_dir(adapter)), is_trainable=True), None
    return base, lora_config(lora_r, lora_alpha)
