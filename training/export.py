"""`ledex-train export`: a PEFT LoRA adapter -> a GGUF LoRA adapter llama.cpp loads on the base.

Written with the `gguf` package in the layout llama.cpp's convert_lora_to_gguf.py produces:
general.type=adapter, adapter.type=lora, adapter.lora.alpha, and for every adapted weight
`<gguf tensor name>.lora_a` (rank x in) and `.lora_b` (out x rank). Names come from gguf's own
tensor-name map for the architecture (no hand table). llama's q/k projections are permuted
when HF weights become GGUF (rotary layout); the adapter's delta B@A must land in the same
layout, so lora_b of q_proj/k_proj gets the same row permutation.

The file is written to a temporary name, fsynced, re-read and checked, then renamed: a full
disk or a kill leaves no half-written adapter under the final name.

`--merge-to DIR` also writes base+adapter merged as Hugging Face safetensors. Quantising that
to a standalone GGUF needs llama.cpp's converter (the gguf package alone has no HF->GGUF
model converter):  python convert_hf_to_gguf.py DIR --outtype q8_0  (then llama-quantize).

    ledex-train export runs/sft/adapter --output runs/sft/ledex-lora.gguf
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ledex.training.config import add_dataclass_arguments, run_command
from ledex.training.core import GGUFError, TrainingError, gguf_header


@dataclass
class ExportArgs:
    """Options of `ledex-train export` (one flag per field)."""

    adapter_dir: str = field(default="ledex-runs/sft/adapter", metadata={"help": "PEFT adapter folder (from sft)."})
    output: str | None = field(default=None, metadata={"help": "GGUF adapter to write (default: <adapter_dir>.gguf)."})
    base: str = field(default="default", metadata={"help": "The GGUF base the adapter is for (architecture check)."})
    dtype: str = field(default="f32", metadata={"help": "Tensor type: f32 or f16 (adapters are tiny; f32 is exact)."})
    merge_to: str | None = field(default=None, metadata={"help": "Also write the merged model as HF safetensors here."})


class ExportError(TrainingError):
    """The adapter cannot be exported; nothing was written under the output name."""


_PEFT_PREFIXES = ("base_model.model.",)


@dataclass(frozen=True)
class BaseInfo:
    """What the export needs from the GGUF base: architecture name, block count, attention
    head counts (for gguf's tensor-name map and llama's q/k row permutation).
    """

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int


def base_info(gguf_path: str | Path) -> BaseInfo:
    """Architecture, block count and attention head counts from a GGUF base's header.
    Raises ExportError when the file is not a GGUF model."""
    try:
        meta = gguf_header(gguf_path)
    except GGUFError as exc:
        raise ExportError(str(exc)) from exc
    arch = meta["general.architecture"]
    n_head = meta.get(f"{arch}.attention.head_count")
    return BaseInfo(arch, int(meta[f"{arch}.block_count"]), n_head, meta.get(f"{arch}.attention.head_count_kv") or n_head)


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output (row) dimension."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _hf_module(key: str) -> tuple[str, str] | None:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> ('model.layers.0.self_attn.q_proj', 'a')."""
    for prefix in _PEFT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    for part, which in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
        if key.endswith(part):
            return key[: -len(part)], which
        default = part.replace(".weight", ".default.weight")
        if key.endswith(default):
            return key[: -len(default)], which
    return None


def lora_tensors(adapter_dir: Path, info: BaseInfo) -> dict[str, np.ndarray]:
    """GGUF tensor name -> array, with names from gguf's tensor-name map and q/k permuted."""
    import gguf
    from safetensors.numpy import load_file

    arch = {name: value for value, name in gguf.MODEL_ARCH_NAMES.items()}.get(info.arch)
    if arch is None:
        raise ExportError(f"unknown GGUF architecture {info.arch!r}")
    name_map = gguf.get_tensor_name_map(arch, info.n_blocks)
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ExportError(f"no adapter_model.safetensors in {adapter_dir} (is it a PEFT adapter folder?)")
    out = {}
    for key, value in load_file(str(weights_file)).items():
        parsed = _hf_module(key)
        if parsed is None:
            raise ExportError(f"{key}: only LoRA A/B tensors can be exported (modules_to_save is not supported)")
        module, which = parsed
        name = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"{module}: no GGUF tensor for it in the {info.arch} tensor map")
        data = value.astype(np.float32)
        if which == "b" and info.arch == "llama" and module.endswith(("q_proj", "k_proj")):
            data = permute_rows(data, info.n_head, info.n_head if module.endswith("q_proj") else info.n_head_kv)
        out[f"{name}.lora_{which}"] = data
    if not out:
        raise ExportError(f"{weights_file} holds no LoRA tensors")
    return out


