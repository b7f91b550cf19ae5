"""The model registry: which LoRA adapter is in service, and its history.

Layout (under $LEDEX_HOME, default ~/.local/share/ledex):
    models/current.json      {"adapter": "<abs path>.gguf", "version": N, "promoted_at": ..., ...}
    models/history.jsonl     one line per promotion or rollback
    models/adapters/*.gguf   promoted adapters (never overwritten)

`ledex-train` promotes (atomic write + rename of current.json); the language server watches
current.json and switches models between requests. Nothing half-written is ever current:
readers see either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ledex.engine.apply import atomic_write_text



def ledex_home() -> Path:
    """$LEDEX_HOME, else $XDG_DATA_HOME/ledex (default ~/.local/share/ledex)."""
    env = os.environ.get("LEDEX_HOME")
    base = Path(env) if env else Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "ledex"
    return base.expanduser()


def models_dir(home: Path | None = None) -> Path:
    """<home>/models: the model registry (current.json, history.jsonl)."""
    return (home or ledex_home()) / "models"


def current_file(home: Path | None = None) -> Path:
    """<home>/models/current.json, the record of the promoted adapter."""
    return models_dir(home) / "current.json"


def current(home: Path | None = None) -> dict | None:
    """The promoted model record, or None (unreadable records count as none: the base serves)."""
    try:
        record = json.loads(current_file(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("adapter") else None


def packaged_adapter() -> Path | None:
    """The LEDEX adapter shipped in the package (present only if it beat the plain base)."""
    import ledex

    path = Path(ledex.__file__).resolve().parent / "adapters" / "default.gguf"
    return path if path.is_file() else None


def default_adapter(home: Path | None = None) -> str | None:
    """The adapter to serve when the user names none: promoted one, else the packaged one."""
    record = current(home)
    if record and Path(record["adapter"]).is_file():
        return record["adapter"]
    shipped = packaged_adapter()
    return str(shipped) if shipped else None


def append_history(event: dict, home: Path | None = None) -> None:
    """Append `event` with a timestamp (time.time()) as one JSON line to models/history.jsonl, fsynced."""
    path = models_dir(home) / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": time.time(), **event}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def set_current(record: dict, home: Path | None = None) -> None:
    """Atomically make `record` the model in service (readers never see a partial file)."""
    path = current_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
