"""Failure discovery: run the workspace's tests (in the sandbox, so nothing of the user's is
touched) and turn each failing test into a Failure with its ranked suspects (localize.py;
the test files that failed are re-run with per-test coverage to order them, sbfl.py).
What each test outcome means (a collection error, a hang, a doctest's message...) is outcomes.py.

Also reads JUnit XML reports that other runners wrote (the language server watches them).

Try it:  python -m ledex.engine.failures examples/inventory
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ledex.engine.impact import ImportGraph
from ledex.engine.localize import Suspect, TestFiles, is_doctest_name, rank_suspects, source_of_test
from ledex.engine.notes import Note, NoteKind, no_suspect_notes, note_kind, untrusted_note
from ledex.engine.outcomes import (FAILED, body_never_ran, internal_error_text, is_collection_error, is_hung,
                                   is_internal_error, is_untrusted_pass, killed_its_process, outcome_message,
                                   pytest_said, test_name)
from ledex.engine.project import Harness
from ledex.engine.sbfl import Spectrum, spectra
from ledex.sandbox import Limits, TestOutcome, Verdict, run_tests
from ledex.sandbox.junit import Rewriter, parse_junit
from ledex.sandbox.verdict import HUNG_PREFIX

# Time under coverage.py (C tracer, Python 3.11) over time without, measured on more-itertools'
# test_more.py in the sandbox: 45 s -> 101 s (bench/bench_localize.py); 3 leaves headroom.
COVERAGE_SLOWDOWN = 3
TRIED_SUSPECTS = 3  # suspects a problem's fix tries in turn (fixer.FixConfig.suspects): enough for a helper's caller
# Tests of one file from which a re-run names the file rather than each id (Failure.rerun_args): below
# this the ids cost pytest little, and by id a run tells a case pytest did not find (engine/rerun.py)
WHOLE_FILE_MIN = 500
MAX_RELATED = 30  # related failing tests (Failure.related) per problem: every verification pays their run time


class DiscoveryError(RuntimeError):
    """No test ran (pytest stopped at start-up, every module failed to collect, a requested id
    does not exist): the message quotes pytest's own error. ``verdict`` is the sandbox's.
    The CLI exits 2 with the message (issue 12 item 11)."""

    def __init__(self, verdict: Verdict, message: str | None = None) -> None:
        super().__init__(message or f"0 ran ({verdict.error_kind} error): {verdict.error}")
        self.verdict = verdict


@dataclass(frozen=True)
class Failure:
    """One failing test, what it said, and the function we think is wrong."""

    test: str  # pytest node id, relative to the workspace
    file: str | None  # test file, relative
    line: int | None  # 1-based line of the test function
    message: str
    details: str  # traceback text (native format, real workspace paths)
    suspect: Suspect | None  # the top suspect (suspects[0]), None when nothing in the workspace qualifies
    test_source: str | None = None
    # Node ids of the other tests verification re-runs: those of the same file that passed in the
    # discovery run (plus passing tests of other files importing the suspect, with_dependents). A
    # sibling that failed, hung or was skipped is not re-run: a fix need not repair it, and a hanging
    # one would cost its timeout on every candidate.
    siblings: tuple[str, ...] = ()
    passing_siblings: tuple[str, ...] = ()  # the tests that must keep passing (today the same as siblings)
    suspects: tuple[Suspect, ...] = ()  # every suspect, most suspicious first (localize.rank_suspects)
    also: tuple[str, ...] = ()  # other failing tests with the same top suspect: one problem (group_by_suspect)
    # Failing tests of other problems that suspect a function this one's fix may patch (group_by_suspect):
    # re-run with every candidate, never required to pass; a verified fix that makes them pass too is
    # likelier the bug's (CandidateResult.also_fixes, ranking, the search's stop). Fresh-user run X7,
    # wcwidth: a verified edit fixed its own 2 tests and left 1 of the 16 others sharing the bug failing.
    related: tuple[str, ...] = ()
    root: str = ""  # the workspace's absolute path when discovered: the prompt's traceback is relative to it
    pace_s: float = 0.0  # the slowest passing test of its file in that run (seconds; 0.0: none passed)
    # the node ids of its file's tests in the order that run ran them: re-runs keep it, since a test may
    # need an earlier one (pathspec 0.12.1 reads a class attribute an earlier test sets: fresh-user run X10)
    run_order: tuple[str, ...] = ()

    @property
    def relative_details(self) -> str:
        """`details` with the workspace's frames relative to it (`File "pkg/calc.py", line 4`): the
        model's prompt must not depend on where the project lives (a dry run's scratch copy under
        /tmp, the user's home, a training collect's folder)."""
        return self.details.replace(f'File "{self.root}/', 'File "') if self.root else self.details

    @property
    def reruns(self) -> tuple[str, ...]:
        """Every node id one verification runs: the failing test, its group (`also`), the siblings,
        the related failing tests; those of its file in the order its run ran them (run_order)."""
        tests = dict.fromkeys((self.test, *self.also, *self.siblings, *self.related))
        rank = {test: i for i, test in enumerate(self.run_order)}
        return tuple(sorted(tests, key=lambda test: rank.get(test, len(rank))))  # stable: the rest as listed

    @property
    def rerun_args(self) -> tuple[str, ...]:
        """`reruns` as the sandbox is asked for them: the file of a failing test of the group whose
        every test of the run is wanted, by its path (pytest takes a file's 8,903 node ids three
        times as long as the file: tinycss2 1.4.0, fresh-user run X10 F10, where no verification fit
        the 60 s limit); the rest by node id, in run order."""
        wanted = self.reruns
        chosen, in_file = set(wanted), Counter(t.split("::")[0] for t in self.run_order)
        own = {test.split("::")[0] for test in (self.test, *self.also)}
        whole = {file for file in own if in_file[file] >= WHOLE_FILE_MIN
                 and all(t in chosen for t in self.run_order if t.split("::")[0] == file)}
        args: dict[str, None] = {}
        for test in wanted:
            file = test.split("::")[0]
            args[file if file in whole else test] = None
        return tuple(args)

    @property
    def hung(self) -> bool:
        """The sandbox stopped this test for running too long (is_hung, for the discovered failure)."""
        return self.message.startswith(HUNG_PREFIX)

    @property
    def key(self) -> str:
        """"test|path:qualname" of the failure and its top suspect (identifies one problem)."""
        return f"{self.test}|{self.suspect.path + ':' + self.suspect.qualname if self.suspect else ''}"


@dataclass
class Discovery:
    """What a discovery run found: the failures, the sandbox's verdict, notes for the user."""

    failures: list[Failure]
    verdict: Verdict | None
    notes: list[str] = field(default_factory=list)  # Notes a person should read (collection errors...)
    # discover_selected: the wider run a fix of the selected failures is verified against (their files
    # and the files importing their suspects); None when the failures come from `verdict` itself
    wider: Verdict | None = None
    # ... and that run's failing tests that were not selected: not fixed, but related failing tests of a
    # selected failure sharing a suspect (group_by_suspect's `context`), and reported (fresh-user run X11 F12)
    unselected: tuple[Failure, ...] = ()

    @property
    def tests_run(self) -> int:
        """Tests that ran to find and check the failures: the wider run's when there was one, so
        `ledex fix --test ID` does not report "1 test ran" beside a fix checked against 119
        (fresh-user run X10 F2)."""
        runs = [v for v in (self.verdict, self.wider) if v is not None]
        return max((len(v.outcomes) for v in runs), default=0)




