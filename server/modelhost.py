"""The model in service, loaded lazily and swapped between requests (hot reload).

`ledex-train` promotes an adapter by replacing `$LEDEX_HOME/models/current.json`; the
watcher calls `invalidate()`, and the next fix that asks for a backend gets the new one.
Fixes already running keep the backend they started with, so no generation is cut off.

Model settings: whatever `ledex.engine.backends.load_backend` accepts, plus
`replay:<file.json>` (a JSON list of recorded answers, served in order) for tests of the
server's logic only; episodes record it as the model "replay", never as a real model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ledex.engine.backends import Backend, ReplayBackend, load_backend
from ledex.engine.models import ModelError
from ledex.engine import registry

REPLAY_PREFIX = "replay:"


def load_replay(path: str) -> ReplayBackend:
    try:
        answers = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the replay file {path}: {exc}") from exc
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ModelError(f"{path} must hold a non-empty JSON list of answer strings")
    return ReplayBackend(answers, name="replay")


class ModelHost:
    """Holds one backend for (model, adapter); thread-safe."""

    def __init__(self, model: str = "", adapter: str = "", home: Path | None = None):
        self.model, self.adapter, self.home = model, adapter, home
        self._backend: Backend | None = None
        self._version: str | None = None
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every (re)load: tests and logs can see a reload happened

    def configure(self, model: str, adapter: str) -> None:
        if (model, adapter) != (self.model, self.adapter):
            self.model, self.adapter = model, adapter
            self.invalidate()

    def invalidate(self) -> None:
        with self._lock:
            self._backend = None

    def _adapter(self) -> tuple[str | None, str]:
        """(adapter path or None, version label for episodes)."""
        if self.adapter:
            return self.adapter, f"adapter:{Path(self.adapter).name}"
        if self.model.startswith(("http://", "https://", REPLAY_PREFIX)):
            return None, "base"
        record = registry.current(self.home)
        if record and Path(record["adapter"]).is_file():
            return record["adapter"], str(record.get("version", "promoted"))
        shipped = registry.packaged_adapter()
        return (str(shipped), "packaged") if shipped else (None, "base")

    def backend(self) -> tuple[Backend, str]:
        """(backend, version label); raises ModelError with a readable message."""
        with self._lock:
            if self._backend is None:
                if self.model.startswith(REPLAY_PREFIX):
                    self._backend, self._version = load_replay(self.model[len(REPLAY_PREFIX):]), "replay"
                else:
                    adapter, version = self._adapter()
                    self._backend = load_backend(self.model or None, adapter)  # all cores but one: the editor stays responsive
                    self._version = version
                self.generation += 1
            return self._backend, self._version

    @property
    def description(self) -> str:
        """What `ledex.status` shows: the loaded identity, else what would be loaded."""
        backend = self._backend
        if backend is not None:
            return backend.identity.id
        return self.model or "default (not loaded yet)"


def last_training(home: Path | None = None) -> str | None:
    record = registry.current(home)
    value = record.get("promoted_at") if record else None
    return str(value) if value is not None else None
