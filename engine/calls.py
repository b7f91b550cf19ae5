"""The functions a test calls, resolved to the workspace code that defines them (one source of
suspects for localize.py).

A test's calls are read from its AST, in source order, following test-class helpers reached
through ``self`` (``self.decorator(...)``, a mixin's ``setUp``-style methods) and class
attributes naming code under test (``Cache = LRUCache`` makes ``self.Cache()`` mean
``LRUCache``). A call ``f(...)`` resolves to a module-level ``f`` or to the constructor of a
class ``f``; ``mod.f(...)`` on an imported module to a module-level ``f``; ``obj.m(...)`` to the
method ``m`` of a class the test names (or its bases), else of any class when that is
unambiguous. Modules the test imports are searched first.

Try it:  python -m ledex.engine.calls WORKSPACE TEST_FILE TEST_NAME
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

from ledex.engine.localize import (_FOREIGN_PARTS, MAX_CALLED, Suspect, _parse, _HELPER_DEPTH, is_overload,
                                   is_test_file, iter_functions, make_suspect, read_source)
from ledex.sandbox import is_build_output

_AMBIGUOUS = 3  # a method name defined by more classes than this, none named by the test, is noise
_CONSTRUCTORS = ("__init__", "__new__", "__post_init__")


@dataclass(frozen=True)
class Call:
    """A call (or property read) the test makes: what it names and how it is made."""

    name: str
    kind: str  # "name" (f(...)), "function" (module.f(...)), "method" (obj.m(...)) or "property" (obj.p)
    line: int = field(default=0, compare=False)  # where the test makes it (0: in a helper or set-up)


@dataclass
class TestSide:
    """What the test code says: the calls, the names it mentions, the modules it imports."""

    __test__ = False

    calls: list[Call] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    module_aliases: set[str] = field(default_factory=set)
    imported: list[str] = field(default_factory=list)  # dotted module names, in import order


def _imports(tree: ast.AST, workspace: Path, side: TestSide) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                side.imported.append(alias.name)
                side.module_aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            side.imported.append(node.module)
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _module_file(workspace, dotted):
                    side.imported.append(dotted)
                    side.module_aliases.add(alias.asname or alias.name)


def _module_file(workspace: Path, dotted: str) -> Path | None:
    rel = dotted.replace(".", "/")
    for base in (workspace, workspace / "src"):
        for path in (base / f"{rel}.py", base / rel / "__init__.py"):
            if path.is_file():
                return path
    return None


class _Classes:
    """Test classes by name across the test files, for methods a test class inherits (mixins)."""

    def __init__(self, workspace: Path, test_file: str, test_tree: ast.Module, is_test):  # noqa: ANN001
        self.workspace, self.is_test, self.local, self.test_file = workspace, is_test, test_tree, test_file
        self._all: dict[str, ast.ClassDef] | None = None
        self.home: dict[int, str] = {}  # id(class node) -> the test file defining it

    def find(self, name: str) -> ast.ClassDef | None:
        """The test class `name`: from the test file itself, else from any test file (None if none).
        Records the defining file in `home`."""
        here = next((n for n in self.local.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if here is not None:
            self.home[id(here)] = self.test_file
        return here or self._everywhere().get(name)

    def _everywhere(self) -> dict[str, ast.ClassDef]:
        if self._all is None:
            self._all = {}
            for rel, tree in _workspace_trees(self.workspace, self.is_test):
                for node in tree.body:
                    if isinstance(node, ast.ClassDef) and node.name not in self._all:
                        self._all[node.name] = node
                        self.home[id(node)] = rel
        return self._all

    def chain(self, cls: ast.ClassDef | None) -> list[ast.ClassDef]:
        """`cls` and its bases found in test code, nearest first."""
        chain, todo = [], [cls] if cls else []
        while todo and len(chain) < 16:
            node = todo.pop(0)
            if node in chain:
                continue
            chain.append(node)
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", None) for b in node.bases]
            todo += [c for c in (self.find(b) for b in bases if b) if c is not None]
        return chain


def _members(chain: list[ast.ClassDef]) -> tuple[dict[str, ast.AST], dict[str, str]]:
    """(methods, class attributes naming something) over the class chain, nearest wins."""
    methods: dict[str, ast.AST] = {}
    attrs: dict[str, str] = {}
    for cls in chain:
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                methods.setdefault(node.name, node)
            elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
                named = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        attrs.setdefault(target.id, named)
    return methods, attrs


def _ordered_calls(node: ast.AST) -> list[ast.Call | ast.Attribute]:
    """Calls, and attribute reads that are not called (a property may run code), in source order."""
    called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    uses = [n for n in ast.walk(node) if isinstance(n, ast.Call)
            or (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) and id(n) not in called)]
    return sorted(uses, key=lambda c: (c.lineno, c.col_offset))  # stable: outer call before inner


def _read_calls(node: ast.AST, side: TestSide, methods, attrs, depth: int, seen: set) -> None:  # noqa: ANN001
    side.names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    for use in _ordered_calls(node):
        line = use.lineno if depth == 0 else 0
        if isinstance(use, ast.Attribute):
            if not (isinstance(use.value, ast.Name) and use.value.id in side.module_aliases | {"self", "cls"}):
                side.calls.append(Call(use.attr, "property", line))
            continue
        func = use.func
        if isinstance(func, ast.Name):
            side.calls.append(Call(func.id, "name", line))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
            _self_call(func.attr, side, methods, attrs, depth, seen)
        elif isinstance(func, ast.Attribute):
            module = isinstance(func.value, ast.Name) and func.value.id in side.module_aliases
            side.calls.append(Call(func.attr, "function" if module else "method", line))


def _self_call(attr: str, side: TestSide, methods, attrs, depth: int, seen: set) -> None:  # noqa: ANN001
    if attr in methods and attr not in seen and depth < _HELPER_DEPTH:
        seen.add(attr)
        _read_calls(methods[attr], side, methods, attrs, depth + 1, seen)
    elif attr in attrs:
        side.names.add(attrs[attr])
        side.calls.append(Call(attrs[attr], "name"))


@dataclass
class FoundTest:
    """A test function, the file that defines it (a base class may live in another test file),
    and the members of its class and bases."""

    __test__ = False

    node: ast.AST
    file: str
    methods: dict
    attrs: dict
    files: list[str]  # the test file and the files of its bases


def find_test(workspace: Path, test_file: str, test_name: str, is_test=is_test_file) -> FoundTest | None:  # noqa: ANN001
    """Test `name` or `Class::method` of `test_file` (methods inherited from mixins included)."""
    tree, _ = _tree_of(workspace / test_file)
    if tree is None:
        return None
    parts = test_name.split("[")[0].split("::")
    classes = _Classes(workspace, test_file, tree, is_test)
    chain = classes.chain(classes.find(parts[0])) if len(parts) > 1 else []
    methods, attrs = _members(chain)
    node = methods.get(parts[-1]) if chain else next(
        (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == parts[0]), None)
    if node is None:
        return None
    files = list(dict.fromkeys([test_file] + [classes.home.get(id(c), test_file) for c in chain]))
    home = next((classes.home.get(id(c), test_file) for c in chain if node in c.body), test_file)
    return FoundTest(node, home, methods, attrs, files)


def read_test(workspace: Path, test_file: str, test_name: str, is_test=is_test_file) -> TestSide | None:  # noqa: ANN001
    """The calls of test `name` or `Class::method` in `test_file`, or None when it is not found."""
    found = find_test(workspace, test_file, test_name, is_test)
    if found is None:
        return None
    node, methods, attrs = found.node, found.methods, found.attrs
    parts = test_name.split("[")[0].split("::")
    side = TestSide()
    for rel in found.files:
        tree, _ = _tree_of(workspace / rel)
        if tree is not None:
            _imports(tree, workspace, side)
    setup = [m for m in ("setUp", "setup_method") if m in methods]
    for start in [*setup, node]:
        _read_calls(methods[start] if isinstance(start, str) else start, side, methods, attrs, 0, {parts[-1]})
    return side


# --- the workspace's code -------------------------------------------------------------------

_TREES: dict[str, tuple[tuple[int, int], ast.Module | None, str | None]] = {}


def _tree_of(path: Path) -> tuple[ast.Module | None, str | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    key, stamp = str(path), (st.st_mtime_ns, st.st_size)
    cached = _TREES.get(key)
    if cached is None or cached[0] != stamp:
        source = read_source(path)
        cached = (stamp, _parse(source) if source is not None else None, source)
        _TREES[key] = cached
    return cached[1], cached[2]


def _workspace_files(workspace: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(workspace):
        dirnames[:] = sorted(d for d in dirnames if d not in _FOREIGN_PARTS and not d.endswith(".egg-info")
                             and not is_build_output(Path(dirpath, d)))
        rel_dir = Path(dirpath).relative_to(workspace)
        found += [(rel_dir / f).as_posix() for f in sorted(filenames) if f.endswith(".py")]
    return found


def _workspace_trees(workspace: Path, keep):  # noqa: ANN001, ANN202 - yields (rel, tree)
    for rel in _workspace_files(workspace):
        if keep(rel):
            tree, _ = _tree_of(workspace / rel)
            if tree is not None:
                yield rel, tree


class CodeIndex:
    """Functions and classes the workspace defines outside test code, imported modules first."""

    def __init__(self, workspace: Path, is_test, imported: list[str]):  # noqa: ANN001
        self.workspace = workspace
        first = [p.relative_to(workspace).as_posix() for m in imported if (p := _module_file(workspace, m))]
        files = [f for f in _workspace_files(workspace) if f.endswith(".py") and not is_test(f)]
        self.files = [f for f in dict.fromkeys(first) if f in files] + [f for f in files if f not in first]
        self.functions: dict[str, list[tuple[str, str, ast.AST]]] = {}  # last name -> (rel, qualname, node)
        self.bases: dict[str, list[str]] = {}  # class name -> base names
        for rel in self.files:
            self._add(rel)

    def _add(self, rel: str) -> None:
        tree, _ = _tree_of(self.workspace / rel)
        for qualname, node in iter_functions(tree) if tree else ():
            # not a typing.overload stub: pydash 8.1.0's two `@t.overload def union_with` came first, so
            # the prompt showed a stub and a fix replaced it, leaving the code that runs as it was
            if "<locals>" not in qualname and not is_overload(node):
                self.functions.setdefault(qualname.rsplit(".", 1)[-1], []).append((rel, qualname, node))
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.ClassDef):
                self.bases.setdefault(node.name, [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases])

    def with_bases(self, names: set[str]) -> set[str]:
        """`names` (workspace classes) with all their workspace base classes, transitively."""
        out, todo = set(), [n for n in names if n in self.bases]
        while todo:
            name = todo.pop()
            if name not in out:
                out.add(name)
                todo += [b for b in self.bases.get(name, ()) if b in self.bases]
        return out

    def resolve(self, call: Call, classes: set[str]) -> list[tuple[str, str, ast.AST]]:
        """(file, qualname, def) the call may run: a module-level function first; a method of one
        of `classes` (the test's own classes); else any method of that name when few share it."""
        defs = self.functions.get(call.name, [])
        module_level = [d for d in defs if "." not in d[1]]
        if call.kind == "function":
            return module_level[:1]
        if call.kind == "name":
            if module_level:
                return module_level[:1]
            return [d for c in _CONSTRUCTORS for d in self.functions.get(c, [])
                    if d[1] in {f"{k}.{c}" for k in self.with_bases({call.name})}][:1]
        methods = [d for d in defs if "." in d[1]]
        if call.kind == "property":  # only a property runs code when read
            methods = [d for d in methods if _is_property(d[2])]
            module_level = []
        named = [d for d in methods if d[1].rsplit(".", 1)[0] in classes]
        if named:
            return named[:2]
        if 0 < len(methods) <= _AMBIGUOUS:
            return methods
        return module_level[:1] if not methods else []


def _is_property(node: ast.AST) -> bool:
    """Decorated with ``property``/``cached_property`` (any spelling: ``functools.cached_property``)."""
    return any((d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")) in ("property", "cached_property")
               for d in getattr(node, "decorator_list", ()))


def from_test_calls_all(workspace: Path, test_file: str, test_name: str, is_test=is_test_file,  # noqa: ANN001
                        failing_line: int | None = None) -> list[Suspect]:
    """The workspace functions the test calls or whose properties it reads (outside test code):
    those on the test's `failing_line` (where its traceback stops) first, then in call order."""
    workspace = Path(workspace)
    side = read_test(workspace, test_file, test_name, is_test)
    if side is None:
        return []
    index = CodeIndex(workspace, is_test, side.imported)
    classes = index.with_bases(side.names)
    found: list[Suspect] = []
    # sorted before the duplicates go (a Call is equal whatever its line): a call made on the failing line
    # and earlier kept its earlier line and fell behind MAX_CALLED others (isoweek 1.3.3's `w.contains`
    # after seven day getters: fresh-user run X11 F9)
    calls = list(dict.fromkeys(sorted(side.calls, key=lambda c: bool(failing_line) and c.line != failing_line)))
    for call in calls:
        for rel, qualname, node in index.resolve(call, classes):
            if len(found) < MAX_CALLED and not any((s.path, s.qualname) == (rel, qualname) for s in found):
                found.append(make_suspect(rel, qualname, node, _tree_of(workspace / rel)[1], "called by the test"))
    return found


if __name__ == "__main__":
    import sys

    for suspect in from_test_calls_all(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):
        print(suspect.path, suspect.qualname)
