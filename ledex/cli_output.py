"""What `ledex fix` prints: readable text (or one JSON document) on stdout; progress on stderr.

Progress: each phase (running the tests, measuring coverage, loading the model, fixing each
failure) gets a line on stderr when it starts and one with its seconds when it ends; when
stderr is a terminal the line ticks in place (a spinner and the seconds so far) and each
failure gets a tqdm bar. stdout holds only the result, so `--json` output stays one document.
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass

from tqdm import tqdm

from ledex.engine.failures import Discovery, Failure
from ledex.engine.fixer import CandidateResult, FixResult, search_cut_short
from ledex.engine.localize import FOUND_BY, stuck_line
from ledex.engine.models import ModelIdentity
from ledex.engine.ranking import risk_words


@dataclass
class Handled:
    """What became of one failure: its fix result, and what the run did about it."""

    result: FixResult
    applied: str | None = None  # the file the best verified fix was written to (--apply)
    fixed_by: str | None = None  # the test whose written fix made this one pass (re-run after --apply)
    # the tests whose best verified fixes were in place in a scratch copy of the project, never in
    # the user's files, when this problem was verified or re-run (fixed_by): every fix in a dry run;
    # with --apply the fixes that could not be written (not_applied)
    assumes: tuple[str, ...] = ()
    # tried a second time: the test whose fix made this problem fail differently (its first try,
    # printed earlier in text mode, had no verified fix; --json keeps only this one)
    again: str | None = None
    # why no fix was looked for (the suspect does not fit the model's context), or why the
    # looking stopped early (interrupted: `result` then holds the candidates finished by then)
    error: str | None = None
    # --apply: why the verified fix could not be written (an immutable or read-only file); the file is unchanged
    not_applied: str | None = None

    @property
    def fixed(self) -> bool:
        """True when a candidate was verified or another written fix made the failure pass."""
        return self.result.best is not None or self.fixed_by is not None


def failure_dict(handled: Handled) -> dict:
    """One entry of --json's "failures" (keys as in README.md; seconds in "timings", lines 1-based)."""
    result = handled.result
    failure = result.failure
    suspect = failure.suspect
    return {
        "test": failure.test, "file": failure.file, "line": failure.line, "message": failure.message,
        "also": list(failure.also),  # failing tests with the same top suspect, fixed as one problem
        "reruns": list(failure.reruns),  # what one verification runs (siblings that failed or hung are left out)
        "suspect": suspect and {"path": suspect.path, "function": suspect.qualname,
                                "line": suspect.start_line, "found_by": suspect.reason},
        "candidates": [c.to_dict() for c in result.ranked],
        "unusable": [{"round": c.round, "reason": c.reason} for c in result.candidates if c.patch is None],
        "timings": result.timings,
        "applied": handled.applied, "fixed_by": handled.fixed_by, "assumes": list(handled.assumes),
        "again": handled.again,
        "error": handled.error, "not_applied": handled.not_applied,
        "not_reproduced": result.not_reproduced or None,  # why no candidate was tried (FixEngine.reproduces)
    }


def cut_short(result) -> str:  # noqa: ANN001 - a FixResult
    """Why the search ended before verifying a fix, when its budget did ('' otherwise): a run
    where every verification ran past the limit said only "not verified" (fresh-user run X10 F10)."""
    short = search_cut_short(result)
    if not short:
        return ""
    more = "--search-seconds gives it more" if result.search.stopped == "time" else \
        "its test runs are bounded (the function may be the wrong suspect)"  # X12 F9: not a matter of seconds
    return f"the search {short}; {more}"


def passes_with(fixed_by: str, in_copy: bool, applying: bool = False) -> str:
    """What a failure that another problem's fix made pass says: written (--apply), or in place in
    the scratch copy (`in_copy`) because it is a dry run or, `applying`, because it could not be written."""
    if in_copy and applying:
        return f"passes with the fix for {fixed_by} in place (tried in a scratch copy: that fix could not be written)"
    if in_copy:
        return f"passes with the fix for {fixed_by} in place (dry run: not written; --apply writes it)"
    return f"passes now: fixed by the fix written for {fixed_by}"


