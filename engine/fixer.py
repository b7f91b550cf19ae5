"""The fix loop: explain-then-refine candidates for one failure, each verified in the sandbox.

Per failure: the suspect function + the failing test + the error become a LEDEX problem;
K answers are sampled; each usable answer becomes a minimal patch of that one function and
is verified by re-running the failing test and the rest of its test file in the sandbox
(a fix that breaks a test that passed before is not verified). Verification of answer i
overlaps generation of answer i+1. As in LEDEX's iterative refinement, up to R rounds:
the best unverified refinement and its new failure become the next round's problem.

Before the model, a bounded search (engine/search.py, FixConfig.search) tries single-site edits
of the suspects (the inverse of training's mutations); its verified fixes are explained by the
model (format.build_explain_diff_messages) and the model's rounds are skipped when one of them is
not a test-overfitting risk. Candidates carry their `source` ("search" or "model"); the one
ordering rule is engine/ranking.py (the model's log-likelihood of the patched function, edit size).
What a fix produced (CandidateResult, FixResult) is engine/fixresult.py.

Try it:  python -m ledex.engine.fixer examples/inventory
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ledex.engine import ranking, rerun
from ledex.engine.backends import Backend, Generation, ModelError, PromptTooLong, Sampling, generate_batch
from ledex.engine.explanations import parse_explanation, trusted
from ledex.engine.failures import TRIED_SUSPECTS, Failure
from ledex.engine.fixresult import CandidateResult, FixResult
from ledex.engine.format import (Candidate, Mode, Problem, build_explain_diff_messages, build_messages, clip_middle,
                                 fenced, parse_response)
from ledex.engine.grammar import answer_grammar
from ledex.engine.judging import feedback_for, judge, partial_credit, related_passing
from ledex.engine.localize import read_source
from ledex.engine.patching import Patch, PatchError, make_patch
from ledex.engine.project import Harness
from ledex.engine.screening import error_type
from ledex.engine.search import Checked, Repair, SearchConfig, run_search
from ledex.sandbox import Limits, Verdict, verify_many


@dataclass(frozen=True)
class FixConfig:
    # K answers per round, decoded in one batch. bench_generation (HumanEvalFix prompt, 512 tokens):
    # K=4 batched takes 0.56x the wall of the old 4-one-after-another, K=8 batched 1.2x; 4 keeps the
    # editor's wait down, and with the grammar most of them are now usable (71-83% vs 4-17%).
    """How a fix runs: K samples per round, R rounds, sampling, sandbox limits, the project's test
    harness (interpreter/command), and which suspects and search to try."""
    samples: int = 4
    rounds: int = 2  # R: LEDEX saw most gains from the first refinement; a second catches near misses
    mode: Mode = Mode.EXPLAIN
    sampling: Sampling = Sampling()
    limits: Limits = Limits(wall_s=60.0)
    harness: Harness = Harness()  # the workspace's test interpreter and command (default: this Python, pytest)
    stop_at_first: bool = False  # the editor needs one verified fix (the sample being generated stops); the CLI shows all
    verify_workers: int = 2  # concurrent sandbox runs besides generation; 2 fits a 2-core machine
    # Suspects tried in turn, most suspicious first, until one gets a verified fix (issue 12 item 6;
    # see bench/bench_localize.py for how often the broken function is in the top 1 / top 3).
    suspects: int = TRIED_SUSPECTS
    grammar: bool = True  # constrain answers to the LEDEX shape (grammar.answer_grammar) where the backend can
    # Search-based candidates before the model's (issue 20): SearchConfig() on, None off (model only).
    # On by default: on HumanEvalFix projects search fixed 34 of 58 correctly (the model 1 of the 10
    # it ran on), 3% overfit offers, 16.9 s mean per failure (bench/bench_search.py,
    # docs/benchmarks.md "Search-based candidates"). `ledex fix --no-search`, the editor's
    # `ledex.search: false`, and model evaluations (training/fixeval.py) pass None.
    search: SearchConfig | None = SearchConfig()
    explain_search: bool = True  # the model explains each verified search fix (else the edit is described)
    likelihood: bool = True  # rank two or more verified fixes by the model's log-likelihood (ranking.py)


SEARCH_DEFAULT = SearchConfig()


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def task_text(failure: Failure) -> str:
    """First user turn for a failure: the suspect must make the test (and up to 5 others
    failing with it) pass."""
    suspect = failure.suspect
    test = failure.test_source or f"# {failure.test}"
    also = f"\nThe same change must also make these failing tests pass: {', '.join(failure.also[:5])}" \
        if failure.also else ""
    return (f"The function `{suspect.qualname}` in `{suspect.path}` must make this test pass:\n"
            f"{fenced(test)}{also}")


def feedback_text(failure: Failure) -> str:
    """"Test <id> failed." with its traceback (workspace paths relative: Failure.relative_details;
    else the message), clipped in the middle."""
    return clip_middle(f"Test {failure.test} failed.\n{failure.relative_details.strip() or failure.message}")


def problem_for(failure: Failure) -> Problem:
    """The LEDEX problem for a failure: task text, the suspect's source, the test feedback."""
    return Problem(task_text(failure), failure.suspect.source, feedback_text(failure))


