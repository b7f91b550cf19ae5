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
marked in NO_INVERSE.

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
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ledex.engine.localize import function_in
from ledex.engine.operator_statements import _add_return, _blocks, _drop_condition, _drop_statement, _return

# Symmetric alternatives: every operator maps to each member of its groups (so each swap has its inverse).
_ORDER = ("<", "<=", ">", ">=")
COMPARE_ALTERNATIVES = {**{op: tuple(o for o in _ORDER if o != op) for op in _ORDER},
                        "==": ("!=",), "!=": ("==",), "in": ("not in",), "not in": ("in",),
                        "is": ("is not",), "is not": ("is",)}
_BINOP_PAIRS = (("+", "-"), ("+", "*"), ("*", "/"), ("*", "//"), ("/", "//"), ("//", "%"), ("/", "%"), ("*", "**"),
                ("&", "|"), ("|", "^"), ("<<", ">>"))
BINOP_ALTERNATIVES = {op: tuple(b if a == op else a for a, b in _BINOP_PAIRS if op in (a, b))
                      for pair in _BINOP_PAIRS for op in pair}
# "another method of the same object" / "another function": each name maps to the rest of its group.
_METHOD_GROUPS = (("lower", "upper"), ("append", "extend"), ("startswith", "endswith"), ("find", "rfind"),
                  ("index", "rindex"), ("strip", "lstrip", "rstrip"), ("isupper", "islower"),
                  ("keys", "values", "items"), ("split", "rsplit"), ("floor", "ceil"), ("remove", "discard"),
                  ("isdigit", "isalpha", "isalnum"), ("start", "end"), ("get", "pop"))
_FUNCTION_GROUPS = (("min", "max"), ("any", "all"), ("sorted", "reversed"), ("floor", "ceil"))
METHOD_ALTERNATIVES = {m: tuple(o for o in g if o != m) for g in _METHOD_GROUPS for m in g}
FUNCTION_ALTERNATIVES = {m: tuple(o for o in g if o != m) for g in _FUNCTION_GROUPS for m in g}

_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|",
            ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.And: "and", ast.Or: "or"}
# How each operator is written, as a regex that finds it in the text between its two operands.
_OP_PATTERN = {"<": r"<(?![<=])", "<=": r"<=", ">": r">(?![>=])", ">=": r">=", "==": r"==", "!=": r"!=",
               "in": r"(?<!\w)in(?!\w)", "not in": r"(?<!\w)not\s+in(?!\w)", "is": r"(?<!\w)is(?!\w)(?!\s+not\b)",
               "is not": r"(?<!\w)is\s+not(?!\w)", "+": r"\+", "-": r"-", "*": r"(?<!\*)\*(?!\*)",
               "/": r"(?<!/)/(?!/)", "//": r"//", "%": r"%", "**": r"\*\*", "&": r"&", "|": r"\|", "^": r"\^",
               "<<": r"<<", ">>": r">>", "and": r"(?<!\w)and(?!\w)", "or": r"(?<!\w)or(?!\w)"}

OPERATORS = (
    "compare",        # flip/swap a comparison: < <= > >=, == !=, in / not in, is / is not
    "binop",          # arithmetic/bitwise operator swap, in expressions and augmented assignments (/ vs //)
    "constant",       # an integer constant +-1 (not a bound); True <-> False
    "bound",          # +-1 on a range/slice/index bound: 2 -> 3, n -> n + 1 / n - 1, n - 1 -> n
    "boolop",         # and <-> or
    "negation",       # add or remove `not` on a condition, a returned or assigned truth value
    "name",           # another name in the function's scope (variable misuse)
    "method",         # another method of the same object / builtin (lower/upper, append/extend, min/max)
    "swap",           # swapped call arguments, operands of a non-commutative operator or of a concatenation
    "assign",         # `=` <-> `+=`
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


def _scope_names(root: ast.AST) -> list[str]:
    names: dict[str, None] = {}
    for node in ast.walk(root):
        if isinstance(node, ast.arguments):
            for arg in (*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg):
                if arg is not None:
                    names[arg.arg] = None
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names[node.id] = None
    return list(names)


# --- the operators: each yields (operator, start, end, replacement, intended) ------------------------
# `intended` is a function giving the AST the edit means (checked, with parentheses tried), or None
# for token edits whose textual meaning is the point (`a - b * c` -> `a - b + c` is the slip people make).

def _token_swap(src, gap_start, gap_end, op, alternatives, operator):
    gap = src.text[gap_start:gap_end]
    match = re.search(_OP_PATTERN[op], re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), gap))
    if match is None:
        return
    for alt in alternatives:
        yield operator, gap_start + match.start(), gap_start + match.end(), alt, None


