"""What one test outcome says: a collection error, pytest's internal error, a pass the sandbox does
not trust, a hang, a test whose process exited, a fixture that failed in setup; a failing
outcome's one-line message (a doctest's is its example, expected and got); pytest's own reason
when a run collected nothing. Pure functions of sandbox outcomes, used by failures.py (discovery)
and judging.py (verification).

Try it:  python -m doctest engine/outcomes.py -v
"""

from __future__ import annotations

import re
from pathlib import Path

from ledex.engine.localize import frames, is_doctest_name
from ledex.sandbox import TestOutcome, Verdict
from ledex.sandbox.verdict import EXITED_PREFIX, HUNG_PREFIX, INTERNAL_ERROR_ID, UNTRUSTED_PREFIX

FAILED = ("failed", "error")


def test_name(nodeid: str) -> tuple[str | None, str | None]:
    """('tests/test_a.py', 'TestX::test_y[1]') from a node id."""
    if "::" not in nodeid:
        return None, None
    file, name = nodeid.split("::", 1)
    return file, name

def is_collection_error(outcome: TestOutcome) -> bool:
    """A module that failed to collect (its id has no `::`), not a test that failed."""
    return "::" not in outcome.nodeid


def is_internal_error(outcome: TestOutcome) -> bool:
    """pytest's own INTERNALERROR (a hook or plugin raised), not a test that failed."""
    return outcome.nodeid == INTERNAL_ERROR_ID and outcome.outcome in FAILED


def is_untrusted_pass(outcome: TestOutcome) -> bool:
    """A test that passed in a run the sandbox does not trust (tampering: its passes are
    believed by nobody): not known to fail, so not a failure to fix."""
    return outcome.outcome == "error" and outcome.message.startswith(UNTRUSTED_PREFIX)


def internal_error_text(workspace: Path, outcome: TestOutcome) -> str:
    """"pytest stopped with an internal error in conftest.py:2 (pytest_collection_modifyitems):
    RuntimeError: broken hook": where in the workspace it was raised, and the exception."""
    lines = [line.strip() for line in outcome.details.splitlines() if line.strip()]
    raised = lines[-1] if lines else outcome.message
    where = ""
    for path, line, func in reversed(frames(outcome.details)):
        rel = _relative_to(path, workspace)
        if rel is not None:
            where = f" in {rel}:{line} ({func})"
            break
    return f"pytest stopped with an internal error{where}: {raised}"


def _relative_to(path: str, workspace: Path) -> str | None:
    try:
        rel = Path(path).resolve().relative_to(Path(workspace).resolve())
    except (ValueError, OSError):
        return None
    return None if {"site-packages", "dist-packages"} & set(rel.parts) else rel.as_posix()


def body_never_ran(outcome: TestOutcome) -> bool:
    """The test errored in its setup (a fixture raised), so its own body never ran."""
    return outcome.outcome == "error" and outcome.message.startswith("failed on setup with")


_DOCTEST_EXAMPLE = re.compile(r"^\d+\s+>>> ?(?P<src>.*)$", re.MULTILINE)
_DOCTEST_DIFF = re.compile(r"^Expected:\n(?P<want>(?:[ \t].*\n?)*)Got:\n(?P<got>(?:[ \t].*\n?)*)"
                           r"|^Expected:\n(?P<want2>(?:[ \t].*\n?)*)Got nothing"
                           r"|^Expected nothing\nGot:\n(?P<got2>(?:[ \t].*\n?)*)", re.MULTILINE)
_DOCTEST_RAISED = re.compile(r"^UNEXPECTED EXCEPTION: (?P<exc>.*)$", re.MULTILINE)


def _block(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return "; ".join(lines) if lines else "nothing"


def doctest_message(details: str) -> str | None:
    r"""What a failing doctest example said, from pytest's doctest report: the example, then
    its expected and actual output (or the exception it raised); None for other reports.

    >>> doctest_message("004     >>> add(2, 2)\nExpected:\n    4\nGot:\n    5\n")
    'add(2, 2): expected 4, got 5'
    """
    examples = [m["src"] for m in _DOCTEST_EXAMPLE.finditer(details)]
    example = f"{examples[-1].strip()}: " if examples else ""
    if (raised := _DOCTEST_RAISED.search(details)) is not None:
        return f"{example}unexpected exception {raised['exc'].strip()}"
    diff = _DOCTEST_DIFF.search(details)
    if diff is None:
        return None
    want, got = diff["want"] or diff["want2"], diff["got"] or diff["got2"]
    return f"{example}expected {_block(want)}, got {_block(got)}"


def outcome_message(outcome: TestOutcome) -> str:
    """The one-line message of a failing outcome; a doctest's is its example, expected and got
    (pytest's own first line of a doctest report is the example's line number and docstring)."""
    _, name = test_name(outcome.nodeid)
    doctest = name is not None and is_doctest_name(name)
    return (doctest_message(outcome.details) if doctest else None) or outcome.message

_PYTEST_SAID = re.compile(r"^(?:ERROR: .+|.*\b\d+ deselected\b.*)$", re.MULTILINE)


def pytest_said(verdict: Verdict) -> str:
    """pytest's own reason for a run that collected nothing ("ERROR: file or directory not found:
    {bogus}", "119 deselected in 0.05s"), '' when it gave none: a command's options, not the files'
    names, may be why (fresh-user run X10 F6: the hint about python_files sent the user the wrong way).

    >>> pytest_said(Verdict(False, (), (), 0.0, "", "ERROR: file or directory not found: {bogus}\\n", 0.1, None, None, "none"))
    'ERROR: file or directory not found: {bogus}'
    """
    found = _PYTEST_SAID.findall(f"{verdict.stderr_tail}\n{verdict.stdout_tail}")
    return found[0].strip(" =") if found else ""


def is_hung(outcome: TestOutcome) -> bool:
    """A test the sandbox stopped because it ran past the per-test timeout or the run's wall clock."""
    return outcome.outcome in FAILED and outcome.message.startswith(HUNG_PREFIX)


def killed_its_process(outcome: TestOutcome) -> bool:
    """A test during which the test process exited (os._exit, a crash): a run with it writes no
    JUnit report and no coverage data."""
    return outcome.outcome in FAILED and outcome.message.startswith(EXITED_PREFIX)
