"""Notes for the user from a test run: what kind each is (programs test the kind, people read the
text) and the notes failure discovery writes about failures it cannot hand to a fix (no
suspect, a module that is not UTF-8, passes of a run the sandbox does not trust).

Try it:  python -m doctest -v engine/notes.py
"""

from __future__ import annotations

import enum
import tokenize
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ledex.engine.localize import frames, read_source
from ledex.engine.sbfl import Spectrum

if TYPE_CHECKING:
    from ledex.engine.failures import Failure


class NoteKind(enum.StrEnum):
    """What a note for the user is about: programs test the kind, people read the text."""

    INFO = "info"
    COLLECTION = "collection"  # a test module could not be collected
    NO_SUSPECT = "no-suspect"  # a failure with no function in the workspace to fix
    RUN_PROBLEM = "run-problem"  # the test run reported an error of its own
    STOPPED = "stopped"  # the test run was killed (timeout, memory): results may be partial
    NO_TESTS = "no-tests"

    @property
    def is_problem(self) -> bool:
        """Worth a warning: the run itself went wrong, so its results may be incomplete."""
        return self in (NoteKind.RUN_PROBLEM, NoteKind.STOPPED)


class Note(str):
    """A note for the user: the text (a str, as printed) with its `kind`."""

    kind: NoteKind = NoteKind.INFO

    def __new__(cls, text: str, kind: NoteKind = NoteKind.INFO) -> "Note":
        note = super().__new__(cls, text)
        note.kind = kind
        return note


def note_kind(note: str) -> NoteKind:
    """A note's kind (a plain string is INFO).

    >>> note = Note("the test run was stopped (timeout)", NoteKind.STOPPED)
    >>> note_kind(note), note_kind(note).is_problem, note_kind("2 tests ran"), note == "the test run was stopped (timeout)"
    (<NoteKind.STOPPED: 'stopped'>, True, <NoteKind.INFO: 'info'>, True)
    """
    return getattr(note, "kind", NoteKind.INFO)


def untrusted_note(untrusted: Sequence[str]) -> list[Note]:
    """One note naming the passes of an untrusted run (node ids), which are left out of the failures."""
    if not untrusted:
        return []
    which = f"{len(untrusted)} tests ({untrusted[0]}, ...)" if len(untrusted) > 1 else f"1 test ({untrusted[0]})"
    return [Note(f"{which} passed in a run the sandbox does not trust (see the test run problem): "
                 "not treated as failures", NoteKind.RUN_PROBLEM)]


def no_suspect_notes(failures: Sequence[Failure], measured: bool = True) -> list[Note]:
    """One note per distinct message among the failures with no suspect: a fixture that raises
    for every test is one note naming how many tests it stopped, not one note per test.
    `measured`: line coverage was measured; without it a test whose failing line reaches the
    code only through operators or attributes (`date + Duration(...)`: isodate) names no function."""
    by_message: dict[str, list[str]] = {}
    for failure in failures:
        if failure.suspect is None:
            by_message.setdefault(failure.message, []).append(failure.test)
    why = ("no function in the workspace to fix (the failure is in the test itself or its set-up, "
           "in a non-UTF-8 file, or in code outside the workspace)") if measured else \
        ("no suspect: the traceback and the calls the test names reach no workspace function, and without "
         "line coverage (coverage.py in the interpreter that runs the tests) the functions it ran are unknown")
    notes = []
    for message, tests in by_message.items():
        who = tests[0] if len(tests) == 1 else f"{len(tests)} tests ({tests[0]}, ...) with {message!r}"
        notes.append(Note(f"{who}: {why}", NoteKind.NO_SUSPECT))
    return notes


def unreadable_notes(workspace: Path, failures: Sequence[Failure], spectra_by_file: Mapping[str, Spectrum]) -> list[Note]:
    """A note per workspace .py file the failing tests ran (coverage) or passed through (their
    tracebacks) that is not UTF-8: localize.read_source leaves such a file out of the suspects,
    since a rewrite would have to keep its encoding (fresh-user run X9: a `# -*- coding: latin-1 -*-`
    module with the bug was never looked at, and nothing said why)."""
    files = {rel for spectrum in spectra_by_file.values() for nodeid in spectrum.failing
             for rel in spectrum.coverage.get(nodeid, {})}
    for failure in failures:
        for path, _line, _func in frames(failure.details):
            try:
                files.add(Path(path).resolve().relative_to(workspace.resolve()).as_posix())
            except (ValueError, OSError):
                continue
    notes = []
    for rel in sorted(f for f in files if f.endswith(".py")):
        path = workspace / rel
        if path.is_file() and read_source(path) is None:  # the rule that leaves it out of the suspects
            declared = _declared_encoding(path.read_bytes())
            notes.append(Note(f"{rel} is not UTF-8{f' (coding: {declared})' if declared else ''}: ledex reads and "
                              "rewrites only UTF-8 files, so none of its functions is a suspect; save it as UTF-8 "
                              "to have it considered", NoteKind.NO_SUSPECT))
    return notes


def _declared_encoding(raw: bytes) -> str:
    """The PEP 263 encoding a Python file declares ("" when none or unreadable).

    >>> _declared_encoding(b"# -*- coding: latin-1 -*-\\nx = 1\\n"), _declared_encoding(b"x = 1\\n")
    ('iso-8859-1', '')
    """
    lines = iter(raw.splitlines(keepends=True)[:2])
    try:
        encoding, _ = tokenize.detect_encoding(lambda: next(lines, b""))
    except SyntaxError:
        return ""
    return "" if encoding == "utf-8" else encoding
