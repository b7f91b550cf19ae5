"""Cheap bugs for correct solutions: single-site edits from engine/operators.py (flipped
comparisons, swapped operators, off-by-one constants and bounds, and/or, `not`, another variable,
another method, swapped arguments, `=` for `+=`, a dropped `return`).

The operators are defined once, in ledex.engine.operators: training applies them to correct code
to plant a bug, the fix engine's search applies them to buggy code to find a repair.

Collect uses them where the model cannot produce useful wrong code by itself (a 135M model
mostly writes code that is wrong for uninteresting reasons). Every mutant is a *candidate*
only: collect keeps it after the sandbox confirms it fails the tests. Because the mutation is
known, a mutant also comes with a faithful explanation and the exact correct refinement (the
"mutation oracle" teacher), which is how a tiny model bootstraps when it cannot teach itself.

Both the mutant and the refinement start from the `ast.unparse` form of the solution and differ
only in the mutated spot, on the same line (a model trained on them learns minimal edits, not
reformatting); by default only operators that keep every line in place (operators.SAME_LINES).

    python -m ledex.training.mutate "def f(xs):\\n    return [x for x in xs if x > 0]"
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from typing import Iterable

from ledex.engine.operators import SAME_LINES, Edit, single_site_edits

_WHAT = {
    "compare": "uses the wrong comparison",
    "binop": "uses the wrong arithmetic operator",
    "boolop": "combines the conditions with the wrong boolean operator",
    "constant": "uses the wrong constant",
    "bound": "is off by one",
    "negation": "negates the condition the wrong way",
    "name": "uses the wrong variable",
    "method": "calls the wrong function or method",
    "swap": "has its arguments or operands in the wrong order",
    "assign": "assigns where it should update the variable, or the other way round",
    "return": "gets the `return` wrong",
    "add_return": "returns something it should not",
    "drop_statement": "is missing a statement",
    "drop_condition": "is missing part of its condition",
    "drop_term": "is missing a term of its arithmetic",
}


@dataclass(frozen=True)
class Mutant:
    """One single-spot bug planted in a correct solution: the operator (engine.operators.OPERATORS),
    the line, the wrong and right line texts and both whole programs (callers judge it in the sandbox).
    """

    operator: str  # one of ledex.engine.operators.OPERATORS
    line: int  # line in `original` (both texts share line numbers for SAME_LINES operators)
    wrong: str  # the mutated line, as printed in the mutant
    right: str  # the original line
    code: str  # the whole mutant
    original: str  # the whole (canonicalised) correct solution

    def explanation(self) -> str:
        """A faithful explanation of this bug, in the shape the model should learn to write."""
        what = _WHAT.get(self.operator, "is wrong")
        return (f"Line {self.line} {what}: `{_short(self.wrong)}` should be `{_short(self.right)}`. "
                f"Because of this the function computes a wrong result for the failing test. "
                f"Changing it to `{_short(self.right)}` fixes the code.")


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _line(code: str, number: int) -> str:
    lines = code.splitlines()
    return lines[number - 1].strip().rstrip(":") if 0 < number <= len(lines) else ""


def as_mutant(edit: Edit, original: str) -> Mutant:
    """An operators.Edit of `original` as a Mutant (wrong/right: the edited line before and after)."""
    return Mutant(edit.operator, edit.line, _line(edit.code, edit.line), _line(original, edit.line), edit.code,
                  original)


def mutants(code: str, *, limit: int = 8, seed: int = 0, operators: Iterable[str] | None = None) -> list[Mutant]:
    """Up to `limit` distinct single-site mutants of `code` (empty if it does not parse), drawn
    round-robin over operators (default: operators.SAME_LINES) so a few cover different kinds of bug."""
    try:
        canonical = ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return []
    edits = list(single_site_edits(canonical, None, SAME_LINES if operators is None else operators))
    rng = random.Random(seed)
    rng.shuffle(edits)
    rank: dict[str, int] = {}
    ordered = sorted(edits, key=lambda e: _bump(rank, e.operator))
    return [as_mutant(e, canonical) for e in ordered[:limit]]


def _bump(counts: dict[str, int], key: str) -> int:
    counts[key] = counts.get(key, 0) + 1
    return counts[key]


if __name__ == "__main__":
    import sys

    source = sys.argv[1].encode().decode("unicode_escape") if len(sys.argv) > 1 else (
        "def count_pos(xs):\n    n = 0\n    for x in xs:\n        if x > 0 and x != 7:\n            n += 1\n    return n")
    for m in mutants(source):
        print(f"--- {m.operator} line {m.line}: {m.wrong!r} (was {m.right!r})\n{m.explanation()}\n{m.code}")
