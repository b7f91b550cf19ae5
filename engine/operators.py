"""Single-site edit operators: the ONE definition of "a small change to one spot of a function",
used both ways round.

- Training (training/mutate.py, collect): a *bug* is an edit of correct code.
- Search (engine/search.py): a *repair candidate* is an edit of buggy code.

The set covers HumanEvalFix's bug taxonomy (value misuse, missing/excess logic, operator,
variable and function misuse; Muennighoff et al. 2023, OctoPack) and the classic mutation-repair
operators (Debroy & Wong 2010). It is closed under inverse where the inverse is a single-site edit:
applying an edit and then the right edit of the result gives back the original program (same AST;
tests/test_operators.py checks it over a table of functions). Operators with no single-site
inverse (dropping a statement or a condition cannot be undone without knowing what to write) are
marked in NO_INVERSE. The operators themselves are in operator_expressions.py (operators,
constants, bounds, names, methods, swaps) and operator_statements.py (returns, dropped statements
and conditions); this module realises, checks and orders their edits.

API (stable; helper code in training and the engine depends on it):

    single_site_edits(code: str, function: str | None = None, operators=None) -> Iterator[Edit]

`code` is a whole module's text; `function` a qualified name ("f", "Cls.method",
"f.<locals>.g" as engine.localize.iter_functions names them), or None for every line of `code`.
Edits are yielded in source order, each distinct resulting text once; an edit whose result does
not parse is never yielded. `code` that does not parse, or a function that is not there, yields
nothing. Edits work on the text: every byte outside the edited span is kept (comments, layout).

    Edit(operator, line, description, code, start, end, before, after)

operator: one of OPERATORS; line: 1-based line of the edit in the input; description:
"`x < n` -> `x <= n`"-style; code: the whole edited module; start/end: character offsets of the
replaced span in the input; before/after: the replaced text and its replacement.

Try it:  python -m ledex.engine.operators FILE [QUALNAME]
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ledex.engine.localize import function_in
from ledex.engine.operator_expressions import (_assign, _binop, _bound, _boolop, _compare, _constant, _method, _name,
                                               _negation, _scope_names, _swap, flag_names)
from ledex.engine.operator_statements import _add_return, _blocks, _drop_condition, _drop_statement, _return


OPERATORS = (
    "compare",        # flip/swap a comparison: < <= > >=, == !=, in / not in, is / is not
    "binop",          # arithmetic/bitwise operator swap, in expressions and augmented assignments (/ vs //)
    "constant",       # an integer constant +-1 (not a bound); True <-> False
    "bound",          # +-1 on a range/slice/index bound or a variable call argument: 2 -> 3, n -> n + 1 / n - 1, n - 1 -> n
    "boolop",         # and <-> or
    "negation",       # add or remove `not` on a condition, a returned or assigned truth value
    "name",           # another name in the function's scope (variable misuse)
    "method",         # another method of the same object / builtin (lower/upper, append/extend, min/max)
    "swap",           # swapped call arguments, operands of a non-commutative operator or of a concatenation
    "assign",         # `=` <-> `+=`, `w + 1` <-> `w += 1`, `x == e` <-> `x = e` (a statement whose value is dropped)
    "return",         # `return x` <-> `x` (a missing or an extra `return` keyword)
    "add_return",     # the function computes a value and never returns it: `return name` added at its end
    "drop_statement",  # an extra statement removed (its inverse, writing the missing one, is not single-site)
    "drop_condition",  # one operand of an and/or chain removed (excess condition)
    "drop_term",      # `x + 1` / `x - 1` outside a bound -> `x` (the constant's 0, written plainly)
)
NO_INVERSE = frozenset({"drop_statement", "drop_condition", "drop_term"})
# Operators whose edits keep every line where it was (training's mutants are compared line by line).
SAME_LINES = frozenset(OPERATORS) - {"add_return", "drop_statement"}


@dataclass(frozen=True)
class Edit:
    """One single-site edit by a search operator: where (1-based line, char offsets), what
    (before/after), a one-line description and the whole edited text."""
    operator: str  # one of OPERATORS
    line: int  # 1-based line of the edit in the input text
    description: str  # "`before` -> `after`" (the changed text, flattened to one line)
    code: str  # the whole edited text
    start: int = 0  # character offsets of the replaced span in the input text
    end: int = 0
    before: str = ""
    after: str = ""


class _Source:
    """The text, its AST and char offsets for AST positions (whose columns count UTF-8 bytes)."""

    def __init__(self, text: str, tree: ast.Module):
        self.text, self.tree = text, tree
        self.lines = text.splitlines(keepends=True) or [""]
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        """Char offset of AST position (1-based lineno, UTF-8 byte col)."""
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        chars = col if line.isascii() else len(line.encode("utf-8")[:col].decode("utf-8", "replace"))
        return self.starts[lineno - 1] + chars

    def span(self, node: ast.AST) -> tuple[int, int]:
        """(start, end) char offsets of the node."""
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def seg(self, node: ast.AST) -> str:
        """The node's source text."""
        start, end = self.span(node)
        return self.text[start:end]


