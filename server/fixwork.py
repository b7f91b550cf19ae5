"""The fix job for one problem (runs on the fix thread) and its side effects: progress (or,
for clients without work-done progress, a message when it starts and ends), the episode log,
republished diagnostics.

A problem is what `ledex fix` fixes as one: a failing test, or the failing tests that share
their top suspect (one set of candidates, each verified against all of them); candidates
come for the top FixConfig.suspects suspects in turn, until one gets a verified fix.

Two turns per problem, as `ledex fix` runs them (fresh-user run X5: one problem's model rounds
held the fix thread for minutes while a later problem's search would have fixed it in
seconds): the cheap search first; when it leaves the problem without a verified fix, the
model's rounds are queued behind the problems already waiting, so every problem queued
together is searched before any gets model rounds. The problem keeps its model lease, fix
engine and episode across the two turns (a promotion meanwhile applies to the next problem).

`folder` below is the workspace Folder (folder.py) the problem belongs to: its root,
settings, episode log and model; `folder.server` is the language server. The problem's
state lives in its Entry (jobs.py) and changes only through Entry's methods.

Episodes: one per (code, problem) the server tries to fix. Started when the job starts,
every candidate added as it arrives (with the suspect it patches), the outcome set by the
commands and edits that follow. A broken log costs the log, never the fix: errors are shown
once and the job goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from lsprotocol import types as lsp

from ledex.engine.backends import Sampling
from ledex.engine.failures import Failure
from ledex.engine.fixer import (SEARCH_DEFAULT, CandidateResult, FixConfig, FixEngine, FixResult, problem_for,
                                suspects_to_try)
from ledex.engine.localize import Suspect
from ledex.engine.ranking import risk_words
from ledex.sandbox import Limits
from ledex.server.diagnostics import state_text
from ledex.server.jobs import READY, Entry

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
    """Record the episode's outcome (e.g. "reverted"; chosen: candidate idx) in the folder's
    episode log; False if there is no log or writing failed (the user is told)."""
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
        pass_rate=c.pass_rate, reason=c.reason, round=c.round, suspect=c.suspect, source=c.source))


# --- the job --------------------------------------------------------------------------------

def suspects_of(failure: Failure) -> list[Suspect]:
    """The suspects a fix may patch, most suspicious first: the top `FixConfig.suspects`, as
    for `ledex fix` (the engine tries them in turn until one gets a verified fix)."""
    return suspects_to_try(failure, FixConfig.suspects)


@dataclass
class Turns:
    """What a problem keeps from its search turn for its model turn: the leased backend (given
    back when the problem's job ends), the engine and the search's result."""

    host: object  # modelhost.ModelHost the lease came from
    backend: object
    engine: FixEngine | None = None
    searched: FixResult | None = None


def start(folder, entry: Entry) -> None:
    """Queue the fix for a new problem (loop thread): its search turn, or with the search off
    its one turn."""
    if entry.failure.suspect is None or entry.code is None:
        entry.fail("no function in the workspace to fix")
        return
    title = f"ledex: fixing {_named(entry)}"
    entry.progress_token = folder.server.work_progress.begin(title, "queued", cancellable=True)
    _queue(folder, entry, "search" if folder.settings.search else "search+model")


def _queue(folder, entry: Entry, stages: str) -> None:
    future = folder.jobs.fix(entry, lambda e: run(folder, e, stages), rank=1 if stages == "model" else 0)
    future.add_done_callback(lambda f: folder.post(turn_done, folder, entry, f))


def turn_done(folder, entry: Entry, future) -> None:
    """Back on the loop after a turn: a search that left the problem to the model queues the
    model's turn behind the problems waiting now (unless another problem's fix covers it:
    cover); otherwise the problem's job is finished."""
    if not future.cancelled() and future.exception() is None and future.result() == "model" \
            and not entry.cancel.is_set():
        if entry.covered_by is None:
            folder.server.work_progress.report(entry.progress_token, waiting_text(entry))
            _queue(folder, entry, "model")
            return
        entry.finish()
    finished(folder, entry, future)


