"""The fix job for one failure (runs on the fix thread) and its side effects: progress (or,
for clients without work-done progress, a message when it starts and ends), the episode log,
republished diagnostics.

`folder` below is the workspace Folder (folder.py) the failure belongs to: its root,
settings, episode log and model; `folder.server` is the language server.

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
from ledex.server import progress as shown  # (`progress` is the engine's callback below)
from ledex.server.diagnostics import state_text
from ledex.server.jobs import CANCELLED, FAILED, READY, RUNNING, Entry

log = logging.getLogger("ledex.server")


# --- episode log (any thread) ---------------------------------------------------------------

def _logged(folder, what: str, fn, *args, **kwargs):
    log_ = folder.episodes
    if log_ is None:
        return None
    try:
        return fn(log_, *args, **kwargs)
    except Exception as exc:
        log.exception("episode log: %s failed", what)
        folder.post(folder.tell, f"could not record {what} in {log_.path}: {exc}", lsp.MessageType.Error)
        return None


def log_outcome(folder, episode_id: str, outcome: str, chosen: int | None = None) -> bool:
    return bool(_logged(folder, f"the outcome {outcome}", lambda l: l.set_outcome(episode_id, outcome, chosen)))


def _log_start(folder, entry: Entry) -> str | None:
    failure, problem = entry.failure, problem_for(entry.failure)
    return _logged(folder, "a new episode", lambda l: l.start(
        workspace=str(folder.root), test=failure.test, test_file=failure.file, suspect_path=failure.suspect.path,
        suspect_function=failure.suspect.qualname, task=problem.task, wrong_code=problem.wrong_code,
        feedback=problem.feedback, model=entry.model, model_version=entry.model_version))


def _log_candidate(folder, entry: Entry, idx: int, c: CandidateResult) -> None:
    _logged(folder, "a candidate", lambda l: l.add_candidate(
        entry.episode_id, idx, explanation=c.explanation, code=c.code, diff=c.diff, verified=c.verified,
        pass_rate=c.pass_rate, reason=c.reason, round=c.round))


# --- the job --------------------------------------------------------------------------------

def start(folder, entry: Entry) -> None:
    """Queue the fix for a new failure (loop thread)."""
    if entry.failure.suspect is None or entry.code is None:
        entry.state, entry.error = FAILED, "no function in the workspace to fix"
        return
    entry.progress_token = shown.begin(folder.server, f"ledex: fixing {entry.failure.test}", "queued", cancellable=True)
    future = folder.jobs.fix(entry, lambda e: run(folder, e))
    future.add_done_callback(lambda f: folder.post(finished, folder, entry, f))


def finished(folder, entry: Entry, future) -> None:
    """Back on the loop: end progress, report a crash, republish."""
    if not future.cancelled() and future.exception() is not None:
        entry.state, entry.error = FAILED, str(future.exception())
        folder.tell(f"fixing {entry.failure.test} failed: {future.exception()}", lsp.MessageType.Error)
    if entry.cancel.is_set() and entry.state != READY:
        entry.state = CANCELLED
    shown.end(folder.server, entry.progress_token, state_text(entry))
    if not folder.server.features.work_done_progress and entry.state == READY and entry.ranked:
        folder.tell(f"{entry.failure.test}: {state_text(entry)} (code actions on its diagnostic)",
                    lsp.MessageType.Info)  # no progress UI: say that the work it waited for is done
    if folder.entries.get(entry.failure.test) is entry:
        folder.publish()


def run(folder, entry: Entry) -> None:
    """Fix thread: reuse a cached result or generate and verify; log everything."""
    entry.state = RUNNING
    folder.post(_republish, folder, entry)  # clients without progress read "looking for a fix…" there
    host = folder.models  # a settings change may swap the folder's model mid-fix: return the lease here
    backend = _load_model(host, entry, folder)
    if backend is None:
        return
    try:
        _run_with(folder, entry, backend)
    finally:
        host.release(backend)


def _run_with(folder, entry: Entry, backend) -> None:
    cached = folder.jobs.cached(entry)
    if cached is not None and cached.model != entry.model:
        cached = None  # a new model was promoted since: its answers may differ
    entry.episode_id = _log_start(folder, entry)
    if cached is not None:
        for c in cached.candidates:
            _add(folder, entry, c)
    else:
        _generate(folder, entry, backend)
    if not entry.cancel.is_set():
        entry.state = READY
        folder.jobs.remember(entry)


def _load_model(host, entry: Entry, folder):
    try:
        backend, entry.model_version = host.lease()
    except Exception as exc:  # ModelError, or the worker failing in ways of its own
        entry.state, entry.error = FAILED, f"the model could not be loaded: {exc}"
        folder.post(folder.tell, entry.error, lsp.MessageType.Error)
        return None
    entry.model = backend.identity.id
    return backend


_add_lock = threading.Lock()


def _add(folder, entry: Entry, candidate: CandidateResult) -> None:
    with _add_lock:
        if any(c is candidate for c in entry.candidates):
            return
        idx = len(entry.candidates)
        entry.candidates.append(candidate)
    if entry.episode_id:
        _log_candidate(folder, entry, idx, candidate)
    if candidate.verified:
        folder.post(_republish, folder, entry)


def _republish(folder, entry: Entry) -> None:
    if folder.entries.get(entry.failure.test) is entry:
        folder.publish()


def _generate(folder, entry: Entry, backend) -> None:
    s = folder.settings
    config = FixConfig(samples=s.samples, rounds=s.rounds, sampling=Sampling(seed=s.seed),
                       limits=Limits(wall_s=s.testTimeoutS), python=s.python or None, stop_at_first=True,
                       test_command=tuple(s.test_command) if s.test_command else None,  # verify as the suite runs
                       verify_workers=1,  # one sandbox run beside generation: the model keeps the other core
                       suspects=1)  # an entry's code cache, code actions and episode are of its top suspect only

    def progress(stage: str, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else None
        folder.post(shown.report, folder.server, entry.progress_token, f"{stage} {done}/{total}", pct)

    engine = FixEngine(backend, folder.root, config)
    result = engine.fix(entry.failure, cancel=entry.cancel, progress=progress,
                        on_candidate=lambda c: _add(folder, entry, c))
    for candidate in result.candidates:  # callbacks may lag the futures: add any not seen yet
        _add(folder, entry, candidate)
