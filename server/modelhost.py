"""The model in service: loaded lazily in its own worker process, swapped between requests.

The model never runs inside the server: `ledex.engine.genworker` hosts it in a child
process, so a native crash in llama.cpp costs the fix it was working on (reported to the
user), not the editor's server; the next fix starts a new worker.

`ledex-train` promotes an adapter by replacing `$LEDEX_HOME/models/current.json`; the
watcher calls `invalidate()`, and the next fix that leases a backend gets the new one.
Fixes already running keep the backend they leased, so no generation is cut off; the old
worker is stopped when its last lease is returned.

Model settings: whatever `ledex.engine.backends.load_backend` accepts, including
`replay:<file.json>` (recorded answers) for tests of the server's logic; episodes record it
as the model "replay", never as a real model. What a setting names is `engine.models.model_kind`.

Used by server.py (one ModelPool) and folder.py (each folder's host); run the server with
`python -m ledex.server`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from ledex.engine import registry
from ledex.engine.genworker import WorkerBackend
from ledex.engine.models import ModelError, ModelKind, model_kind

# The worker computes at lower priority than the server: on a 2-core machine the event
# loop must win the core whenever the editor asks something.
WORKER_NICE = 10
# A model that kills its process this many requests in a row is deterministic about it
# (a bad GGUF, a broken build): stop restarting it on every save until the user acts.
MAX_CRASHES_IN_A_ROW = 3


class ModelHost:
    """Holds one worker-hosted backend for (model, adapter); thread-safe."""

    def __init__(self, model: str = "", adapter: str = "", home: Path | None = None,
                 on_start: Callable[[WorkerBackend], None] | None = None):
        self.model, self.adapter, self.home, self.on_start = model, adapter, home, on_start
        self._backend: WorkerBackend | None = None
        self._version: str | None = None
        self._leases: dict[int, int] = {}  # id(backend) -> fixes using it
        self._lock = threading.Lock()

    def configure(self, model: str, adapter: str) -> None:
        """Switch to another (model, adapter); the loaded backend is dropped if it changes."""
        if (model, adapter) != (self.model, self.adapter):
            self.model, self.adapter = model, adapter
            self.invalidate()

    def invalidate(self) -> None:
        """Drop the loaded backend so the next fix starts a fresh one; closed now if idle,
        else by the release of its last lease."""
        with self._lock:
            old, self._backend = self._backend, None
            idle = old is not None and not self._leases.get(id(old))
        if idle:
            old.close()  # else the last fix using it closes it (release)

    def _adapter(self) -> tuple[str | None, str]:
        """(adapter path or None, version label for episodes)."""
        kind = model_kind(self.model)
        if kind is ModelKind.REPLAY:  # recorded answers; the promoted version still shows a hot swap
            record = registry.current(self.home)
            return None, f"replay@{record['version']}" if record and record.get("version") else "replay"
        if self.adapter:
            return self.adapter, f"adapter:{Path(self.adapter).name}"
        if not kind.takes_adapter:
            return None, "base"
        record = registry.current(self.home)
        if record and Path(record["adapter"]).is_file():
            return record["adapter"], str(record.get("version", "promoted"))
        shipped = registry.packaged_adapter()
        return (str(shipped), "packaged") if shipped else (None, "base")

    def lease(self) -> tuple[WorkerBackend, str]:
        """(backend, version label) for one fix; give it back with `release`. Raises
        ModelError with a readable message when the model cannot be loaded."""
        with self._lock:
            crashed = self._backend.crashes_in_a_row if self._backend is not None else 0
            if crashed >= MAX_CRASHES_IN_A_ROW:
                raise ModelError(f"the model process died on {crashed} requests in a row, so ledex stopped using it; "
                                 "run 'ledex: Run Tests' (command ledex.runTests) to try again, or change the model setting")
            if self._backend is None:
                adapter, version = self._adapter()
                self._backend = WorkerBackend(self.model, adapter, nice=WORKER_NICE, on_start=self.on_start)
                self._version = version
            self._leases[id(self._backend)] = self._leases.get(id(self._backend), 0) + 1
            return self._backend, self._version

    def retry(self) -> None:
        """The user asked again: a model that kept crashing gets another chance."""
        backend = self._backend
        if backend is not None:
            backend.crashes_in_a_row = 0

    def release(self, backend: WorkerBackend) -> None:
        """Give back a lease on `backend`; closes it once unleased if it was superseded meanwhile."""
        with self._lock:
            left = self._leases.pop(id(backend), 1) - 1
            if left > 0:
                self._leases[id(backend)] = left
            retired = left <= 0 and backend is not self._backend
        if retired:
            backend.close()  # superseded by a promotion while this fix ran

    def close(self) -> None:
        """Stop the worker now (server shutdown): a fix still running ends with an error."""
        with self._lock:
            old, self._backend = self._backend, None
        if old is not None:
            old.terminate()

    @property
    def pid(self) -> int | None:
        """Process id of the model worker, None if none is loaded."""
        backend = self._backend
        return backend.pid if backend is not None else None

    @property
    def description(self) -> str:
        """What `ledex.status` shows: the loaded identity, else what would be loaded."""
        backend = self._backend
        if backend is not None and backend.identity is not None:
            return backend.identity.id
        return self.model or "default (not loaded yet)"


class ModelPool:
    """One ModelHost per (model, adapter) that some workspace folder uses: folders with the same
    model setting share its worker process; a setting nobody uses any more lets it go."""

    def __init__(self, home: Path | None = None, on_start: Callable[[WorkerBackend], None] | None = None):
        self.home, self.on_start = home, on_start
        self.hosts: dict[tuple[str, str], ModelHost] = {}

    def host(self, model: str, adapter: str) -> ModelHost:
        """The ModelHost for (model, adapter), created on first use."""
        key = (model, adapter)
        if key not in self.hosts:
            self.hosts[key] = ModelHost(model, adapter, home=self.home, on_start=self.on_start)
        return self.hosts[key]

    def keep_only(self, used: set[tuple[str, str]]) -> None:
        """Drop hosts no folder uses; their worker stops now, or when its last fix ends."""
        for key in [k for k in self.hosts if k not in used]:
            self.hosts.pop(key).invalidate()

    def invalidate(self) -> None:
        """A promotion: every host loads the new adapter for its next fix."""
        for host in list(self.hosts.values()):
            host.invalidate()

    def retry(self) -> None:
        """Give every host's crashed model another chance."""
        for host in list(self.hosts.values()):
            host.retry()

    def close(self) -> None:
        """Close every host and its worker process."""
        for host in list(self.hosts.values()):
            host.close()


def last_training(home: Path | None = None) -> str | None:
    """When the registry's current adapter was promoted (its promoted_at), None if never."""
    record = registry.current(home)
    value = record.get("promoted_at") if record else None
    return str(value) if value is not None else None