def effective_alpha(config: dict) -> float:
    """llama.cpp scales by alpha/rank; rsLoRA scales by alpha/sqrt(rank): fold the difference into alpha."""
    alpha, rank = float(config.get("lora_alpha", 8)), int(config.get("r", 8))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError("per-module rank/alpha patterns are not supported by GGUF adapters (one alpha per file)")
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def write_adapter(tensors: dict[str, np.ndarray], alpha: float, arch: str, output: Path, dtype: str = "f32") -> Path:
    """Write the GGUF atomically (temp name, fsync, verify, rename)."""
    import gguf

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        for name in sorted(tensors):
            data = tensors[name].astype(np.float16 if dtype == "f16" else np.float32)
            writer.add_tensor(name, np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        check_adapter(tmp, expect_tensors=len(tensors))
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"could not write {output}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


def check_adapter(path: str | Path, *, expect_tensors: int | None = None, arch: str | None = None) -> dict:
    """Read a GGUF adapter back and check it is a complete LoRA adapter; returns its metadata."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # truncated or not a GGUF at all
        raise ExportError(f"{path} is not a readable GGUF file: {exc}") from exc

    def get(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    meta = {"arch": get("general.architecture"), "type": get("general.type"), "adapter_type": get("adapter.type"),
            "alpha": get("adapter.lora.alpha"), "tensors": len(reader.tensors)}
    if meta["type"] != "adapter" or meta["adapter_type"] != "lora":
        raise ExportError(f"{path} is not a GGUF LoRA adapter (general.type={meta['type']!r})")
    if expect_tensors is not None and meta["tensors"] != expect_tensors:
        raise ExportError(f"{path} holds {meta['tensors']} tensors, expected {expect_tensors}")
    if arch is not None and meta["arch"] != arch:
        raise ExportError(f"{path} is for {meta['arch']!r}, the base is {arch!r}")
    names = {t.name for t in reader.tensors}
    if any(n.endswith(".lora_a") and n[:-1] + "b" not in names for n in names):
        raise ExportError(f"{path} has a lora_a tensor without its lora_b")
    return meta


def export(args: ExportArgs) -> dict:
    """Export a PEFT adapter folder to a GGUF LoRA adapter (and, with merge_to, a merged HF model).

    Returns output path, tensor count, alpha (rsLoRA folded in), rank, arch, base path and
    'merged'. Raises ExportError for a folder that is not a PEFT LoRA adapter, a base that does
    not resolve, or a failed write (nothing is left under the output name).
    """
    from ledex.engine.models import ModelError, parse_model_spec

    adapter_dir = Path(args.adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ExportError(f"not a PEFT adapter folder (no adapter_config.json): {adapter_dir}")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    try:
        base = parse_model_spec(args.base).location
    except ModelError as exc:
        raise ExportError(f"base model: {exc}") from exc
    info = base_info(base)
    tensors = lora_tensors(adapter_dir, info)
    output = Path(args.output or f"{adapter_dir.as_posix().rstrip('/')}.gguf")
    write_adapter(tensors, effective_alpha(config), info.arch, output, args.dtype)
    result = {"output": str(output), "tensors": len(tensors), "alpha": effective_alpha(config), "rank": config.get("r"),
              "arch": info.arch, "base": base}
    if args.merge_to:
        result["merged"] = merge_to_hf(adapter_dir, args.base, Path(args.merge_to))
    return result


def merge_to_hf(adapter_dir: Path, base: str, target: Path) -> str:
    """base + adapter merged, saved as HF safetensors (convert to GGUF with llama.cpp's converter)."""
    from peft import PeftModel

    from ledex.training.core import load_model, load_tokenizer

    model = PeftModel.from_pretrained(load_model(base), str(adapter_dir)).merge_and_unload()
    model.save_pretrained(target)
    load_tokenizer(base)[0].save_pretrained(target)
    return str(target)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train export` (one per ExportArgs field)."""
    add_dataclass_arguments(parser, ExportArgs)


def summary(result: dict) -> str:
    """What was written: the GGUF adapter (tensors, alpha, rank) and, with --merge-to, the merged model."""
    text = f"wrote {result['output']} ({result['tensors']} tensors, alpha {result['alpha']:g}, rank {result['rank']})"
    if result.get("merged"):
        text += (f"\nmerged model: {result['merged']}  "
                 f"(to GGUF: python convert_hf_to_gguf.py {result['merged']} --outtype q8_0)")
    return text


def main(args: argparse.Namespace) -> int:
    """`ledex-train export`: exit status 0, or 2 with the message when the adapter cannot be exported."""
    return run_command("export", ExportArgs, args, export, summary, (ExportError,))
