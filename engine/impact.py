"""Which test files a change can affect: the workspace's static import graph.

A test file is affected by a changed module when it imports it, directly or through other
workspace modules (a package `__init__` that re-exports it counts, relative imports are
resolved). Imports are read with `ast`, never executed, and cached by (mtime, size), so a
save costs a stat per file and a parse per file that changed.

Errs on the side of running more: a dotted name matches every workspace file it could mean
(`utils` matches `tests/utils.py` and `pkg/utils.py`), `importlib.import_module("a.b")`
with a literal name counts as an import, and `None` ("run everything") is returned when the
change is a conftest.py, is not Python, or is imported by no test (it may be loaded in ways
no parser sees: plugin registries, entry points, computed names).

Try it:  python -m ledex.engine.impact examples/inventory inventory/stock.py
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from ledex.sandbox import is_build_output

SKIPPED_DIRS = {".ledex", ".git", ".venv", "venv", "node_modules", "site-packages", "__pycache__", ".tox"}


def is_test_module(rel: str) -> bool:
    """A file pytest collects tests from by default (helpers under tests/ are not).

    >>> [is_test_module(p) for p in ("tests/test_a.py", "pkg/a_test.py", "tests/conftest.py", "tests/helpers.py")]
    [True, True, False, False]
    """
    name = Path(rel).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def module_names(rel: str) -> list[str]:
    """Every dotted name a workspace file may be imported as (its path and each suffix of it:
    the import root may be the workspace, `src/`, `tests/`, ...).

    >>> module_names("src/pkg/__init__.py")
    ['src.pkg', 'pkg']
    >>> module_names("pkg/core.py")
    ['pkg.core', 'core']
    """
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


def imported_names(source: str, rel: str) -> set[str]:
    """Dotted names a file imports, with each parent package (importing a.b runs a/__init__)
    and, for `from a import b`, also `a.b` (b may be a submodule).

    >>> sorted(imported_names("from . import core\\nfrom .util import x\\nimport os.path", "pkg/api.py"))
    ['os', 'os.path', 'pkg', 'pkg.core', 'pkg.util', 'pkg.util.x']
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    package = rel[:-3].split("/")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, package)
            if base is None:
                continue
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            names.add(node.args[0].value)
    return {prefix for name in names for prefix in _prefixes(name)}


def _dynamic_import(call: ast.Call) -> bool:
    """importlib.import_module("a.b") / __import__("a.b") with a literal name."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return (name in ("import_module", "__import__") and bool(call.args) and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str) and not call.args[0].value.startswith("."))


def _resolve(module: str | None, level: int, package: list[str]) -> str | None:
    if level == 0:
        return module or ""
    if level - 1 > len(package):
        return None  # beyond the workspace: nothing of ours
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


class ImportGraph:
    """The workspace's Python files and what each imports; refreshed incrementally."""

    def __init__(self, root: Path, max_file_bytes: int = 2_000_000):
        self.root, self.max_file_bytes = Path(root), max_file_bytes
        self._files: dict[str, tuple[tuple[int, int], set[str]]] = {}  # rel -> ((mtime, size), imports)
        self._by_name: dict[str, set[str]] | None = None  # dotted name -> files importing it (rebuilt on change)

    def refresh(self) -> None:
        """Re-read the files that changed (mtime, size) and forget the ones gone; a walk of the workspace."""
        seen = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.endswith(".egg-info")
                           and not is_build_output(Path(dirpath, d))]
            for name in filenames:
                if name.endswith(".py"):
                    rel = Path(dirpath, name).relative_to(self.root).as_posix()
                    seen.add(rel)
                    self._update(rel)
        for gone in set(self._files) - seen:
            del self._files[gone]
            self._by_name = None

    def _update(self, rel: str) -> None:
        try:
            stat = (self.root / rel).stat()
        except OSError:
            return
        key = (stat.st_mtime_ns, stat.st_size)
        if rel in self._files and self._files[rel][0] == key:
            return
        source = ""
        if stat.st_size <= self.max_file_bytes:
            source = (self.root / rel).read_bytes().decode("utf-8", errors="replace")
        self._files[rel] = (key, imported_names(source, rel))
        self._by_name = None

    def importers(self, rel: str) -> set[str]:
        """Files that import `rel`, directly or through other workspace files."""
        if self._by_name is None:
            self._by_name = {}
            for other, (_, imports) in self._files.items():
                for name in imports:
                    self._by_name.setdefault(name, set()).add(other)
        found, frontier = set(), [rel]
        while frontier:
            for name in module_names(frontier.pop()):
                for other in self._by_name.get(name, ()):
                    if other not in found and other != rel:
                        found.add(other)
                        frontier.append(other)
        return found

    def affected_tests(self, rel: str, *, refresh: bool = True) -> list[str] | None:
        """Test files to re-run after `rel` changed; None = all of them (see the module doc).
        `refresh=False` answers from the files as last read (the caller refreshed already)."""
        if not rel.endswith(".py") or Path(rel).name == "conftest.py":
            return None
        if refresh:
            self.refresh()
        users = self.importers(rel) | {rel}
        tests = {f for f in users if is_test_module(f)}
        for conftest in (f for f in users if Path(f).name == "conftest.py"):  # its fixtures reach every test below it
            folder = Path(conftest).parent.as_posix()
            tests |= {f for f in self._files if is_test_module(f) and (folder == "." or f.startswith(folder + "/"))}
        return sorted(tests) or None


if __name__ == "__main__":
    graph = ImportGraph(Path(sys.argv[1]))
    print(graph.affected_tests(sys.argv[2]))
