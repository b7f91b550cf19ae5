"""Search-based repair candidates: single-site edits of the suspect functions (engine/operators.py,
the inverse of training's mutations), screened many-per-process in the sandbox, then verified
one by one like any model candidate.

Mutation-based program repair (Debroy & Wong 2010): for each suspect (most suspicious first,
engine/localize.py + sbfl.py), every single-site edit of the function, the most suspicious lines
first (per-line Ochiai over the failing vs passing tests' coverage, sbfl.line_scores; ties and
runs without coverage: the lines the traceback went through, then the rest of the function
bottom-up); cheap operators (comparisons, constants, bounds) before broad ones (another variable,
a dropped statement). Identical results are tried once.

Verification is two-step:
1. **Screen**: one sandboxed pytest process per batch runs the failing tests once per variant,
   switching the function's code object between runs (engine/screen_driver.py, run by
   engine/screening.py through the sandbox's `command` template). A screen is advice only.
2. **Verify**: a variant that passed its screen becomes a patch verified by the caller in its
   own sandboxed run (the failing tests + the rest of their file + dependents), exactly like a
   model candidate. Where screening is not possible (the function is not imported by the tests,
   the failure does not reproduce in one process) every candidate is verified directly, within
   the same budget. A custom test command (`--test-command`) screens with what comes before its
   `{python}` (`env VAR=1`, `xvfb-run`), its interpreter's and pytest's options (screening.pytest_invocation),
   and only where the screen's unchanged code fails with the error the command's run failed with
   (a suite may need more of the command's setup: fresh-user run X3, every variant failed a
   screen that lacked it); a command without `{python}` is not screened.

Bounded per failure by SearchConfig (test runs and seconds) and stopped early when the cancel
event is set (the user edited the file), max_fixes candidates verified that also make every
related failing test pass, or after_fix_s after the first of them (Failure.related: other problems' failing tests that suspect the same
functions; a verified edit leaving some of them failing does not stop the search, which goes on
for one that fixes them all: fresh-user run X7, wcwidth, where `ubound = mid - 1` -> `ubound = mid`
passed its problem's tests, left one of the others failing, and stopped the search before the
exact inverse of the slip, `while ubound > lbound` -> `>=`, was tried). after_fix_s counts from
when the search leaves the first fix's line, so every other edit of that line is verified first
(they decide whether the tests can tell the fix from another: X12 F8), and a fix at risk of
fitting the tests (ranking.overfit_risk) counts as none but gives RISKY_AFTER_FIX x after_fix_s
more. The seconds bound cuts
work already running: a screen or a verification still running at the deadline is cancelled
(its sandbox process group killed), so a failure's search ends within about max_seconds.

Try it:  python -m ledex.engine.search WORKSPACE   (search only, for each failing test)
"""

from __future__ import annotations

import ast
import enum
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ledex.engine.failures import Failure
from ledex.engine.localize import Suspect, frames, read_source
from ledex.engine.operators import OPERATORS, Edit, single_site_edits
from ledex.engine.patching import Patch, Patcher, PatchError
from ledex.engine.project import Harness
from ledex.engine.screening import Screen, command_prefix, error_type, said, same_message, screen
from ledex.sandbox import Limits, verify_many

# Cheap, common slips first (HumanEvalFix's most frequent bug types), broad operators last.
OPERATOR_ORDER = ("compare", "constant", "bound", "drop_term", "binop", "boolop", "negation", "return", "add_return",
                  "assign", "method", "swap", "drop_condition", "name", "drop_statement")
assert set(OPERATOR_ORDER) == set(OPERATORS)


