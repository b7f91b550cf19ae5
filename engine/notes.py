"""Notes for the user from a test run: what kind each is (programs test the kind, people read the
text) and the notes failure discovery writes about failures it cannot hand to a fix (no
suspect, passes of a run the sandbox does not trust).

Try it:  python -m doctest -v engine/notes.py
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Sequence

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
           "or in code outside the workspace)") if measured else \
        ("no suspect: the traceback and the calls the test names reach no workspace function, and without "
         "line coverage (coverage.py in the interpreter that runs the tests) the functions it ran are unknown")
    notes = []
    for message, tests in by_message.items():
        who = tests[0] if len(tests) == 1 else f"{len(tests)} tests ({tests[0]}, ...) with {message!r}"
        notes.append(Note(f"{who}: {why}", NoteKind.NO_SUSPECT))
    return notes