def failure_from_outcome(workspace: Path, outcome: TestOutcome, same_file: Sequence[TestOutcome], *,
                         is_test=None, spectrum: Spectrum | None = None) -> Failure:  # noqa: ANN001
    """One Failure with its ranked suspects (`is_test`: a TestFiles; `spectrum`: the test
    file's coverage, or None)."""
    test_file, name = test_name(outcome.nodeid)  # the collected file (a mixin's test is defined elsewhere)
    file = outcome.file or test_file
    is_test = is_test or TestFiles(workspace, _collected_files(same_file))
    suspects = tuple(rank_suspects(workspace, outcome.details, test_file, name, is_test=is_test, spectrum=spectrum,
                                   body_ran=not body_never_ran(outcome)))
    passing = tuple(o.nodeid for o in same_file if o.nodeid != outcome.nodeid and o.outcome == "passed")
    doctest = name is not None and is_doctest_name(name)
    test_src = source_of_test(workspace, test_file, name) if test_file and name and not doctest else None
    message = outcome_message(outcome)
    pace = max((o.duration_s for o in same_file if o.outcome == "passed"), default=0.0)
    return Failure(outcome.nodeid, file, outcome.line, message, outcome.details,
                   suspects[0] if suspects else None, test_src, passing, passing, suspects, root=str(workspace),
                   pace_s=pace, run_order=tuple(o.nodeid for o in same_file))