@dataclass(frozen=True)
class SearchConfig:
    """Budget and knobs of the search, per failure."""

    max_runs: int = 600  # test executions: variants screened + candidates verified one by one (a variant
    # that passed its screen is verified even past it)
    max_seconds: float = 60.0  # wall clock per failure (issue 20's goal: <= 60 s per failure)
    max_fixes: int = 2  # stop after this many verified fixes (the ranking picks among them)
    # ... or this many seconds after the first verified fix that makes every related failing test pass:
    # the exact inverse of a slip is usually the first found, and the search went on for its whole
    # budget for a second fix (fresh-user run X9 F13, validators' btc check: the fix at 6 s, done at 56-65 s)
    after_fix_s: float = 10.0  # counted from when the search leaves the fix's line (Search._leaving)
    batch: int = 200  # variants screened per sandboxed process
    # ... when the failing test hung: most variants of a loop hang too, each for variant_timeout_s,
    # and a screen cut by the deadline reports nothing, so small batches report as they go (roman
    # 5.2, fresh-user run X3: 120 variants in one process, the right one passed at ~10 s, all lost)
    hung_batch: int = 8
    variant_timeout_s: float = 2.0  # per variant and test in the screen (a mutant that loops fails)
    # ... for a hung test: hung_pace x the slowest passing test of its file (Failure.pace_s; the factor
    # the sandbox's per-test timeout takes after a hang), at least hung_timeout_min_s: most variants of a
    # loop that never ends hang too, and shortuuid's loop header fix came after its body's 34 variants at
    # 2 s each: not found in 60 s (fresh-user run X9 F6). Its slowest passing test took 71 ms: found at
    # 36 s (55 s at 20x, 27 s at 0.25 s)
    hung_pace: float = 10.0
    hung_timeout_min_s: float = 0.25
    screen: bool = True  # False: one sandbox run per candidate (bench/bench_search.py's reference)
    operators: tuple[str, ...] | None = None  # a subset of operators.OPERATORS (None: all)
    line_sbfl: bool = True  # edit sites by per-line Ochiai first (False: traceback, then bottom-up)


@dataclass
class Repair:
    """One single-site edit of a suspect, as a patch of its file."""

    edit: Edit
    suspect: Suspect
    patch: Patch
    code: str  # the edited function, dedented (what a model answer's code block would hold)
    screen: str = ""  # "pass" | "fail" | "error" | "hang" | "" (not screened)
    order: int = 0  # 1-based position in the search's order over all suspects (0: not placed)


@dataclass
class SearchStats:
    """Counters of one search: repairs considered, screened and verified, processes, seconds,
    and why it stopped."""
    candidates: int = 0  # distinct repairs considered
    screened: int = 0  # variants run in a screen
    screen_passed: int = 0
    processes: int = 0  # sandboxed screening processes
    verified_runs: int = 0  # candidates verified one by one
    verified: int = 0
    complete: int = 0  # verified fixes that also made every related failing test pass (Checked.COMPLETE)
    seconds: float = 0.0
    stopped: str = ""  # "fixes" | "runs" | "time" | "cancelled" | "exhausted"
    first_fix_order: int = 0  # Repair.order of the first verified fix (0: none): how soon the order found it
    first_fix_s: float = 0.0  # seconds from the search's start to its first verified fix
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """All counters as a dict."""
        return {k: v for k, v in self.__dict__.items()}


# --- candidates -------------------------------------------------------------------------------------


def _line_order(failure: Failure, suspect: Suspect, start: int, end: int, by_sbfl: bool = True,
                text: str = "") -> dict[int, int]:
    """{line: rank} for the function's lines. With per-line Ochiai (Suspect.lines, sbfl.py) and
    `by_sbfl`: the most suspicious lines first, then the lines the failing test did not execute;
    ties (and everything without coverage) in the fallback order: for a hung test, the body of the
    loop it was stopped in, bottom-up (a loop that never ends updates its state wrongly there:
    roman 5.2, fresh-user run X3, `index = len(numeral)`; its header's 35 edits, each hanging
    for the screen's timeout, used the whole budget first); then the traceback lines (deepest
    first), then bottom-up. `text`: the suspect's file (for the loop)."""
    traced = [line for path, line, _ in reversed(frames(failure.details or ""))
              if Path(path).as_posix().endswith("/" + suspect.path) and start <= line <= end]
    hung = failure.hung and traced
    first = _loop_body(text, traced[0]) if hung else []
    order = list(dict.fromkeys(first + traced)) + [line for line in range(end, start - 1, -1)
                                                    if line not in traced and line not in first]
    scores = dict(suspect.lines) if by_sbfl else {}
    if scores:
        starts = statement_starts(text)  # coverage measures a multi-line statement on its first line
        order.sort(key=lambda line: -scores.get(line, scores.get(starts.get(line, line), -1.0)))  # stable
    return {line: rank for rank, line in enumerate(order)}