def _compare(src, node):
    if isinstance(node, ast.Compare):
        for left, op, right in zip([node.left, *node.comparators], node.ops, node.comparators):
            text = _OP_TEXT[type(op)]
            yield from _token_swap(src, src.span(left)[1], src.span(right)[0], text, COMPARE_ALTERNATIVES[text], "compare")


# Operators for which a literal right operand leaves the left unchanged: `x * 1`, `x + 0` are `x`.
_IDENTITY = {1: {"*", "/", "//", "**"}, 0: {"+", "-", "|", "^", "<<", ">>"}}


def _binop(src, node):
    if isinstance(node, ast.BinOp) and _OP_TEXT[type(node.op)] in BINOP_ALTERNATIVES:
        text = _OP_TEXT[type(node.op)]
        right = _int_value(src, node.right)
        # an identity (`int(part) + 1` -> `int(part) * 1`) is the term dropped in disguise, which
        # _constant writes plainly (jsonpointer 3.12, fresh-user run X3: `* 1` was applied)
        alternatives = [a for a in BINOP_ALTERNATIVES[text] if a not in _IDENTITY.get(right, ())]
        yield from _token_swap(src, src.span(node.left)[1], src.span(node.right)[0], text, alternatives, "binop")
    elif isinstance(node, ast.AugAssign) and _OP_TEXT[type(node.op)] in BINOP_ALTERNATIVES:
        text = _OP_TEXT[type(node.op)]
        yield from _aug_swap(src, node, text)


def _aug_swap(src, node, text):
    gap_start, gap_end = src.span(node.target)[1], src.span(node.value)[0]
    match = re.search(re.escape(text) + "=", src.text[gap_start:gap_end])
    if match:
        for alt in BINOP_ALTERNATIVES[text]:
            yield "binop", gap_start + match.start(), gap_start + match.end(), alt + "=", None


def _boolop(src, node):
    if isinstance(node, ast.BoolOp):
        text = _OP_TEXT[type(node.op)]
        for left, right in zip(node.values, node.values[1:]):
            yield from _token_swap(src, src.span(left)[1], src.span(right)[0], text,
                                   ("or" if text == "and" else "and",), "boolop")


def _int_value(src, node) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    return None


def _constant(src, node, parents):
    parent = parents.get(node)
    if isinstance(node, ast.Constant) and type(node.value) is bool:
        start, end = src.span(node)
        yield "constant", start, end, str(not node.value), None
        return
    value = _int_value(src, node)
    if value is None or (isinstance(parent, ast.UnaryOp) and _int_value(src, parent) is not None):
        return  # the -n form is handled at the UnaryOp
    start, end = src.span(node)
    # +-1 on a slice/index/range() bound is the "bound" slip, not a magic value (ranking.overfit_risk)
    kind = "bound" if parent is not None and any(node is b for b in _bound_positions(parent)) else "constant"
    for new in (value + 1, value - 1):
        if new != 0 or not _a_term(node, parent):
            yield kind, start, end, str(new), None
        elif not any(parent is b for b in _bound_positions(parents.get(parent))):  # a bound: _bound drops it
            term_start, term_end = src.span(parent)
            yield "drop_term", term_start, term_end, src.seg(parent.left), _replaced(parent, parent.left)