def _collected_files(outcomes: Sequence[TestOutcome]) -> set[str]:
    """Files pytest collected tests from (doctest items excepted: theirs is the code under test)."""
    files = set()
    for outcome in outcomes:
        file, name = test_name(outcome.nodeid)
        if file and name and not is_doctest_name(name):
            files.update(f for f in (file, outcome.file) if f)  # collected from, and defined in (a mixin's file)
    return files


def failures_from_outcomes(workspace: Path, outcomes: Sequence[TestOutcome], *,
                           spectra_by_file: Mapping[str, Spectrum] | None = None,
                           imports: ImportGraph | None = None) -> tuple[list[Failure], list[str]]:
    """Failures (with ranked suspects) and notes from a run's outcomes; `spectra_by_file` is
    per-test-file coverage (sbfl.spectra) when a coverage run was made; `imports` is the
    workspace's import graph when the caller keeps one (the language server), else one is read."""
    failures, notes = [], untrusted_note([o.nodeid for o in outcomes if is_untrusted_pass(o)])
    is_test = TestFiles(workspace, _collected_files(outcomes))
    for outcome in outcomes:
        if outcome.outcome not in FAILED or is_untrusted_pass(outcome):
            continue
        if is_collection_error(outcome):
            notes.append(Note(f"could not collect {outcome.nodeid}: {outcome.message or 'collection error'}",
                              NoteKind.COLLECTION))
            continue
        if is_internal_error(outcome):
            notes.append(Note(internal_error_text(workspace, outcome), NoteKind.RUN_PROBLEM))
            continue
        same_file = [o for o in outcomes if o.nodeid.split("::")[0] == outcome.nodeid.split("::")[0]]
        spectrum = spectrum_for(spectra_by_file or {}, outcome.nodeid.split("::")[0])
        failures.append(failure_from_outcome(workspace, outcome, same_file, is_test=is_test, spectrum=spectrum))
    notes += no_suspect_notes(failures, measured=bool(spectra_by_file))
    dependents = _Dependents(imports or ImportGraph(workspace))
    return [with_dependents(f, outcomes, dependents) for f in failures], notes


def spectrum_for(spectra_by_file: Mapping[str, Spectrum], file: str) -> Spectrum | None:
    """The test file's spectrum; when none of its tests passed (a one-test regression file:
    every line it ran scores 1.0, nothing told apart), the spectra of every measured file as
    one (their failing tests against their passing tests). None without coverage."""
    own = spectra_by_file.get(file)
    if own is None or own.passing or len(spectra_by_file) < 2:
        return own
    merged = {nodeid: lines for spectrum in spectra_by_file.values() for nodeid, lines in spectrum.coverage.items()}
    return Spectrum(merged, frozenset().union(*(s.failing for s in spectra_by_file.values())),
                    frozenset().union(*(s.passing for s in spectra_by_file.values())), own.blend)


# Passing tests of other files that a fix must keep passing, at most this many per failure:
# enough for a package's suite, bounded so one verification stays a few seconds.
MAX_DEPENDENT_TESTS = 300


