"""A project's own ledex settings: the `[tool.ledex]` table of its pyproject.toml.

    [tool.ledex]
    python = ".venv/bin/python"    # the interpreter that runs the project's tests
                                   # (relative to the project folder, absolute, or a name on PATH)
    test-command = "{python} -m pytest -q --junitxml={junit} {tests}"
                                   # the command that runs them (a string split like a shell
                                   # would, or a list); {python}, {junit} and {tests} are filled
                                   # in by the sandbox; without {tests} every run is the whole suite

Both are used for the first run of the suite and for every verification of a fix. Unknown
keys and wrong types are errors (ProjectConfigError, a message naming the file and key).

Try it:  python -m ledex.engine.project PROJECT_FOLDER
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

KEYS = ("python", "test-command")


class ProjectConfigError(ValueError):
    """pyproject.toml's [tool.ledex] table (or a command-line value) cannot be used."""


@dataclass(frozen=True)
class Harness:
    """How the sandbox runs a project's tests in every phase (discovery, coverage, the search's
    screen, verification): its interpreter and command ([tool.ledex], --python, --test-command,
    the editor's settings; None = defaults), and `origin`, the folder the tests' folder is a copy
    of (a dry run going on in a scratch copy: sandbox.verify_many's `origin`). Each phase's
    Limits are its own and travel apart."""
    python: str | None = None  # absolute path of the interpreter; None = the one running ledex
    command: tuple[str, ...] | None = None  # argv template; None = `{python} -m pytest`
    origin: Path | None = None  # None: the tests' folder is the project itself

    @property
    def sandbox(self) -> dict:
        """The keyword arguments sandbox.run_tests / verify / verify_many take for it."""
        return {"python": self.python, "command": self.command, "origin": self.origin}


def resolve_python(value: str, base: Path, where: str) -> str:
    """The interpreter `value` names (a path relative to `base`, absolute, or a name on PATH)."""
    found = shutil.which(value) if os.sep not in value and not value.startswith(".") else None
    path = Path(found) if found else (base / value)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ProjectConfigError(f"{where}: python = {value!r}: no executable at {path}")
    return str(path.absolute())


PLACEHOLDERS = ("python", "tests", "junit")  # what the sandbox fills in (sandbox/worker.py)


def parse_test_command(value, where: str) -> tuple[str, ...]:
    """An argv template from a string (shell-like splitting) or a list of strings."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ProjectConfigError(f"{where}: test-command = {value!r} cannot be split into arguments "
                                     f"({exc})") from None
    elif isinstance(value, list) and all(isinstance(part, str) for part in value):
        argv = list(value)
    else:
        raise ProjectConfigError(f"{where}: test-command must be a string or a list of strings")
    if not argv:
        raise ProjectConfigError(f"{where}: test-command is empty")
    unknown = sorted({name for part in argv for name in re.findall(r"(?<!\$)\{(\w+)\}", part)} - set(PLACEHOLDERS))
    if unknown:  # pytest took `{bogus}` for a path and collected nothing (fresh-user run X10 F6)
        raise ProjectConfigError(f"{where}: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} in "
                                 f"test-command (known: {', '.join('{' + n + '}' for n in PLACEHOLDERS)})")
    return tuple(argv)


def _table(pyproject: Path) -> dict:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProjectConfigError(f"cannot read {pyproject}: {exc}") from None
    table = data.get("tool", {}).get("ledex", {})
    if not isinstance(table, dict):
        raise ProjectConfigError(f"{pyproject}: [tool.ledex] must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ProjectConfigError(f"{pyproject}: unknown [tool.ledex] key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(KEYS)})")
    return table


def read_project_settings(project: Path) -> Harness:
    """The [tool.ledex] settings of `project` (defaults when it has no pyproject.toml or table)."""
    pyproject = Path(project) / "pyproject.toml"
    if not pyproject.is_file():
        return Harness()
    table = _table(pyproject)
    where = f"{pyproject} [tool.ledex]"
    python = table.get("python")
    if python is not None and not (isinstance(python, str) and python.strip()):
        raise ProjectConfigError(f"{where}: python must be a non-empty string")
    command = table.get("test-command")
    return Harness(python=resolve_python(python, Path(project), where) if python else None,
                   command=parse_test_command(command, where) if command is not None else None)


if __name__ == "__main__":
    import sys

    print(read_project_settings(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
