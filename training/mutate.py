"""Cheap, AST-based bugs for correct solutions: flipped comparisons, off-by-one constants,
wrong operators, swapped booleans.

Collect uses them where the model cannot produce useful wrong code by itself (a 135M model
mostly writes code that is wrong for uninteresting reasons). Every mutant is a *candidate*
only: collect keeps it after the sandbox confirms it fails the tests. Because the mutation is
known, a mutant also comes with a faithful explanation and the exact correct refinement (the
"mutation oracle" teacher), which is how a tiny model bootstraps when it cannot teach itself.

Both the mutant and the refinement are printed by `ast.unparse`, so they differ only in the
mutated spot (a model trained on them learns minimal edits, not reformatting).

    python -m ledex.training.mutate "def f(xs):\\n    return [x for x in xs if x > 0]"
"""

from __future__ import annotations

import ast
import copy
import random
from dataclasses import dataclass

_COMPARE_FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                  ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mod, ast.Mod: ast.FloorDiv,
                ast.Div: ast.Mult, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_BOOLOP_SWAPS = {ast.And: ast.Or, ast.Or: ast.And}


@dataclass(frozen=True)
class Mutant:
    """One single-spot bug planted in a correct solution: the operator class, the line, the
    wrong and right expression texts and both whole programs (callers judge it in the sandbox).
    """

    operator: str  # "compare" | "binop" | "boolop" | "off_by_one" | "negation" | "bool_const" | "augassign"
    line: int  # line in `original` (both texts share line numbers)
    wrong: str  # the mutated expression, as printed in the mutant
    right: str  # the original expression
    code: str  # the whole mutant
    original: str  # the whole (canonicalised) correct solution

    def explanation(self) -> str:
        """A faithful explanation of this bug, in the shape the model should learn to write."""
        what = {
            "compare": "uses the wrong comparison",
            "binop": "uses the wrong arithmetic operator",
            "boolop": "combines the conditions with the wrong boolean operator",
            "off_by_one": "is off by one",
            "negation": "negates the condition the wrong way",
            "bool_const": "returns the opposite truth value",
            "augassign": "updates the variable with the wrong operator",
        }[self.operator]
        return (f"Line {self.line} {what}: `{_short(self.wrong)}` should be `{_short(self.right)}`. "
                f"Because of this the function computes a wrong result for the failing test. "
                f"Changing it to `{_short(self.right)}` fixes the code.")


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _sites(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """Every (operator, node) the mutation operators can change, in source order."""
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _COMPARE_FLIPS:
            sites.append(("compare", node))
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
            sites.append(("binop", node))
        elif isinstance(node, ast.BoolOp):
            sites.append(("boolop", node))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append(("negation", node))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
            sites.append(("augassign", node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            sites.append(("bool_const", node))
        elif isinstance(node, ast.Constant) and type(node.value) is int and hasattr(node, "lineno"):
            sites.append(("off_by_one", node))
    return sites


def _apply(operator: str, node: ast.AST, delta: int) -> ast.AST:
    """Mutate `node` in place; returns the node whose printed form changed."""
    if operator == "compare":
        node.ops[0] = _COMPARE_FLIPS[type(node.ops[0])]()
    elif operator in ("binop", "augassign"):
        node.op = _BINOP_SWAPS[type(node.op)]()
    elif operator == "boolop":
        node.op = _BOOLOP_SWAPS[type(node.op)]()
    elif operator == "negation":
        return node  # handled by the caller: the node is replaced by its operand
    elif operator == "bool_const":
        node.value = not node.value
    elif operator == "off_by_one":
        node.value = node.value + delta
    return node


def _statement_of(tree: ast.AST, target: ast.AST) -> ast.AST:
    """The innermost statement holding target (what we print as `wrong`/`right`)."""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and any(child is target for child in ast.walk(node)):
            if best is None or any(child is node for child in ast.walk(best)):
                best = node
    return best or target


def _header(stmt: ast.AST) -> str:
    """A statement printed on one line (compound statements: just their header)."""
    return ast.unparse(stmt).splitlines()[0].rstrip(":")


def mutants(code: str, *, limit: int = 8, seed: int = 0) -> list[Mutant]:
    """Up to `limit` distinct single-site mutants of `code` (empty if it does not parse)."""
    try:
        canonical = ast.unparse(ast.parse(code))
        base_tree = ast.parse(canonical)
    except (SyntaxError, ValueError, RecursionError):
        return []
    rng = random.Random(seed)
    sites = list(enumerate(_sites(base_tree)))
    rng.shuffle(sites)
    # Round-robin over operators so a handful of mutants covers different kinds of bug.
    rank: dict[str, int] = {}
    ordered = sorted(sites, key=lambda item: _bump(rank, item[1][0]))
    found: dict[str, Mutant] = {}
    for index, (operator, _) in ordered:
        if len(found) >= limit:
            break
        for delta in ((1, -1) if operator == "off_by_one" else (0,)):
            mutant = _one(canonical, index, operator, delta)
            if mutant and mutant.code != canonical and mutant.code not in found:
                found[mutant.code] = mutant
                break
    return list(found.values())[:limit]


def _bump(counts: dict[str, int], key: str) -> int:
    counts[key] = counts.get(key, 0) + 1
    return counts[key]


def _one(canonical: str, index: int, operator: str, delta: int) -> Mutant | None:
    tree = ast.parse(canonical)
    _, node = _sites(tree)[index]
    stmt = _statement_of(tree, node)
    right = _header(copy.deepcopy(stmt))
    line = getattr(stmt, "lineno", getattr(node, "lineno", 1))
    if operator == "negation":
        if not _replace(tree, node, node.operand):
            return None
    else:
        _apply(operator, node, delta)
    try:
        code = ast.unparse(ast.fix_missing_locations(tree))
        ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    return Mutant(operator, line, _header(stmt), right, code, canonical)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> bool:
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, name, new)
                return True
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return True
    return False


if __name__ == "__main__":
    import sys

    source = sys.argv[1].encode().decode("unicode_escape") if len(sys.argv) > 1 else (
        "def count_pos(xs):\n    n = 0\n    for x in xs:\n        if x > 0 and x != 7:\n            n += 1\n    return n")
    for m in mutants(source):
        print(f"--- {m.operator} line {m.line}: {m.wrong!r} (was {m.right!r})\n{m.explanation()}\n{m.code}")
