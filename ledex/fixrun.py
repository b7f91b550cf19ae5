"""One `ledex fix` run's problems, in order (FixRun): every problem's search first, then the
model's turn for those it did not fix; each verified fix written (--apply) or put into a scratch
copy of the project (a dry run), and the problems still waiting re-run after it, so those it also
repaired count as fixed and the others are fixed against the code as it now is.

Used by ledex/cli.py (`ledex fix`); tested end to end in tests/test_cli.py.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from ledex.engine import rerun
from ledex.engine.apply import ApplyError, apply_patch
from ledex.engine.backends import PromptTooLong, check_fits
from ledex.engine.failures import DiscoveryError, Failure, discover, group_by_suspect
from ledex.engine.fixer import CandidateResult, FixEngine, FixResult, problem_for
from ledex.engine.format import build_messages
from ledex.engine.ranking import overfit_risk, risk_words
from ledex.sandbox import Limits, copy_workspace


def keeps_reruns(fresh: Failure, before: Failure, failing: dict) -> Failure:
    """`fresh` (from re-running only the failing tests after a fix) still verified against what
    `before` was: the rest of its file and the importers' tests that passed in the full run, but
    not the tests failing now (`failing`: test -> Failure). Fresh-user run X7, idna with two bugs:
    after the first fix the second problem re-ran 5 tests instead of 22, and a candidate breaking 3
    passing tests of its own file was marked verified."""
    def kept(*lists: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t for t in dict.fromkeys(t for tests in lists for t in tests) if t not in failing)
    return replace(fresh, siblings=kept(before.siblings, fresh.siblings),
                   passing_siblings=kept(before.passing_siblings, fresh.passing_siblings))


def discovery_limits(args: argparse.Namespace) -> Limits:
    """The sandbox limits of a run of the whole suite (--discovery-timeout s, --test-timeout s per test)."""
    return Limits(wall_s=args.discovery_timeout, cpu_s=int(args.discovery_timeout), test_timeout_s=args.test_timeout)


class NoScratchCopy(Exception):
    """The dry run's copy of the project could not be made; the message says why and what to do."""


