"""Code actions on ledex diagnostics: "Fix: <one line>" quick fixes (verified first, the best
one preferred), "Explain this failure" and "Dismiss ledex suggestion"; plus the explanation
used by the explain command (a markdown file, or plain text for clients that cannot open a
document) and the hover text (markdown or plaintext, as the client's hover.contentFormat says).

What each client gets depends on its ClientFeatures (capabilities.py): the disabled "still
looking for a fix" action only goes to clients declaring codeAction.disabledSupport; the
others read the state in the diagnostic's message and the hover.

A fix is a versioned TextDocumentEdit against the document as it is at the version it is
offered for: the fixed function is found again in that text by qualified name and code
(`patching.rebase`: another fix applied, edits elsewhere in the file), and the edit replaces
only it; when the function is gone or was edited, the fix is not offered, so a fix never
lands on changed code.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp

from ledex.engine.fixer import CandidateResult
from ledex.engine.format import first_sentence
from ledex.engine.localize import FOUND_BY
from ledex.engine.patching import Patch, PatchError, rebase
from ledex.engine.ranking import overfit_risk, risk_words
from ledex.engine.reindent import split_lines
from ledex.server.capabilities import ClientFeatures
from ledex.server.diagnostics import first_changed_line, state_text, uri_for
from ledex.server.jobs import QUEUED, RUNNING, Entry

APPLY, DISMISS, EXPLAIN, RUN_TESTS, STATUS = "ledex.applyFix", "ledex.dismiss", "ledex.explain", "ledex.runTests", "ledex.status"


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def minimal_edit(old: str, new: str) -> tuple[lsp.Range, str]:
    """One TextEdit turning `old` into `new`, replacing whole lines (the changed middle)."""
    a, b = split_lines(old), split_lines(new)  # LSP lines: \n, \r\n, \r only (not \x0c, \u2028...)
    start = first_changed_line(old, new)
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a, end_b = end_a - 1, end_b - 1
    replacement = "".join(b[start:end_b])
    if end_a == len(a) and a and not a[-1].endswith(("\n", "\r")):
        end = lsp.Position(len(a) - 1, _utf16_len(a[-1]))  # to the end of a last line without newline
    else:
        end = lsp.Position(end_a, 0)
    return lsp.Range(lsp.Position(start, 0), end), replacement


def _title(candidate: CandidateResult) -> str:
    line = first_sentence(candidate.explanation) or "rewrite the suspect function"
    if candidate.verified and getattr(candidate, "alternatives", 0):  # ranking.mark_alternatives (X11 F7)
        return f"Fix ({candidate.source_label}; the tests pass with {candidate.alternatives} other edit(s) of this line too): {line}"
    if candidate.verified and overfit_risk(candidate):  # e.g. a dropped statement (X12 F2)
        return f"Fix ({candidate.source_label}; {risk_words(candidate)}): {line}"
    if candidate.verified and getattr(candidate, "source", "model") == "search":
        return f"Fix ({candidate.source_label}): {line}"  # model fixes keep the plain title
    if candidate.verified:
        return f"Fix: {line}"
    passed, of = candidate.failing_passed
    return f"Fix (unverified: {passed} of {of} failing test{'s' if of != 1 else ''} pass with it): {line}"


def offered_patch(patch: Patch, text: str | None) -> Patch | None:
    """The fix moved onto the document's current text, or None (function gone or edited)."""
    try:
        return rebase(patch, text) if text is not None else None
    except PatchError:
        return None


