"""Lines and indentation as Python sees them, for splicing a model's function into a user's file.

* `split_lines`: lines ending in \\r\\n, \\r or \\n only (Python's and LSP's line breaks;
  `str.splitlines` also breaks at form feeds, \\x1c-\\x1e, \\x85 and \\u2028, which would
  renumber lines and rewrite bytes).
* `indent_unit`: the file's own indent step ("    ", "  ", "\\t"...), read from its INDENT tokens.
* `reindent`: a block of code (a function from the model's answer) moved to another base
  indentation and indent step, code lines only: the inside of a multi-line string is data and
  stays byte for byte (docstrings excepted: they follow the code they document).

Try it:  python -m ledex.engine.reindent FILE   # prints the file's indent unit
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import Counter

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
TAB_SIZE = 8  # Python's tokenizer expands tabs to multiples of 8 columns


def split_lines(text: str) -> list[str]:
    """Lines with their endings kept; only \\r\\n, \\r and \\n end a line.

    >>> split_lines("a\\r\\nb\\x0cc\\rd")
    ['a\\r\\n', 'b\\x0cc\\r', 'd']
    """
    return _LINE.findall(text)


def ending(line: str) -> str:
    """The line break a line ends with ("" for a last line without one)."""
    return line[len(line.rstrip("\r\n")):]


def newline_of(text: str) -> str:
    """The file's most common line break ("\\n" when it has none)."""
    counts = Counter(ending(line) for line in split_lines(text) if ending(line))
    return counts.most_common(1)[0][0] if counts else "\n"


def leading(line: str) -> str:
    """The line's leading whitespace (spaces, tabs, form feeds)."""
    return line[: len(line) - len(line.lstrip(" \t\x0c"))]


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []


def indent_unit(code: str, default: str = "    ") -> str:
    """The most common indent step of `code` (the whitespace one INDENT adds to its parent)."""
    steps: Counter[str] = Counter()
    stack = [""]
    for tok in _tokens(code):
        if tok.type == tokenize.INDENT:
            parent = stack[-1]
            if tok.string.startswith(parent) and len(tok.string) > len(parent):
                steps[tok.string[len(parent):]] += 1
            stack.append(tok.string)
        elif tok.type == tokenize.DEDENT and len(stack) > 1:
            stack.pop()
    return steps.most_common(1)[0][0] if steps else default


def _column(whitespace: str) -> int:
    return len(whitespace.replace("\x0c", "").expandtabs(TAB_SIZE))


def _docstring_rows(code: str) -> set[int]:
    """1-based rows of docstring tokens (module, class and function docstrings) in `code`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    rows = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            rows.update(range(body[0].lineno, body[0].end_lineno + 1))
    return rows


def _row_kinds(code: str) -> tuple[set[int], set[int]]:
    """(rows that start a statement, rows that begin inside a multi-line string), 1-based."""
    statements, in_string = set(), set()
    after_newline = True
    for tok in _tokens(code):
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            after_newline = after_newline or tok.type == tokenize.NEWLINE
            continue
        if tok.type == tokenize.COMMENT:
            continue
        if after_newline:
            statements.add(tok.start[0])
            after_newline = False
        if tok.end[0] > tok.start[0] and tok.type != tokenize.NEWLINE:
            in_string.update(range(tok.start[0] + 1, tok.end[0] + 1))
    return statements, in_string


def _step(lines: list[str], rows: set[int], base: int) -> int:
    """The answer's own indent step, in columns: the smallest indentation of a statement row."""
    steps = [_column(leading(lines[row - 1])) - base for row in rows if 0 < row <= len(lines)]
    positive = [s for s in steps if s > 0]
    return min(positive) if positive else 4


def reindent(code: str, first: int, last: int, base: str, unit: str) -> list[str]:
    """Rows first..last (1-based) of `code`, without line endings, re-indented: the block's
    own left edge becomes `base`, each of its indent steps becomes `unit`. Lines that begin
    inside a multi-line string (other than a docstring) are kept as they are."""
    lines = [line.rstrip("\r\n") for line in split_lines(code)]
    statements, in_string = _row_kinds(code)
    docstrings = _docstring_rows(code)
    left = _column(leading(lines[first - 1]))
    step = _step(lines, statements & set(range(first, last + 1)), left)
    out = []
    for row in range(first, last + 1):
        line = lines[row - 1]
        if row in in_string and row not in docstrings:
            out.append(line)
        elif not line.strip():
            out.append("" if row not in in_string else line)
        else:
            level, extra = divmod(max(_column(leading(line)) - left, 0), step)
            out.append(base + unit * level + " " * extra + line.lstrip(" \t\x0c"))
    return out


if __name__ == "__main__":
    import sys

    print(repr(indent_unit(open(sys.argv[1], encoding="utf-8").read())))