def waiting_text(entry: Entry) -> str:
    """The progress message of a problem the search left to the model: whether the search verified
    a fix that may fit the tests rather than the bug (the model is asked too: FixEngine.needs_model)
    or none (fresh-user run X12 F4: "no verified fix" was said of a verified `3 - rem` -> `4 - rem`)."""
    risky = next((c for c in entry.candidates if c.verified and risk_words(c)), None)
    if risky is not None:
        return f"search verified a fix, but {risk_words(risky)}: waiting to ask the model too"
    return "searched, no verified fix: waiting for the model"


def cover(folder, entry: Entry) -> None:
    """Loop thread, a candidate of `entry` verified: the other active problems that another
    problem's verified fix repairs (covering_test, the rule the fix thread applies too) get no
    further turn; their diagnostics point at that fix. Fresh-user run X8: one bug seen as three
    problems (two of them suspecting the wrong function) got minutes of model rounds for the
    two after one problem's verified fix already made their tests pass."""
    for other in folder.fixes():
        if other is not entry and other.active and other.covered_by is None:
            other.covered_by = covering_test(folder, other)


def covering_test(folder, entry: Entry) -> str | None:
    """Fix thread: the test of another current problem with a verified candidate that makes every
    test of `entry` pass (as cover() decides on the loop, which runs it only after this thread has
    gone on to the next turn); None when there is none or `entry` has a verified fix of its own.
    The entries are read as one C-level copy of the folder's table (atomic under the GIL)."""
    if any(c.verified for c in list(entry.candidates)):
        return None
    for other in {id(e): e for e in list(folder.entries.values())}.values():
        if other is not entry and any(c.verified and set(entry.tests) <= set(c.related_passed)
                                      for c in list(other.candidates)):
            return other.failure.test
    return None


def _named(entry: Entry) -> str:
    """The problem in words: its test, and how many others fail with it."""
    others = len(entry.members) - 1
    return entry.failure.test + (f" (and {others} more failing test{'s' if others > 1 else ''})" if others else "")


def finished(folder, entry: Entry, future) -> None:
    """Back on the loop: give the model back, end progress, report a crash, republish."""
    turns, entry.turns = entry.turns, None
    if turns is not None:
        turns.host.release(turns.backend)
    crash = None if future.cancelled() else future.exception()
    entry.settle(crash)
    if crash is not None:
        folder.tell(f"fixing {entry.failure.test} failed: {crash}", lsp.MessageType.Error)
    folder.server.work_progress.end(entry.progress_token, state_text(entry))
    if not folder.server.features.work_done_progress and entry.state == READY and entry.offered:
        folder.tell(f"{entry.failure.test}: {state_text(entry)} (code actions on its diagnostic)",
                    lsp.MessageType.Info)  # no progress UI: say that the work it waited for is done
    _republish(folder, entry)


def run(folder, entry: Entry, stages: str = "search+model") -> str | None:
    """Fix thread, one turn (`stages` as FixEngine.fix takes them): reuse a cached result or
    generate and verify; log everything. "model" when the search turn left the problem to the
    model (turn_done queues that turn), else None."""
    if entry.covered_by is None:  # the loop's cover() may not have run yet for a fix verified just before
        entry.covered_by = covering_test(folder, entry)
    if entry.covered_by is not None:  # another problem's verified fix repairs it (cover), since it was queued
        entry.finish()
        return None
    entry.begin()
    if entry.turns is None:  # the problem's first turn
        folder.post(_republish, folder, entry)  # clients without progress read "looking for a fix…" there
        host = folder.models  # a settings change may swap the folder's model mid-fix: the lease is on this one
        backend = _load_model(host, entry, folder)
        if backend is None:
            return None
        entry.turns = Turns(host, backend)
    if stages == "model":
        return _generate(folder, entry, stages)
    return _first_turn(folder, entry, stages)


