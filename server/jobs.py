"""Background work for the language server: test runs and fixes run on worker threads, never
on the event loop, each with a cancel flag; fix results are cached by (code, failure).

One test run and one fix at a time: the model uses every core it is given, and two
generations at once would only slow each other down. Queued work whose flag is set by the
time a worker reaches it is skipped.

The server never blocks on these futures: results come back through callbacks that the
server posts onto its event loop.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ledex.engine.failures import Failure
from ledex.engine import ranking
from ledex.engine.fixer import CandidateResult, FixResult

# Entry states: what the diagnostics' data and the code actions tell the editor.
QUEUED, RUNNING, READY, FAILED, CANCELLED = "queued", "running", "ready", "failed", "cancelled"


def lower_priority() -> None:
    """Nice the calling worker thread (Linux schedules threads individually): llama.cpp
    computes on the thread that calls it, and on a 2-core machine the event loop must win
    the core whenever the editor asks something."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]


def cache_key(failure: Failure, code: str | None) -> tuple[str, ...]:
    """(code, failure): the suspect file's text, the test's text and what the test said."""
    return (failure.test, failure.message, failure.suspect.path if failure.suspect else "",
            failure.suspect.qualname if failure.suspect else "", digest(code), digest(failure.test_source))


@dataclass
class Entry:
    """One failing test as the server sees it, with the fix work for it."""

    failure: Failure
    code: str | None  # the suspect file's text the fix is computed against
    state: str = QUEUED
    episode_id: str | None = None
    candidates: list[CandidateResult] = field(default_factory=list)  # in arrival order (= episode idx)
    model: str = ""
    model_version: str = ""
    error: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    progress_token: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return cache_key(self.failure, self.code)

    @property
    def result(self) -> FixResult:
        return FixResult(self.failure, list(self.candidates), self.model)

    @property
    def ranked(self) -> list[tuple[int, CandidateResult]]:
        """(episode idx, candidate) with a patch, best first (the one rule: engine/ranking.py)."""
        return [(i, c) for i, c in ranking.rank_indexed(self.candidates) if c.patch is not None]


class Jobs:
    """Two single-thread pools (tests, fixes) plus the fix cache."""

    def __init__(self) -> None:
        self._tests = ThreadPoolExecutor(1, thread_name_prefix="ledex-tests", initializer=lower_priority)
        self._fixes = ThreadPoolExecutor(1, thread_name_prefix="ledex-fix", initializer=lower_priority)
        self._running = 0
        self._lock = threading.Lock()
        self.cache: dict[tuple[str, ...], Entry] = {}

    @property
    def busy(self) -> bool:
        return self._running > 0

    def _track(self, work: Callable[[], object]) -> Callable[[], object]:
        def tracked():
            with self._lock:
                self._running += 1
            try:
                return work()
            finally:
                with self._lock:
                    self._running -= 1
        return tracked

    def run_tests(self, work: Callable[[], object]) -> Future:
        return self._tests.submit(self._track(work))

    def fix(self, entry: Entry, work: Callable[[Entry], object]) -> Future:
        """Queue the fix for `entry`; skipped if its cancel flag is set before a worker takes it."""
        return self._fixes.submit(self._track(lambda: None if entry.cancel.is_set() else work(entry)))

    def cached(self, entry: Entry) -> Entry | None:
        found = self.cache.get(entry.key)
        return found if found is not None and found.state == READY else None

    def remember(self, entry: Entry) -> None:
        if entry.state == READY:
            self.cache[entry.key] = entry

    def shutdown(self) -> None:
        self._tests.shutdown(wait=False, cancel_futures=True)
        self._fixes.shutdown(wait=False, cancel_futures=True)