def _a_term(node, parent) -> bool:
    """`node` is the k of `x + k` / `x - k`: its `x + 0` is written as `x` (the term dropped), once
    (roman 5.2, jsonpointer 3.12, fresh-user run X3: `+ 0` and `- 0` were verified and shown as
    fixes of their own, and `+ 1` had no plain inverse outside slice bounds)."""
    return isinstance(parent, ast.BinOp) and isinstance(parent.op, (ast.Add, ast.Sub)) and parent.right is node


def _replaced(node, new):
    """The intended meaning of an expression edit: `node` replaced by `new` (built from src.tree's nodes)."""
    return node, new


def _bound_positions(node) -> list[ast.AST]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        return [a for a in node.args if not isinstance(a, ast.Starred)]
    if isinstance(node, ast.Slice):
        return [b for b in (node.lower, node.upper) if b is not None]
    if isinstance(node, ast.Subscript) and not isinstance(node.slice, (ast.Slice, ast.Tuple)):
        return [node.slice]
    return []


def _bound(src, node, parents):
    for bound in _bound_positions(node):
        if _int_value(src, bound) is not None or (isinstance(bound, ast.Constant)):
            continue  # constants: the constant operator; strings: not a bound
        start, end = src.span(bound)
        if isinstance(bound, ast.BinOp) and isinstance(bound.op, (ast.Add, ast.Sub)) \
                and _int_value(src, bound.right) == 1:
            yield "bound", start, end, src.seg(bound.left), _replaced(bound, bound.left)
            continue
        for op, cls in (("+", ast.Add), ("-", ast.Sub)):
            new = ast.BinOp(bound, cls(), ast.Constant(1))
            yield "bound", start, end, f"{src.seg(bound)} {op} 1", _replaced(bound, new)


_CONDITION_OWNERS = (ast.If, ast.While, ast.IfExp, ast.Assert)


def _negation(src, node, parents):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        start, end = src.span(node)
        yield "negation", start, end, src.seg(node.operand), _replaced(node, node.operand)
        return
    parent = parents.get(node)
    is_condition = (isinstance(parent, _CONDITION_OWNERS) and parent.test is node) or \
        isinstance(parent, ast.BoolOp) or (isinstance(parent, ast.comprehension) and node in parent.ifs) or \
        (isinstance(parent, ast.Return) and isinstance(node, (ast.Compare, ast.BoolOp, ast.Name))) or \
        (isinstance(parent, ast.Assign) and parent.value is node and _truth_value(node, parent))
    if is_condition and isinstance(node, ast.expr):
        start, end = src.span(node)
        yield "negation", start, end, f"not {src.seg(node)}", _replaced(node, ast.UnaryOp(ast.Not(), node))


def _truth_value(node, assign) -> bool:
    """Whether an assigned value reads as a truth value whose `not` a slip drops: a comparison, a
    boolean operation, or the target itself (pathspec 0.12.1's `include = not include` slipped to
    `include = include`, which no edit undid: fresh-user run X10 F4)."""
    return isinstance(node, (ast.Compare, ast.BoolOp)) or (
        isinstance(node, ast.Name) and any(isinstance(t, ast.Name) and t.id == node.id for t in assign.targets))


def _name(src, node, names, parents):
    """Another in-scope variable read, or counted (`i += 1` for `j += 1`: pathspec 0.12.1's loop on
    `j` never ended, and no edit changed the counter: fresh-user run X10 F5)."""
    counted = isinstance(parents.get(node), ast.AugAssign) and parents[node].target is node
    if isinstance(node, ast.Name) and (isinstance(node.ctx, ast.Load) or counted) and node.id in names:
        start, end = src.span(node)
        for other in names:
            if other != node.id:
                yield "name", start, end, other, None


