"""The ONE rule that orders a failure's candidates (CLI, editor code actions, episode order).

Order, first key first:
1. verified before not verified (the sandbox's word: engine/judging.judge);
1b. among verified ones, more of the problem's related failing tests passing (other problems'
   failing tests that suspect the same functions, judging.related_passing): a fix that repairs them too is
   likelier the bug's (fresh-user run X7, wcwidth: an edit that passed its own tests and left one
   of the others sharing the bug failing ranked above the exact inverse of the slip);
2. among verified ones, a *test-overfitting risk* after the rest: a search candidate that picked
   one of several values for a site (operators "constant": another number; "name": another
   variable) passes because the shown tests happen to be satisfied by that choice at least as
   often as because the logic is right (issue 20: a median dividing by 3 instead of 2 passed weak
   tests; webcolors 24.11.1, fresh-user run: `len(hex_digits) == 4` -> `len(hex_value) == 4`
   passed the suite and was applied over the exact inverse `== 3`, changing what `'#fff\n'`
   gives), and one that deleted code ("drop_statement", "drop_condition": functionality deletion,
   the commonest overfitting patch of generate-and-validate repair, Qi et al., ISSTA 2015) - they
   rank below the model's verified fixes and, among themselves, by plausibility;
3. plausibility: the model's log-likelihood of the patched function given the failure (sum of
   token log-probabilities, Backend.completion_logprobs via `score_codes`) minus EDIT_WEIGHT nats per changed token
   (smaller edits first, the minimal-repair prior of program repair); without a log-likelihood
   only the edit size counts;
4. unverified ones by pass rate; then round, then arrival order.

Candidates are anything with the attributes of fixer.CandidateResult (verified, pass_rate,
round, source, operator, loglik, edit_size, also_fixes).

Try it:  python -m ledex.engine.ranking   (orders a few made-up candidates)
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

# Nats per changed token: one changed token is worth about a 7x likelihood ratio. Set by reasoning,
# not tuned on any benchmark item: a candidate must be e^2 more likely per extra changed token.
EDIT_WEIGHT = 2.0
_TOKEN = re.compile(r"\w+|[^\w\s]")


_UNARY_AFTER = frozenset("([{,=:+-*/%<>!&|^~@") | {"return", "yield", "in", "not", "and", "or", "if", "else", "elif",
                                                      "lambda", "is", "assert", "while"}


def _tokens(text: str) -> list[str]:
    """Words and punctuation, a negative number literal (`-1` after `[`, `=`, `return`...) one token."""
    out: list[str] = []
    for token in _TOKEN.findall(text):
        if out and out[-1] == "-" and token[0].isdigit() and (len(out) == 1 or out[-2] in _UNARY_AFTER):
            out[-1] = f"-{token}"
        else:
            out.append(token)
    return out


def edit_size(old: str, new: str) -> int:
    """Changed tokens (words and punctuation; a negative number is one) between two versions of a
    function: `[-1]` -> `[0]` and `[-1]` -> `[-2]` both change one constant (hyperlink 21.0.0,
    fresh-user run X11 F7: counted 2 and 1, the wrong `[-2]` ranked first and was applied).

    >>> edit_size("u.split(':')[-1]", "u.split(':')[0]"), edit_size("u.split(':')[-1]", "u.split(':')[-2]")
    (1, 1)
    >>> edit_size("n - 1", "n + 1"), edit_size("f(x, -1)", "f(x, 1)")
    (1, 1)
    """
    a, b = _tokens(old), _tokens(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


# Search operators whose verified edits risk overfitting the tests (the module docstring, rule 2).
OVERFIT_OPERATORS = frozenset({"constant", "name", "drop_statement", "drop_condition"})


# How each of those edits is named where a verified one is shown (the CLI, --json's "overfit_risk")
OVERFIT_WORDS = {"constant": "a changed constant", "name": "another variable", "drop_statement": "a dropped statement",
                 "drop_condition": "a dropped condition"}
assert set(OVERFIT_WORDS) == OVERFIT_OPERATORS


def overfit_risk(candidate: Any) -> bool:
    """A verified search candidate by an operator of OVERFIT_OPERATORS (True <-> False excepted:
    two values, no choice among many), or one with verified alternatives at the same spot
    (`alternatives`, mark_alternatives) - see the module docstring."""
    return getattr(candidate, "source", "model") == "search" and (
        getattr(candidate, "alternatives", 0) > 0 or (
            getattr(candidate, "operator", "") in OVERFIT_OPERATORS
            and not re.fullmatch(r"True|False", getattr(candidate, "edit_after", "") or "")))


def risk_words(candidate: Any) -> str:
    """Why a verified candidate may fit the tests rather than the bug, in words ('' when it does not)."""
    if not (getattr(candidate, "verified", False) and overfit_risk(candidate)):
        return ""
    if getattr(candidate, "alternatives", 0) > 0:
        return (f"the tests pass with {candidate.alternatives} other edit(s) of the same line too: they cannot "
                "tell which is right")
    return f"{OVERFIT_WORDS[candidate.operator]} may fit the tests rather than the bug"


def _changed_lines(candidate: Any) -> tuple:
    """(suspect, the old function's line numbers the patch changes) of a candidate with a patch."""
    old, new = candidate.patch.old_function.splitlines(), candidate.patch.new_function.splitlines()
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    changed = [i for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for i in range(i1, max(i2, i1 + 1))]
    return candidate.suspect, tuple(changed)


def mark_alternatives(candidates: Sequence[Any]) -> None:
    """Set `alternatives` on each verified search candidate: how many other verified search
    candidates change the same line(s) of the same function differently. The tests cannot tell
    them apart, so each is a test-overfitting risk (hyperlink 21.0.0, fresh-user run X11 F7:
    `split(":")[-1]` -> `[-2]` and the exact inverse `[0]` both verified; `[-2]`, which raises for
    every URL without a password, ranked first and was written)."""
    found = [(c, _changed_lines(c)) for c in candidates if c.verified and c.source == "search" and c.patch is not None]
    spots: dict[tuple, set[str]] = {}
    for candidate, spot in found:
        spots.setdefault(spot, set()).add(candidate.patch.new_function)
    for candidate, spot in found:
        candidate.alternatives = len(spots[spot]) - 1


def plausibility(candidate: Any) -> float:
    """Log-likelihood (nats, 0 when unknown) minus EDIT_WEIGHT per changed token."""
    loglik = getattr(candidate, "loglik", None)
    size = getattr(candidate, "edit_size", 0) or 0
    return (loglik if loglik is not None and math.isfinite(loglik) else 0.0) - EDIT_WEIGHT * size


def sort_key(candidate: Any, index: int = 0) -> tuple:
    """Sort key, smallest best: verified first, more related failing tests fixed, low overfit
    risk, then higher plausibility (verified) or pass rate, earlier round, earlier index."""
    verified = bool(getattr(candidate, "verified", False))
    fixed_too = getattr(candidate, "also_fixes", (0, 0))[0] if verified else 0
    return (not verified, -fixed_too, verified and overfit_risk(candidate),
            -plausibility(candidate) if verified else -getattr(candidate, "pass_rate", 0.0),
            getattr(candidate, "round", 0), index)


def rank(candidates: Sequence[T]) -> list[T]:
    """The candidates, best first (the module docstring's rule)."""
    return [c for _, c in rank_indexed(candidates)]


def rank_indexed(candidates: Sequence[T]) -> list[tuple[int, T]]:
    """(arrival index, candidate) pairs, best first: what the editor needs (index = episode idx)."""
    return sorted(enumerate(candidates), key=lambda ic: sort_key(ic[1], ic[0]))


# --- the model's log-likelihood of a patched function -------------------------------------------------


def score_codes(backend: Any, messages: list[dict[str, str]], codes: Sequence[str]) -> list[float | None]:
    """Sum of the model's token log-probabilities (nats) of each code block as the answer to
    `messages` (format.build_messages in REFINE mode: the answer is just the fenced code block),
    from the backend's `completion_logprobs` (the prompt evaluated once). None for every code when
    the backend cannot score (no such method, or LogprobsUnsupported: an endpoint, a replay) or
    the prompt does not fit; None for one code that does not fit."""
    scorer = getattr(backend, "completion_logprobs", None)
    if not codes or scorer is None:
        return [None] * len(codes)
    from ledex.engine.models import ModelError

    try:
        return list(scorer(messages, [f"```python\n{code.rstrip()}\n```" for code in codes]))
    except (ModelError, RuntimeError, ValueError):  # LogprobsUnsupported, PromptTooLong, a llama.cpp refusal
        return [None] * len(codes)


if __name__ == "__main__":
    from types import SimpleNamespace as C

    made_up = [C(verified=True, source="search", operator="constant", loglik=-40.0, edit_size=1, round=0),
               C(verified=True, source="model", operator="", loglik=-60.0, edit_size=6, round=1),
               C(verified=False, source="model", pass_rate=0.5, round=1),
               C(verified=True, source="search", operator="compare", loglik=-41.0, edit_size=1, round=0)]
    for position, c in enumerate(rank(made_up), 1):
        print(position, c)
