"""Expression-level edit operators for engine/operators.py (which documents the whole set and its
API): a comparison, arithmetic or boolean operator swapped, a constant or a bound off by one, a
`not` added or removed, another variable, another method of the same object, swapped arguments or
operands, `=` for `+=`. Each yields raw edits (operator, start, end, replacement, intended) over an
operators._Source; not used on its own. The statement-level ones are in operator_statements.py.

Try it:  python -m ledex.engine.operators FILE [QUALNAME]
"""

from __future__ import annotations

import ast
import re

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
    if isinstance(node, ast.BinOp) and _OP_TEXT.get(type(node.op)) in BINOP_ALTERNATIVES:
        text = _OP_TEXT[type(node.op)]
        right = _int_value(src, node.right)
        # an identity (`int(part) + 1` -> `int(part) * 1`) is the term dropped in disguise, which
        # _constant writes plainly (jsonpointer 3.12, fresh-user run X3: `* 1` was applied)
        alternatives = [a for a in BINOP_ALTERNATIVES[text] if a not in _IDENTITY.get(right, ())]
        yield from _token_swap(src, src.span(node.left)[1], src.span(node.right)[0], text, alternatives, "binop")
    elif isinstance(node, ast.AugAssign) and _OP_TEXT.get(type(node.op)) in BINOP_ALTERNATIVES:
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


def flag_names(root: ast.AST) -> frozenset[str]:
    """Names the function assigns a truth value (True/False, a comparison, a boolean operation,
    `not x`) or a string, or defaults to one: +-1 on them is no off-by-one (dpath 2.2.0, fresh-user
    run X11 F13: `search(..., yielded + 1, ...)` verified for the slip `yielded = False`)."""
    def truth(value) -> bool:  # noqa: ANN001
        return (isinstance(value, ast.Constant) and type(value.value) in (bool, str)) \
            or isinstance(value, (ast.Compare, ast.BoolOp)) or (isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not))
    flags = set()
    for node in ast.walk(root):
        if isinstance(node, ast.Assign) and truth(node.value):
            flags.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            flags.update(a.arg for a, d in zip(positional[len(positional) - len(node.defaults):], node.defaults) if truth(d))
            flags.update(a.arg for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None and truth(d))
    return frozenset(flags)


def _argument_positions(node, flags: frozenset[str] = frozenset()) -> list[ast.AST]:
    """A call's arguments that are a variable or attribute (or one +-1 of it): an off-by-one
    there is a bound slip too (isoweek 1.3.3's `timedelta(weeks=self.week - 1)` written
    `weeks=self.week`: no edit added the `- 1`, fresh-user run X11 F10). Constants stay the
    constant operator's (a changed magic value is a test-overfitting risk, ranking.py)."""
    if not isinstance(node, ast.Call) or (isinstance(node.func, ast.Name) and node.func.id == "range"):
        return []
    values = [a for a in node.args if not isinstance(a, ast.Starred)] + [k.value for k in node.keywords if k.arg]
    def variable(v):
        return isinstance(v, (ast.Name, ast.Attribute)) or (
            isinstance(v, ast.BinOp) and isinstance(v.op, (ast.Add, ast.Sub)) and isinstance(v.left, (ast.Name, ast.Attribute))
            and isinstance(v.right, ast.Constant) and v.right.value == 1)
    return [v for v in values if variable(v) and not (isinstance(v, ast.Name) and v.id in flags)]


def _bound(src, node, parents, flags: frozenset[str] = frozenset()):
    for bound in _bound_positions(node) + _argument_positions(node, flags):
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


_TARGETS = (ast.Name, ast.Attribute, ast.Subscript)


def _assign(src, node, names):
    """`=` <-> `+=`; and a statement whose value is dropped <-> the assignment it was meant to be:
    `w + 1` <-> `w += 1` (any arithmetic operator), `x == e` <-> `x = e` (isoweek 1.3.3's
    `w += 1` written `w + 1` hung its generator, and no edit restored it: fresh-user run X11 F3)."""
    if isinstance(node, ast.AugAssign):
        gap_start, gap_end = src.span(node.target)[1], src.span(node.value)[0]
        text = _OP_TEXT.get(type(node.op))
        match = re.search(re.escape(text or "") + "=", src.text[gap_start:gap_end]) if text else None
        if match and isinstance(node.op, ast.Add):
            yield "assign", gap_start + match.start(), gap_start + match.end(), "=", None
        if match and isinstance(node.target, _TARGETS):
            yield "assign", gap_start + match.start(), gap_start + match.end(), text, None  # its value dropped
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
            and node.targets[0].id in names:
        gap_start, gap_end = src.span(node.targets[0])[1], src.span(node.value)[0]
        match = re.search(r"=", src.text[gap_start:gap_end])
        if match:
            yield "assign", gap_start + match.start(), gap_start + match.end(), "+=", None
            yield "assign", gap_start + match.start(), gap_start + match.end(), "==", None
    elif isinstance(node, ast.Expr):
        yield from _unused_value(src, node.value)


def _unused_value(src, value):
    """The edits making an expression statement the assignment it was meant to be."""
    if isinstance(value, ast.BinOp) and isinstance(value.left, _TARGETS) and _OP_TEXT.get(type(value.op)) in BINOP_ALTERNATIVES:
        text = _OP_TEXT[type(value.op)]
        gap_start, gap_end = src.span(value.left)[1], src.span(value.right)[0]
        match = re.search(_OP_PATTERN[text], src.text[gap_start:gap_end])
        if match:
            yield "assign", gap_start + match.start(), gap_start + match.end(), text + "=", None
    elif isinstance(value, ast.Compare) and len(value.ops) == 1 and isinstance(value.ops[0], ast.Eq) \
            and isinstance(value.left, ast.Name):  # not only names in scope: `==` took the name out of it
        gap_start, gap_end = src.span(value.left)[1], src.span(value.comparators[0])[0]
        match = re.search(r"==", src.text[gap_start:gap_end])
        if match:
            yield "assign", gap_start + match.start(), gap_start + match.end(), "=", None
