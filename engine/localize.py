"""Fault localisation: which function should change to make a failing test pass.

1. The deepest traceback frame inside the workspace and outside test files, mapped to the
   innermost function (or method) that contains its line.
2. Otherwise, the function the test calls: names called in the test function that are
   defined in a non-test file of the workspace (modules the test file imports first).

Try it:  python -m ledex.engine.localize WORKSPACE TEST_FILE TEST_NAME < traceback.txt
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)', re.MULTILINE)
# Folders never treated as the user's code (installed packages, virtualenvs).
_FOREIGN_PARTS = {"site-packages", "dist-packages", ".venv", "venv", ".tox", "node_modules", ".git"}


@dataclass(frozen=True)
class Suspect:
    """A function in the workspace that the fix should rewrite."""

    path: str  # relative to the workspace, "/"-separated
    qualname: str  # "func" or "Class.method"
    start_line: int  # 1-based, first decorator line included
    end_line: int  # 1-based, inclusive
    source: str  # the function's source text (dedented as it stands in the file)
    reason: str  # how it was found: "traceback" or "called by the test"


def is_test_file(path: str | Path) -> bool:
    """Test code the sandbox protects and a fix must never touch.

    >>> [is_test_file(p) for p in ("tests/test_a.py", "pkg/a_test.py", "conftest.py", "pkg/calc.py")]
    [True, True, True, False]
    """
    p = Path(path)
    name = p.name
    in_tests_dir = any(part in ("tests", "test", "testing") for part in p.parts[:-1])
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" or in_tests_dir


def frames(details: str) -> list[tuple[str, int, str]]:
    """(path, line, function) for every frame of a Python ("native") traceback, outermost first."""
    return [(m["path"], int(m["line"]), m["func"]) for m in _FRAME.finditer(details)]


def _relative(path: str, workspace: Path) -> str | None:
    try:
        rel = Path(path).resolve().relative_to(workspace.resolve())
    except (ValueError, OSError):
        return None
    return None if _FOREIGN_PARTS & set(rel.parts) else rel.as_posix()


def read_source(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8 (we never rewrite files we cannot read)."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def iter_functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from iter_functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from iter_functions(node, f"{prefix}{node.name}.")


def function_at(source: str, line: int) -> tuple[str, ast.AST] | None:
    """The innermost function containing `line` (not nested <locals> functions: we patch their parent)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    best = None
    for qualname, node in iter_functions(tree):
        if "<locals>" in qualname:
            continue
        if first_line(node) <= line <= node.end_lineno and (best is None or first_line(node) >= first_line(best[1])):
            best = (qualname, node)
    return best


def function_named(source: str, qualname: str) -> ast.AST | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return next((node for name, node in iter_functions(tree) if name == qualname), None)


def first_line(node: ast.AST) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def make_suspect(rel: str, qualname: str, node: ast.AST, source: str, reason: str) -> Suspect:
    lines = re.split(r"\r\n|\r|\n", source)  # Python's line breaks (str.splitlines also breaks at \x0c, \u2028...)
    start, end = first_line(node), node.end_lineno
    return Suspect(rel, qualname, start, end, "\n".join(lines[start - 1:end]), reason)


def from_traceback(workspace: Path, details: str) -> Suspect | None:
    for path, line, _ in reversed(frames(details)):
        rel = _relative(path, workspace)
        if rel is None or is_test_file(rel) or not rel.endswith(".py"):
            continue
        source = read_source(workspace / rel)
        found = source is not None and function_at(source, line)
        if found:
            return make_suspect(rel, found[0], found[1], source, "traceback")
    return None


def _called_names(test_node: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(test_node):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name and name not in names:
                names.append(name)
    return names


def _imported_modules(tree: ast.AST) -> list[str]:
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    return modules


def _candidate_files(workspace: Path, test_tree: ast.AST) -> list[Path]:
    """Workspace source files, the ones the test imports first."""
    imported = []
    for module in _imported_modules(test_tree):
        rel = module.replace(".", "/")
        for base in (workspace, workspace / "src"):
            for path in (base / f"{rel}.py", base / rel / "__init__.py"):
                if path.is_file() and path not in imported:
                    imported.append(path)
    others = sorted(p for p in workspace.rglob("*.py") if not (_FOREIGN_PARTS & set(p.relative_to(workspace).parts)))
    return imported + [p for p in others if p not in imported]


def from_test_calls(workspace: Path, test_file: str, test_name: str) -> Suspect | None:
    """Fallback: the first function the test calls that the workspace defines outside tests."""
    test_source = read_source(workspace / test_file)
    test_node = test_source is not None and function_named(test_source, test_name.split("[")[0].replace("::", "."))
    if not test_node:
        return None
    wanted = _called_names(test_node)
    for path in _candidate_files(workspace, ast.parse(test_source)):
        rel = path.relative_to(workspace).as_posix()
        source = None if is_test_file(rel) else read_source(path)
        for name in wanted:
            node = source is not None and function_named(source, name)
            if node:
                return make_suspect(rel, name, node, source, "called by the test")
    return None


def localize(workspace: Path, details: str, test_file: str | None, test_name: str | None) -> Suspect | None:
    """The function to fix for one failure, or None when nothing in the workspace qualifies."""
    suspect = from_traceback(workspace, details)
    if suspect is None and test_file and test_name:
        suspect = from_test_calls(workspace, test_file, test_name)
    return suspect


def source_of_test(workspace: Path, test_file: str, test_name: str) -> str | None:
    """Source text of a test function (methods as Class::method), for the prompt."""
    source = read_source(workspace / test_file)
    node = source is not None and function_named(source, test_name.split("[")[0].replace("::", "."))
    if not node:
        return None
    return "\n".join(source.splitlines()[first_line(node) - 1:node.end_lineno])


if __name__ == "__main__":
    import sys

    print(localize(Path(sys.argv[1]), sys.stdin.read(), sys.argv[2], sys.argv[3]))
