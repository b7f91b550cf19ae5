"""Static gate: what a candidate *adds* to a file may not reach the test runner or the process.

A patch replaces whole files; for each patched ``.py`` file both versions are parsed and every
use of a rule in ``RULES`` is collected as (rule, detail) — ``detail`` is the resolved dotted
name, attribute, method or string, so ``import sys as s; s.modules`` reads ``sys.modules``.
Uses already present in the user's original file are not counted: only what the candidate adds
is judged. Any added use rejects the candidate before a test runs, with the reason shown::

    not verified: uses sys.modules (the interpreter's module table: reaches pytest and the
    sandbox plugin) at pkg/calc.py:4

The rules are data: add a ``Rule(kind, pattern, reason)`` to ``RULES``. Kinds:

- ``import``: importing the module ``pattern`` or a submodule of it;
- ``import_re``: importing a module whose last name part matches the regex ``pattern``;
- ``name``: a resolved dotted name equal to ``pattern`` or below it (``os.exec`` covers
  ``os.execv`` only when written ``os.exec*``: a trailing ``*`` is a plain prefix);
- ``attr``: an attribute ``.pattern`` on anything, or ``pattern`` as a string (``getattr``);
- ``store``: assigning the attribute ``pattern`` (``*`` = any attribute of an imported module);
- ``method``: defining ``pattern`` in a class body (or ``pattern`` as a string: ``type(...)``);
- ``string``: a string constant matching the regex ``pattern``;
- ``dynamic``: a construct that hides names from this gate - ``type`` called with three
  arguments, ``setattr``/``delattr`` with a computed name, a class deriving from ``type``.

What this does not see: names built at run time (``getattr(m, 'get_' + 'objects')``) beyond the
``exec``/``compile``/``__import__`` rules that flag the means (``eval`` is allowed: honest code
evaluates arithmetic with it); the runtime guard (sandbox/guard.py)
and the worker's outcome checks cover those. See docs/security.md "Static gate".
Standard library only. Try it:  python -m ledex.sandbox.gate ORIGINAL.py CANDIDATE.py
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .workspace import read_source_text

PREFIX = "not verified: uses "  # every gate rejection's Verdict.error starts with this
SWITCH_ENV = "LEDEX_SANDBOX_GATE"  # "off": tests of the other layers only


@dataclass(frozen=True)
class Rule:
    """One forbidden use: the kind of match (import, name, attr, string...), its pattern, and why."""
    kind: str  # import | import_re | name | attr | store | method | string
    pattern: str
    reason: str  # what the use reaches, shown to the user


_RUNNER = "the test runner's internals: can rewrite how tests run or what they report"
_FRAMES = "interpreter frames: reaches the test's and the runner's local variables"
_PROCESS = "process control: can end or fork the run around the test runner"
_DYNAMIC = "dynamic code or imports: hides what the candidate uses from this gate"
_FDS = "raw file descriptors: can write into the runner's report channel"
_GAMED = "a result that compares equal to anything: games the test's assertion"

RULES: tuple[Rule, ...] = (
    *(Rule("import", m, _RUNNER) for m in ("pytest", "_pytest", "pluggy", "py", "unittest",
                                           "doctest", "ledex_sbx_plugin", "ledex_sbx_guard",
                                           "ledex", "iniconfig")),
    Rule("import_re", r"^(test_\w*|\w*_test|tests?|conftest)$", "a test module: reads the tests' "
         "expected answers or replaces the test itself"),
    Rule("import", "gc", "the garbage collector: walks every live object, the runner's included"),
    Rule("import", "inspect", _FRAMES),
    Rule("import", "ctypes", "raw memory access (ctypes)"),
    Rule("import", "_ctypes", "raw memory access (ctypes)"),
    Rule("import", "cffi", "raw memory access (cffi)"),
    *(Rule("import", m, "threads or processes: run code outside the test's control")
      for m in ("threading", "_thread", "multiprocessing", "concurrent", "subprocess", "pty",
                "_posixsubprocess")),
    *(Rule("import", m, _PROCESS) for m in ("signal", "atexit", "faulthandler", "resource")),
    Rule("import", "builtins", "the builtins module: rebinds functions the tests call"),
    *(Rule("import", m, _DYNAMIC) for m in ("importlib", "imp", "runpy", "code", "codeop", "marshal")),
    *(Rule("import", m, "tracing or debugging hooks") for m in ("trace", "bdb", "pdb", "tracemalloc")),
    Rule("import", "linecache", "source files of the running code: reads the tests"),
    Rule("import", "posix", "the os module under another name"),
    *(Rule("import", m, "network access") for m in ("socket", "socketserver", "ssl")),
    Rule("name", "sys.modules", "the interpreter's module table: reaches pytest and the sandbox plugin"),
    Rule("name", "sys.meta_path", "import hooks: can swap the modules the tests import"),
    Rule("name", "sys.path_hooks", "import hooks: can swap the modules the tests import"),
    Rule("name", "sys.argv", "the runner's command line: names the tests and the report file"),
    Rule("name", "sys._getframe", _FRAMES),
    Rule("name", "sys._current_frames", _FRAMES),
    *(Rule("name", f"sys.{n}", "tracing hooks: observe or alter the running tests")
      for n in ("settrace", "setprofile", "gettrace", "getprofile", "addaudithook", "audit")),
    Rule("name", "sys.excepthook", _PROCESS),
    *(Rule("name", f"os.{n}", _PROCESS) for n in (
        "_exit", "fork", "forkpty", "kill", "killpg", "abort", "system", "popen", "exec*",
        "spawn*", "posix_spawn*", "register_at_fork", "setsid", "setpgid")),
    *(Rule("name", f"os.{n}", _FDS) for n in ("write", "writev", "dup", "dup2", "fdopen", "open",
                                               "close", "closerange", "pipe", "read")),
    *(Rule("name", f"types.{n}", _DYNAMIC) for n in ("FunctionType", "CodeType", "FrameType",
                                                      "TracebackType", "LambdaType")),
    # eval is left to the runtime guard: honest code evaluates arithmetic with it (HumanEval/160).
    *(Rule("name", n, _DYNAMIC) for n in ("__import__", "exec", "compile", "globals",
                                          "breakpoint", "__builtins__", "__loader__", "__spec__")),
    *(Rule("attr", a, _FRAMES) for a in (
        "_getframe", "_current_frames", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
        "f_trace", "tb_frame", "tb_next", "gi_frame", "cr_frame", "ag_frame", "__globals__",
        "__closure__", "cell_contents")),
    *(Rule("attr", a, _DYNAMIC) for a in ("__code__", "__builtins__", "__import__", "__loader__")),
    Rule("attr", "__subclasses__", "every class in the process: reaches the runner's classes"),
    Rule("attr", "get_objects", "the garbage collector: walks every live object"),
    Rule("attr", "get_referrers", "the garbage collector: walks every live object"),
    Rule("attr", "_exit", _PROCESS),
    *(Rule("store", a, "rebinds an object's class or code behind the test's back")
      for a in ("__class__", "__code__", "__bases__", "__defaults__", "__kwdefaults__", "__dict__")),
    Rule("store", "*", "monkey-patches an imported module, changing what the tests or the runner call"),
    *(Rule("method", m, _GAMED) for m in ("__eq__", "__ne__", "__hash__", "__bool__",
                                          "__instancecheck__", "__subclasscheck__")),
    *(Rule("method", m, "hooks attribute lookup, deletion or finalisation on returned values")
      for m in ("__getattribute__", "__del__", "__init_subclass__", "__set_name__")),
    Rule("string", r"(^|/)proc(/|$)|/dev/fd", "process internals (/proc): reads the runner's pipes and memory"),
    Rule("string", r"(^|[/\\])(test_[\w*.]*|[\w*]*_test\.py|tests?\.py|conftest\.py)$",
         "a test file by name: reads the tests' expected answers"),
    Rule("string", r"junit", "the runner's report file"),
    Rule("dynamic", "type", "a class built at run time: hides its methods (__eq__ ...) from this gate"),
    Rule("dynamic", "setattr", "an attribute name computed at run time: hides what it sets from this gate"),
    Rule("dynamic", "delattr", "an attribute name computed at run time: hides what it deletes from this gate"),
    Rule("dynamic", "metaclass", "a metaclass: can add methods (__eq__ ...) this gate does not see"),
    Rule("name", "types.new_class", "a class built at run time: hides its methods (__eq__ ...) from this gate"),
    *(Rule("name", n, _DYNAMIC) for n in ("locals", "vars")),
)


# A standalone solution (judge_solutions: RL rewards, evaluation) is judged by RULES and these:
# a whole solution to a small problem has no reason to end the program, and an exit is how a
# policy learns to dodge its tests. Not in RULES: an editor fix to a CLI may rightly add one.
SOLUTION_RULES: tuple[Rule, ...] = RULES + tuple(
    Rule("name", n, "ends the program: a solution never needs to, and it skips the tests' checks")
    for n in ("sys.exit", "exit", "quit"))


@dataclass(frozen=True)
class Finding:
    """One use of a rule: ``detail`` as written (resolved through imports), at ``path:line``."""

    rule: Rule
    detail: str
    path: str
    line: int

    @property
    def key(self) -> tuple[str, str, str]:
        """(rule kind, rule pattern, detail): identifies a finding regardless of where it is."""
        return self.rule.kind, self.rule.pattern, self.detail

    def __str__(self) -> str:
        return f"{self.detail} ({self.rule.reason}) at {self.path}:{self.line}"


class GateRejected(Exception):
    """A candidate adds a forbidden use; ``str()`` is the Verdict error ("not verified: uses ...")."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        more = f"; and {len(findings) - 1} more" if len(findings) > 1 else ""
        super().__init__(f"{PREFIX}{findings[0]}{more}")