def fix_action(root: Path, entry: Entry, idx: int, candidate: CandidateResult, version: int | None,
               preferred: bool, diagnostics: list[lsp.Diagnostic], patch: Patch | None = None) -> lsp.CodeAction:
    """Quick-fix code action applying `patch` (default: the candidate's) as one minimal TextEdit;
    its command records the acceptance (ledex.applyFix with [episode id, idx])."""
    patch = patch or candidate.patch
    rng, text = minimal_edit(patch.old_text, patch.new_text)
    document = lsp.OptionalVersionedTextDocumentIdentifier(uri=uri_for(root, patch.path), version=version)
    edit = lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(document, [lsp.TextEdit(rng, text)])])
    return lsp.CodeAction(title=_title(candidate), kind=lsp.CodeActionKind.QuickFix, diagnostics=diagnostics,
                          is_preferred=preferred or None, edit=edit,
                          command=lsp.Command("ledex: record accepted fix", APPLY, arguments=[entry.episode_id, idx]))


def _command_action(title: str, command: str, entry: Entry, diagnostics, root: Path) -> lsp.CodeAction:
    """[test id, folder URI]: the same test id can fail in two workspace folders."""
    return lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=diagnostics,
                          command=lsp.Command(title, command, arguments=[entry.failure.test, root.as_uri()]))


def actions_for(root: Path, entry: Entry, version_of, diagnostics: list[lsp.Diagnostic],
                features: ClientFeatures = ClientFeatures(), covering: Entry | None = None) -> list[lsp.CodeAction]:
    """All actions for one failure. `version_of(rel)` -> (text, version) of the target document.
    The disabled "still looking" action only for clients that show disabled actions as such.
    `covering`: the problem whose verified fix makes this one's tests pass (Entry.covered_by):
    its verified fixes that do are offered here too (accepting one is logged in its episode)."""
    out = _fix_actions(root, entry, version_of, diagnostics)
    if covering is not None and covering.episode_id:
        out += _fix_actions(root, covering, version_of, diagnostics,
                            keep=lambda c: c.verified and set(entry.tests) <= set(c.related_passed))
    best = next((i for i, c in entry.ranked if c.verified), None)
    if entry.state in (QUEUED, RUNNING) and best is None and features.disabled_actions:
        out.append(lsp.CodeAction(title="ledex is still looking for a fix…", kind=lsp.CodeActionKind.QuickFix,
                                  disabled=lsp.CodeActionDisabled(f"ledex is {state_text(entry)}")))
    out.append(_command_action("Explain this failure", EXPLAIN, entry, diagnostics, root))
    out.append(_command_action("Dismiss ledex suggestion", DISMISS, entry, diagnostics, root))
    return out


def _fix_actions(root: Path, entry: Entry, version_of, diagnostics: list[lsp.Diagnostic],
                 keep=lambda candidate: True) -> list[lsp.CodeAction]:  # noqa: ANN001
    """The quick fixes for `entry`'s candidates that `keep` takes, best first (the best verified one
    preferred, unless it is a test-overfitting risk (ranking.overfit_risk: other edits of its line
    pass too, or a dropped statement, a changed constant...): none is then, as --apply writes none)."""
    out, ranked = [], [(i, c) for i, c in entry.offered if keep(c)]  # Entry.offered: worth a quick fix (X8, X9)
    first = next(((i, c) for i, c in ranked if c.verified), None)
    best = first[0] if first is not None and not overfit_risk(first[1]) else None  # as --apply writes it
    for idx, candidate in ranked:
        text, version = version_of(candidate.patch.path)
        patch = offered_patch(candidate.patch, text)
        if patch is not None and entry.episode_id:
            out.append(fix_action(root, entry, idx, candidate, version, idx == best, diagnostics, patch))
    return out


def where_found(suspect) -> str:  # noqa: ANN001 - a localize.Suspect
    """"(lines 3-9: the function the test calls)": the suspect's lines and how it was found, in
    words (fresh-user run X8: "found by called by the test")."""
    return f"(lines {suspect.start_line}-{suspect.end_line}: {FOUND_BY.get(suspect.reason, suspect.reason)})"


