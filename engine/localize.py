"""Fault localisation: a ranked list of suspects (functions whose change could make a failing
test pass) for one failure.

Where suspects come from, in this order of evidence:
0. a test that hung: the function it was stuck in (the deepest workspace frame alive in every
   stack sample the sandbox took at the timeout: a loop's owner, not the helper it happened to
   be calling; sandbox/plugin.py), when that is not test code;
1. a failing doctest: the function or method that owns the docstring;
2. the traceback: every frame inside the workspace and outside test code, mapped to the
   innermost function or method containing its line, deepest first, then its callers; a
   function stopped at a ``raise`` statement of its own (rejecting its input on purpose:
   semver's ``Version.parse`` for a bad string from ``Version.match``) after its callers;
3. the functions the test calls: names called in the test function (and in the test-class
   helpers it calls through ``self``), resolved to functions and methods the workspace defines
   outside test code: ``Receipt(...).total()`` is ``Receipt.total``, ``mod.f()`` a module-level
   ``f``, ``self.Cache(...)`` the class a test-class attribute names;
4. with per-test line coverage (see sbfl.py), every function the failing test executed.
With coverage, suspects are ordered by Ochiai suspiciousness (ties keep the order above);
without it, in the order above. Test code is never a suspect: what pytest collected as tests,
``conftest.py``, files matching the project's ``python_files`` and the usual test names/folders.

Try it:  python -m ledex.engine.localize WORKSPACE TEST_FILE TEST_NAME < traceback.txt
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable

from ledex.sandbox import is_build_output, read_source_text

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)', re.MULTILINE)
# Folders never treated as the user's code (installed packages, virtualenvs); build tools' output
# (`build`, `dist`) is told apart from a package of that name by sandbox.is_build_output.
_FOREIGN_PARTS = {"site-packages", "dist-packages", ".venv", "venv", ".tox", "node_modules", ".git",
                  ".eggs", "__pycache__"}
_TEST_DIRS = ("tests", "test", "testing")
MAX_CALLED = 8  # functions taken from the test's calls: enough for helpers and chained calls
_HELPER_DEPTH = 3  # test-class helpers followed through self.x(...) (setUp-style indirection)


# How each Suspect.reason reads to a person (the CLI's report, the editor's explanation).
FOUND_BY = {"traceback": "a workspace frame of the traceback",
            "called by the test": "the function the test calls",
            "doctest": "the function whose docstring holds the failing example",
            "coverage": "executed by the failing test",
            "stack sampling": "the function the hung test was stuck in"}


@dataclass(frozen=True)
class Suspect:
    """A function in the workspace that the fix should rewrite."""

    path: str  # relative to the workspace, "/"-separated
    qualname: str  # "func" or "Class.method"
    start_line: int  # 1-based, first decorator line included
    end_line: int  # 1-based, inclusive
    source: str  # the function's source text (dedented as it stands in the file)
    reason: str  # how it was found: "stack sampling", "doctest", "traceback", "called by the test" or "coverage"
    score: float | None = None  # Ochiai suspiciousness in [0, 1]; None when there was no coverage
    # Per-line Ochiai, ((line, score), ...) most suspicious first, for the lines the failing test
    # executed in this function (sbfl.rank_by_spectrum); () without coverage. Orders search's edits.
    lines: tuple[tuple[int, float], ...] = field(default=(), compare=False)


def is_test_file(path: str | Path) -> bool:
    """Test code by pytest's default names and the usual test folders (see TestFiles for the
    project's own configuration and what pytest collected).

    >>> [is_test_file(p) for p in ("tests/test_a.py", "pkg/a_test.py", "conftest.py", "pkg/calc.py")]
    [True, True, True, False]
    """
    p = PurePosixPath(Path(path).as_posix())
    name = p.name
    in_tests_dir = any(part in _TEST_DIRS for part in p.parts[:-1])
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" or in_tests_dir


def _ini_python_files(workspace: Path) -> list[str]:
    """The `python_files` patterns of the pytest configuration pytest would use, in its order:
    pytest.ini, .pytest.ini, pyproject.toml [tool.pytest.ini_options], tox.ini [pytest],
    setup.cfg [tool:pytest] (https://docs.pytest.org/en/stable/reference/customize.html)."""
    for name, section in (("pytest.ini", "pytest"), (".pytest.ini", "pytest"), ("pyproject.toml", None),
                          ("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        path = workspace / name
        try:
            found = _read_python_files(path, section) if path.is_file() else None
        except (OSError, ValueError, configparser.Error, UnicodeDecodeError):
            found = None
        if found is not None:
            return found
    return []


def _read_python_files(path: Path, section: str | None) -> list[str] | None:
    """None when the file has no pytest section (pytest then looks at the next file)."""
    if section is None:
        import tomllib

        options = tomllib.loads(path.read_text("utf-8")).get("tool", {}).get("pytest", {}).get("ini_options")
        if options is None:
            return None
        value = options.get("python_files", [])
        return value.split() if isinstance(value, str) else [str(v) for v in value]
    parser = configparser.RawConfigParser()
    parser.read_string(path.read_text("utf-8"))
    if not parser.has_section(section):
        return None
    return parser.get(section, "python_files", fallback="").split()


class TestFiles:
    """Which workspace files are test code, asked of pytest: the files it collected tests from
    (doctest items excepted: their file is the code under test), its `python_files` patterns,
    conftest.py, and the default names and test folders. Call with a relative path."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, workspace: Path, collected: Iterable[str] = ()):
        self.collected = frozenset(collected)
        broad = {"*", "*.py"}  # a project that declares every file a test file still has code to fix
        self.patterns = [p for p in _ini_python_files(Path(workspace)) if p not in broad]

    def __call__(self, rel: str) -> bool:
        name = PurePosixPath(rel).name
        return (rel in self.collected or is_test_file(rel)
                or any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in self.patterns))


def frames(details: str) -> list[tuple[str, int, str]]:
    """(path, line, function) for every frame of a Python ("native") traceback, outermost first."""
    return [(m["path"], int(m["line"]), m["func"]) for m in _FRAME.finditer(details)]


def _relative(path: str, workspace: Path) -> str | None:
    try:
        rel = Path(path).resolve().relative_to(workspace.resolve())
    except (ValueError, OSError):
        return None
    return None if is_foreign(workspace, rel.as_posix()) else rel.as_posix()


def is_foreign(workspace: Path, rel: str) -> bool:
    """Whether workspace-relative `rel` lies in a folder that is not the user's code: installed
    packages, virtualenvs, caches, build output (sandbox.is_build_output: a `build` package is code)."""
    parts = PurePosixPath(rel).parts[:-1]
    return bool(_FOREIGN_PARTS & set(parts)) or any(
        is_build_output(Path(workspace, *parts[:i + 1])) for i in range(len(parts)))


def read_source(path: Path) -> str | None:
    """The file's text in the encoding it declares (PEP 263; UTF-8 when none), or None when its
    bytes are not in that encoding (we never rewrite files we cannot read): sandbox.read_source_text."""
    return read_source_text(path)


def iter_functions(tree: ast.AST, prefix: str = ""):
    """(qualname, node) of every def under `tree`, nested ones too: `C.m`, `f.<locals>.g` (PEP 3155 names)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from iter_functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from iter_functions(node, f"{prefix}{node.name}.")


@lru_cache(maxsize=256)
def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source.removeprefix("\ufeff"))  # a UTF-8 BOM: valid in a file, not in ast.parse
    except (SyntaxError, ValueError):
        return None


def function_at(source: str, line: int) -> tuple[str, ast.AST] | None:
    """The innermost function containing `line` (not nested <locals> functions: we patch their parent)."""
    tree = _parse(source)
    best = None
    for qualname, node in iter_functions(tree) if tree else ():
        if "<locals>" in qualname:
            continue
        if first_line(node) <= line <= node.end_lineno and (best is None or first_line(node) >= first_line(best[1])):
            best = (qualname, node)
    return best


def function_named(source: str, qualname: str) -> ast.AST | None:
    """The def named `qualname` in `source` (function_in); None when absent or the source does not parse."""
    tree = _parse(source)
    return function_in(tree, qualname) if tree else None


def function_in(tree: ast.AST, qualname: str, line: int | None = None) -> ast.AST | None:
    """The def named `qualname` in `tree` (choose_definition among same-named ones); None when absent."""
    return choose_definition([node for name, node in iter_functions(tree) if name == qualname], line)


def choose_definition(nodes: list[ast.AST], line: int | None = None) -> ast.AST | None:
    """Of the defs sharing one name: the one starting (decorators included) at `line`, else the
    first that is not a `typing.overload` stub (fresh-user run X5, itsdangerous 2.2.0: two
    `@t.overload` stubs of TimestampSigner.unsign came first, and the search mutated a stub; a
    property's setter shares its getter's name too), else the first."""
    exact = [n for n in nodes if line is not None and first_line(n) == line]
    real = [n for n in nodes if not is_overload(n)]
    return (exact or real or nodes or [None])[0]


def is_overload(node: ast.AST) -> bool:
    """A `typing.overload` stub (`@overload`, `@t.overload`...): a signature for type checkers,
    never the code that runs."""
    return any((isinstance(d, ast.Name) and d.id == "overload") or (isinstance(d, ast.Attribute) and d.attr == "overload")
               for d in getattr(node, "decorator_list", ()))


def first_line(node: ast.AST) -> int:
    """1-based first line of a def, its decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def make_suspect(rel: str, qualname: str, node: ast.AST, source: str, reason: str) -> Suspect:
    """A Suspect for def `node` of file `rel` (lines first decorator..end, 1-based, inclusive)."""
    lines = re.split(r"\r\n|\r|\n", source)  # Python's line breaks (str.splitlines also breaks at \x0c, \u2028...)
    start, end = first_line(node), node.end_lineno
    return Suspect(rel, qualname, start, end, "\n".join(lines[start - 1:end]), reason)


def _code_file(workspace: Path, rel: str | None, is_test) -> str | None:  # noqa: ANN001
    """The file's text when `rel` is workspace code we may fix (readable Python, not test code)."""
    if rel is None or not rel.endswith(".py") or is_test(rel):
        return None
    return read_source(workspace / rel)


def from_traceback_all(workspace: Path, details: str, is_test=is_test_file) -> list[Suspect]:  # noqa: ANN001
    """Every workspace function on the traceback outside test code, deepest frame first; those
    stopped at a `raise` of their own after the others (they report their caller's bad input)."""
    found: list[Suspect] = []
    raising: set[tuple[str, str]] = set()
    for path, line, _ in reversed(frames(details)):
        rel = _relative(path, workspace)
        source = _code_file(workspace, rel, is_test)
        hit = source is not None and function_at(source, line)
        if hit and not any((s.path, s.qualname) == (rel, hit[0]) for s in found):
            found.append(make_suspect(rel, hit[0], hit[1], source, "traceback"))
            if line in raise_lines(source):
                raising.add((rel, hit[0]))
    return sorted(found, key=lambda s: (s.path, s.qualname) in raising)


@lru_cache(maxsize=64)
def raise_lines(source: str) -> frozenset[int]:
    r"""The 1-based lines of every `raise` statement in `source` (all its lines when it spans several).

    >>> sorted(raise_lines("def f(x):\n    if x:\n        raise ValueError(\n            x)\n    return x\n"))
    [3, 4]
    """
    tree = _parse(source)
    return frozenset(line for node in (ast.walk(tree) if tree else ()) if isinstance(node, ast.Raise)
                     for line in range(node.lineno, (node.end_lineno or node.lineno) + 1))


# what sandbox/plugin.py appends to a timeout's message (it cannot import this)
_STUCK = re.compile(r"; stuck in \S+ \((?P<path>[^\n]+?):(?P<line>\d+)\)")


def stuck_in(workspace: Path, details: str, is_test=is_test_file) -> Suspect | None:  # noqa: ANN001
    """The workspace function a hung test was stuck in, from the sandbox's timeout message
    ('...; stuck in count (/ws/pkg/calc.py:4)', one such part per frame that never returned,
    sandbox/plugin.py): the first that is workspace code and not test code (a test's list
    comprehension draining a generator names both; the generator is the suspect), or None.

    >>> stuck_in(Path("/nonexistent"), "TestTimeout: did not finish within 1 s") is None
    True
    """
    for found in _STUCK.finditer(details):
        rel = _relative(found["path"], workspace)
        source = _code_file(workspace, rel, is_test) if rel else None
        hit = source is not None and function_at(source, int(found["line"]))
        if hit:
            return make_suspect(rel, hit[0], hit[1], source, "stack sampling")
    return None


def stuck_line(details: str, path: str = "") -> int | None:
    """The line a hung test was stuck at in the file `path` (relative, "/"-separated; "": any),
    from the sandbox's timeout message, or None.

    >>> stuck_line("TestTimeout: did not finish within 1 s; stuck in count (/ws/calc.py:4)")
    4
    >>> stuck_line("...; stuck in <listcomp> (/ws/test_a.py:5); stuck in gen (/ws/a.py:9)", "a.py")
    9
    """
    for found in _STUCK.finditer(details):
        if found["path"].replace("\\", "/").endswith("/" + path if path else ""):
            return int(found["line"])
    return None


def doctest_owner(workspace: Path, file: str | None, name: str | None, is_test=is_test_file) -> Suspect | None:  # noqa: ANN001
    """For a doctest item (`pkg/mod.py::pkg.mod.Class.method`), the function owning the docstring."""
    source = _code_file(workspace, file, is_test) if name and is_doctest_name(name) else None
    parts = name.split(".") if source is not None else []
    for i in range(len(parts)):
        node = function_named(source, ".".join(parts[i:]))
        if node is not None:
            return make_suspect(file, ".".join(parts[i:]), node, source, "doctest")
    return None


def is_doctest_name(name: str) -> bool:
    """pytest names doctest items by the object's dotted name (`pkg.mod.func`); test functions
    and methods never contain a dot outside their parameters."""
    return "::" not in name and "." in name.split("[")[0]


def localize(workspace: Path, details: str, test_file: str | None, test_name: str | None) -> Suspect | None:
    """The top suspect for one failure, or None when nothing in the workspace qualifies."""
    return next(iter(rank_suspects(workspace, details, test_file, test_name)), None)


def rank_suspects(workspace: Path, details: str, test_file: str | None, test_name: str | None, *,
                  is_test=is_test_file, spectrum=None, body_ran: bool = True) -> list[Suspect]:  # noqa: ANN001
    """Every suspect for one failure, most suspicious first (see the module docstring).

    `is_test(rel) -> bool` says what is test code (a TestFiles); `spectrum` is an
    sbfl.Spectrum holding the test's coverage, or None. `body_ran=False` (the test errored in
    its setup: a fixture raised) leaves out the functions the test calls: none of them ran.
    """
    from ledex.engine.calls import from_test_calls_all

    workspace = Path(workspace)
    found: list[Suspect] = []
    owner = doctest_owner(workspace, test_file, test_name, is_test)
    candidates = [s for s in (stuck_in(workspace, details, is_test), owner) if s]
    candidates += from_traceback_all(workspace, details, is_test)
    if test_file and test_name and not owner and body_ran:
        candidates += from_test_calls_all(workspace, test_file, test_name, is_test,
                                          _failing_line(details, test_file, test_name))
    for suspect in candidates:
        if not any((s.path, s.qualname) == (suspect.path, suspect.qualname) for s in found):
            found.append(suspect)
    if spectrum is None or not test_file or not test_name:
        return found
    from ledex.engine.sbfl import rank_by_spectrum

    return rank_by_spectrum(workspace, found, spectrum, f"{test_file}::{test_name}", is_test)


def _failing_line(details: str, test_file: str, test_name: str) -> int | None:
    """The line of the test function where its traceback stops (the assertion that failed)."""
    func = test_name.split("[")[0].split("::")[-1]
    lines = [line for path, line, name in frames(details)
             if name == func and Path(path).as_posix().endswith("/" + test_file.lstrip("./"))]
    return lines[-1] if lines else None


def source_of_test(workspace: Path, test_file: str, test_name: str) -> str | None:
    """Source text of a test function (methods as Class::method, inherited ones included), for the prompt."""
    from ledex.engine.calls import find_test

    found = find_test(Path(workspace), test_file, test_name)
    source = read_source(Path(workspace) / found.file) if found else None
    if source is None:
        return None
    return "\n".join(source.splitlines()[first_line(found.node) - 1:found.node.end_lineno])


if __name__ == "__main__":
    import sys

    for ranked in rank_suspects(Path(sys.argv[1]), sys.stdin.read(), sys.argv[2], sys.argv[3]):
        print(ranked)
