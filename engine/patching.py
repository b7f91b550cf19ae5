"""Minimal patches: replace one function in a file by the model's refined version.

The model answers with a code block; we take from it only the function we asked about
(by name, located with the AST) and splice it over the original function, found again by
qualified name (and checked by content) in the file as it is now, never by stale line
numbers. Every byte outside the function stays as it was (line endings, BOM, form feeds,
comments, the missing final newline); the new function takes the file's base indentation
and indent step (a method written at column 0 becomes a method again). The original
decorators stay unless the answer writes different ones, and so do its `def` lines (a signature
the file wraps, which the answer grammar writes on one line) unless the answer's differ in meaning. Imports the new function needs
that the file lacks are added after the file's imports. Everything else in the answer
(test code, other functions, prints) is dropped: the patch touches one function.

A `Patch` remembers the function it replaced, so `rebase` can move it onto a newer text
of the same file (another fix written meanwhile, an edited buffer), or refuse with a
reason when the function is gone or was changed since.

Try it:  python -m ledex.engine.patching FILE QUALNAME NEW_CODE_FILE
"""

from __future__ import annotations

import ast
import difflib
import io
import textwrap
import tokenize
from dataclasses import dataclass

from ledex.engine.localize import Suspect, first_line, iter_functions
from ledex.engine.reindent import ending, indent_unit, leading, newline_of, reindent, split_lines

BOM = "\ufeff"


class PatchError(ValueError):
    """The answer cannot become a patch, or a patch no longer fits its file; the message says why."""


@dataclass(frozen=True)
class Patch:
    """One function of one file replaced: the file's whole text before and after."""

    path: str  # relative to the workspace
    old_text: str
    new_text: str
    qualname: str = ""  # the function replaced ("" for a whole-file patch)
    old_function: str = ""  # its lines in old_text (first decorator to last line, endings kept)
    new_function: str = ""  # the lines that replaced them in new_text
    imports: tuple[str, ...] = ()  # import statements added at the top of the file
    line: int = 0  # 1-based first line of old_function in old_text

    @property
    def diff(self) -> str:
        """The change as a unified diff (`a/path`, `b/path`; `patch -p1` applies it)."""
        return unified_diff(self.path, self.old_text, self.new_text)

    @property
    def changed(self) -> bool:
        """False when the answer rewrote the function into the same text."""
        return self.old_text != self.new_text


def unified_diff(path: str, old: str, new: str) -> str:
    """A unified diff of one file, line endings kept; a last line without newline is marked as diff does."""
    lines = difflib.unified_diff(split_lines(old), split_lines(new), f"a/{path}", f"b/{path}")
    return "".join(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"
                   for line in lines)


# --- finding functions ----------------------------------------------------------------------

