"""Diagnostics for failing tests: one on the failing test (where it failed), one on the
suspect line of the source (or, once a verified fix rewrites another function, on the line it
changes there), linked to each other with relatedInformation.

Pure functions from engine values to lsprotocol values; folder.py publishes them (a
problem of several failing tests gets a pair per test).
`data` carries the test id and the fix state, so code actions and editors can find them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from lsprotocol import types as lsp

from ledex.engine.failures import Failure
from ledex.engine.localize import frames
from ledex.engine.reindent import split_lines
from ledex.server.jobs import CANCELLED, FAILED, QUEUED, READY, RUNNING, Entry

SOURCE = "ledex"
ROLE_TEST, ROLE_SUSPECT = "test", "suspect"

LineText = Callable[[str, int], str]  # (relative path, 1-based line) -> the line's text ("" if unknown)


def uri_for(root: Path, rel: str) -> str:
    """file:// URI of `rel`, a path relative to the folder root."""
    return (root / rel).as_uri()


def _frame_line(root: Path, details: str, rel: str, lo: int = 1, hi: int = 10**9) -> int | None:
    """The deepest traceback line in file `rel` within [lo, hi]."""
    target = (root / rel).resolve()
    for path, line, _ in reversed(frames(details)):
        try:
            same = Path(path).resolve() == target
        except OSError:
            same = False
        if same and lo <= line <= hi:
            return line
    return None


def test_line(root: Path, failure: Failure) -> int | None:
    """1-based line of the failing test: its deepest traceback frame in the test file, else
    the line the report gave; None if the failure names no file."""
    if not failure.file:
        return None
    return _frame_line(root, failure.details, failure.file) or failure.line


def suspect_line(root: Path, failure: Failure) -> int | None:
    """1-based line in the suspect: the deepest traceback frame inside its span, else its first
    line; None if the failure has no suspect."""
    s = failure.suspect
    if s is None:
        return None
    return _frame_line(root, failure.details, s.path, s.start_line, s.end_line) or s.start_line


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def line_range(line: int, text: str) -> lsp.Range:
    """The line without its indentation (0-based LSP positions, UTF-16 columns)."""
    indent = len(text) - len(text.lstrip())
    return lsp.Range(lsp.Position(line - 1, _utf16_len(text[:indent])), lsp.Position(line - 1, _utf16_len(text)))


def message_of(failure: Failure, failing_line: str = "") -> str:
    """The error; with the failing assertion's source when the error alone says little ("assert False")."""
    message = failure.message or f"{failure.test} failed"
    source = failing_line.strip()
    if source.startswith("assert") and source not in message:
        return f"{source}: {message}"
    return message


_STATE_TEXT = {QUEUED: "waiting to look for a fix…", RUNNING: "looking for a fix…",
               CANCELLED: "stopped looking (the code changed or you cancelled); save to look again"}


def state_text(entry: Entry) -> str:
    """Where the fix for this failure stands, in words (hover, messages, diagnostic notes)."""
    verified = sum(1 for c in entry.candidates if c.verified)
    if entry.state == READY:
        if verified:
            return f"{verified} verified fix{'es' if verified != 1 else ''}"
        if entry.covered_by:
            return f"the verified fix for {entry.covered_by} makes this test pass too"
        return "no verified fix; unverified ones are in the code actions" if entry.offered else "no fix found"
    if entry.state == FAILED:
        return f"no fix: {entry.error or 'the fix failed'}"
    if entry.awaiting_run is not None:
        return "read from a test report: ledex re-runs it before looking for a fix…"
    return _STATE_TEXT.get(entry.state, entry.state)


def _state_note(entry: Entry, every_state: bool) -> str:
    """Suffix of the diagnostic's message: how the work ended (the verified-fix count, "no fix
    found", why it failed); with `every_state` (clients without work-done progress) also "looking
    for a fix…" and the other states. Without an end state a client with progress showed the same
    message before and after ledex gave up (fresh-user run X10, Neovim)."""
    if entry.state in (READY, FAILED) or every_state:
        return f" (ledex: {state_text(entry)})"
    return ""


