"""Minimal patches: replace one function in a file by the model's refined version.

The model answers with a code block; we take from it only the function we asked about
(by name, located with the AST) and splice it over the original function's lines,
re-indented to where it stands (methods stay methods). Imports the new function needs
that the file lacks are added after the file's imports. Everything else in the answer
(test code, other functions, prints) is dropped: the patch touches one function.

Try it:  python -m ledex.engine.patching FILE QUALNAME NEW_CODE_FILE
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from dataclasses import dataclass

from ledex.engine.localize import Suspect, iter_functions, first_line


class PatchError(ValueError):
    """The answer cannot become a patch; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Patch:
    path: str  # relative to the workspace
    old_text: str
    new_text: str

    @property
    def diff(self) -> str:
        return unified_diff(self.path, self.old_text, self.new_text)

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text


def unified_diff(path: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 f"a/{path}", f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _find_function(tree: ast.AST, qualname: str) -> ast.AST | None:
    """The function by qualified name, else by its last name part (answers drop the class)."""
    by_name = {name: node for name, node in iter_functions(tree) if "<locals>" not in name}
    if qualname in by_name:
        return by_name[qualname]
    short = qualname.rsplit(".", 1)[-1]
    matches = [node for name, node in by_name.items() if name.rsplit(".", 1)[-1] == short]
    return matches[0] if len(matches) == 1 else None


def _segment(code: str, node: ast.AST) -> str:
    lines = code.splitlines()
    return textwrap.dedent("\n".join(lines[first_line(node) - 1:node.end_lineno]))


def _missing_imports(answer: ast.Module, file_tree: ast.Module, answer_code: str) -> list[str]:
    have = {ast.unparse(node) for node in file_tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    wanted = [ast.unparse(node) for node in answer.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return [line for line in wanted if line not in have]


def _import_insert_line(tree: ast.Module) -> int:
    """0-based line index after the module docstring, __future__ imports and other imports."""
    last = 0
    for node in tree.body:
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (is_doc and last == 0):
            last = node.end_lineno
        else:
            break
    return last


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def replace_function(old_text: str, suspect: Suspect, answer_code: str) -> str:
    """The file text with the suspect function replaced by its namesake from the answer."""
    try:
        answer = ast.parse(answer_code)
    except SyntaxError as exc:
        raise PatchError(f"the answer's code does not parse: {exc.msg}") from exc
    node = _find_function(answer, suspect.qualname)
    if node is None:
        raise PatchError(f"the answer does not define {suspect.qualname.rsplit('.', 1)[-1]}()")
    old_lines = old_text.splitlines()
    indent = old_lines[suspect.start_line - 1][: len(old_lines[suspect.start_line - 1]) - len(old_lines[suspect.start_line - 1].lstrip())]
    body = textwrap.indent(_segment(answer_code, node), indent, lambda line: bool(line.strip())).splitlines()
    new_lines = old_lines[: suspect.start_line - 1] + body + old_lines[suspect.end_line:]
    file_tree = ast.parse(old_text)
    imports = _missing_imports(answer, file_tree, answer_code)
    if imports:
        at = _import_insert_line(file_tree)
        new_lines[at:at] = imports
    newline = _newline(old_text)
    new_text = newline.join(new_lines) + (newline if old_text.endswith(("\n", "\r")) else "")
    try:
        ast.parse(new_text)
    except SyntaxError as exc:  # e.g. the answer mixed tabs and spaces
        raise PatchError(f"the patched file does not parse: {exc.msg} (line {exc.lineno})") from exc
    return new_text


def make_patch(old_text: str, suspect: Suspect, answer_code: str) -> Patch:
    new_text = replace_function(old_text, suspect, answer_code)
    if new_text == old_text:
        raise PatchError("the answer is the same code as before")
    return Patch(suspect.path, old_text, new_text)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from ledex.engine.localize import function_named, make_suspect

    file, qualname, code_file = sys.argv[1:4]
    text = Path(file).read_text()
    suspect = make_suspect(file, qualname, function_named(text, qualname), text, "cli")
    print(make_patch(text, suspect, Path(code_file).read_text()).diff)
