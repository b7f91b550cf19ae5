"""The fix job for one failure (runs on the fix thread) and its side effects: work-done
progress, the episode log, republished diagnostics.

Episodes: one per (code, failure) the server tries to fix. Started when the job starts,
every candidate added as it arrives, the outcome set by the commands and edits that follow.
A broken log costs the log, never the fix: errors are shown once and the job goes on.
"""

from __future__ import annotations

import logging
import threading

from lsprotocol import types as lsp

from ledex.engine.backends import Sampling
from ledex.engine.fixer import CandidateResult, FixConfig, FixEngine, problem_for
from ledex.sandbox import Limits
from ledex.server.jobs import CANCELLED, FAILED, READY, RUNNING, Entry

log = logging.getLogger("ledex.server")


# --- work-done progress (loop thread) -------------------------------------------------------

def _supports_progress(server) -> bool:
    window = server.client_capabilities.window if server.client_capabilities else None
    return bool(window and window.work_done_progress)


def progress_begin(server, title: str, message: str = "", cancellable: bool = False) -> str | None:
    """Create a server-initiated progress and begin it once the client has created the token."""
    if not _supports_progress(server):
        return None
    token = server.new_token()
    server._progress_state = getattr(server, "_progress_state", {})
    server._progress_early = getattr(server, "_progress_early", {})
    server._progress_state[token] = "creating"

    def created(*_):
        latest, pct = server._progress_early.pop(token, (message, 0))  # reported before the client answered
        if server._progress_state.get(token) == "ended":
            server.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title, message=latest))
            server.work_done_progress.end(token, lsp.WorkDoneProgressEnd())
            server._progress_state.pop(token, None)
            return
        server._progress_state[token] = "begun"
        server.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title, cancellable=cancellable,
                                                                          message=latest, percentage=pct or 0))
    server.work_done_progress.create(token, callback=created)
    return token


def progress_report(server, token: str | None, message: str, percentage: int | None = None) -> None:
    state = getattr(server, "_progress_state", {}).get(token) if token else None
    if state == "begun":
        server.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=message, percentage=percentage))
    elif state in ("creating", "ended"):
        server._progress_early[token] = (message, percentage)  # shown by begin once the client created it


def progress_end(server, token: str | None, message: str = "") -> None:
    state = getattr(server, "_progress_state", {})
    if not token or token not in state:
        return
    if state[token] == "begun":
        server.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message or None))
        del state[token]
    else:
        state[token] = "ended"  # the client has not answered create yet: end right after begin


# --- episode log (any thread) ---------------------------------------------------------------

def _logged(server, what: str, fn, *args, **kwargs):
    log_ = server.episodes
    if log_ is None:
        return None
    try:
        return fn(log_, *args, **kwargs)
    except Exception as exc:
        log.exception("episode log: %s failed", what)
        server.post(server.tell, f"could not record {what} in {log_.path}: {exc}", lsp.MessageType.Error)
        return None


def log_outcome(server, episode_id: str, outcome: str, chosen: int | None = None) -> bool:
    return bool(_logged(server, f"the outcome {outcome}", lambda l: l.set_outcome(episode_id, outcome, chosen)))


def _log_start(server, entry: Entry) -> str | None:
    failure, problem = entry.failure, problem_for(entry.failure)
    return _logged(server, "a new episode", lambda l: l.start(
        workspace=str(server.root), test=failure.test, test_file=failure.file, suspect_path=failure.suspect.path,
        suspect_function=failure.suspect.qualname, task=problem.task, wrong_code=problem.wrong_code,
        feedback=problem.feedback, model=entry.model, model_version=entry.model_version))


def _log_candidate(server, entry: Entry, idx: int, c: CandidateResult) -> None:
    _logged(server, "a candidate", lambda l: l.add_candidate(
        entry.episode_id, idx, explanation=c.explanation, code=c.code, diff=c.diff, verified=c.verified,
        pass_rate=c.pass_rate, reason=c.reason, round=c.round))


# --- the job --------------------------------------------------------------------------------

def start(server, entry: Entry) -> None:
    """Queue the fix for a new failure (loop thread)."""
    if entry.failure.suspect is None or entry.code is None:
        entry.state, entry.error = FAILED, "no function in the workspace to fix"
        return
    entry.progress_token = progress_begin(server, f"ledex: fixing {entry.failure.test}", "queued", cancellable=True)
    future = server.jobs.fix(entry, lambda e: run(server, e))
    future.add_done_callback(lambda f: server.post(finished, server, entry, f))


def finished(server, entry: Entry, future) -> None:
    """Back on the loop: end progress, report a crash, republish."""
    progress_end(server, entry.progress_token, entry.state)
    if not future.cancelled() and future.exception() is not None:
        entry.state, entry.error = FAILED, str(future.exception())
        server.tell(f"fixing {entry.failure.test} failed: {future.exception()}", lsp.MessageType.Error)
    if entry.cancel.is_set() and entry.state != READY:
        entry.state = CANCELLED
    if server.entries.get(entry.failure.test) is entry:
        server.publish()


def run(server, entry: Entry) -> None:
    """Fix thread: reuse a cached result or generate and verify; log everything."""
    entry.state = RUNNING
    backend = _load_model(server, entry)
    if backend is None:
        return
    try:
        _run_with(server, entry, backend)
    finally:
        server.models.release(backend)


def _run_with(server, entry: Entry, backend) -> None:
    cached = server.jobs.cached(entry)
    if cached is not None and cached.model != entry.model:
        cached = None  # a new model was promoted since: its answers may differ
    entry.episode_id = _log_start(server, entry)
    if cached is not None:
        for c in cached.candidates:
            _add(server, entry, c)
    else:
        _generate(server, entry, backend)
    if not entry.cancel.is_set():
        entry.state = READY
        server.jobs.remember(entry)


def _load_model(server, entry: Entry):
    try:
        backend, entry.model_version = server.models.lease()
    except Exception as exc:  # ModelError, or the worker failing in ways of its own
        entry.state, entry.error = FAILED, f"the model could not be loaded: {exc}"
        server.post(server.tell, entry.error, lsp.MessageType.Error)
        return None
    entry.model = backend.identity.id
    return backend


_add_lock = threading.Lock()


def _add(server, entry: Entry, candidate: CandidateResult) -> None:
    with _add_lock:
        if any(c is candidate for c in entry.candidates):
            return
        idx = len(entry.candidates)
        entry.candidates.append(candidate)
    if entry.episode_id:
        _log_candidate(server, entry, idx, candidate)
    if candidate.verified:
        server.post(_republish, server, entry)


def _republish(server, entry: Entry) -> None:
    if server.entries.get(entry.failure.test) is entry:
        server.publish()


def _generate(server, entry: Entry, backend) -> None:
    s = server.settings
    config = FixConfig(samples=s.samples, rounds=s.rounds, sampling=Sampling(seed=s.seed),
                       limits=Limits(wall_s=s.testTimeoutS), python=s.python or None, stop_at_first=True,
                       test_command=tuple(s.test_command) if s.test_command else None,  # verify as the suite runs
                       verify_workers=1)  # one sandbox run beside generation: the model keeps the other core

    def progress(stage: str, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else None
        server.post(progress_report, server, entry.progress_token, f"{stage} {done}/{total}", pct)

    engine = FixEngine(backend, server.root, config)
    result = engine.fix(entry.failure, cancel=entry.cancel, progress=progress,
                        on_candidate=lambda c: _add(server, entry, c))
    for candidate in result.candidates:  # callbacks may lag the futures: add any not seen yet
        _add(server, entry, candidate)