class AnyEvent:
    """Set when any of its events is set: what a generation polls to stop early."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        """True once any of the events is set."""
        return any(e.is_set() for e in self.events)


def _waited(answers: Iterator[Generation], timings: dict[str, float]) -> Iterator[Generation]:
    """The answers, adding the time spent waiting for each to timings["generation"]; closes them."""
    with contextlib.closing(answers):
        while True:
            started = time.perf_counter()
            generation = next(answers, None)
            timings["generation"] += time.perf_counter() - started
            if generation is None:
                return
            yield generation


def search_cut_short(result: FixResult) -> str:
    """What ran out when the search's budget did before a search fix verified ("used its 58 s before
    verifying a fix (3 of 150 edits screened, 2 verification run(s))"), '' otherwise. The CLI's
    result and the progress line say it: "search: done" hid it (fresh-user runs X10 F10, X11 F1:
    the right edit verified in 23 s alone, not within 60 s of a whole run's re-runs)."""
    stats = result.search
    if stats is None or stats.stopped not in ("time", "runs") or any(c.verified and c.source == "search"
                                                                      for c in result.candidates):
        return ""
    budget = f"its {stats.seconds:.0f} s" if stats.stopped == "time" else "its test runs"
    return (f"used {budget} before verifying a fix ({stats.screened} of {stats.candidates} edits screened, "
            f"{stats.verified_runs} verification run(s))")


def suspects_to_try(failure: Failure, limit: int) -> list:
    """failure.suspect first (a caller may have chosen it), then the rest of the ranking."""
    ranked = [failure.suspect] if failure.suspect is not None else []
    ranked += [s for s in failure.suspects if (s.path, s.qualname) != (ranked[0].path, ranked[0].qualname)] \
        if ranked else list(failure.suspects)
    return ranked[:max(limit, 1)]


class FixEngine:
    """Fixes failures in one workspace with one backend; safe to call from worker threads."""

    def __init__(self, backend: Backend, workspace: Path, config: FixConfig = FixConfig()):
        self.backend, self.workspace, self.config = backend, Path(workspace).resolve(), config
        self._verdicts: dict[tuple[str, str, tuple[str, ...]], Verdict] = {}
        # whether this workspace's parametrized ids change between runs (engine/rerun.py): None until
        # a "not found" made the unchanged code's run tell
        self._by_function: bool | None = None
        self.harness = config.harness  # its origin is set by moved_to: the folder self.workspace is a copy of

    def fix(self, failure: Failure, *, cancel: threading.Event | None = None, progress: Progress | None = None,
            on_candidate: Callable[[CandidateResult], None] | None = None, stages: str = "search+model",
            after: FixResult | None = None) -> FixResult:
        """Candidates for the failure's suspects in turn (FixConfig.suspects of them), stopping at
        the first suspect that gets a verified fix. A group (failures.group_by_suspect) is one
        problem: each candidate is verified against every test in it. `on_candidate(c)` is called
        as each candidate is recorded, and once more with the same object when the model's
        explanation of a verified search fix arrives (the fix is offered before it).
        `stages`: "search+model" (the search, then the model's rounds where needs_model), "search"
        (the cheap search only), "model" (the model's rounds only, going on from `after`, the result
        of a "search" call: the CLI searches every problem before the model works on any)."""
        result = after if after is not None else FixResult(failure, model=self.backend.identity.id)
        cancel = cancel or threading.Event()
        if after is None:
            result.not_reproduced = self.reproduces(failure, cancel)
        if result.not_reproduced:
            return result
        tried = suspects_to_try(failure, self.config.suspects)
        if "search" in stages and self.config.search is not None and tried:
            self._search(failure, tried, result, cancel, progress, on_candidate)
        if cancel.is_set() or "model" not in stages or not self.needs_model(result):
            # the model's turn still to come (fix(stages="model", after=result)) ranks them: score once, then
            later = "model" not in stages and self.needs_model(result) and not cancel.is_set()
            return self._finish(result, failure, likelihood=not later)
        for n, suspect in enumerate(tried):
            named = progress if n == 0 or progress is None else \
                (lambda stage, done, total, q=suspect.qualname: progress(f"{q}: {stage}", done, total))
            try:
                self._fix_suspect(dataclasses.replace(failure, suspect=suspect), result, cancel, named, on_candidate)
            except PromptTooLong:
                if n == 0:
                    raise  # the failure's own suspect: the caller reports it
                continue  # a further suspect too long for the model: the next one
            if cancel.is_set() or result.best is not None:
                break
        return self._finish(result, failure)

    def reproduces(self, failure: Failure, cancel: threading.Event) -> str:
        """"" when some test of the problem fails in a sandbox run of its re-run set (what every
        candidate is verified with) on the unchanged code, as it failed in the suite, else why not.
        A test that failed in the full run only because of what an earlier test left behind (a
        module global it set and never reset) passes there, and then any harmless edit "verified"
        (fresh-user run X9, shortuuid 1.0.13: a changed padding character was written by --apply);
        one that needs what an earlier test set up fails otherwise (_fails_otherwise)."""
        verdict = self._run(None, failure.rerun_args, cancel)
        if verdict is None or verdict.error:
            return ""  # cancelled, or the run itself failed: the candidates' runs will say so
        (passed, of), _ = partial_credit(verdict, failure)
        if passed < of:
            return self._fails_otherwise(failure, verdict)
        group = (failure.test, *failure.also)
        which = group[0] if len(group) == 1 else f"{group[0]} and the {len(group) - 1} failing with it"
        return (f"{which} passed when re-run with the unchanged code (it failed in the whole suite's run: it "
                "depends on what tests before it did, such as state they left behind), so re-running it cannot "
                "verify a fix; run it alone (pytest ID) to see it pass, then look at the tests that run before it")

    @staticmethod
    def _fails_otherwise(failure: Failure, verdict: Verdict) -> str:
        """"" unless the failing test fails in its re-run with another exception class than in the
        suite's run (both named): a fix cannot be verified against a failure that is not the one
        seen (fresh-user run X10 F3: an AttributeError for a class attribute an earlier test sets)."""
        rerun = next((o for o in verdict.outcomes if o.nodeid == failure.test and o.outcome in ("failed", "error")), None)
        want, got = error_type(failure.message), error_type(rerun.message) if rerun else ""
        if not (want and got and want != got):
            return ""
        return (f"{failure.test} failed otherwise when re-run with the unchanged code ({got} instead of the suite's "
                f"{want}: it depends on what tests before it did), so re-running it cannot verify a fix; run the "
                "tests before it with it to see the suite's failure")

    @staticmethod
    def needs_model(result: FixResult) -> bool:
        """Whether the model's rounds would still run after `result`'s search: no verified fix,
        or only fixes at risk of fitting the tests rather than the bug (ranking.overfit_risk); never
        for a failure that did not reproduce (FixResult.not_reproduced)."""
        return not result.not_reproduced and not any(c.verified and not ranking.overfit_risk(c) for c in result.candidates)

    # --- search candidates (engine/search.py) ------------------------------------------------------

    def _search(self, failure: Failure, tried: list, result: FixResult, cancel: threading.Event,
                progress: Progress | None, on_candidate) -> None:  # noqa: ANN001
        if progress:
            progress("search: single-site edits", 0, 1)

        def verify(repair: Repair, stop) -> Checked:  # noqa: ANN001 - search.Deadline: cancelled or out of time
            """Sandbox-verify a search repair and record it as a "search" candidate: COMPLETE (verified, and
            every related failing test passed too), PARTIAL (verified), else NOT_VERIFIED (also when
            cancelled or cut by the search's deadline)."""
            suspect = dataclasses.replace(failure, suspect=repair.suspect)
            candidate = CandidateResult("", repair.code, 0, patch=repair.patch, source="search",
                                        suspect=f"{repair.suspect.path}::{repair.suspect.qualname}",
                                        operator=repair.edit.operator, edit_after=repair.edit.after)
            self._verify(candidate, suspect, stop)
            if candidate.reason == "cancelled":
                return Checked.NOT_VERIFIED
            described = f"Line {repair.edit.line}: {repair.edit.description}."
            candidate.explanation = described if candidate.verified else f"Found by search: {described[0].lower()}{described[1:]}"
            result.timings["verification"] += candidate.verification_s
            result.candidates.append(candidate)
            if on_candidate:  # offered now: a verified fix does not wait for the model's explanation
                on_candidate(candidate)
            if candidate.verified and self.config.explain_search:
                candidate.explanation = self._explain(suspect, candidate, described, cancel)
                if on_candidate:  # the same candidate again: its explanation arrived
                    on_candidate(candidate)
            if candidate.complete:  # one at risk of fitting the tests (a dropped statement...) ends the search later
                return Checked.RISKY if ranking.overfit_risk(candidate) else Checked.COMPLETE
            return Checked.PARTIAL if candidate.verified else Checked.NOT_VERIFIED

        search = self.config.search
        if self.config.stop_at_first:  # the editor needs one verified fix
            search = dataclasses.replace(search, max_fixes=1)
        result.search = run_search(self.workspace, failure, tried, search, verify,
                                   limits=self.config.limits, harness=self.harness, cancel=cancel)
        result.timings["search"] = result.search.seconds  # its verifications are in "verification" too (X10 F2)
        ranking.mark_alternatives(result.candidates)  # before needs_model: such fixes are a risk the model is asked about
        if progress:
            progress(f"search: {search_cut_short(result) or 'done'}", 1, 1)

    def _explain(self, failure: Failure, candidate: CandidateResult, described: str,
                 cancel: threading.Event) -> str:
        """`described` (the edit, in words: always right), then the model's explanation of this
        verified search fix of `failure` (its suspect: the function fixed); `described` alone when
        the model cannot explain it or the user cancelled. The edit comes first because the first
        sentence is the code action's title and the CLI's summary, and a small model's explanation
        of someone else's diff is often wrong (fresh-user runs: "adds a `timedelta` type to the
        `timedelta` class" for a leap-year constant)."""
        messages = build_explain_diff_messages(problem_for(failure), candidate.diff)
        started = time.perf_counter()
        try:
            reply = self.backend.generate(messages, dataclasses.replace(self.config.sampling, max_tokens=160,
                                                                        grammar=""), cancel=cancel)
        except (ModelError, PromptTooLong, ValueError, RuntimeError):
            return described
        candidate.generation_s = time.perf_counter() - started
        explanation = parse_explanation(reply.text) if reply.finish_reason != "cancelled" else ""
        explanation = trusted(explanation, candidate.diff, "\n".join(m["content"] for m in messages))
        return f"{described} {explanation}" if explanation else described

    def _finish(self, result: FixResult, failure: Failure, likelihood: bool = True) -> FixResult:
        """Edit sizes for every usable candidate, the model's log-likelihood where two or more are
        verified (not with `likelihood` False: a later call on the same result scores them)."""
        for candidate in result.candidates:
            if candidate.patch is not None:
                candidate.edit_size = ranking.edit_size(candidate.patch.old_function, candidate.patch.new_function)
        verified = [c for c in result.candidates if c.verified]
        if likelihood and self.config.likelihood and len(verified) > 1:
            messages = build_messages(problem_for(failure), Mode.REFINE)
            for candidate, loglik in zip(verified, ranking.score_codes(self.backend, messages,
                                                                       [c.code for c in verified])):
                candidate.loglik = loglik
        return result

    def _fix_suspect(self, failure: Failure, result: FixResult, cancel: threading.Event,
                     progress: Progress | None, on_candidate) -> None:  # noqa: ANN001
        original = read_source(self.workspace / failure.suspect.path)
        if original is None:
            return
        problem = problem_for(failure)
        with ThreadPoolExecutor(self.config.verify_workers) as pool:
            for round_no in range(1, self.config.rounds + 1):
                batch = self._round(problem, failure, original, round_no, pool, cancel, progress, on_candidate, result)
                if cancel.is_set() or result.best is not None:
                    break
                retry = max((c for c in batch if c.patch is not None), key=lambda c: c.pass_rate, default=None)
                if retry is None:
                    continue  # nothing usable: same problem again, new seeds
                problem = Problem(problem.task, retry.code, retry.feedback)

    def _round(self, problem, failure, original, round_no, pool, cancel, progress, on_candidate, result):
        messages = build_messages(problem, self.config.mode)
        total = self.config.samples
        pending: list[tuple[CandidateResult, Future | None]] = []
        found = threading.Event()  # set by a verification that succeeded (stop_at_first only)
        stop = AnyEvent(cancel, found)  # what the running generation listens to
        sampling = dataclasses.replace(self.config.sampling, seed=self.config.sampling.seed + 1000 * round_no,
                                       grammar=self._grammar(failure), wrong_code=problem.wrong_code)
        if progress:
            progress(f"round {round_no}: generating", 0, total)
        answers = generate_batch(self.backend, messages, sampling, total, cancel=stop)  # K decoded together
        for i, generation in enumerate(_waited(answers, result.timings)):
            if progress and i:
                progress(f"round {round_no}: generating", i, total)
            if generation.finish_reason == "cancelled":
                break  # cut short on purpose: not an answer of the model's, so not a candidate
            candidate = self._candidate(generation.text, generation.truncated, failure, original, round_no)
            candidate.generation_s = generation.seconds
            future = pool.submit(self._verify, candidate, failure, cancel) if candidate.patch else None
            if future is None and on_candidate:
                on_candidate(candidate)
            elif on_candidate:
                future.add_done_callback(lambda _f, c=candidate: on_candidate(c))
            if future is not None and self.config.stop_at_first:
                future.add_done_callback(lambda _f, c=candidate: found.set() if c.verified else None)
            pending.append((candidate, future))
        for candidate, future in pending:
            if future is not None:
                future.result()
            result.timings["verification"] += candidate.verification_s
            result.candidates.append(candidate)
        if progress:
            progress(f"round {round_no}: done", total, total)
        return [c for c, _ in pending]

    def _grammar(self, failure: Failure) -> str:
        """The answer shape for this suspect, or "" when the config turns constraining off."""
        return answer_grammar(self.config.mode, failure.suspect.qualname) if self.config.grammar else ""

    def _candidate(self, text: str, truncated: bool, failure: Failure, original: str, round_no: int) -> CandidateResult:
        parsed = parse_response(text, self.config.mode, truncated=truncated)
        if not isinstance(parsed, Candidate):
            return CandidateResult("", "", round_no, reason=parsed.reason, raw=text)
        candidate = CandidateResult(parsed.explanation, parsed.code, round_no, raw=text,
                                    suspect=f"{failure.suspect.path}::{failure.suspect.qualname}")
        try:
            candidate.patch = make_patch(original, failure.suspect, parsed.code)
        except PatchError as exc:
            candidate.reason = str(exc)
        return candidate

    def moved_to(self, workspace: Path) -> None:
        """Fix in `workspace` from now on: a copy of this one with fixes written to it (a dry run
        of `ledex fix` trying each fix with the ones before it). Verdicts kept so far are dropped:
        they were of other code; whether parametrized ids change between runs is kept. The sandbox
        is told the copy stands for the original folder (editable installs import from there)."""
        self.harness = dataclasses.replace(self.harness, origin=self.harness.origin or self.workspace)
        self.workspace, self._verdicts = Path(workspace).resolve(), {}

    @property
    def ids_change_between_runs(self) -> bool:
        """Whether this workspace's parametrized test ids were found to change from run to run
        (on the unchanged code: engine/rerun.py), so tests are re-run by function."""
        return bool(self._by_function)

    def _run(self, patch: Patch, tests: tuple[str, ...], cancel: threading.Event) -> Verdict | None:
        """One sandbox run of `tests` with `patch`; None when cancelled. Parametrized tests whose ids
        pytest did not find are run by function, from then on for this workspace - only when the
        unchanged code does not find them either: a candidate that changes which cases a test has
        (it builds the parameters) must not get its failing case judged away."""
        verdict = self._sandbox(patch, rerun.by_function(tests) if self._by_function else tests, cancel)
        widened = rerun.widen(tests, rerun.printed(verdict)) if verdict and not self._by_function else None
        if widened and self._by_function is None:
            self._by_function = self._unstable(tests, cancel)
        if widened and self._by_function:
            verdict = self._sandbox(patch, widened, cancel)
        return verdict

    def _unstable(self, tests: tuple[str, ...], cancel: threading.Event) -> bool | None:
        """Whether the unchanged code's run also misses parametrized ids of `tests` (pytest's "not
        found"); None when cancelled (asked again next time). Run once per workspace."""
        baseline = self._sandbox(None, tests, cancel)
        return None if baseline is None else rerun.widen(tests, rerun.printed(baseline)) is not None

    def _sandbox(self, patch: Patch | None, tests: tuple[str, ...], cancel: threading.Event) -> Verdict | None:
        changes = [{patch.path: patch.new_text}] if patch else [{}]
        runs = verify_many(self.workspace, changes, tests, limits=self.config.limits, workers=1, cancel=cancel,
                           **self.harness.sandbox)
        return next((v for _, v in runs), None)

    def _verify(self, candidate: CandidateResult, failure: Failure, cancel: threading.Event) -> None:
        tests = failure.rerun_args
        key = (candidate.patch.path, candidate.patch.new_text, tests)
        started = time.perf_counter()
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._run(candidate.patch, tests, cancel)
            if verdict is None:
                candidate.reason = "cancelled"
                return
            self._verdicts[key] = verdict
        candidate.verification_s = time.perf_counter() - started
        candidate.verified, candidate.reason = judge(verdict, failure)
        candidate.related_passed = related_passing(verdict, failure)
        candidate.also_fixes = (len(candidate.related_passed), len(failure.related))
        candidate.failing_passed, candidate.broke = partial_credit(verdict, failure)
        candidate.broke_run = bool(verdict.error)
        candidate.pass_rate = verdict.pass_rate
        candidate.feedback = feedback_for(verdict, failure, candidate.reason)


if __name__ == "__main__":
    import sys

    from ledex.engine.backends import load_backend
    from ledex.engine.failures import discover

    workspace = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    engine = FixEngine(load_backend(), workspace)
    for found in discover(workspace).failures:
        best = engine.fix(found).best
        print(found.test, "->", "verified" if best else "no verified fix")
