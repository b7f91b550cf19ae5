"""Screening: many variants of one function checked in one sandboxed pytest process
(engine/screen_driver.py, sent through the sandbox's `command` template), and how a project's
custom test command is run for it (its prefix, interpreter and pytest options). A screen is
advice, never a verdict: engine/search.py verifies every variant that passes in its own run.

Try it:  python -m doctest -v engine/screening.py
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from ledex.engine import rerun
from ledex.engine.localize import Suspect
from ledex.engine.project import Harness
from ledex.sandbox import Limits, Verdict, verify_many

DRIVER = Path(__file__).with_name("screen_driver.py")


class Cancel(Protocol):
    """What a screen polls to stop early (a threading.Event, search.Deadline)."""

    def is_set(self) -> bool: ...


_LINE = re.compile(r"^LEDEX-SCREEN (baseline|\d+|ERROR|done)\b ?(.*)$", re.MULTILINE)


@dataclass
class Screen:
    """What one screening process said: statuses by index, and whether it finished."""

    status: dict[int, str] = field(default_factory=dict)
    baseline: str = ""  # "pass" | "fail"
    crash: str = ""  # the baseline's first failure: "Type: message"
    error: str = ""
    done: bool = False


def parse_screen(stdout: str) -> Screen:
    """Parse the screen driver's stdout; the first line for each variant wins."""
    screen = Screen()
    for what, rest in _LINE.findall(stdout):
        if what == "baseline" and not screen.baseline:
            screen.baseline, _, screen.crash = rest.strip().partition(" ")
        elif what == "ERROR":
            screen.error = screen.error or rest.strip()
        elif what == "done":
            screen.done = True
        elif int(what) not in screen.status:  # first word wins: later lines may be forged
            screen.status[int(what)] = rest.strip()
    return screen


def screen_command(python_placeholder: bool, spec: dict, prefix: Sequence[str] = (),
                   interpreter: Sequence[str] = ()) -> list[str]:
    """The argv template running screen_driver.py with `spec` inside the sandbox, after `prefix`
    (what a custom test command runs before `{python}`) and with its `interpreter` options."""
    payload = base64.b64encode(zlib.compress(json.dumps(spec).encode(), 9)).decode()
    python = "{python}" if python_placeholder else "python"
    return [*prefix, python, *interpreter, "-c", DRIVER.read_text(encoding="utf-8"), payload]