def _parse(text: str, what: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise PatchError(f"{what} does not parse: {exc.msg} (line {exc.lineno})") from exc


def _named(tree: ast.AST, qualname: str) -> list[ast.AST]:
    return [node for name, node in iter_functions(tree) if name == qualname]


def _find_answer_function(tree: ast.AST, qualname: str) -> ast.AST | None:
    """The function by qualified name, else by its last name part (answers drop the class)."""
    found = _named(tree, qualname)
    if found:
        return found[-1]
    short = qualname.rsplit(".", 1)[-1]
    matches = [node for name, node in iter_functions(tree)
               if "<locals>" not in name and name.rsplit(".", 1)[-1] == short]
    return matches[0] if len(matches) == 1 else None


def _span_text(lines: list[str], start: int, end: int) -> str:
    return "".join(lines[start - 1:end])


def _same_code(a: str, b: str) -> bool:
    """Equal up to line endings, the block's own base indentation and trailing spaces."""
    def norm(text: str) -> list[str]:
        """Non-blank lines, dedented, without line endings, BOM or trailing spaces."""
        plain = "\n".join(line.rstrip("\r\n") for line in split_lines(text.removeprefix(BOM)))
        return [line.rstrip() for line in textwrap.dedent(plain).split("\n") if line.strip()]
    return norm(a) == norm(b)


def locate(text: str, qualname: str, expected: str | None = None, near: int = 0,
           since: str = "the fix was computed") -> tuple[int, int]:
    """(first, last) 1-based lines of `qualname` in `text` (BOM removed), decorators included;
    of several same-named ones, the one nearest line `near`.

    With `expected` (the function's code as it was), only a function with that code counts.
    Raises PatchError when the function is not there or no longer has that code."""
    tree = _parse(text, "the file")
    nodes = _named(tree, qualname)
    if not nodes:
        raise PatchError(f"`{qualname}` is no longer in the file")
    lines = split_lines(text)
    spans = [(first_line(n), n.end_lineno) for n in nodes]
    if expected is not None:
        spans = [s for s in spans if _same_code(_span_text(lines, *s), expected)]
        if not spans:
            raise PatchError(f"`{qualname}` was changed since {since}")
    return min(spans, key=lambda s: abs(s[0] - near))


# --- building the new function --------------------------------------------------------------

def _decorators_of(node: ast.AST) -> list[str]:
    return [ast.unparse(d) for d in getattr(node, "decorator_list", [])]


def _new_block(old_lines: list[str], old_node: ast.AST, answer_code: str, answer_node: ast.AST,
               unit: str, old_end: int | None) -> list[str]:
    """The replacement lines (no endings): the answer's function at the original's indentation,
    under the original decorator lines unless the answer writes different decorators, and under
    the original `def` lines (ending on line `old_end`) when the answer's mean the same: the
    grammar writes a signature on one line, a file may wrap it."""
    base = leading(old_lines[old_node.lineno - 1])
    keep_decorators = not answer_node.decorator_list or _decorators_of(answer_node) == _decorators_of(old_node)
    first = answer_node.lineno if keep_decorators else first_line(answer_node)
    block = reindent(answer_code, first, answer_node.end_lineno, base, unit)
    answer_end = _header_end(split_lines(answer_code), answer_node)
    if old_end and answer_end and _same_header(old_node, answer_node):
        at = answer_node.lineno - first  # the header's own lines, as the file wrote them
        block[at:at + answer_end - answer_node.lineno + 1] = \
            [line.rstrip("\r\n") for line in old_lines[old_node.lineno - 1:old_end]]
    if keep_decorators:
        block = [line.rstrip("\r\n") for line in old_lines[first_line(old_node) - 1:old_node.lineno - 1]] + block
    return block


def _same_header(a: ast.AST, b: ast.AST) -> bool:
    """Same `def` line in meaning: name, async or not, parameters, return annotation."""
    return type(a) is type(b) and a.name == b.name and ast.dump(a.args) == ast.dump(b.args) \
        and (ast.dump(a.returns) if a.returns else None) == (ast.dump(b.returns) if b.returns else None)


def _header_end(lines: list[str], node: ast.AST) -> int | None:
    """The 1-based line of the `:` ending a function's `def` header (which may span lines), or
    None when its body starts on that line (`def f(x): return x`) or it cannot be read.

    >>> code = "def f(\\n    x,\\n) -> int:\\n    return x\\n"
    >>> _header_end(code.splitlines(keepends=True), ast.parse(code).body[0])
    3
    """
    text = "".join(lines[node.lineno - 1:node.body[0].lineno])
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(textwrap.dedent(text)).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
            elif token.type == tokenize.OP and token.string == ":" and depth == 0:
                end = node.lineno + token.start[0] - 1
                return end if end < node.body[0].lineno else None
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return None


def _missing_imports(answer: ast.Module, file_tree: ast.Module) -> list[str]:
    have = {ast.unparse(node) for node in file_tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    wanted = [ast.unparse(node) for node in answer.body if isinstance(node, (ast.Import, ast.ImportFrom))
              and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    return [line for line in dict.fromkeys(wanted) if line not in have]


def _import_insert_line(tree: ast.Module, lines: list[str]) -> int:
    """0-based line index after the module docstring, __future__ imports and other imports;
    with none of those, after the leading comments (shebang, coding line, licence header)."""
    last = 0
    for node in tree.body:
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (is_doc and last == 0):
            last = node.end_lineno
        else:
            break
    while last == 0 and lines and lines[0].lstrip().startswith("#"):
        last = next((i for i, line in enumerate(lines) if not line.lstrip().startswith("#")), len(lines))
    return last


# --- splicing -------------------------------------------------------------------------------

def _splice(body: str, start: int, end: int, block: list[str], imports: list[str],
            tree: ast.Module | None = None) -> tuple[str, str]:
    """`body` with lines start..end replaced by `block` and `imports` added; (new body, block text).
    `tree`: body's, when the caller has it."""
    lines = split_lines(body)
    newline = newline_of(body)
    tail = ending(lines[end - 1])
    block_text = "".join(line + newline for line in block[:-1]) + block[-1] + tail
    new_lines = lines[:start - 1] + [block_text] + lines[end:]
    if imports:
        at = _import_insert_line(tree or ast.parse(body), lines)
        if at and not ending(new_lines[at - 1]):
            new_lines[at - 1] += newline
        new_lines[at:at] = [line + newline for line in imports]
    new_body = "".join(new_lines)
    _parse(new_body, "the patched file")
    return new_body, block_text


def _split_bom(text: str) -> tuple[str, str]:
    return (BOM, text[1:]) if text.startswith(BOM) else ("", text)


def _answer_tree(answer_code: str) -> tuple[str, ast.Module]:
    try:
        return answer_code, ast.parse(answer_code)
    except SyntaxError:
        dedented = textwrap.dedent(answer_code)  # a method answered with its class's indentation
        return dedented, _parse(dedented, "the answer's code")


def make_patch(old_text: str, suspect: Suspect, answer_code: str) -> Patch:
    """The patch replacing `suspect` (found again by name and code in `old_text`) by its
    namesake from the answer. Raises PatchError with a reason a person can read."""
    _answer_function(answer_code, suspect.qualname)  # this reason first: it is about the answer
    return Patcher(old_text, suspect).patch(answer_code)


def _answer_function(answer_code: str, qualname: str) -> tuple[str, ast.Module, ast.AST]:
    """(code, tree, the function's node) of an answer; PatchError when it lacks the function."""
    answer_code, answer = _answer_tree(answer_code)
    node = _find_answer_function(answer, qualname)
    if node is None:
        raise PatchError(f"the answer does not define {qualname.rsplit('.', 1)[-1]}()")
    return answer_code, answer, node


def joined_header(code: str) -> str | None:
    """`code` (one function, dedented) with its `def` header on one line, as the answer grammar
    writes it (grammar.answer_grammar): the lines of a wrapped signature joined, comments in it and
    a trailing comma dropped; `code` itself when the header is one line already; None when the
    joined text would not mean the same (or `code` does not parse). The patcher puts a wrapped
    header back (`_same_header`), so training's right answers are written this way.

    >>> print(joined_header("def f(\\n    x: int,  # the value\\n    y=(1, 2),\\n) -> int:\\n    return x\\n"), end="")
    def f(x: int, y=(1, 2)) -> int:
        return x
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    lines = split_lines(code)
    end = _header_end(lines, node) if node is not None else None
    if end is None or end == node.lineno:
        return code if node is not None else None
    header = lines[node.lineno - 1:end]
    out, prev = "", None
    for tok in tokenize.generate_tokens(io.StringIO("".join(header)).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
            continue
        if prev is not None and tok.start[0] == prev.end[0]:
            out += header[tok.start[0] - 1][prev.end[1]:tok.start[1]]
        elif prev is not None and tok.string in ")]}" and prev.string == ",":
            out = out[:-1]  # a trailing comma before a closing bracket on its own line
        elif prev is not None and prev.string not in "([{" and tok.string not in ")]}":
            out += " "
        out += tok.string
        prev = tok
    joined = "".join(lines[:node.lineno - 1]) + leading(header[0]) + out + ending(header[-1]) + "".join(lines[end:])
    try:
        return joined if ast.dump(ast.parse(joined)) == ast.dump(tree) else None
    except SyntaxError:
        return None


class Patcher:
    """make_patch for many answers to one suspect in one file text: what depends on the file
    alone (parsing it, finding the function, its indentation unit, its imports) is done once.
    The search patches thousands of variants of one function: in parse 1.20.2's 1,060-line
    parse.py each make_patch spent ~0.3 s re-reading the file (fresh-user run X4).
    Raises PatchError (the function is not in the file, or has changed)."""

    def __init__(self, old_text: str, suspect: Suspect):
        self.old_text, self.suspect = old_text, suspect
        self.bom, self.body = _split_bom(old_text)
        try:
            self.start, self.end = locate(self.body, suspect.qualname, suspect.source, suspect.start_line,
                                          "the failure was found")
        except PatchError as exc:
            raise PatchError(f"{suspect.path}: {exc}") from None
        self.tree = ast.parse(self.body)
        self.old_node = next(n for n in _named(self.tree, suspect.qualname) if first_line(n) == self.start)
        self.lines = split_lines(self.body)
        self.unit = indent_unit(self.body)
        self.header_end = _header_end(self.lines, self.old_node)

    def patch(self, answer_code: str) -> Patch:
        """The patch putting the answer's namesake of the suspect in its place (make_patch)."""
        answer_code, answer, answer_node = _answer_function(answer_code, self.suspect.qualname)
        block = _new_block(self.lines, self.old_node, answer_code, answer_node, self.unit, self.header_end)
        imports = _missing_imports(answer, self.tree)
        new_body, block_text = _splice(self.body, self.start, self.end, block, imports, self.tree)
        if new_body == self.body:
            raise PatchError("the answer is the same code as before")
        return Patch(self.suspect.path, self.old_text, self.bom + new_body, self.suspect.qualname,
                     _span_text(self.lines, self.start, self.end), block_text, tuple(imports), self.start)


def replace_function(old_text: str, suspect: Suspect, answer_code: str) -> str:
    """The file text with the suspect function replaced by its namesake from the answer."""
    return make_patch(old_text, suspect, answer_code).new_text


def rebase(patch: Patch, text: str) -> Patch:
    """The same change made to `text`, a newer version of the patched file: the function is
    found again by qualified name and must still have the code the patch replaced.
    Raises PatchError (saying why) when that is not possible."""
    if text == patch.old_text:
        return patch
    if not patch.qualname:
        raise PatchError(f"{patch.path} changed since the fix was computed")
    bom, body = _split_bom(text)
    try:
        start, end = locate(body, patch.qualname, patch.old_function, patch.line)
    except PatchError as exc:
        raise PatchError(f"{patch.path}: {exc}") from None
    block = [line.rstrip("\r\n") for line in split_lines(patch.new_function)]
    imports = _missing_imports(ast.parse("\n".join(patch.imports)), ast.parse(body))
    new_body, block_text = _splice(body, start, end, block, imports)
    return Patch(patch.path, text, bom + new_body, patch.qualname, _span_text(split_lines(body), start, end),
                 block_text, tuple(imports), start)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from ledex.engine.localize import function_named, make_suspect

    file, qualname, code_file = sys.argv[1:4]
    text = Path(file).read_text()
    suspect = make_suspect(file, qualname, function_named(text, qualname), text, "cli")
    print(make_patch(text, suspect, Path(code_file).read_text()).diff)