class _Dependents:
    """Test files affected by a module (ImportGraph.affected_tests), each module asked once."""

    def __init__(self, graph: ImportGraph) -> None:
        self.graph, self.seen = graph, {}

    def __call__(self, rel: str) -> tuple[str, ...]:
        if rel not in self.seen:
            if not self.seen:
                self.graph.refresh()  # once per run: a walk of the workspace, then stats only
            self.seen[rel] = tuple(self.graph.affected_tests(rel, refresh=False) or ())
        return self.seen[rel]


def with_dependents(failure: Failure, outcomes: Sequence[TestOutcome], dependents) -> Failure:  # noqa: ANN001
    """`failure` whose re-run set also holds the tests that passed in other test files
    importing its suspects' modules (engine/impact.py's static import graph), so a fix that
    breaks a passing test elsewhere is not verified ("nothing that passed before fails"), and
    the passing doctests of those modules themselves (`--doctest-modules`: ordered-set 4.1.0's 22
    docstring examples in the file a fix rewrites were not re-run, fresh-user run X10 F7).
    A module imported by no test file (graph says None) adds only its own doctests."""
    files: set[str] = set()
    for suspect in failure.suspects[:3]:
        files.update((suspect.path, *dependents(suspect.path)))
    own = failure.test.split("::")[0]
    extra = [o.nodeid for o in outcomes if o.outcome == "passed" and o.nodeid.split("::")[0] in files
             and o.nodeid.split("::")[0] != own and o.nodeid not in failure.siblings][:MAX_DEPENDENT_TESTS]
    if not extra:
        return failure
    wanted = {*failure.run_order, *extra}  # re-run as the suite ran them: another file's test may set things up
    return replace(failure, siblings=failure.siblings + tuple(extra),
                   passing_siblings=failure.passing_siblings + tuple(extra),
                   run_order=tuple(o.nodeid for o in outcomes if o.nodeid in wanted))


def group_by_suspect(failures: Sequence[Failure], context: Sequence[Failure] = ()) -> list[Failure]:
    """Failures that share their top suspect as one problem each (issue 12 item 7): the first
    one stands for the group, `also` names the others, and the siblings of all are re-run.
    A candidate is then generated once for the group and verified against every test in it.
    Failures without a suspect are grouped by their message (a fixture that raises for every
    test is one problem, not one per test); order is kept (by each group's first failure).
    `context`: other failing tests (not to be fixed) that may be a group's related failing tests."""
    groups: dict[object, list[Failure]] = {}
    for failure in failures:
        key = (failure.suspect.path, failure.suspect.qualname) if failure.suspect else ("", failure.message)
        groups.setdefault(key, []).append(failure)
    merged = [_merge(members) for members in groups.values()]
    return [replace(group, related=_related(group, [*failures, *context])) for group in merged]


def _related(group: Failure, failures: Sequence[Failure]) -> tuple[str, ...]:
    """Failing tests outside `group` (not hung: a hanging test would cost its timeout on every
    candidate) that have one of the suspects its fix may patch (the first TRIED_SUSPECTS) among
    theirs; at most MAX_RELATED, in discovery order."""
    tried = ([group.suspect] if group.suspect else []) + list(group.suspects)[:TRIED_SUSPECTS]
    mine = {(s.path, s.qualname) for s in tried}
    inside = {group.test, *group.also}
    found = [f.test for f in failures if f.test not in inside and not f.hung
             and mine & {(s.path, s.qualname) for s in f.suspects}]
    return tuple(dict.fromkeys(found))[:MAX_RELATED]


def _merge(members: list[Failure]) -> Failure:
    first = members[0]
    if len(members) == 1:
        return first
    tests = [f.test for f in members]
    siblings = [s for f in members for s in f.siblings if s not in tests]
    passing = [s for f in members for s in f.passing_siblings if s not in tests]
    return replace(first, also=tuple(tests[1:]), siblings=tuple(dict.fromkeys(siblings)),
                   passing_siblings=tuple(dict.fromkeys(passing)),
                   run_order=tuple(dict.fromkeys(t for f in members for t in f.run_order)))


