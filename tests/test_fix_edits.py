"""The editor's fix edits (server/actions.py): the edit targets the function as it is in the
document at the version the fix is offered for, never stale line numbers (issue 12 item 1).

Real patches from the patching engine, real lsprotocol types; the edit is applied the way an
editor applies it (LSP lines end at \\n, \\r\\n or \\r only)."""

from pathlib import Path

from lsprotocol import types as lsp

from ledex.engine.failures import Failure
from ledex.engine.fixer import CandidateResult
from ledex.engine.localize import function_named, make_suspect
from ledex.engine.patching import make_patch
from ledex.engine.reindent import split_lines
from ledex.server.actions import actions_for
from ledex.server.jobs import READY, Entry

ROOT = Path("/project")
OPS = ('"""Calculator operations."""\n\n\ndef double(x):\n    # Double a number.\n    # (An old note.)\n'
       '    # (Another.)\n    # (One more.)\n    return x + x + 1\n\x0c\n\ndef triple(x):\n    return x * 2\n\n\n'
       'def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n')
CLAMP = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"


def entry_for(qualname: str, answer: str) -> Entry:
    suspect = make_suspect("calc/ops.py", qualname, function_named(OPS, qualname), OPS, "traceback")
    failure = Failure(test=f"tests/test_ops.py::test_{qualname}", file="tests/test_ops.py", line=5,
                      message="assert", details="", suspect=suspect)
    candidate = CandidateResult("Wrong.", answer, 1, patch=make_patch(OPS, suspect, answer), verified=True)
    return Entry(failure, OPS, state=READY, episode_id="ep-" + qualname, candidates=[candidate])


def apply_edit(text: str, edit: lsp.TextEdit) -> str:
    lines = split_lines(text)
    offset = lambda pos: len("".join(lines[:pos.line])) + pos.character  # noqa: E731 (ASCII text)
    return text[:offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]


def fix_edits(entry: Entry, text: str, version: int) -> list[tuple[int | None, lsp.TextEdit]]:
    actions = actions_for(ROOT, entry, lambda rel: (text, version), [])
    changes = [a.edit.document_changes[0] for a in actions if a.edit is not None]
    return [(c.text_document.version, e) for c in changes for e in c.edits]


def test_a_fix_offered_after_another_fix_was_applied_targets_its_function_as_it_is_now():
    double, triple = entry_for("double", "def double(x): return x + x"), entry_for("triple", "def triple(x): return x * 3")
    ((version, edit),) = fix_edits(double, OPS, 3)
    after_first = apply_edit(OPS, edit)
    assert version == 3 and after_first == double.candidates[0].patch.new_text
    ((version, edit),) = fix_edits(triple, after_first, 4)  # triple's fix was computed on the original text
    after_both = apply_edit(after_first, edit)
    assert version == 4
    assert after_both == OPS.replace("def double(x):\n    # Double a number.\n    # (An old note.)\n    # (Another.)\n"
                                     "    # (One more.)\n    return x + x + 1\n", "def double(x): return x + x\n") \
                            .replace("def triple(x):\n    return x * 2\n", "def triple(x): return x * 3\n")
    assert after_both.endswith("\n\n\n" + CLAMP)


def test_no_fix_is_offered_when_its_function_was_edited_or_removed():
    triple = entry_for("triple", "def triple(x): return x * 3")
    edited = OPS.replace("return x * 2", "return x * 2  # mine")
    assert fix_edits(triple, edited, 5) == []
    assert fix_edits(triple, OPS.replace("def triple(x):\n    return x * 2\n", ""), 6) == []
    titles = [a.title for a in actions_for(ROOT, triple, lambda rel: (edited, 5), [])]
    assert "Explain this failure" in titles  # the other actions stay
