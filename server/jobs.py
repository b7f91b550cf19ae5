"""Background work for the language server and the lifecycle of one fix.

`Jobs`: test runs and fixes run on worker threads, never on the event loop, each with a
cancel flag; fix results are cached by (code, failures). One test run and one fix turn at a time
(a problem's search turns before any waiting model turn: RankedWorker):
the model uses every core it is given, and two generations at once would only slow each
other down. Queued work whose flag is set by the time a worker reaches it is skipped. The
server never blocks on these futures: results come back through callbacks that the server
posts onto its event loop.

`Entry`: one problem (a failing test, or the failing tests that share their top suspect,
as `ledex fix` groups them with failures.group_by_suspect) and its fix, from queued to
offered or withdrawn. Its state changes only through its methods.

Used by folder.py and fixwork.py; run the server with `python -m ledex.server`.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import itertools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ledex.engine.failures import Failure
from ledex.engine import ranking
from ledex.engine.fixer import CandidateResult


def worth_offering(candidate: CandidateResult) -> bool:
    """A quick fix is offered when it is verified, or makes some of the problem's failing tests
    pass and breaks no passing test. Fresh-user run X9: candidates that left every failing test
    failing, or broke 73 passing tests, were one-keystroke "Fix (unverified, 97% of tests pass)"
    (the share of the whole re-run, which was 99% before any edit). They stay in the explanation."""
    return candidate.verified or (candidate.failing_passed[0] > 0 and candidate.broke == 0 and not candidate.broke_run)


class FixState(enum.StrEnum):
    """Where one problem's fix stands. The value is what a diagnostic's `data.state` says
    (editors read it), so it does not change with the names here."""

    QUEUED = "queued"  # waiting for the fix thread
    RUNNING = "running"  # generating candidates and verifying them (the two overlap, fixer.py)
    READY = "ready"  # done: candidates offered in the code actions (verified first), or none found
    FAILED = "failed"  # could not run: no function to fix, the model did not load, a crash
    CANCELLED = "cancelled"  # withdrawn: the code it was fixing changed, or the user cancelled


QUEUED, RUNNING, READY, FAILED, CANCELLED = FixState


def lower_priority() -> None:
    """Nice the calling worker thread (Linux schedules threads individually): llama.cpp
    computes on the thread that calls it, and on a 2-core machine the event loop must win
    the core whenever the editor asks something."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def digest(text: str | None) -> str:
    """First 16 hex digits of the SHA-256 of the UTF-8 text (None counts as "")."""
    return hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]


def cache_key(members: tuple[Failure, ...], codes: dict[str, str | None]) -> tuple[str, ...]:
    """(code, failures): what each failing test said and its text, the top suspect, and the
    text of every file a candidate may patch (the suspects tried, fixwork.suspects_of)."""
    top = members[0].suspect
    said = tuple(f"{m.test}\0{m.message}\0{digest(m.test_source)}" for m in members)
    return (*said, top.path if top else "", top.qualname if top else "",
            *(f"{path}\0{digest(text)}" for path, text in sorted(codes.items())))


@dataclass(eq=False)
class Entry:
    """One problem as the server sees it, and its fix's lifecycle (states: FixState).

    `failure` is what the fix engine gets: one failing test, or a group of them sharing their
    top suspect (its `also` names the others); `members` are those tests as each was reported
    (a diagnostic each). `code` is the top suspect's file text the fix is computed against,
    `codes` that of every file a candidate may patch (the top `FixConfig.suspects` suspects).
    Loop thread: begin/finish/fail/withdraw/settle; fix thread: begin, add, finish, fail."""

    failure: Failure
    code: str | None
    state: FixState = QUEUED
    episode_id: str | None = None
    candidates: list[CandidateResult] = field(default_factory=list)  # in arrival order (= episode idx)
    model: str = ""
    model_version: str = ""
    error: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    progress_token: str | None = None
    members: tuple[Failure, ...] = ()  # () = (failure,)
    codes: dict[str, str | None] = field(default_factory=dict)  # path -> text; the top suspect's is added
    turns: object = None  # fixwork.Turns: the model lease, engine and search result its two turns share
    # read from a JUnit report: its fix waits for ledex's own run number `awaiting_run` of these tests (None: found
    # by ledex's run). A report knows only the tests its runner ran; verification needs every test that passes.
    awaiting_run: int | None = None
    # the test of another problem whose verified fix makes every test of this one pass: no more turns (fixwork.cover)
    covered_by: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.members = self.members or (self.failure,)
        if self.failure.suspect is not None:
            self.codes.setdefault(self.failure.suspect.path, self.code)

    @property
    def key(self) -> tuple[str, ...]:
        """Fix-cache key: cache_key of the members and the code they may patch."""
        return cache_key(self.members, self.codes)

    @property
    def tests(self) -> tuple[str, ...]:
        """Test ids of the failures this entry covers."""
        return tuple(m.test for m in self.members)

    @property
    def active(self) -> bool:
        """Queued or running: a result is still to come."""
        return self.state in (QUEUED, RUNNING)

    def touches(self, rel: str, text: str) -> bool:
        """Would editing file `rel` to `text` make this fix stale (its code or its tests changed)?"""
        return (rel in self.codes and text != self.codes[rel]) or any(m.file == rel for m in self.members)

    # --- transitions ------------------------------------------------------------------------

    def begin(self) -> None:
        """The fix thread took it up (a fix withdrawn meanwhile stays withdrawn)."""
        if not self.cancel.is_set():
            self.state = RUNNING

    def add(self, candidate: CandidateResult) -> int | None:
        """Record a candidate (any thread); its index in the episode, or None if already there."""
        with self._lock:
            if any(c is candidate for c in self.candidates):
                return None
            self.candidates.append(candidate)
            return len(self.candidates) - 1

    def index_of(self, candidate: CandidateResult) -> int | None:
        """The candidate's index in the episode (any thread), None if it was never added."""
        with self._lock:
            return next((i for i, c in enumerate(self.candidates) if c is candidate), None)

    def finish(self) -> None:
        """Every candidate is in: offered, unless the fix was withdrawn meanwhile."""
        if not self.cancel.is_set():
            self.state = READY

    def fail(self, error: str) -> None:
        """Mark the entry FAILED with `error`."""
        self.state, self.error = FAILED, error

    def withdraw(self) -> None:
        """Stop the work (the code being fixed changed, the user cancelled or dismissed it)."""
        self.cancel.set()
        if self.active:
            self.state = CANCELLED

    def settle(self, crash: BaseException | None) -> None:
        """The job ended (loop thread): a crash fails it, a cancel that came first withdraws it."""
        if crash is not None:
            self.fail(str(crash))
        if self.cancel.is_set() and self.state != READY:
            self.state = CANCELLED

    @property
    def ranked(self) -> list[tuple[int, CandidateResult]]:
        """(episode idx, candidate) with a patch, best first (the one rule: engine/ranking.py)."""
        return [(i, c) for i, c in ranking.rank_indexed(self.candidates) if c.patch is not None]

    @property
    def offered(self) -> list[tuple[int, CandidateResult]]:
        """The ranked candidates worth a quick fix (worth_offering)."""
        return [(i, c) for i, c in self.ranked if worth_offering(c)]