class _Scanner(ast.NodeVisitor):
    """Collects every rule use in one module, resolving names through its imports."""

    def __init__(self, path: str, rules: Iterable[Rule]) -> None:
        self.path, self.found, self.aliases = path, [], {}
        self.by_kind: dict[str, list[Rule]] = {}
        for rule in rules:
            self.by_kind.setdefault(rule.kind, []).append(rule)

    def _hit(self, rule: Rule, detail: str, node: ast.AST) -> None:
        self.found.append(Finding(rule, detail, self.path, getattr(node, "lineno", 0)))

    def _module(self, name: str, node: ast.AST, relative: bool = False) -> None:
        for rule in () if relative else self.by_kind.get("import", ()):
            if name == rule.pattern or name.startswith(rule.pattern + "."):
                self._hit(rule, name, node)
        for rule in self.by_kind.get("import_re", ()):
            if name and re.search(rule.pattern, name.rsplit(".", 1)[-1]):
                self._hit(rule, name, node)

    def _dotted(self, dotted: str, node: ast.AST) -> None:
        for rule in self.by_kind.get("name", ()):
            pat = rule.pattern
            if (dotted.startswith(pat[:-1]) if pat.endswith("*")
                    else dotted == pat or dotted.startswith(pat + ".")):
                self._hit(rule, dotted, node)

    def visit_Import(self, node: ast.Import) -> None:
        """Check each imported module and record the name it binds."""
        for alias in node.names:
            self._module(alias.name, node)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        """Check `from m import x` as m and m.x; relative imports only count as imports of test modules."""
        if node.level:  # inside the user's own package: only importing a test module counts
            for name in (node.module or "", *(a.name for a in node.names)):
                self._module(name, node, relative=True)
            return
        self._module(node.module or "", node)
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            if alias.name != "*":
                self._module(full, node)
            self._dotted(full, node)
            self.aliases[alias.asname or alias.name] = full

    def _resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Name(self, node: ast.Name) -> None:
        """Check a bare name, resolved through the recorded imports."""
        self._dotted(self.aliases.get(node.id, node.id), node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """Check dotted attribute uses, attr rules and attribute stores/deletes."""
        dotted = self._resolve(node)
        if dotted:
            self._dotted(dotted, node)
        for rule in self.by_kind.get("attr", ()):
            if node.attr == rule.pattern:
                self._hit(rule, f".{node.attr}", node)
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._store(node, node.value, node.attr)
        self.generic_visit(node)

    def _store(self, node: ast.AST, target: ast.AST, attr: str) -> None:
        root = target
        while isinstance(root, ast.Attribute):
            root = root.value
        imported = isinstance(root, ast.Name) and root.id in self.aliases
        for rule in self.by_kind.get("store", ()):
            if rule.pattern == attr or (rule.pattern == "*" and imported):
                self._hit(rule, f"{self._resolve(target) or '...'}.{attr} =", node)

    def visit_Call(self, node: ast.Call) -> None:
        """Flag setattr/delattr stores and computed names, and three-argument type()."""
        name = self._resolve(node.func)
        if name in ("setattr", "delattr") and len(node.args) >= 2:
            attr = node.args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                self._store(node, node.args[0], attr.value)
            else:
                self._dynamic(name, f"{name}(..., <computed name>)", node)
        elif name == "type" and len(node.args) == 3:
            self._dynamic("type", "type(name, bases, namespace)", node)
        self.generic_visit(node)

    def _dynamic(self, pattern: str, detail: str, node: ast.AST) -> None:
        for rule in self.by_kind.get("dynamic", ()):
            if rule.pattern == pattern:
                self._hit(rule, detail, node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """Flag metaclasses deriving from type and check the class's member names."""
        if any(self._resolve(base) in ("type", "builtins.type") for base in node.bases):
            self._dynamic("metaclass", f"class {node.name}(type)", node)
        for item in node.body:
            for name in _member_names(item):
                self._method(name, item, f"{node.name}.{name}")
        self.generic_visit(node)

    def _method(self, name: str, node: ast.AST, detail: str) -> None:
        for rule in self.by_kind.get("method", ()):
            if name == rule.pattern:
                self._hit(rule, detail, node)

    def visit_Constant(self, node: ast.Constant) -> None:
        """Check strings (up to 300 chars) against string rules and attr/method names."""
        if not isinstance(node.value, str) or len(node.value) > 300:
            return
        for rule in self.by_kind.get("string", ()):
            if re.search(rule.pattern, node.value):
                self._hit(rule, repr(node.value), node)
        for rule in self.by_kind.get("attr", ()) + self.by_kind.get("method", []):
            if node.value == rule.pattern:
                self._hit(rule, repr(node.value), node)


def _member_names(item: ast.stmt) -> list[str]:
    """Names a class-body statement defines: ``def __eq__`` or ``__eq__ = lambda ...``."""
    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [item.name]
    targets = getattr(item, "targets", None) or [getattr(item, "target", None)]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def scan(source: str, path: str = "<candidate>", rules: Iterable[Rule] = RULES) -> list[Finding]:
    """Every use of ``rules`` in ``source``; [] when it does not parse (its tests then fail)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    scanner = _Scanner(path, rules)
    scanner.visit(tree)
    return scanner.found


def added(original: str | None, candidate: str, path: str = "<candidate>",
          rules: Iterable[Rule] = RULES) -> list[Finding]:
    """Uses in ``candidate`` whose (rule, detail) the ``original`` text does not already have."""
    rules = tuple(rules)
    before = {f.key for f in scan(original or "", path, rules)}
    seen: set[tuple[str, str, str]] = set()
    out = []
    for finding in scan(candidate, path, rules):
        if finding.key not in before and finding.key not in seen:
            seen.add(finding.key)
            out.append(finding)
    return out


def check_patch(workspace: Path, patch: Mapping[str, str]) -> None:
    """Raise GateRejected if any patched ``.py`` file adds a forbidden use (paths already checked).

    ``LEDEX_SANDBOX_GATE=off`` skips the gate: only for testing the other layers on their own.
    """
    if os.environ.get(SWITCH_ENV) == "off":
        return
    findings: list[Finding] = []
    for rel, text in sorted(patch.items()):
        if rel.endswith((".py", ".pyw")):
            findings += added(read_source_text(Path(workspace) / rel), text, rel)
    if findings:
        raise GateRejected(findings)




if __name__ == "__main__":
    import sys

    old, new = (Path(p).read_text(encoding="utf-8") for p in sys.argv[1:3])
    for item in added(old, new, sys.argv[2]):
        print(f"{PREFIX}{item}")