def discover(workspace: Path, *, limits: Limits = Limits(wall_s=300.0, cpu_s=300), harness: Harness = Harness(),
             tests: Sequence[str] = (), coverage: bool = True, imports: ImportGraph | None = None,
             on_phase: Callable[[str, str], None] | None = None) -> Discovery:
    """Run the tests in the sandbox and return the failures (and notes for the user).

    With `coverage` (the default) and some failures, the test files that failed run a second
    time with per-test line coverage, which orders each failure's suspects (sbfl.py); runs
    without failures cost nothing extra. `imports`: see failures_from_outcomes.
    `on_phase(key, text)` is called as each later phase begins ("coverage", "ranking"), for
    progress reports. `harness`: the project's interpreter and command, and what `workspace` is a copy of.
    Raises FileNotFoundError (no such folder) and DiscoveryError (no test ran).
    """
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise FileNotFoundError(f"workspace not found: {workspace}")
    phase = on_phase or (lambda key, text: None)
    verdict = run_tests(workspace, tests, limits=limits, **harness.sandbox)
    if verdict.error and verdict.ran == 0:
        from ledex.engine.collection import collection_failures  # it builds on this module

        failures = collection_failures(workspace, verdict)
        if not failures:
            raise DiscoveryError(verdict)
        return Discovery(failures, verdict, [Note(f"no test ran ({verdict.error}); a fix of what stopped pytest must "
                                                  "let the tests be collected and pass", NoteKind.RUN_PROBLEM)])
    internal = next((o for o in verdict.outcomes if is_internal_error(o)), None)
    if internal is not None and not any(not is_collection_error(o) and not is_internal_error(o)
                                        for o in verdict.outcomes):
        raise DiscoveryError(verdict, f"0 ran: {internal_error_text(workspace, internal)}")
    found, extra = {}, []
    if coverage and (files := failing_files(verdict)):
        phase("coverage", f"measuring line coverage of {len(files)} test file(s) with failures")
        found, extra = coverage_spectra(workspace, verdict, limits=limits, harness=harness)
    phase("ranking", "ranking suspects")
    failures, notes = failures_from_outcomes(workspace, verdict.outcomes, spectra_by_file=found, imports=imports)
    notes += extra
    if verdict.error and internal is None and not any(note_kind(note) is NoteKind.COLLECTION for note in notes):
        notes.insert(0, Note(f"test run problem: {verdict.error}", NoteKind.RUN_PROBLEM))
    if verdict.killed_reason == "timeout":
        notes.insert(0, Note(f"the test run was stopped: the suite ran past its {limits.wall_s:g} s; the test "
                             "running then is reported as not finished and the tests after it did not run "
                             "(allow more time: ledex fix --discovery-timeout)", NoteKind.STOPPED))
    elif verdict.killed_reason:
        notes.insert(0, Note(f"the test run was stopped ({verdict.killed_reason}); results may be partial",
                             NoteKind.STOPPED))
    if not verdict.outcomes and not verdict.error:
        said = pytest_said(verdict)
        notes.append(Note(f"no tests ran: pytest said {said!r}" if said else "no tests were found in the workspace",
                          NoteKind.NO_TESTS))
    return Discovery(failures, verdict, notes)


def discover_selected(workspace: Path, tests: Sequence[str], *, limits: Limits = Limits(wall_s=300.0, cpu_s=300),
                      harness: Harness = Harness(), on_phase: Callable[[str, str], None] | None = None) -> Discovery:
    """discover() of only `tests` (`ledex fix --test`: which failures to fix), then one more run of
    their test files and of every test file importing their suspects' modules (with_dependents'
    rule), from which the failures are read: a fix must keep every test that passes there passing,
    as in a run of the whole suite. Fresh-user run X9: with `--test ID` a fix was verified against
    that one test, and --apply wrote one that broke 73 of validators' 553 tests. The verdict and
    notes are the selected run's; a selected test that passes in the wider run (it failed only
    after other tests) keeps its first failure, with the wider run's dependents.
    Raises as discover() does."""
    first = discover(workspace, limits=limits, harness=harness, tests=tests, on_phase=on_phase)
    if not first.failures:
        return first
    graph = ImportGraph(Path(workspace).resolve())
    dependents = _Dependents(graph)
    scope = {f.test.split("::")[0] for f in first.failures}
    for failure in first.failures:
        for suspect in failure.suspects[:3]:
            scope.update(dependents(suspect.path))
    if on_phase is not None:
        on_phase("widen", f"running the {len(scope)} test file(s) a fix of the selected failures must keep passing")
    whole = discover(workspace, limits=limits, harness=harness, tests=sorted(scope), imports=graph)
    chosen = {f.test: f for f in first.failures}
    failures = [f for f in whole.failures if f.test in chosen]
    outcomes = whole.verdict.outcomes if whole.verdict else ()
    failures += [with_dependents(f, outcomes, dependents) for test, f in chosen.items()
                 if test not in {g.test for g in failures}]
    unselected = tuple(f for f in whole.failures if f.test not in chosen)
    return Discovery(failures, first.verdict, first.notes, whole.verdict, unselected)