def _first_turn(folder, entry: Entry, stages: str) -> str | None:
    cached = folder.jobs.cached(entry)
    if cached is not None and cached.model != entry.model:
        cached = None  # a new model was promoted since: its answers may differ
    entry.episode_id = _log_start(folder, entry)
    if cached is None:
        return _generate(folder, entry, stages)
    for c in cached.candidates:
        _add(folder, entry, c)
    entry.finish()
    folder.jobs.remember(entry)
    return None


def _load_model(host, entry: Entry, folder):
    try:
        backend, entry.model_version = host.lease()
    except Exception as exc:  # ModelError, or the worker failing in ways of its own
        entry.fail(f"the model could not be loaded: {exc}")
        folder.post(folder.tell, entry.error, lsp.MessageType.Error)
        return None
    entry.model = backend.identity.id
    return backend


def _add(folder, entry: Entry, candidate: CandidateResult) -> None:
    """Record a candidate (or, seen again, its new explanation) in the entry and the episode log;
    a verified one is offered at once (the diagnostics are republished)."""
    idx = entry.add(candidate)
    again = idx is None
    if again:  # a verified search fix's explanation arrived after it was offered
        idx = entry.index_of(candidate)
        if idx is None or not candidate.verified:
            return
    if entry.episode_id:
        _log_candidate(folder, entry, idx, candidate)
    if candidate.verified:
        folder.post(_verified, folder, entry, candidate)


def _verified(folder, entry: Entry, candidate: CandidateResult) -> None:
    cover(folder, entry)
    _republish(folder, entry)


def _republish(folder, entry: Entry) -> None:
    if folder.is_current(entry):
        folder.publish()


def _generate(folder, entry: Entry, stages: str) -> str | None:
    """The engine's fix, as `ledex fix` runs it: one problem for the failures sharing a suspect
    (entry.failure.also), candidates for the top suspects in turn; here it stops at the first
    verified fix, and keeps to one sandbox run beside generation. "model" when this was the
    search turn and the model's rounds are still needed (FixEngine.needs_model)."""
    turns = entry.turns
    if turns.engine is None:
        # verify as the suite runs: the python / testCommand settings, else the folder's [tool.ledex]
        harness = folder.settings.harness(folder.root)
        turns.engine = FixEngine(turns.backend, folder.root, _config(folder.settings, harness))

    def progress(stage: str, done: int, total: int) -> None:
        """Engine progress callback: report "stage done/total" and a percentage on the entry's token."""
        pct = int(100 * done / total) if total else None
        folder.post(folder.server.work_progress.report, entry.progress_token, f"{stage} {done}/{total}", pct)

    result = turns.engine.fix(entry.failure, cancel=entry.cancel, progress=progress, stages=stages,
                              after=turns.searched, on_candidate=lambda c: _add(folder, entry, c))
    for candidate in result.candidates:  # callbacks may lag the futures: add any not seen yet
        if entry.index_of(candidate) is None:
            _add(folder, entry, candidate)
    if result.not_reproduced:
        entry.fail(f"not reproduced: {result.not_reproduced}")
        return None
    if stages == "search" and FixEngine.needs_model(result) and not entry.cancel.is_set():
        turns.searched = result
        return "model"
    entry.finish()
    folder.jobs.remember(entry)
    return None


def _config(s, harness) -> FixConfig:  # noqa: ANN001 - settings.Settings, project.Harness
    return FixConfig(samples=s.samples, rounds=s.rounds, sampling=Sampling(seed=s.seed),
                     limits=Limits(wall_s=s.testTimeoutS), stop_at_first=True,
                     harness=harness,
                     verify_workers=1,  # one sandbox run beside generation: the model keeps the other core
                     search=dataclasses.replace(SEARCH_DEFAULT, max_seconds=s.searchSeconds) if s.search else None)
