"""Typed server settings, parsed once from initializationOptions or from
`workspace/didChangeConfiguration` (`{"ledex": {...}}`, same keys).

An invalid value never stops the server: it gets the default and a message saying which
key, what was wrong and what is used instead (the caller shows it with window/showMessage).

Try it:  python -m ledex.server.settings '{"samples": 0, "junitGlobs": "x"}'
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ledex.engine.project import Harness, read_project_settings, resolve_python

# Globs for JUnit reports other runners write: `pytest --junitxml=junit.xml`, and the
# Gradle/Maven/Jest-reporter convention of test-results/ folders.
DEFAULT_JUNIT_GLOBS = ("**/junit*.xml", "**/test-results/**/*.xml")


@dataclass(frozen=True)
class Settings:
    """The `ledex` settings of one folder (LSP configuration / initializationOptions);
    field names are the camelCase keys the client sends."""
    model: str = ""  # "" = the embedded default model (see ledex.engine.models for the forms)
    adapter: str = ""  # "" = the registry's promoted adapter, else the packaged one
    testCommand: str = ""  # "" = `<python> -m pytest`; runs the suite and verifies every fix
    junitGlobs: tuple[str, ...] = DEFAULT_JUNIT_GLOBS
    samples: int = 4  # same K as the CLI (FixConfig): enough variety for a tiny model
    rounds: int = 2  # same R as the CLI
    runOnSave: bool = True
    runOnStart: bool = True  # run the suite once when the editor connects: failures show without a save
    python: str = ""  # "" = the interpreter running the server
    logPath: str = ""  # "" = <workspace>/.ledex/episodes.sqlite3
    debounceMs: int = 300  # saves closer than this (format-on-save, save-all) make one test run
    testTimeoutS: float = 120.0  # a hung test command is killed after this; most suites take seconds
    maxFileBytes: int = 2_000_000  # larger documents are not analysed (generated or data files)
    seed: int = 0  # sampling seed: the same failure gets the same candidates
    # Search-based candidates (single-site edits, tried before the model; `ledex fix --search`, on by
    # default like the CLI: docs/benchmarks.md "Search-based candidates"); false: the model's only.
    search: bool = True
    searchSeconds: float = 60.0  # the search's wall-clock budget per problem (`ledex fix --search-seconds`)

    @property
    def test_command(self) -> list[str] | None:
        """testCommand split shell-style, None if empty (then `<python> -m pytest`)."""
        return shlex.split(self.testCommand) if self.testCommand.strip() else None

    def harness(self, root: Path) -> Harness:
        """How the sandbox runs the tests of the workspace folder `root`: the `python` and
        testCommand settings, each falling back on the folder's pyproject.toml [tool.ledex]
        (`python`, `test-command`), as `ledex fix` reads it; a relative `python` is relative to
        the folder, as in [tool.ledex] (fresh-user run X8: the editor ignored the table, and a
        relative setting was resolved against the editor's working directory). Read on every test
        run, so an edited table applies at the next. Raises ProjectConfigError (a table it cannot
        use, a `python` that names no executable)."""
        project = read_project_settings(root)
        python = resolve_python(self.python, root, "the ledex python setting") if self.python else project.python
        command = self.test_command
        return Harness(python=python, command=tuple(command) if command else project.command)


class SettingProblem(str):
    """A message about one setting (the text is what the user reads); `unknown` says that the
    key is not a ledex setting at all (clients send their whole section: VS Code its own keys
    too), which deserves a log line, not a popup."""

    unknown: bool = False

    def __new__(cls, text: str, unknown: bool = False) -> "SettingProblem":
        problem = super().__new__(cls, text)
        problem.unknown = unknown
        return problem


_MINIMUM = {"samples": 1, "rounds": 1, "debounceMs": 0, "testTimeoutS": 1, "maxFileBytes": 1, "searchSeconds": 0}


def _check(name: str, value: Any, default: Any) -> tuple[Any, str | None]:
    """(parsed value, None) or (default, why the value was refused)."""
    if isinstance(default, bool):
        return (value, None) if isinstance(value, bool) else (default, "expected true or false")
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int) and not (isinstance(value, int) or (ok and float(value).is_integer())):
            ok = False
        if not ok:
            return default, f"expected a {'whole ' if isinstance(default, int) else ''}number"
        if value < _MINIMUM.get(name, value):
            return default, f"must be at least {_MINIMUM[name]}"
        return type(default)(value), None
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return default, "expected a list of glob strings"
        return tuple(value), None
    if not isinstance(value, str):
        return default, "expected a string"
    if name == "testCommand":
        try:
            shlex.split(value)
        except ValueError as exc:
            return default, f"cannot be split into arguments ({exc})"
    return value, None


def parse_settings(raw: Any, base: Settings = Settings()) -> tuple[Settings, list[SettingProblem]]:
    """Settings from a JSON object; keys not given keep `base`'s value. Returns (settings, problems)."""
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [SettingProblem(f"ledex settings must be an object, got {type(raw).__name__}; using defaults")]
    if isinstance(raw.get("ledex"), dict):
        raw = raw["ledex"]  # didChangeConfiguration wraps the keys in their section
    known = {f.name: f for f in fields(Settings)}
    changes, problems = {}, []
    for name, value in raw.items():
        if name not in known:
            problems.append(SettingProblem(f"unknown ledex setting {name!r} ignored", unknown=True))
            continue
        default = getattr(Settings(), name)
        parsed, why = _check(name, value, default)
        if why:
            problems.append(SettingProblem(f"ledex setting {name}={value!r}: {why}; using the default {default!r}"))
        changes[name] = parsed
    return replace(base, **changes), problems


def engine_fields() -> list[str]:
    """Settings that change the fix engine (a change drops the cached engine)."""
    return ["model", "adapter", "samples", "rounds", "python", "testCommand", "testTimeoutS", "seed", "search",
            "searchSeconds"]


if __name__ == "__main__":
    import json

    settings, problems = parse_settings(json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))
    print(settings)
    print("\n".join(problems))
