"""Failure discovery: run the workspace's tests (in the sandbox, so nothing of the user's is
touched) and turn each failing test into a Failure with its suspect function.

Also reads JUnit XML reports that other runners wrote (the language server watches them).

Try it:  python -m ledex.engine.failures examples/inventory
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ledex.engine.localize import Suspect, localize, source_of_test
from ledex.sandbox import Limits, TestOutcome, Verdict, run_tests
from ledex.sandbox.junit import Rewriter, parse_junit

FAILED = ("failed", "error")


@dataclass(frozen=True)
class Failure:
    """One failing test, what it said, and the function we think is wrong."""

    test: str  # pytest node id, relative to the workspace
    file: str | None  # test file, relative
    line: int | None  # 1-based line of the test function
    message: str
    details: str  # traceback text (native format, real workspace paths)
    suspect: Suspect | None
    test_source: str | None = None
    siblings: tuple[str, ...] = ()  # node ids of the other tests in the same file (verification re-runs them)
    passing_siblings: tuple[str, ...] = ()  # those that passed in the discovery run

    @property
    def key(self) -> str:
        return f"{self.test}|{self.suspect.path + ':' + self.suspect.qualname if self.suspect else ''}"


@dataclass
class Discovery:
    failures: list[Failure]
    verdict: Verdict | None
    notes: list[str] = field(default_factory=list)  # problems a person should read (collection errors...)


def _test_name(nodeid: str) -> tuple[str | None, str | None]:
    """('tests/test_a.py', 'TestX::test_y[1]') from a node id."""
    if "::" not in nodeid:
        return None, None
    file, name = nodeid.split("::", 1)
    return file, name


def is_collection_error(outcome: TestOutcome) -> bool:
    return "::" not in outcome.nodeid


def failure_from_outcome(workspace: Path, outcome: TestOutcome, same_file: Sequence[TestOutcome]) -> Failure:
    file, name = _test_name(outcome.nodeid)
    file = outcome.file or file
    suspect = localize(workspace, outcome.details, file, name)
    siblings = tuple(o.nodeid for o in same_file if o.nodeid != outcome.nodeid)
    passing = tuple(o.nodeid for o in same_file if o.nodeid != outcome.nodeid and o.outcome == "passed")
    test_src = source_of_test(workspace, file, name) if file and name else None
    return Failure(outcome.nodeid, file, outcome.line, outcome.message, outcome.details, suspect,
                   test_src, siblings, passing)


def failures_from_outcomes(workspace: Path, outcomes: Sequence[TestOutcome]) -> tuple[list[Failure], list[str]]:
    failures, notes = [], []
    for outcome in outcomes:
        if outcome.outcome not in FAILED:
            continue
        if is_collection_error(outcome):
            notes.append(f"could not collect {outcome.nodeid}: {outcome.message or 'collection error'}")
            continue
        same_file = [o for o in outcomes if o.nodeid.split("::")[0] == outcome.nodeid.split("::")[0]]
        failure = failure_from_outcome(workspace, outcome, same_file)
        if failure.suspect is None:
            notes.append(f"{outcome.nodeid}: no function in the workspace to fix (the failure is in the test "
                         "itself, in a non-UTF-8 file, or in code outside the workspace)")
        failures.append(failure)
    return failures, notes


def discover(workspace: Path, *, limits: Limits = Limits(wall_s=300.0, cpu_s=300), python: str | None = None,
             command: Sequence[str] | None = None, tests: Sequence[str] = ()) -> Discovery:
    """Run the tests once in the sandbox and return the failures (and notes for the user)."""
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise FileNotFoundError(f"workspace not found: {workspace}")
    verdict = run_tests(workspace, tests, limits=limits, python=python, command=command)
    failures, notes = failures_from_outcomes(workspace, verdict.outcomes)
    if verdict.error and not any(note.startswith("could not collect") for note in notes):
        notes.insert(0, f"test run problem: {verdict.error}")
    if verdict.killed_reason:
        notes.insert(0, f"the test run was stopped ({verdict.killed_reason}); results may be partial")
    if not verdict.outcomes and not verdict.error:
        notes.append("no tests were found in the workspace")
    return Discovery(failures, verdict, notes)


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
        print(failure.test, "->", failure.suspect and f"{failure.suspect.path}:{failure.suspect.qualname}")