def explanation_markdown(entry: Entry) -> str:
    """The full explanation: the failure, then every candidate, verified first, with its diff."""
    f = entry.failure
    lines = [f"# Why `{f.test}` fails", "", f"**Error:** `{f.message or 'test failed'}`", ""]
    if f.also:
        same = "the same suspect, one fix for all" if f.suspect else "the same error"
        lines += [f"**Failing with it** ({same}): " + ", ".join(f"`{t}`" for t in f.also), ""]
    if f.suspect:
        lines += [f"**Suspect:** `{f.suspect.qualname}` in `{f.suspect.path}` {where_found(f.suspect)}", ""]
    if not entry.candidates:
        lines += [f"_No explanation yet: ledex is {_sentence(state_text(entry))}_"]
    for n, (idx, c) in enumerate(entry.ranked, 1):
        verdict = "verified: the failing test passes and nothing else breaks" if c.verified else f"not verified: {c.reason}"
        verdict += _elsewhere(f, c)
        lines += [f"## {n}. {first_sentence(c.explanation) or 'Candidate'}", "", f"_{verdict}_", "",
                  c.explanation.strip() or "(no explanation)", "", "```diff", c.diff.rstrip(), "```", ""]
    unusable = [c for c in entry.candidates if c.patch is None]
    if unusable:
        lines += ["## Unusable answers", ""] + [f"- {c.reason}" for c in unusable]
    return "\n".join(lines) + "\n"


def _elsewhere(failure, candidate: CandidateResult) -> str:  # noqa: ANN001 - a failures.Failure
    """" (it rewrites path::name)" when the candidate rewrites another function than the failure's
    suspect (fresh-user run X9: the explanation named the suspect, the fix was in its neighbour)."""
    top = f"{failure.suspect.path}::{failure.suspect.qualname}" if failure.suspect else ""
    return f" (it rewrites {candidate.suspect})" if candidate.suspect and candidate.suspect != top else ""


def _sentence(text: str) -> str:
    return text if text.endswith((".", "…")) else text + "."


def _best(entry: Entry):
    return next((c for _, c in entry.ranked), None)


def hover_text(entry: Entry, markdown: bool) -> str:
    """The hover on a ledex diagnostic: the failure, then the best fix's explanation or the state."""
    bold, code, em = ((lambda t: f"**{t}**"), (lambda t: f"`{t}`"), (lambda t: f"_{t}_")) if markdown else \
        ((lambda t: t), (lambda t: t), (lambda t: t))
    head = f"{bold('ledex')} — {code(entry.failure.test)}: {entry.failure.message or 'failed'}"
    best = _best(entry)
    if best is None:
        return f"{head}\n\n{em(state_text(entry).capitalize())}"
    label = "Verified fix" if best.verified else "Best unverified fix"
    return f"{head}\n\n{bold(label + ':')} {best.explanation.strip() or '(no explanation)'}"


def hover_markup(entries: list[Entry], markdown: bool) -> str:
    """The hover over one or more problems' diagnostics, separated as the markup allows."""
    return ("\n\n---\n\n" if markdown else "\n\n").join(hover_text(e, markdown) for e in entries)


def explanation_text(entry: Entry, full: str | None) -> str:
    """A plain-text explanation for clients that cannot open a document (window/showMessage):
    the failure, the suspect, the best fix's explanation; `full` names the markdown file."""
    f, best = entry.failure, _best(entry)
    lines = [f"Why {f.test} fails: {f.message or 'test failed'}"]
    if f.suspect:
        lines.append(f"Suspect: {f.suspect.qualname} in {f.suspect.path} {where_found(f.suspect)}")
    if best is None:
        lines.append(f"ledex is {_sentence(state_text(entry))}")
    else:
        passed, of = best.failing_passed
        label = "Verified fix" if best.verified else \
            f"Best unverified fix ({passed} of {of} failing tests pass with it; it breaks {best.broke} passing)"
        lines.append(f"{label}{_elsewhere(f, best)}: {best.explanation.strip() or '(no explanation)'}")
    if full:
        lines.append(f"Every candidate with its diff: {full}")
    return "\n".join(lines)
