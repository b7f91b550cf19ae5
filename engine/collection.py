"""Failures that stop pytest before any test runs: a test module, or the conftest.py the tests
need, that cannot be imported because the code under test raises (or hangs) at import time.

pytest then runs nothing ("Interrupted: 1 error during collection", or "ImportError while
loading conftest"), so ledex had no failing test to fix and stopped with "0 ran" (fresh-user run
X12 F1: marshmallow 3.23.1's tests/conftest.py imports tests/base.py, which builds schemas when
imported; one slip in `Field._bind_to_schema` stopped the whole suite; F3: a hang there ran to
the run's wall limit, sandbox/plugin.py's collection watchdog now dumps its stack). When the traceback goes
through workspace code that is not test code, that code is the suspect (engine/localize.py, as
for any traceback), and the failure's "test" is what must be collected again: the test module,
whose tests must then all pass, or the folder of the conftest.py, every test under which must
then pass (engine/rerun.cases_of).

Try it:  python -m ledex.engine.collection WORKSPACE
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path, PurePosixPath

from ledex.engine.failures import Failure, failure_from_outcome
from ledex.engine.localize import TestFiles, frames, is_foreign
from ledex.engine.outcomes import is_collection_error
from ledex.sandbox import TestOutcome, Verdict
from ledex.sandbox.verdict import WATCHDOG, hang_stack

# pytest's report of a conftest.py that raised on import (_pytest/config: ConftestImportFailure),
# its traceback in pytest's short style: "path:line: in func", the code indented, "E   Error: ...".
_CONFTEST = re.compile(r"ImportError while loading conftest '(?P<path>[^'\n]+)'\.\n(?P<trace>(?:(?!E   ).*\n)*)"
                       r"E   (?P<error>[^\n]+)")
_SHORT_FRAME = re.compile(r"^(?P<path>[^\s:][^:\n]*):(?P<line>\d+): in (?P<func>\S+)$")


def collection_failures(workspace: Path, verdict: Verdict) -> list[Failure]:
    """A Failure (with suspects) for each module that failed to collect, and for a conftest.py
    that failed to load, whose traceback reaches workspace code outside the tests; [] when none
    does (an error of the environment, a syntax error in a test: nothing of the code to fix)."""
    workspace = Path(workspace).resolve()
    outcomes = [o for o in verdict.outcomes if is_collection_error(o) and o.details]
    printed = f"{verdict.stderr_tail}\n{verdict.stdout_tail}"
    outcomes += [o for o in (conftest_outcome(workspace, printed), hang_outcome(workspace, printed)) if o]
    is_test = TestFiles(workspace, set())
    found = []
    for outcome in outcomes:
        outcome = replace(outcome, details=from_workspace_frames(outcome.details, workspace))
        failure = failure_from_outcome(workspace, outcome, [outcome], is_test=is_test)
        if failure.suspect is not None:
            found.append(failure)
    return found


def conftest_outcome(workspace: Path, printed: str) -> TestOutcome | None:
    """The error of a conftest.py that failed to load, as a collection error of its folder ("."
    for the workspace's own), its traceback in Python's native format with workspace paths; None
    when `printed` (pytest's output) reports none."""
    found = _CONFTEST.search(printed)
    if found is None:
        return None
    lines, trace = ["Traceback (most recent call last):"], found["trace"].splitlines()
    for n, line in enumerate(trace):
        frame = _SHORT_FRAME.match(line)
        if frame:
            path = Path(frame["path"]) if Path(frame["path"]).is_absolute() else workspace / frame["path"]
            lines.append(f'  File "{path}", line {frame["line"]}, in {frame["func"]}')
        elif line.startswith("    ") and n and lines[-1].startswith("  File"):
            lines.append(line)
    lines.append(found["error"].strip())
    folder = _folder_of(workspace, found["path"])
    file = f"{folder}/conftest.py".removeprefix("./")
    return TestOutcome(folder, "error", f"{file} could not be loaded: {found['error'].strip()}", "\n".join(lines), file,
                       None, 0.0)


def hang_outcome(workspace: Path, printed: str) -> TestOutcome | None:
    """A collection that hung (code running forever when a test module or conftest.py is
    imported: fresh-user run X12 F3), as a collection error of the test module, or of the
    conftest.py's folder, that was being imported, from the stack faulthandler dumped; None when
    `printed` holds no such dump with a workspace frame."""
    found = WATCHDOG.search(printed)
    stack = hang_stack(printed[found.start():]) if found else ""  # outermost frame first
    own = [(path, line, func, rel) for path, line, func in frames(stack) for rel in [_relative(workspace, path)] if rel]
    if not own:
        return None
    unit = own[0][3]
    nodeid = _folder_of(workspace, str(workspace / unit)) if PurePosixPath(unit).name == "conftest.py" else unit
    path, line, func, _ = own[-1]
    took = sum(int(part) * 60 ** n for n, part in enumerate(reversed(found["took"].split(":"))))
    error = f"CollectionTimeout: importing {unit} did not finish within {took} s; stuck in {func} ({path}:{line})"
    return TestOutcome(nodeid, "error", error.split(": ", 1)[1], f"{stack}\n{error}", unit, None, 0.0)


def _relative(workspace: Path, path: str) -> str | None:
    """`path` relative to the workspace when it is the workspace's own (not a virtualenv's), else None."""
    return Path(path).relative_to(workspace).as_posix() if _inside(workspace, path) else None


def _folder_of(workspace: Path, conftest: str) -> str:
    """The conftest.py's folder relative to the workspace ("." for its root)."""
    try:
        rel = PurePosixPath(Path(conftest).resolve().relative_to(workspace).as_posix()).parent
    except ValueError:
        rel = PurePosixPath(conftest).parent if not Path(conftest).is_absolute() else PurePosixPath(".")
    return rel.as_posix()


def from_workspace_frames(details: str, workspace: Path) -> str:
    """A traceback without its frames before the first one in the workspace (pytest's own import
    machinery, which every collection error starts with and the model need not read).

    >>> print(from_workspace_frames('Traceback (most recent call last):\\n  File "/usr/lib/x.py", line 1, in f\\n'
    ...       '    g()\\n  File "/ws/t.py", line 3, in <module>\\n    h()\\nValueError: no', Path("/ws")))
    Traceback (most recent call last):
      File "/ws/t.py", line 3, in <module>
        h()
    ValueError: no
    """
    first = next(((path, line) for path, line, _ in frames(details) if _inside(workspace, path)), None)
    at = details.find(f'  File "{first[0]}", line {first[1]},') if first else -1
    return f"Traceback (most recent call last):\n{details[at:]}" if at >= 0 else details


def _inside(workspace: Path, path: str) -> bool:
    try:
        rel = Path(path).relative_to(workspace).as_posix()
    except ValueError:
        return False
    return not is_foreign(workspace, rel)


if __name__ == "__main__":
    import sys

    from ledex.sandbox import run_tests

    for failure in collection_failures(Path(sys.argv[1]), run_tests(sys.argv[1])):
        print(failure.test, "->", failure.suspect.path, failure.suspect.qualname)