class RankedWorker:
    """One worker thread that runs submitted work lowest `rank` first, in order within a rank;
    futures as concurrent.futures gives them (cancel works until the work starts). The fix
    thread's: a problem's search turn (rank 0) overtakes the model turns waiting (rank 1), so a
    failure found after a save waits for the turn under way at most, not for every queued
    problem's model rounds (fresh-user run X8)."""

    def __init__(self, name: str, initializer: Callable[[], None] = lambda: None) -> None:
        self._heap: list = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._initializer = initializer
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, work: Callable[[], object], rank: int = 0) -> Future:
        """Queue `work`; its Future. Raises RuntimeError after shutdown."""
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            heapq.heappush(self._heap, (rank, next(self._order), future, work))
            self._ready.notify()
        return future

    def _loop(self) -> None:
        self._initializer()
        while True:
            with self._ready:
                while not self._heap and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                _, _, future, work = heapq.heappop(self._heap)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel the queued work; the work under way finishes on its own (its thread is a daemon)."""
        with self._ready:
            self._closed = True
            for _, _, future, _ in self._heap:
                future.cancel()
            self._heap.clear()
            self._ready.notify()


class Jobs:
    """Two single-thread workers (tests; fixes, ranked: RankedWorker) plus the fix cache."""

    def __init__(self) -> None:
        self._tests = ThreadPoolExecutor(1, thread_name_prefix="ledex-tests", initializer=lower_priority)
        self._fixes = RankedWorker("ledex-fix", initializer=lower_priority)
        self._running = 0
        self._lock = threading.Lock()
        self.cache: dict[tuple[str, ...], Entry] = {}

    @property
    def busy(self) -> bool:
        """True while a test run or fix is executing."""
        return self._running > 0

    def _track(self, work: Callable[[], object]) -> Callable[[], object]:
        def tracked():
            """Run `work`, counting it as running meanwhile (see busy)."""
            with self._lock:
                self._running += 1
            try:
                return work()
            finally:
                with self._lock:
                    self._running -= 1
        return tracked

    def run_tests(self, work: Callable[[], object]) -> Future:
        """Queue `work` on the single test thread."""
        return self._tests.submit(self._track(work))

    def fix(self, entry: Entry, work: Callable[[Entry], object], rank: int = 0) -> Future:
        """Queue a turn of the fix for `entry` (lower `rank` first: RankedWorker); skipped if its
        cancel flag is set before the worker takes it."""
        return self._fixes.submit(self._track(lambda: None if entry.cancel.is_set() else work(entry)), rank)

    def cached(self, entry: Entry) -> Entry | None:
        """A READY entry cached under the same key, else None."""
        found = self.cache.get(entry.key)
        return found if found is not None and found.state == READY else None

    def remember(self, entry: Entry) -> None:
        """Cache the entry under its key if it is READY."""
        if entry.state == READY:
            self.cache[entry.key] = entry

    def shutdown(self) -> None:
        """Stop both pools without waiting; queued work is cancelled."""
        self._tests.shutdown(wait=False, cancel_futures=True)
        self._fixes.shutdown()