REASON_CHARS = 400  # a reason longer than this is shortened in text output (--json keeps it whole)


def clip_reason(reason: str, limit: int = REASON_CHARS) -> str:
    """`reason` as shown in text output: a long one (a list of hundreds of test ids that did not
    run) keeps its start and its end (where pytest's own error is quoted), unless the note saying
    so would be longer than what it leaves out (fresh-user run X11 F4: 13 characters of a
    function's name were cut for a 36-character note).

    >>> clip_reason("x" * 50, limit=40) == "x" * 50
    True
    >>> clip_reason("a" * 60 + "b" * 60, limit=30)
    'aaaaaaaaaaaaaaaaaaaa … (90 characters more in --json) … bbbbbbbbbb'
    """
    if len(reason) <= limit:
        return reason
    head, tail = reason[:limit * 2 // 3], reason[-(limit // 3):]
    cut = len(reason) - len(head) - len(tail)
    note = f" … ({cut} characters more in --json) … "
    return reason if cut <= len(note) else f"{head}{note}{tail}"


class _Ticker:
    """A line on a terminal rewritten in place every `every` s: spinner, text, seconds so far."""

    FRAMES = "|/-\\"

    def __init__(self, err, text: str, started: float, every: float = 0.25):  # noqa: ANN001
        self.err, self.text, self.started, self.every = err, text, started, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ledex-progress")
        self._thread.start()

    def _run(self) -> None:
        frame = 0
        while not self._stop.wait(self.every):
            frame += 1
            seconds = time.perf_counter() - self.started
            self.err.write(f"\r{self.FRAMES[frame % 4]} ledex: {self.text}… {seconds:.0f} s\x1b[K")
            self.err.flush()

    def stop(self) -> None:
        """Stop ticking and clear the line."""
        self._stop.set()
        self._thread.join()
        self.err.write("\r\x1b[K")  # the finished phase's line replaces the ticking one


class Phases:
    """Named phases of a run, one after another: `start(key, text)` ends the current one.
    Each phase's seconds go to `timings[key]` (keys: "discovery", "coverage", "model_load"...)."""

    def __init__(self, err, timings: dict[str, float]):  # noqa: ANN001
        self.err, self.timings = err, timings
        self.tty = _is_tty(err)
        self._current: tuple[str, str, float, _Ticker | None] | None = None

    def start(self, key: str, text: str) -> None:
        """End the current phase, then begin `key` (its seconds add up in timings[key])."""
        self.end()
        started = time.perf_counter()
        ticker = _Ticker(self.err, text, started) if self.tty else None
        if ticker is None:
            print(f"ledex: {text}…", file=self.err, flush=True)
        self._current = (key, text, started, ticker)

    def end(self, failed: bool = False) -> None:
        """End the current phase (if any): its line with the seconds it took ("stopped after" on an error)."""
        if self._current is None:
            return
        key, text, started, ticker = self._current
        self._current = None
        seconds = time.perf_counter() - started
        self.timings[key] = round(self.timings.get(key, 0.0) + seconds, 3)
        if ticker is not None:
            ticker.stop()
        print(f"ledex: {text}: {'stopped after ' if failed else ''}{seconds:.1f} s", file=self.err, flush=True)


def _is_tty(stream) -> bool:  # noqa: ANN001
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# Unverified candidates shown in full when none is verified: the best attempts, by pass rate
# (ranking.rank); the rest are counted. Real projects printed 500-1,000 lines per failure (full-
# function diffs of every candidate; 47 search candidates), which hid the few lines that matter.
SHOWN_UNVERIFIED = 2
SHOWN_ALSO = 5  # the other failing tests of a group named in text mode (roman 5.2: 70 ids on one line)


def shown_count(ranked: list) -> int:
    """How many of the ranked candidates text mode shows in full: every verified one (they come
    first), else the SHOWN_UNVERIFIED best attempts."""
    verified = sum(1 for c in ranked if c.verified)
    return verified or min(SHOWN_UNVERIFIED, len(ranked))


def hidden_summary(hidden: list) -> str:
    """'5 more not verified (3 found by search, 2 written by the model); most often: <reason> (4)'
    (the last part only when a reason repeats)."""
    by_source = Counter(c.source_label for c in hidden)
    sources = ", ".join(f"{n} {label}" for label, n in by_source.most_common())
    reason, times = Counter(clip_reason(c.reason.removeprefix("not verified: "), 120) for c in hidden).most_common(1)[0]
    common = f"; most often: {reason} ({times})" if times > 1 else ""  # a count of 1 says nothing
    return f"{len(hidden)} more not verified ({sources}){common}"


class Reporter:
    """Everything `ledex fix` prints: results on `out` (text, or one JSON document at the end
    with --json), progress and notes on `err`."""

    def __init__(self, as_json: bool = False, out=None, err=None, verbose: bool = False, applying: bool = False):
        # the streams of now, not of import time (main() may run in-process with stdout/stderr replaced)
        self.as_json, self.out, self.err = as_json, out or sys.stdout, err or sys.stderr
        self.verbose = verbose  # text mode: every candidate's diff, not only the ones worth reading
        self.applying = applying  # --apply: fixes in the scratch copy are the ones that could not be written
        self._notes: list[str] = []
        self.timings: dict[str, float] = {}  # seconds per phase of the whole run (Phases keys)
        self._covering = ""  # the fixed_by of the result just shown: the next one it covers is one line

    @contextlib.contextmanager
    def phases(self):
        """Yields `start(key, text)`: progress for a sequence of phases (see Phases)."""
        phases = Phases(self.err, self.timings)
        try:
            yield phases.start
        except BaseException:
            phases.end(failed=True)
            raise
        phases.end()

    @contextlib.contextmanager
    def status(self, text: str, key: str = "other"):
        """One phase (see Phases)."""
        with self.phases() as start:
            start(key, text)
            yield

    @contextlib.contextmanager
    def progress(self, failure: Failure, number: int = 1, total: int = 1, turn: str = ""):
        """Per-failure progress: a tqdm bar on a terminal, one line per stage otherwise; `turn`
        ends the first line ("the model's turn": a problem searched before, back for the model)."""
        suspect = f" (suspect {failure.suspect.qualname})" if failure.suspect else ""
        label = f"fixing {number} of {total}: {failure.test}{suspect}" + (f", {turn}" if turn else "")
        if not _is_tty(self.err):
            yield self._stage_lines(label)
            return
        bar = tqdm(total=1, desc=failure.test[-48:], unit="answer", file=self.err, leave=False)

        def update(stage: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(stage, refresh=False)
            bar.n = done
            bar.refresh()

        try:
            yield update
        finally:
            bar.close()

    def _stage_lines(self, label: str):
        """A progress callback printing `label` once, then each new stage (not each answer)."""
        print(f"ledex: {label}", file=self.err, flush=True)
        seen: set[str] = set()
        started = time.perf_counter()

        def update(stage: str, done: int, total: int) -> None:
            if stage not in seen:
                seen.add(stage)
                seconds = time.perf_counter() - started
                print(f"ledex:   {stage} ({done}/{total}) at {seconds:.0f} s", file=self.err, flush=True)
        return update

    def note(self, text: str) -> None:
        """A note raised during fixing: on stderr now (text mode), in the document's "notes" (--json)."""
        self._notes.append(text)
        if not self.as_json:
            print(f"note: {text}", file=self.err)

    def notes(self, notes: list[str]) -> None:
        """Discovery's notes on stderr (text mode; with --json they are in the document)."""
        for text in notes:
            if not self.as_json:
                print(f"note: {text}", file=self.err)

    def summary(self, discovery: Discovery) -> None:
        """One stderr line after discovery: how many tests ran and failed."""
        failed = len(discovery.failures)
        if discovery.wider is None:
            print(f"ledex: {discovery.tests_run} test(s) ran, {failed} failed", file=self.err, flush=True)
            return
        selected = len(discovery.verdict.outcomes) if discovery.verdict else 0
        passing = sum(o.outcome == "passed" for o in discovery.wider.outcomes)
        others = f"{len(discovery.unselected)} other test(s) there fail too (not selected); " if discovery.unselected else ""
        print(f"ledex: {selected} selected test(s) ran, {failed} failed; {discovery.tests_run} test(s) of their files and "
              f"dependents ran: {others}a fix must keep the {passing} passing one(s) passing", file=self.err, flush=True)

    def done_without_failures(self, discovery: Discovery) -> None:
        """The result when no test failed: "no failing tests (N ran)", or the JSON document."""
        count = discovery.tests_run
        if self.as_json:
            print(json.dumps({"model": None, "failures": [], "tests": count, "failing": [],
                              "notes": discovery.notes, "timings": self.timings}), file=self.out)
        else:
            print(f"ledex: no failing tests ({count} ran)", file=self.out)

    def result(self, handled: Handled) -> None:
        """One problem as it is done (text mode): test, message, suspect, each candidate's
        explanation, diff and verdict; nothing with --json (all of it goes into finish)."""
        if self.as_json:
            return
        result, applied = handled.result, handled.applied
        failure, out = result.failure, self.out
        if handled.fixed_by and handled.fixed_by == self._covering:  # 17 blocks alike (fresh-user run X10 F8)
            print(f"  and {failure.test}: the same", file=out)
            return
        self._covering = handled.fixed_by or ""
        where = f" ({failure.file}:{failure.line})" if failure.file and failure.line else ""
        print(f"\nFAILED {failure.test}{where}\n  {failure.message}", file=out)
        if failure.also:
            same = "same suspect, one fix for" if failure.suspect else "same error in"
            more = len(failure.also) - SHOWN_ALSO
            named = ", ".join(failure.also[:SHOWN_ALSO]) + (f" and {more} more (--json lists them)" if more > 0 else "")
            print(f"  {same}: {named}", file=out)
        if handled.again:
            print(f"  tried again: it failed differently with the fix for {handled.again} in place "
                  "(its first try, above, had no verified fix)", file=out)
        if handled.fixed_by:
            print(f"  {passes_with(handled.fixed_by, handled.fixed_by in handled.assumes, self.applying)}", file=out)
            return
        if handled.error and not result.candidates:
            print(f"  no candidate: {handled.error}", file=out)  # the search may have run (X6: "not attempted")
            return
        if result.not_reproduced:
            print(f"  not reproduced: {result.not_reproduced}", file=out)
            return
        if failure.suspect is None:
            print("  no function to fix was found in the workspace", file=out)
            return
        found = FOUND_BY.get(failure.suspect.reason, failure.suspect.reason)
        stuck = stuck_line(failure.details, failure.suspect.path) if failure.suspect.reason == "stack sampling" else None
        found += f", at line {stuck}" if stuck else ""
        print(f"  suspect: {failure.suspect.path}::{failure.suspect.qualname} ({found})", file=out)
        short = cut_short(result)
        if short:
            print(f"  {short}", file=out)
        ranked = result.ranked
        shown = len(ranked) if self.verbose else shown_count(ranked)
        for number, candidate in enumerate(ranked[:shown], 1):
            self._candidate(number, candidate, f"{failure.suspect.path}::{failure.suspect.qualname}")
        if shown < len(ranked):
            print(f"\n  {hidden_summary(ranked[shown:])} (ledex fix -v shows each)", file=out)
        unusable = [c for c in result.candidates if c.patch is None]
        if unusable:
            reasons = sorted({c.reason for c in unusable})
            print(f"\n  {len(unusable)} answer(s) unusable: {'; '.join(reasons)}", file=out)
        unwritten = f"verified with the fix for {', '.join(handled.assumes)} in place, which could not be written" \
            if handled.assumes and self.applying and result.best is not None else ""
        if applied:
            print(f"\n  applied the best verified fix to {applied}" + (f" ({unwritten})" if unwritten else ""), file=out)
        elif handled.not_applied:
            print(f"\n  not applied: {handled.not_applied}" + (f" ({unwritten})" if unwritten else ""), file=out)
        elif handled.assumes and result.best is not None:
            print(f"\n  verified with the fix for {', '.join(handled.assumes)} in place (dry run: tried in a "
                  "scratch copy, your files are unchanged; --apply writes both)", file=out)
        if handled.error:  # candidates were made, then the work stopped (Ctrl-C)
            print(f"\n  {handled.error}", file=out)

    def _candidate(self, number: int, candidate: CandidateResult, top: str) -> None:
        """One candidate: rank, source, round, verdict, explanation and diff."""
        reason = candidate.reason.removeprefix("not verified: ")  # the sandbox's gate and guard say it already
        mark = "verified" if candidate.verified else f"not verified: {clip_reason(reason)}"
        risk = risk_words(candidate)
        if risk:  # why the model was asked too (fresh-user run X6)
            mark += f"; {risk}"
        passed, of = candidate.also_fixes
        if candidate.verified and of:  # how far it repairs the other problems suspecting the same code
            mark += f"; {passed} of {of} related failing test{'s' if of > 1 else ''} pass with it too"
        other = f", rewrites {candidate.suspect}" if candidate.suspect and candidate.suspect != top else ""
        print(f"\n  candidate {number} ({candidate.source_label}, round {candidate.round}{other}) [{mark}]", file=self.out)
        if candidate.explanation:
            print(textwrap.indent(textwrap.fill(candidate.explanation, 92), "    "), file=self.out)
        print(textwrap.indent(candidate.diff.rstrip(), "    "), file=self.out)

    def finish(self, identity: ModelIdentity, handled: list[Handled], discovery: Discovery, *,
               error: str | None = None, exit_code: int | None = None) -> None:
        """The run's result on stdout: with --json the document {"model", "failures", "tests",
        "failing", "notes", "timings"} ("failing": every failing test found, handled or not),
        plus "error" and "exit" when an error stopped the run after some failures were handled."""
        if self.as_json:
            document = {"model": identity.to_dict(), "failures": [failure_dict(h) for h in handled],
                        "tests": discovery.tests_run,
                        "failing": [f.test for f in (*discovery.failures, *discovery.unselected)],
                        "notes": discovery.notes + self._notes, "timings": self.timings}
            if error is not None:
                document.update(error=error, exit=exit_code)
            print(json.dumps(document, indent=2), file=self.out)
            return
        size = [1 + len(h.result.failure.also) for h in handled]  # a group counts each of its failures
        fixed = sum(n for n, h in zip(size, handled) if h.fixed)
        found = len(discovery.failures) if discovery is not None else sum(size)
        unfinished = "not finished (the run stopped)" if error is not None else "not started"
        left = f"; {found - sum(size)} {unfinished}" if found > sum(size) else ""
        unwritten = sum(1 for h in handled if h.not_applied)  # fixes, not failures: a group's is one (X6)
        left += f"; {unwritten} verified fix(es) not written (not applied, above)" if unwritten else ""
        risky = sum(n for n, h in zip(size, handled) if h.fixed_by is None and h.result.best is not None
                    and risk_words(h.result.best))  # fresh-user run X11 F11: called fixed without a word
        left += f"; {risky} of them only by a fix that may fit the tests rather than the bug (marked above)" if risky else ""
        print(f"\nledex: {fixed} of {sum(size)} failure(s) have a verified fix{left} (model {identity.id})", file=self.out)