def diagnostics_for(root: Path, entry: Entry, line_text: LineText,
                    every_state: bool = False) -> list[tuple[str, lsp.Diagnostic]]:
    """(uri, diagnostic) pairs for one problem: for each of its failing tests, one on the test
    and one on the suspect, linked. `every_state`: the message says every fix state, not only
    the verified-fix count."""
    fixed = fixed_place(entry)
    return [pair for failure in entry.members for pair in _for_failure(root, failure, entry, line_text, every_state,
                                                                       fixed)]


def first_changed_line(old: str, new: str) -> int:
    r"""The 0-based index of the first LSP line (split_lines) where `new` differs from `old`; the
    shorter one's line count when one is a prefix of the other.

    >>> first_changed_line("a\nb\nc\n", "a\nB\nc\n"), first_changed_line("a\n", "a\nb\n")
    (1, 1)
    """
    a, b = split_lines(old), split_lines(new)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    return start


def fixed_place(entry: Entry) -> tuple[str, int, str] | None:
    """(path, 1-based line, function) of the first line the best verified fix changes, when that
    function is not the top suspect (a search fix of a later suspect: the diagnostic showed the
    top suspect while the fix was elsewhere, fresh-user run X5); None otherwise."""
    best = next((c for _, c in entry.ranked if c.verified and c.patch is not None and c.patch.qualname), None)
    suspect = entry.failure.suspect
    if best is None or (suspect and (best.patch.path, best.patch.qualname) == (suspect.path, suspect.qualname)):
        return None
    first = first_changed_line(best.patch.old_function, best.patch.new_function)
    last = max(len(split_lines(best.patch.old_function)) - 1, 0)  # lines added at the end: its last line
    return best.patch.path, best.patch.line + min(first, last), best.patch.qualname


def _for_failure(root: Path, failure: Failure, entry: Entry, line_text: LineText,
                 every_state: bool, fixed: tuple[str, int, str] | None) -> list[tuple[str, lsp.Diagnostic]]:
    places = []
    if (line := test_line(root, failure)) is not None:
        places.append((ROLE_TEST, failure.file, line))
    if fixed is not None:
        places.append((ROLE_SUSPECT, fixed[0], fixed[1]))
    elif (line := suspect_line(root, failure)) is not None:
        places.append((ROLE_SUSPECT, failure.suspect.path, line))
    located = [(role, rel, line_range(line, line_text(rel, line))) for role, rel, line in places]
    test_source = next((line_text(rel, line) for role, rel, line in places if role == ROLE_TEST), "")
    message = message_of(failure, test_source)
    data = {"test": failure.test, "state": str(entry.state), "episode": entry.episode_id,
            "verified": sum(1 for c in entry.candidates if c.verified),
            "generationS": round(sum(c.generation_s for c in entry.candidates), 3),
            "verificationS": round(sum(c.verification_s for c in entry.candidates), 3)}
    out = []
    for role, rel, rng in located:
        related = [lsp.DiagnosticRelatedInformation(lsp.Location(uri_for(root, r2), g2),
                                                    _related_text(role2, failure, fixed and fixed[2]))
                   for role2, r2, g2 in located if role2 != role]
        text = message if role == ROLE_TEST else f"{message} [{failure.test}]"
        out.append((uri_for(root, rel), lsp.Diagnostic(
            range=rng, message=text + _state_note(entry, every_state), source=SOURCE, code=role,
            severity=lsp.DiagnosticSeverity.Error if role == ROLE_TEST else lsp.DiagnosticSeverity.Warning,
            related_information=related or None, data={**data, "role": role})))
    return out


def _related_text(role: str, failure: Failure, fixed: str | None = None) -> str:
    if role == ROLE_TEST:
        return f"failing test {failure.test}"
    if fixed:
        return f"fixed here: {fixed} (the verified fix's function)"
    return f"suspect: {failure.suspect.qualname}" if failure.suspect else "suspect"


def by_uri(root: Path, entries: Iterable[Entry], line_text: LineText,
           every_state: bool = False) -> dict[str, list[lsp.Diagnostic]]:
    """Diagnostics of all entries grouped by document URI (every_state: also entries not yet ready)."""
    grouped: dict[str, list[lsp.Diagnostic]] = {}
    for entry in entries:
        for uri, diagnostic in diagnostics_for(root, entry, line_text, every_state):
            grouped.setdefault(uri, []).append(diagnostic)
    return grouped