def _dump(tree: ast.AST) -> str:
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _parses(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _target(src: _Source, function: str | None, line: int | None = None) -> ast.AST | None:
    if not function:
        return src.tree
    return function_in(src.tree, function, line)



def _substitute(tree, old, new) -> bool:
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


def _sites(src: _Source, root: ast.AST, wanted: frozenset[str]):
    """Every raw edit (operator, start, end, replacement, intended) under root, unordered."""
    parents = {child: node for node in ast.walk(root) for child in ast.iter_child_nodes(node)}
    names, flags = _scope_names(root), flag_names(root)
    last_in_block = {body[-1] for _, body in _blocks(root)}
    body_nodes = list(ast.walk(root)) if isinstance(root, ast.Module) else \
        [n for part in (root.args, *root.body) for n in ast.walk(part)]  # not its decorators
    for node in body_nodes:
        yield from _compare(src, node)
        yield from _binop(src, node)
        yield from _boolop(src, node)
        yield from _constant(src, node, parents)
        yield from _bound(src, node, parents, flags)
        yield from _negation(src, node, parents)
        yield from _name(src, node, names, parents)
        yield from _method(src, node, names)
        yield from _swap(src, node)
        yield from _assign(src, node, names)
        yield from _return(src, node, last_in_block)
        if "drop_condition" in wanted:
            yield from _drop_condition(src, node)
    if "drop_statement" in wanted:
        yield from _drop_statement(src, root)
    yield from _add_return(src, root)


def _line_of(src: _Source, offset: int) -> int:
    lo, hi = 0, len(src.starts) - 1
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if src.starts[mid] <= offset else (lo, mid)
    return lo + 1


def _flat(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _realise(src: _Source, raw) -> Edit | None:
    """The edit as text, or None when it does not parse or does not mean what it should."""
    operator, start, end, replacement, intended = raw
    wanted = None
    if intended is not None:
        tree = ast.parse(src.text)
        node_map = dict(zip(map(id, ast.walk(src.tree)), ast.walk(tree)))
        wanted = _intended_dump(intended, tree, node_map)
    for text in ((replacement, f"({replacement})") if intended is not None and replacement else (replacement,)):
        code = src.text[:start] + text + src.text[end:]
        tree = _parses(code)
        if tree is None or (wanted is not None and _dump(tree) != wanted):
            continue
        before = src.text[start:end]
        line = _line_of(src, start)
        description = _describe(src, start, end, text, line)
        if operator != "drop_statement" and _does_nothing(tree, line):
            operator, description = "drop_statement", f"{description} (the statement then does nothing)"
        return Edit(operator, line, description, code, start, end, before, text)
    return None


_ZERO = {ast.Add: 0, ast.Sub: 0, ast.BitOr: 0, ast.BitXor: 0, ast.LShift: 0, ast.RShift: 0,
         ast.Mult: 1, ast.Div: 1, ast.FloorDiv: 1, ast.Pow: 1}  # x <op> this == x


def _does_nothing(tree, line: int) -> bool:
    """Whether the assignment starting on `line` leaves its target as it was (`x = x[0:]`, `x = x`,
    `x += 0`, `x = x * 1`): an edit that makes it so drops the statement and is named so (its
    overfit risk: fresh-user run X10, pathspec's `norm_file = norm_file[1:]` -> `[0:]` verified as a
    fix of equal standing)."""
    def same(a, b):
        return ast.unparse(a) == ast.unparse(b)

    def identity(target, value):
        if same(target, value):
            return True
        if isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice) and same(target, value.value):
            cut = value.slice
            return cut.upper is None and (cut.lower is None or _is_number(cut.lower, 0)) \
                and (cut.step is None or _is_number(cut.step, 1))
        return isinstance(value, ast.BinOp) and same(target, value.left) and _is_number(value.right, _ZERO.get(type(value.op)))

    for node in ast.walk(tree):
        if getattr(node, "lineno", None) != line:
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            return identity(node.targets[0], node.value)
        if isinstance(node, ast.AugAssign):
            return _is_number(node.value, _ZERO.get(type(node.op)))
    return False


def _is_number(node, value) -> bool:
    return value is not None and isinstance(node, ast.Constant) and type(node.value) in (int, float) \
        and node.value == value


def _intended_dump(intended, tree, node_map) -> str:
    """The dump of a fresh copy of the tree with the intended replacement made (nodes mapped by walk order)."""
    old, new = intended
    _substitute(tree, node_map[id(old)], _remap(new, node_map))
    return _dump(tree)


def _remap(node, node_map):
    """A copy of `node` whose children taken from the original tree point at their fresh twins."""
    if id(node) in node_map:
        return node_map[id(node)]
    clone = type(node)()
    for name, value in ast.iter_fields(node):
        if isinstance(value, list):
            setattr(clone, name, [_remap(v, node_map) if isinstance(v, ast.AST) else v for v in value])
        elif isinstance(value, ast.AST):
            setattr(clone, name, _remap(value, node_map))
        else:
            setattr(clone, name, value)
    return clone


def _describe(src: _Source, start: int, end: int, text: str, line: int) -> str:
    old_line = src.lines[line - 1] if line - 1 < len(src.lines) else ""
    if not text and start in src.starts and end in src.starts:
        return f"`{_flat(old_line)}` removed"
    if start == end and start in src.starts:
        return f"`{_flat(text)}` added after line {line - 1}"
    line_start = src.starts[line - 1]
    new_line = old_line[:start - line_start] + text + src.text[end:src.starts[min(_line_of(src, end), len(src.lines))]]
    return f"`{_flat(old_line) or '(end)'}` -> `{_flat(new_line) or '(removed)'}`"


def single_site_edits(code: str, function: str | None = None, operators: Iterable[str] | None = None,
                      order: Callable[[int, str], Any] | None = None, line: int | None = None) -> Iterator[Edit]:
    """Every single-site edit of `function` in `code` (see the module docstring), each resulting
    text once, made one at a time as they are asked for (a long function has thousands): in source
    order, or by `order(line, operator)` (1-based line in `code`). operators: a subset of
    OPERATORS (default: all). `line`: where `function` starts, when several defs share its name
    (localize.choose_definition)."""
    wanted = frozenset(OPERATORS if operators is None else operators)
    unknown = wanted - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown operators: {', '.join(sorted(unknown))} (known: {', '.join(OPERATORS)})")
    tree = _parses(code)
    if tree is None:
        return
    window = _window(_Source(code, tree), function, line)
    if window is None:
        return
    src, root, base, lines_before, prefix = window
    def key(raw):  # noqa: ANN001, ANN202 - `order` first when given, then source order
        first = order(_line_of(src, raw[1]) + lines_before, raw[0]) if order else ()
        return first, raw[1], OPERATORS.index(raw[0])
    raws = sorted((r for r in _sites(src, root, wanted) if r[0] in wanted), key=key)
    seen = {code}
    for raw in raws:
        edit = _realise(src, raw)
        if edit is None or edit.operator not in wanted:  # an edit that turns out to drop its statement
            continue
        start, end = base + edit.start - len(prefix), base + edit.end - len(prefix)
        whole = code[:start] + edit.after + code[end:]
        if whole not in seen:
            seen.add(whole)
            yield Edit(edit.operator, edit.line + lines_before, edit.description, whole, start, end, edit.before,
                       edit.after)


_PREFIX = "if 1:\n"  # lets an indented method parse on its own (any uniform indentation is a valid block)


def _window(module: _Source, function: str | None, line: int | None = None):
    """(source of the function's own lines, its node there, the char offset and lines before them in
    the module, the prefix added): edits are made and checked on the function alone, which keeps
    each check's parse as small as the function. The whole module when function is None."""
    if not function:
        return module, module.tree, 0, 0, ""
    node = _target(module, function, line)
    if node is None:
        return None
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    base, stop = module.starts[first - 1], module.starts[min(node.end_lineno, len(module.lines))]
    text = module.text[base:stop]
    prefix = _PREFIX if text[:1] in (" ", "\t") else ""
    tree = _parses(prefix + text)
    if tree is None:
        return None
    own = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return _Source(prefix + text, tree), own, base, first - 1 - (1 if prefix else 0), prefix


if __name__ == "__main__":
    import sys
    from pathlib import Path

    text = Path(sys.argv[1]).read_text(encoding="utf-8")
    for found in single_site_edits(text, sys.argv[2] if len(sys.argv) > 2 else None):
        print(f"{found.operator:15} line {found.line:4}: {found.description}")