class FixRun:
    """The failures of one `ledex fix`, in order; with --apply, the ones still waiting are
    re-run after each written fix (fresh suspects, and those it repaired count as fixed)."""

    def __init__(self, args: argparse.Namespace, workspace: Path, reporter, engine: FixEngine):
        self.args, self.workspace, self.reporter, self.engine = args, workspace, reporter, engine
        self.handled: list = []  # Handled, in order (kept when the run is interrupted)
        self.cancel = threading.Event()  # set by Ctrl-C: the fix under way stops
        self.waiting = 0  # problems still queued after the one being fixed (for progress)
        self.current: Failure | None = None  # the failure being fixed, and its candidates finished so far
        self.partial: list[CandidateResult] = []
        self.started = 0.0  # perf_counter() when the current failure began
        self.copy: Path | None = None  # dry run: the scratch copy holding the verified fixes so far
        self.copy_error = ""  # dry run: why that copy could not be made (then the run goes on without it)
        self.assumed: list[str] = []  # dry run: the tests whose fixes are in the copy, in order
        self.messages: dict[str, str] = {}  # each failing test's latest message (discovery, then re-runs)
        self.again: dict[str, str] = {}  # the tests of problems tried again -> the fix that changed their failure
        self.attempts = 0  # problems started, tries again included (the progress line's count)
        # problems searched and not fixed, waiting for the model's turn: their tests -> (the search's
        # result, each test's message then, the problem's number in the progress line)
        self.searched: dict[tuple[str, ...], tuple[FixResult, dict[str, str | None], int]] = {}
        self.numbers: dict[tuple[str, ...], int] = {}  # the problem being fixed again -> its number

    def all(self, failures: list[Failure], context: tuple[Failure, ...] = ()) -> list:
        """Handled for each problem (failures sharing a top suspect are one), largest first, then in
        discovery order; each is reported as it is done. Also kept in self.handled (for an interrupted run).
        Every problem's cheap search comes before any problem's model rounds (fresh-user run X5:
        the first problem's model rounds ran for minutes while a later one's search would have
        fixed it in seconds): a problem the search did not fix goes back to the end of the queue
        (FixRun.searched) for the model's turn. `context`: failing tests not to fix (`--test`'s
        unselected ones) that count as a problem's related failing tests."""
        queue, handled = list(failures), self.handled
        self.messages.update((f.test, f.message) for f in failures)
        while queue:
            # the largest group of failures sharing a top suspect first (then discovery order): its fix often
            # repairs the others (hyperlink 21.0.0, fresh-user run X11 F2: four one-test problems with wrong
            # suspects were searched for 100 s before the 13-test problem whose fix repaired them all)
            group = max(group_by_suspect(queue, context),
                        key=lambda g: (self.key(g) not in self.searched, 1 + len(g.also)))
            members = [f for f in queue if f.test in (group.test, *group.also)]
            queue = [f for f in queue if f.test not in (group.test, *group.also)]
            searched = self.take_searched(group)
            later = bool(queue) and self.engine.config.search is not None  # other problems could search first
            stages = "model" if searched else "search" if later else "search+model"
            self.waiting = sum(self.key(g) not in self.searched for g in group_by_suspect(queue))
            item = self.one(group, stages, searched)
            if item is None:  # searched, not fixed: the model's turn comes after the others' search
                queue += members
                continue
            self.reporter.result(item)
            handled.append(item)
            earlier = [h for h in handled[:-1] if not h.fixed and h.error is None]  # handled before, no fix
            if (queue or earlier) and self.in_place(item):
                queue = self.recheck(queue, item.result.failure.test, handled, earlier)
        return handled

    @staticmethod
    def key(group: Failure) -> tuple[str, ...]:
        """A problem's tests, which name it in FixRun.searched."""
        return (group.test, *group.also)

    def take_searched(self, group: Failure) -> FixResult | None:
        """The search's result for `group` when it was searched and its tests still fail as they
        did then; None when it was not (or a written fix changed its failures: search it again)."""
        found = self.searched.pop(self.key(group), None)
        if found is None:
            return None
        result, messages, number = found
        if any(self.messages.get(t) != said for t, said in messages.items()):
            return None
        self.numbers[self.key(group)] = number
        return result

    def in_place(self, item) -> bool:  # noqa: ANN001 - a cli_output.Handled
        """Whether the problem's best verified fix is now in the code the problems after it are
        fixed in: written (--apply), or in a dry run written to a scratch copy of the project that
        the run goes on in, so the dry run verifies what --apply would write (a test failing
        through two bugs passes only with both fixes: fresh-user run X3, roman 5.2, 5 of 8 failures
        verified dry against 8 of 8 with --apply). With --apply, a fix that could not be written (an
        unwritable file) goes into that copy, and the run goes on there as a dry run would, every
        later written fix put in the copy too (fresh-user run X7: the failures it repairs were given
        model rounds of their own)."""
        best = item.result.best
        if best is None or self.refusal(best):  # what --apply would not write is not in the copy either
            return False
        if self.args.apply and item.applied is not None:
            return self.copy is None or self._in_copy(item, best)
        if self.args.apply and not item.not_applied:
            return False
        if not self._in_copy(item, best):
            return False
        self.assumed.append(item.result.failure.test)
        return True

    def _in_copy(self, item, best: CandidateResult) -> bool:  # noqa: ANN001 - a cli_output.Handled
        try:
            apply_patch(self.scratch(), best.patch, keep_read_only=False)
        except (ApplyError, NoScratchCopy) as exc:
            self.reporter.note(f"{item.result.failure.test}: the problems after it are tried without its fix: {exc}")
            return False
        return True

    def scratch(self) -> Path:
        """The dry run's copy of the project (made once, on first need; copy_workspace's rules: no
        virtualenvs, VCS data or caches, as in every sandbox run); the engine moves to it.
        NoScratchCopy when it cannot be made (no room in $TMPDIR, a read-only $TMPDIR: fresh-user
        run X4, a 30 MB tmpfs stopped the whole run); tried once per run, the run goes on without it."""
        if self.copy is None:
            if self.copy_error:
                raise NoScratchCopy(self.copy_error)
            folder = None
            try:
                with self.reporter.status("copying the project to try each fix with the ones before it", key="copy"):
                    folder = Path(tempfile.mkdtemp(prefix="ledex-dry-run-"))
                    copy_workspace(self.workspace, folder / self.workspace.name, can_link=True)
            except OSError as exc:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                self.copy_error = (f"no copy of the project could be made in {tempfile.gettempdir()} "
                                   f"({exc.strerror or exc}); set TMPDIR to a folder with room for the project, "
                                   "or run --apply on a copy of it")
                raise NoScratchCopy(self.copy_error) from exc
            self.copy = folder / self.workspace.name
            self.engine.moved_to(self.copy)
        return self.copy

    def close(self) -> None:
        """Removes the dry run's copy, if one was made."""
        if self.copy is not None:
            shutil.rmtree(self.copy.parent, ignore_errors=True)
            self.copy = None

    def one(self, failure: Failure, stages: str = "search+model", searched: FixResult | None = None):
        """Handled for one problem: its candidates (FixEngine.fix: `stages`, going on from
        `searched`, its search's result), written with --apply; a suspect too long for the model's
        context gives Handled.error (with the search's candidates). None when `stages` is "search"
        and the model is still needed: the result waits in self.searched for the model's turn."""
        from ledex.cli_output import Handled

        key = self.key(failure)
        number = self.numbers.pop(key, None)
        if number is None:
            self.attempts += 1
            number = self.attempts
        self.current, self.partial, self.started = failure, list(searched.candidates if searched else ()), time.perf_counter()
        result = searched
        turn = "the model's turn" if stages == "model" else ""
        with self.reporter.progress(failure, number, self.attempts + self.waiting, turn) as progress:
            fix = functools.partial(self.engine.fix, failure, progress=progress, cancel=self.cancel,
                                    on_candidate=self.partial.append)
            try:
                if "search" in stages:
                    result = fix(stages="search")
                    if stages == "search" and self.engine.needs_model(result) and not self.cancel.is_set():
                        self.current = None
                        self.searched[key] = (result, {t: self.messages.get(t) for t in key}, number)
                        return None
                if "model" in stages and self.engine.needs_model(result) and not self.cancel.is_set():
                    self.check_prompt(failure)
                    result = fix(stages="model", after=result)
            except PromptTooLong as exc:
                self.current = None
                return Handled(result or FixResult(failure, model=self.engine.backend.identity.id), error=str(exc))
        self.current = None
        for note in result.search.notes if result.search else ():  # e.g. "no screening (...)": why search was slow
            self.reporter.note(f"{failure.test}: search: {note}")
        applied, refused = self.apply(result) if self.args.apply else (None, None)
        again = next((self.again[t] for t in (failure.test, *failure.also) if t in self.again), None)
        return Handled(result, applied=applied, assumes=tuple(self.assumed), again=again, not_applied=refused)

    def interrupted(self):
        """Handled for the failure under way when Ctrl-C came, with the candidates finished by
        then (their explanations, diffs, verdicts and seconds are kept); None between failures."""
        from ledex.cli_output import Handled

        if self.current is None:
            return None
        # a verified search fix is reported twice (offered, then explained): once here
        done = [c for c in {id(c): c for c in list(self.partial)}.values() if c.reason != "cancelled"]
        rounds: dict[tuple[str, int], float] = {}  # a round's answers are decoded together: its last one's seconds
        suspect = ""
        for c in done:  # in the order they were finished; an unusable answer names no suspect: the current one's
            suspect = c.suspect or suspect
            rounds[(suspect, c.round)] = max(rounds.get((suspect, c.round), 0.0), c.generation_s)
        elapsed = time.perf_counter() - self.started
        timings = {"generation": min(sum(rounds.values()), elapsed), "verification": sum(c.verification_s for c in done)}
        result = FixResult(self.current, candidates=done, model=self.engine.backend.identity.id, timings=timings)
        written = "; not applied" if self.args.apply else ""  # a dry run writes nothing anyway (X6)
        return Handled(result, error=f"interrupted after {len(done)} candidate(s){written}")

    def searched_only(self, why: str) -> list:
        """Handled for the problems searched without a fix whose model turn never came (`why`:
        the run was interrupted or stopped), with the search's candidates."""
        from ledex.cli_output import Handled

        done = {t for h in self.handled for t in self.key(h.result.failure)}
        return [Handled(result, error=f"{why} before the model's turn: search only")
                for key, (result, _, _) in self.searched.items() if not done & set(key)]

    def check_prompt(self, failure: Failure) -> None:
        """Raises PromptTooLong when the failure's prompt (with its suspect) exceeds the model's context."""
        if failure.suspect is not None:
            messages = build_messages(problem_for(failure), self.engine.config.mode)
            check_fits(self.engine.backend, messages, failure.suspect.source)

    def apply(self, result: FixResult) -> tuple[str | None, str | None]:
        """Write the best verified candidate (engine/apply.py: located again by name in the file
        as it is now); returns (the file written, None), (None, why it was refused: the file is
        unchanged; also when the tests pass with other edits of the same line, which they cannot
        tell apart), or (None, None) when nothing was verified."""
        best = result.best
        if best is None:
            return None, None
        refused = self.refusal(best)
        if refused:
            return None, refused
        try:
            apply_patch(self.workspace, best.patch)
        except ApplyError as exc:
            return None, str(exc)
        return best.patch.path, None

    def refusal(self, best: CandidateResult) -> str | None:
        """Why --apply does not write the verified `best` (None: it does): several edits of the same
        line that the tests cannot tell apart (ranking.mark_alternatives: a coin flip), or, without
        --apply-risky, a fix marked as a test-overfitting risk (ranking.overfit_risk; fresh-user run
        X12 F2: a dropped statement, `pass` for `_registry[fullpath] = [cls]`, was written and
        exited 0 while marshmallow's registry kept stale classes)."""
        if best.alternatives:
            return (f"the tests pass with {best.alternatives + 1} different edits of the same line (above): they "
                    "cannot tell which is right, so none is written; apply the right one's diff by hand, or add a "
                    "test that tells them apart")
        if overfit_risk(best) and not self.args.apply_risky:
            return (f"{risk_words(best)}, so it is not written; review its diff above and apply it by hand, or run "
                    "again with --apply-risky")
        return None

    def recheck(self, queue: list[Failure], fixed_by: str, handled: list, earlier: list = ()) -> list[Failure]:
        """The failures still failing after a written fix (re-run now); the others are reported fixed.
        `earlier`: Handled problems without a fix, handled before it; those that pass now get fixed_by."""
        from ledex.cli_output import passes_with

        tests = [f.test for f in queue] + [t for h in earlier for t in (h.result.failure.test, *h.result.failure.also)]
        try:
            after = "with the fix for" if self.copy else "after the fix for"
            with self.reporter.status(f"re-running {len(tests)} failing test(s) {after} {fixed_by}", key="recheck"):
                again = self._rerun(tests)
        except DiscoveryError as exc:
            self.reporter.note(f"re-running the failures after the fix for {fixed_by} failed: {exc}")
            return queue
        fresh = {f.test: f for f in again.failures}
        known = dict(self.messages)  # what they said before this fix
        self.messages.update((t, f.message) for t, f in fresh.items())
        outcomes = {o.nodeid: o for o in (again.verdict.outcomes if again.verdict else ())}

        def passes(test: str) -> bool:  # a case whose id changed: every case of its function (engine/rerun.py)
            cases = rerun.cases_of(test, outcomes)
            return bool(cases) and all(o.outcome == "passed" for o in cases) and test not in fresh

        retry = []  # earlier problems that fail differently now: tried again, after the queue
        for item in earlier:
            group = (item.result.failure.test, *item.result.failure.also)
            if all(passes(t) for t in group):
                item.fixed_by = fixed_by
                item.assumes = tuple(self.assumed)
                self.reporter.note(f"{group[0]}: {passes_with(fixed_by, fixed_by in self.assumed, self.args.apply)}")
                self.reporter.result(item)  # on stdout too, below its FAILED block (fresh-user run X5)
            elif self.changed(group, fresh, known, fixed_by):
                handled.remove(item)
                retry += [keeps_reruns(fresh[t], item.result.failure, fresh) for t in group if t in fresh]
                self.reporter.note(f"{group[0]}: fails differently with the fix for {fixed_by} in place: tried again")
                if now := [t for t in group if passes(t)]:  # counted as fixed, not lost from the summary (X5)
                    self.passing(replace(item.result.failure, test=now[0], also=tuple(now[1:]),
                                         message=known.get(now[0], item.result.failure.message)), fixed_by)
        remaining = []
        for failure in queue:
            if passes(failure.test):
                self.passing(failure, fixed_by)
            else:
                now = fresh.get(failure.test)
                remaining.append(keeps_reruns(now, failure, fresh) if now is not None else failure)
        return remaining + retry

    def passing(self, failure: Failure, fixed_by: str) -> None:
        """Record and report `failure` (a group's tests) as passing with the fix for `fixed_by` in place."""
        from ledex.cli_output import Handled

        item = Handled(FixResult(failure, model=self.engine.backend.identity.id), fixed_by=fixed_by,
                       assumes=tuple(self.assumed))
        self.reporter.result(item)
        self.handled.append(item)

    def changed(self, group: tuple[str, ...], fresh: dict[str, Failure], before: dict[str, str],
                fixed_by: str) -> bool:
        """Whether a problem handled without a fix (its tests `group`) fails differently
        now that a later fix is in place - some of its tests pass now or say something else than
        `before` (test -> message), and some still fail (they failed through both bugs, so its
        own fix could not pass before; inflection 0.5.1, fresh-user run X4: only the cases that
        reach the other bug changed): worth one more try, once per test (self.again records it,
        with `fixed_by`)."""
        still = [t for t in group if t in fresh]
        if not still or any(t in self.again for t in group):
            return False
        if len(still) == len(group) and all(fresh[t].message == before.get(t) for t in group):
            return False
        self.again.update((t, fixed_by) for t in group)
        return True

    def _rerun(self, tests: list[str]):  # noqa: ANN202 - a failures.Discovery
        """Discovery of `tests`; by function when pytest did not find their parametrized ids."""
        run = functools.partial(discover, self.engine.workspace, harness=self.engine.harness,
                                limits=discovery_limits(self.args))
        try:
            return run(tests=tests)
        except DiscoveryError as exc:
            # only where the unchanged code showed the ids change (a written fix could build the parameters)
            widened = self.engine.ids_change_between_runs and \
                rerun.widen(tests, rerun.printed(exc.verdict))
            if not widened:
                raise
            return run(tests=list(widened))