def failing_files(verdict: Verdict) -> list[str]:
    """The test files (relative paths, sorted) with a failing or erroring test in `verdict`."""
    return sorted({o.nodeid.split("::")[0] for o in verdict.outcomes
                   if o.outcome in FAILED and not is_collection_error(o) and not is_internal_error(o)
                   and not is_untrusted_pass(o)})


def coverage_selection(verdict: Verdict) -> list[str]:
    """What the coverage run re-runs: the files with failing tests, as node ids without the
    tests that hung (each would cost COVERAGE_SLOWDOWN times the per-test timeout again and
    give no spectrum) or killed their process (coverage.py writes its data as the process
    exits: fresh-user run X5 got none); just the files when there are none of those."""
    files = failing_files(verdict)
    hung = {o.nodeid for o in verdict.outcomes if is_hung(o) or killed_its_process(o)}
    if not hung:
        return files
    return [o.nodeid for o in verdict.outcomes if o.nodeid.split("::")[0] in files and o.nodeid not in hung
            and not is_collection_error(o)]


def coverage_spectra(workspace: Path, verdict: Verdict, *, limits: Limits,
                     harness: Harness = Harness()) -> tuple[dict[str, Spectrum], list[str]]:
    """({test file: Spectrum}, notes): the files with failing tests, re-run with coverage
    (coverage_selection: without the tests that hung)."""
    files = coverage_selection(verdict)
    if not files:
        return {}, []
    # coverage.py's tracer roughly doubles a test's time: a test near the per-test timeout must not fail for it
    slower = replace(limits, test_timeout_s=limits.test_timeout_s * COVERAGE_SLOWDOWN) \
        if limits.test_timeout_s and limits.test_timeout_s * COVERAGE_SLOWDOWN + 7 <= limits.wall_s else limits
    measured = run_tests(workspace, files, limits=slower, coverage=True, **harness.sandbox)
    if measured.coverage is None:
        why = next((n for n in measured.notes if n.startswith("no coverage")), measured.error or "no coverage")
        return {}, [f"suspects ordered without coverage ({why})"]
    # ranking is advice: a pass the sandbox does not trust (the user's own code, unpatched) counts as a pass
    return spectra(measured.coverage, {o.nodeid: "passed" if is_untrusted_pass(o) else o.outcome
                                       for o in measured.outcomes}), []


# --- JUnit reports written by other runners -----------------------------------------------


def read_junit(path: Path, workspace: Path) -> list[TestOutcome]:
    """Outcomes from a JUnit XML report another runner wrote (pytest's xunit1/xunit2 and most
    others), parsed by the sandbox's own JUnit reader."""
    root = Path(workspace)
    outcomes = parse_junit(Path(path), Rewriter(root, root))
    if outcomes is None:
        raise ValueError(f"{path} is not a readable JUnit XML report")
    return list(outcomes.values())


if __name__ == "__main__":
    import sys

    found = discover(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    for note in found.notes:
        print("note:", note)
    for failure in found.failures:
        print(failure.test, "->", ", ".join(f"{s.path}:{s.qualname}" for s in failure.suspects[:3]))
