"""Statement-level edit operators for engine/operators.py (which documents the whole set and its API):
a `return` keyword missing or extra, a computed value never returned, an extra statement, an extra
condition in an and/or chain. Each yields raw edits (operator, start, end, replacement, intended)
over an operators._Source; not used on its own.

Try it:  python -m ledex.engine.operators FILE [QUALNAME]
"""

from __future__ import annotations

import ast
import re

from ledex.engine.operator_expressions import _replaced


def _blocks(root):
    for node in ast.walk(root):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield node, body


def _return(src, node, last_in_block):
    if isinstance(node, ast.Return) and node.value is not None:
        start = src.span(node)[0]
        match = re.match(r"return\s*", src.text[start:])
        keep_space = src.text[start + match.end() - 1] == "("  # `return(x)` -> `(x)`
        yield "return", start, start + match.end() - (1 if keep_space and match.end() > 6 else 0), "", None
    elif isinstance(node, ast.Expr) and node in last_in_block and not isinstance(node.value, ast.Constant):
        start = src.span(node)[0]
        yield "return", start, start, "return ", None


def _whole_lines(src, node) -> tuple[int, int] | None:
    start, end = src.span(node)
    first, last = src.starts[node.lineno - 1], src.starts[node.end_lineno]
    after = src.text[end:last]
    if src.text[first:start].strip() or (after.strip() and not after.strip().startswith("#")):
        return None  # shares its line with another statement
    return first, last


def _drop_statement(src, root):
    for owner, body in _blocks(root):
        for index, stmt in enumerate(body):
            if isinstance(stmt, ast.Pass) or (index == 0 and _is_docstring(owner, stmt)):
                continue
            lines = _whole_lines(src, stmt)
            if lines is None:
                continue
            if len(body) == 1:
                start, end = src.span(stmt)
                yield "drop_statement", start, end, "pass", None
            else:
                yield "drop_statement", lines[0], lines[1], "", None


def _is_docstring(owner, stmt) -> bool:
    return isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and \
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _drop_condition(src, node):
    if isinstance(node, ast.BoolOp):
        values = node.values
        for i in range(len(values)):
            if i == 0:
                start, end = src.span(values[0])[0], src.span(values[1])[0]
            else:
                start, end = src.span(values[i - 1])[1], src.span(values[i])[1]
            rest = values[:i] + values[i + 1:]
            new = rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)
            yield "drop_condition", start, end, "", _replaced(node, new)


def _add_return(src, root):
    if not isinstance(root, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return
    if any(isinstance(n, ast.Return) and n.value is not None for n in _own_nodes(root)):
        return
    last = root.body[-1]
    lines = _whole_lines(src, last)
    if lines is None:
        return
    indent = re.match(r"[ \t]*", src.lines[last.lineno - 1]).group()
    newline = "\n" if src.text[lines[1] - 1:lines[1]] in ("\n", "") else src.text[lines[1] - 1]
    assigned = [t.id for stmt in reversed(root.body) for t in _stored(stmt)]
    prefix = "" if src.text[lines[1] - 1:lines[1]] in ("\n", "\r") else newline
    for name in list(dict.fromkeys(assigned))[:3]:
        yield "add_return", lines[1], lines[1], f"{prefix}{indent}return {name}{newline}", None


def _stored(stmt):
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
    return [t for t in targets if isinstance(t, ast.Name)]


def _own_nodes(function):
    """The nodes of `function` outside nested functions and classes."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