def _method(src, node, names):
    if isinstance(node, ast.Attribute) and node.attr in METHOD_ALTERNATIVES:
        end = src.span(node)[1]
        for other in METHOD_ALTERNATIVES[node.attr]:
            yield "method", end - len(node.attr), end, other, None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTION_ALTERNATIVES \
            and node.func.id not in names:
        start, end = src.span(node.func)
        for other in FUNCTION_ALTERNATIVES[node.func.id]:
            yield "method", start, end, other, None


_ATOMS = (ast.Name, ast.Constant, ast.JoinedStr, ast.Call, ast.Attribute, ast.Subscript, ast.List, ast.Tuple, ast.Dict, ast.Set,
          ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SYMMETRIC_CALLS = frozenset({"min", "max", "set", "print", "gcd", "hypot"})
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)
_SEQUENCES = (ast.JoinedStr, ast.List, ast.Tuple, ast.ListComp)  # `+` of these joins, in order


def _joins(node) -> bool:
    """Whether `node` is a `+` with an operand that is visibly a sequence (a slice, a string or
    bytes literal, an f-string, a list or tuple display): concatenation, where the order matters
    (validators 0.22.0's IBAN check, fresh-user run X9 F5). `a + b` of names may be numbers."""
    def sequence(operand):
        return (isinstance(operand, _SEQUENCES) or (isinstance(operand, ast.Subscript) and isinstance(operand.slice, ast.Slice))
                or (isinstance(operand, ast.Constant) and isinstance(operand.value, (str, bytes))) or _joins(operand))
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (sequence(node.left) or sequence(node.right))


def _swap(src, node):
    if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SYMMETRIC_CALLS):
        args = node.args
        for i in range(len(args) - 1):
            a, b = args[i], args[i + 1]
            if isinstance(a, ast.Starred) or isinstance(b, ast.Starred):
                continue
            start, end = src.span(a)[0], src.span(b)[1]
            between = src.text[src.span(a)[1]:src.span(b)[0]]
            new_args = list(args)
            new_args[i], new_args[i + 1] = b, a
            yield "swap", start, end, src.seg(b) + between + src.seg(a), \
                _replaced(node, ast.Call(node.func, new_args, node.keywords))
    elif isinstance(node, ast.BinOp) and (isinstance(node.op, _NON_COMMUTATIVE) or _joins(node)):
        start, end = src.span(node)
        wrap = lambda n: src.seg(n) if isinstance(n, _ATOMS) else f"({src.seg(n)})"  # noqa: E731
        gap = src.text[src.span(node.left)[1]:src.span(node.right)[0]].strip(" ()") or _OP_TEXT[type(node.op)]
        yield "swap", start, end, f"{wrap(node.right)} {gap} {wrap(node.left)}", \
            _replaced(node, ast.BinOp(node.right, node.op, node.left))


def _assign(src, node, names):
    if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
        gap_start, gap_end = src.span(node.target)[1], src.span(node.value)[0]
        match = re.search(r"\+=", src.text[gap_start:gap_end])
        if match:
            yield "assign", gap_start + match.start(), gap_start + match.end(), "=", None
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
            and node.targets[0].id in names:
        gap_start, gap_end = src.span(node.targets[0])[1], src.span(node.value)[0]
        match = re.search(r"=", src.text[gap_start:gap_end])
        if match:
            yield "assign", gap_start + match.start(), gap_start + match.end(), "+=", None


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
    names = _scope_names(root)
    last_in_block = {body[-1] for _, body in _blocks(root)}
    body_nodes = list(ast.walk(root)) if isinstance(root, ast.Module) else \
        [n for part in (root.args, *root.body) for n in ast.walk(part)]  # not its decorators
    for node in body_nodes:
        yield from _compare(src, node)
        yield from _binop(src, node)
        yield from _boolop(src, node)
        yield from _constant(src, node, parents)
        yield from _bound(src, node, parents)
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