def statement_starts(text: str) -> dict[int, int]:
    r"""{line: the first line of its statement} for the lines that continue a multi-line statement
    (a compound statement's header only), which is where coverage.py measures the statement: the
    comparison on the second line of `x = (len(...)\n >= 1)` had no score of its own, and its
    flip was edit 560 of 1,311 (fresh-user run X6, docopt-ng parse_longer). {} if `text` does not parse.

    >>> statement_starts("x = (\n    1\n    >= 2\n)\nif (a or\n        b):\n    y = 1\n")
    {2: 1, 3: 1, 4: 1, 6: 5}
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    starts: dict[int, int] = {}
    for node in ast.walk(tree):  # outer statements first: an inner one's lines are its own
        if isinstance(node, ast.stmt):
            body = getattr(node, "body", None)
            last = body[0].lineno - 1 if isinstance(body, list) and body and isinstance(body[0], ast.stmt) \
                else (node.end_lineno or node.lineno)
            starts.update((line, node.lineno) for line in range(node.lineno + 1, last + 1))
    return starts


def _loop_body(text: str, line: int) -> list[int]:
    """The body lines of the innermost `for`/`while` whose header or body holds `line`, bottom-up;
    [] when there is none (or `text` does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor, ast.While))
             and n.lineno <= line <= (n.end_lineno or n.lineno)]
    if not loops:
        return []
    loop = max(loops, key=lambda n: n.lineno)  # the innermost: the last to start
    return list(range(loop.end_lineno or loop.lineno, loop.body[0].lineno - 1, -1))


def repairs_for(text: str, suspect: Suspect, failure: Failure, operators: Iterable[str] | None = None,
                by_sbfl: bool = True) -> list[Repair]:
    """Every single-site repair of `suspect` in `text` (its file), most promising first (lines
    by _line_order, then OPERATOR_ORDER), as patches (all of them: iter_repairs makes them lazily)."""
    return list(iter_repairs(text, suspect, failure, operators, by_sbfl))


def iter_repairs(text: str, suspect: Suspect, failure: Failure, operators: Iterable[str] | None = None,
                 by_sbfl: bool = True) -> Iterator[Repair]:
    """repairs_for's repairs, each made when it is asked for: a long function has thousands of
    edits, and each is a patch of the whole file (parse 1.20.2's Parser._handle_field: 3,839,
    ~0.3 s each; fresh-user run X4 saw the search spend 12 min making them past its 60 s)."""
    try:
        patcher = Patcher(text, suspect)  # where the function is; PatchError: gone, or changed since
    except PatchError:
        return
    body, start, end = patcher.body, patcher.start, patcher.end
    order = _line_order(failure, suspect, start, end, by_sbfl, body)
    old_lines = len(body.splitlines())
    for edit in single_site_edits(body, suspect.qualname, operators, line=start,
                                  order=lambda line, op: (order.get(line, len(order)), OPERATOR_ORDER.index(op))):
        new_end = end + len(edit.code.splitlines()) - old_lines
        code = textwrap.dedent("\n".join(edit.code.splitlines()[start - 1:new_end])) + "\n"
        try:
            patch = patcher.patch(code)
        except PatchError:
            continue
        yield Repair(edit, suspect, patch, code)


# --- the search loop --------------------------------------------------------------------------------