# programs that run the command after their own options, as the screen's prefix may
_PREFIX_PROGRAMS = frozenset({"env", "xvfb-run", "timeout", "nice", "ionice", "stdbuf", "taskset", "chrt"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_prefix(command: Sequence[str] | None) -> tuple[str, ...] | None:
    """What a custom test command runs before `{python}` (the screen runs the same), () without
    a command, None when the command does not run `{python}` itself (no screening).

    >>> command_prefix(["env", "STYLE=strict", "{python}", "-m", "pytest", "{tests}"])
    ('env', 'STYLE=strict')
    >>> command_prefix(["tox", "-e", "py311"]) is None, command_prefix(["bash", "-c", "$0 -m pytest", "{python}"])
    (True, None)
    """
    if command is None:
        return ()
    command = list(command)
    prefix = tuple(command[:command.index("{python}")]) if "{python}" in command else None
    if prefix and prefix[0] not in _PREFIX_PROGRAMS and not all(_ASSIGNMENT.match(t) for t in prefix):
        return None  # `bash -c '...' {python}`: {python} is an argument of something else (fresh-user run X4)
    return prefix


# pytest-xdist's options: the screen is one process (its driver runs with `-p no:xdist`)
_XDIST_OPTIONS = frozenset({"-n", "--numprocesses", "--dist", "--maxprocesses", "--max-worker-restart", "--tx"})


def pytest_invocation(command: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(interpreter options, pytest options) of a custom test command `... {python} [options] -m
    pytest [options] {tests}`, for the screen to run its pytest the same way (a suite may need
    `-o pythonpath=src` or a conftest option: fresh-user runs X3, X5); without what the sandbox
    fills in ({tests}, {junit} and the option taking it) and pytest-xdist's options. ((), ()) for
    a command that does not run `{python} -m pytest`.

    >>> pytest_invocation(["{python}", "-X", "dev", "-m", "pytest", "-o", "pythonpath=src", "--junitxml", "{junit}", "{tests}"])
    (('-X', 'dev'), ('-o', 'pythonpath=src'))
    >>> pytest_invocation(["{python}", "-m", "pytest", "-n", "2", "--dist=loadfile", "-nauto", "-x"])[1]
    ('-x',)
    >>> pytest_invocation(["{python}", "tests/run.py", "-x"]), pytest_invocation(None)
    (((), ()), ((), ()))
    """
    command = list(command or ())
    if "{python}" not in command:
        return (), ()
    after = command[command.index("{python}") + 1:]
    start = next((i for i in range(len(after) - 1) if after[i] == "-m" and after[i + 1] in ("pytest", "py.test")), None)
    if start is None:
        return (), ()
    options, rest = [], after[start + 2:]
    skip = False
    for token, following in zip(rest, [*rest[1:], ""]):
        if skip:
            skip = False
            continue
        if "{tests}" in token or "{junit}" in token:
            continue
        takes_next = token.startswith("-") and "=" not in token
        if token in _XDIST_OPTIONS or (takes_next and "{junit}" in following):
            skip = True  # the option and its value
        elif token.split("=", 1)[0] not in _XDIST_OPTIONS and not re.fullmatch(r"-n\w+", token):
            options.append(token)
    return tuple(after[:start]), tuple(options)


_CLASS = re.compile(r"\s*([A-Za-z_][\w.]*)(?::|$)")  # "pkg.mod.Error: ..." at a message's start


def said(message: str) -> str:
    """A failure message's first line without its exception class, as both runs print it.

    >>> said("AssertionError: assert 1 == 2") == said("assert 1 == 2")
    True
    """
    first = (message.strip().splitlines() or [""])[0]
    found = _CLASS.match(first)
    return first[found.end():].strip() if found and found.end() < len(first) else first.strip()


def same_message(one: str, other: str) -> bool:
    """Whether two failure messages say the same (said), where pytest may have shortened a repr
    in either with "..." (saferepr at the run's verbosity: "[Argu...None, 9)]" in the command's
    run, the whole list in the screen's, fresh-user run X6): a "..." stands for any text.

    >>> same_message("assert (False, [Argu...None, 9)]) == (True, [])", "AssertionError: assert (False, [Argument(None, 9)]) == (True, [])")
    True
    >>> same_message("assert 1 == 2", "RuntimeError: run the tests with --style=strict")
    False
    """
    a, b = said(one), said(other)

    def covers(pattern: str, text: str) -> bool:
        return re.fullmatch(".*?".join(re.escape(part) for part in pattern.split("...")), text, re.DOTALL) is not None
    return a == b or ("..." in a and covers(a, b)) or ("..." in b and covers(b, a))


def error_type(message: str) -> str:
    """The exception's class name at the start of a failure message, without its module; pytest
    writes a failed `assert` without its class ('' when the message names none).

    >>> error_type("isodate.isoerror.ISO8601Error: Unrecognised ISO 8601 date format: '018'")
    'ISO8601Error'
    >>> error_type("assert [2, 3, 4] == [3, 4]"), error_type("did not finish")
    ('AssertionError', '')
    """
    if re.match(r"\s*assert\b", message):
        return "AssertionError"
    found = _CLASS.match(message)
    return found.group(1).rsplit(".", 1)[-1] if found else ""


def screen(workspace: Path, suspect: Suspect, codes: Sequence[str], tests: Sequence[str], *,
           limits: Limits, harness: Harness, timeout_s: float,
           cancel: Cancel | None = None) -> Screen:
    """Run the failing `tests` once per variant of `suspect` (function sources) in one sandboxed
    process: the harness's interpreter, started with its command's prefix (command_prefix)."""
    interpreter, options = pytest_invocation(harness.command)
    spec = {"path": suspect.path, "qualname": suspect.qualname, "variants": list(codes), "tests": list(tests),
            "timeout": timeout_s, "options": list(options)}
    command = screen_command(True, spec, command_prefix(harness.command) or (), interpreter)
    runs = verify_many(workspace, [{}], tests, limits=limits, workers=1, cancel=cancel,
                       **{**harness.sandbox, "command": command})
    verdict: Verdict | None = next((v for _, v in runs), None)
    if verdict is None:
        return Screen(error="cancelled")
    widened = rerun.widen(tests, rerun.printed(verdict))
    if widened and widened != tuple(tests):  # parametrized ids that change from run to run
        return screen(workspace, suspect, codes, widened, limits=limits, harness=harness, timeout_s=timeout_s,
                      cancel=cancel)
    result = parse_screen(verdict.stdout_tail)
    if not result.done and not result.error and not result.status and not result.baseline:
        result.error = (verdict.error or "the screen printed nothing").splitlines()[0][:300]
    return result