class Deadline:
    """Set once the user cancelled or the search's seconds ran out: what a running screen or
    verification polls (sandbox.verify_many's `cancel` reads only `is_set()`)."""

    def __init__(self, cancel: threading.Event, ends_at: float):
        self.cancel, self.ends_at = cancel, ends_at  # ends_at: time.monotonic() seconds

    def is_set(self) -> bool:
        """True once cancelled or past ends_at."""
        return self.cancel.is_set() or time.monotonic() >= self.ends_at


# After a fix at risk of fitting the tests (Checked.RISKY), the search goes on this many times
# after_fix_s for one that is not (X12: `pass` for a `raise` verified before the exact inverse, a
# line above, was tried).
RISKY_AFTER_FIX = 3


class Checked(enum.IntEnum):
    """What a search's `verify` callback found of a repair (a plain bool: False, or True = COMPLETE)."""

    NOT_VERIFIED = 0
    PARTIAL = 1  # verified, but some related failing tests (Failure.related) still fail with it
    COMPLETE = 2  # verified, and every related failing test passes too
    RISKY = 3  # COMPLETE, but at risk of fitting the tests rather than the bug (ranking.overfit_risk)


class Search:
    """One failure's search. `verify(repair, stop) -> Checked | bool` verifies a candidate fully
    (the fix engine's sandboxed verification; it records the candidate) and says how that went;
    it must give up (return False) once `stop.is_set()` (a Deadline: cancel or out of time)."""

    def __init__(self, workspace: Path, failure: Failure, config: SearchConfig,
                 verify: Callable[[Repair, Deadline], Checked | bool], *,
                 limits: Limits, harness: Harness = Harness(), cancel: threading.Event | None = None):
        self.workspace, self.failure, self.config, self.verify = Path(workspace), failure, config, verify
        self.limits, self.harness, self.cancel = limits, harness, cancel or threading.Event()
        self.custom = harness.command is not None  # a custom test command: the screen must fail as its run did
        collecting = "::" not in failure.test  # what pytest could not collect (engine/collection.py)
        self.screening = config.screen and command_prefix(harness.command) is not None and not collecting
        self.stats = SearchStats()
        if config.screen and collecting:  # the screen imports the tests first: it would stop (or hang) as pytest did
            self.stats.notes.append("no screening (the tests could not be collected): one sandbox run per candidate")
        elif config.screen and not self.screening:
            self.stats.notes.append("no screening (the custom test command does not start {python}, so the screen "
                                    "cannot run the tests the way it does): one sandbox run per candidate")
        self._seen: set[tuple[str, str]] = set()
        self._fix_site: tuple[str, str, int] | None = None  # the first fix's line, until the search leaves it
        self._after_fix: float | None = None  # seconds the search goes on after leaving it
        self._started = time.monotonic()
        self.stop = Deadline(self.cancel, self._started + config.max_seconds)

    def _leaving(self, repair: Repair) -> None:
        """Start the after-fix deadline once the search moves on from the first fix's line: every
        other edit of that line is verified first, whatever the load, for they decide whether the
        tests can tell the fix from another (ranking.mark_alternatives; fresh-user run X12 F8: under
        load `(4 - rem)` came alone, or with the wrong `(3 + rem)` and the warning)."""
        if self._after_fix is not None and self._fix_site is not None and _site(repair) != self._fix_site:
            self.stop.ends_at = min(self.stop.ends_at, time.monotonic() + self._after_fix)
            self._fix_site = None

    def left_s(self) -> float:
        """Seconds left of the search's budget (max_seconds, or after_fix_s once the search left the
        first fix's line: _leaving)."""
        return self.stop.ends_at - time.monotonic()

    def _stop(self) -> str:
        if self.cancel.is_set():
            return "cancelled"
        if self.stats.complete >= self.config.max_fixes or (self._after_fix is not None and self.left_s() <= 0):
            return "fixes"
        if self.stats.screened + self.stats.verified_runs >= self.config.max_runs:
            return "runs"
        return "time" if self.left_s() <= 0 else ""

    def run(self, suspects: Sequence[Suspect]) -> SearchStats:
        """Search repairs for each suspect in turn until a stop condition; returns the stats."""
        for suspect in suspects:
            text = read_source(self.workspace / suspect.path)
            if text is None:
                continue
            self._search(suspect, self._fresh(iter_repairs(text, suspect, self.failure, self.config.operators,
                                                           self.config.line_sbfl)))
            if self.stats.stopped:
                break
        # a deadline that cut the last candidate's verification is still the reason it stopped
        self.stats.stopped = self.stats.stopped or self._stop() or "exhausted"
        self.stats.seconds = round(time.monotonic() - self._started, 3)
        return self.stats

    def _fresh(self, repairs: Iterator[Repair]) -> Iterator[Repair]:
        """The repairs no earlier suspect's search made, numbered (Repair.order) as they are made."""
        for repair in repairs:
            key = (repair.patch.path, repair.patch.new_text)
            if key not in self._seen:
                self._seen.add(key)
                self.stats.candidates += 1
                repair.order = self.stats.candidates
                yield repair

    def _take(self, repairs: Iterator[Repair], count: int) -> list[Repair]:
        """Up to `count` more repairs; fewer when they run out, or the search is cancelled or out of
        time while they are made (making one costs a patch of the whole file)."""
        taken: list[Repair] = []
        while len(taken) < count and not self.stop.is_set():
            repair = next(repairs, None)
            if repair is None:
                break
            taken.append(repair)
        return taken

    def _search(self, suspect: Suspect, repairs: Iterator[Repair]) -> None:
        direct = not self.screening
        pending: list[Repair] = []  # made, not yet screened or verified
        while not self._halt():
            size = 1 if direct else self._batch_size()
            pending += self._take(repairs, size - len(pending))
            if not pending:
                return
            if direct:
                self._verify(pending.pop(0))
                continue
            outcome = self._screen(suspect, pending[:size])
            if outcome is None:  # screening impossible here: one sandbox run per candidate instead
                direct = True
                continue
            del pending[:outcome]

    def _halt(self) -> bool:
        self.stats.stopped = self._stop()
        return bool(self.stats.stopped)

    def _batch_size(self) -> int:
        batch = self.config.hung_batch if self.failure.hung else self.config.batch
        return max(1, min(batch, self.config.max_runs - self.stats.screened - self.stats.verified_runs))

    def _screen(self, suspect: Suspect, batch: list[Repair]) -> int | None:
        """Screen a batch and verify what passed; the number of repairs dealt with, None when
        screening does not work for this failure."""
        tests = tuple(dict.fromkeys((self.failure.test, *self.failure.also)))
        wall = max(5.0, min(self.left_s(), self.limits.wall_s))
        limits = Limits(**{**self.limits.to_dict(), "wall_s": wall})
        result = screen(self.workspace, suspect, [r.code for r in batch], tests, limits=limits, harness=self.harness,
                        timeout_s=self.variant_timeout_s(), cancel=self.stop)
        self.stats.processes += 1
        if result.error == "cancelled":  # cancelled or out of time: _halt says which
            return len(batch)
        unlike = self._unlike(result)
        if result.error or result.baseline != "fail" or unlike:
            why = result.error or unlike or "the failure did not reproduce"
            self.stats.notes.append(f"no screening ({why}): one sandbox run per candidate")
            return None
        dealt = len(batch) if result.done else (max(result.status, default=-1) + 1)
        for i, repair in enumerate(batch[:dealt]):
            repair.screen = result.status.get(i, "fail")
        if not result.done and dealt < len(batch):  # the process died on this one (a hang in C code)
            batch[dealt].screen, dealt = "hang", dealt + 1
        self.stats.screened += dealt
        for repair in batch[:dealt]:
            self._leaving(repair)  # also when no edit of another line passes its screen
            if repair.screen == "pass":
                self.stats.screen_passed += 1
                # the runs budget does not stop it: the screen that spent the budget found it (fresh-user run
                # X6, docopt-ng: the right flip passed as variant 575 of 600 and was never verified)
                if self._halt() and self.stats.stopped != "runs":
                    break
                self._verify(repair)
        return dealt

    def variant_timeout_s(self) -> float:
        """Seconds a screened variant may run per test: SearchConfig.variant_timeout_s, shorter for a
        hung test whose file's passing tests are quick (hung_pace, hung_timeout_min_s)."""
        config, pace = self.config, self.failure.pace_s
        if not self.failure.hung or pace <= 0:
            return config.variant_timeout_s
        return min(config.variant_timeout_s, max(config.hung_timeout_min_s, config.hung_pace * pace))

    def _unlike(self, result: Screen) -> str:
        """Why the screen does not stand for the tests' run ('' when it does): its unchanged code
        failed with another error. A custom command's tests may need its options or setup; any
        failing test may need an earlier test of its file, which the screen does not run (pathspec
        0.12.1 sets a class attribute in one: fresh-user run X10), so an error of another class counts."""
        if self.failure.hung:
            return ""
        want, got = error_type(self.failure.message), error_type(result.crash)
        if want != got and (self.custom or (want and got)):
            return f"the screen failed with {got or 'another error'}, the tests' {'command' if self.custom else 'run'} with {want or 'none'}"
        if not self.custom:
            return ""
        if not same_message(self.failure.message, result.crash):  # a fixture's `assert` of an option is an AssertionError too (X4)
            return f"the screen failed otherwise: {said(result.crash)[:120]!r}"
        return ""

    def _verify(self, repair: Repair) -> None:
        self._leaving(repair)
        self.stats.verified_runs += 1
        checked = self.verify(repair, self.stop)
        if checked:
            self.stats.verified += 1
            complete = checked is True or checked == Checked.COMPLETE
            if (complete or checked == Checked.RISKY) and self._after_fix is None:
                self._fix_site = _site(repair)
                self._after_fix = self.config.after_fix_s * (RISKY_AFTER_FIX if checked == Checked.RISKY else 1)
            self.stats.complete += complete
            if not self.stats.first_fix_order:
                self.stats.first_fix_order = repair.order
                self.stats.first_fix_s = round(time.monotonic() - self._started, 3)


def _site(repair: Repair) -> tuple[str, str, int]:
    """Where an edit is: (file, function, line)."""
    return repair.suspect.path, repair.suspect.qualname, repair.edit.line


def run_search(workspace: Path, failure: Failure, suspects: Sequence[Suspect], config: SearchConfig,
               verify: Callable[[Repair, Deadline], Checked | bool], *, limits: Limits, harness: Harness = Harness(),
               cancel: threading.Event | None = None) -> SearchStats:
    """Search `suspects` for `failure` (see the module docstring); verified candidates reach `verify`."""
    return Search(workspace, failure, config, verify, limits=limits, harness=harness, cancel=cancel).run(suspects)


if __name__ == "__main__":
    import sys

    from ledex.engine.failures import discover
    from ledex.engine.fixer import suspects_to_try

    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for failing in discover(root).failures:
        def check(repair: Repair, stop: Deadline, f=failing) -> bool:
            """Sandbox-verify a repair against the failing test and its siblings; prints the result."""
            runs = verify_many(root, [{repair.patch.path: repair.patch.new_text}], (f.test, *f.siblings), cancel=stop)
            verdict = next((v for _, v in runs), None)
            if verdict is None:
                return False
            print(("VERIFIED " if verdict.passed else "failed   ") + repair.edit.description)
            return verdict.passed
        print(failing.test, run_search(root, failing, suspects_to_try(failing, 3), SearchConfig(), check,
                                       limits=Limits(wall_s=60.0)).to_dict())
