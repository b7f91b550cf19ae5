"""Parse the JUnit XML report (xunit1 family) pytest writes at the sandbox's request.

The report lives in a directory the sandboxed uid can write, so it is opened the way a
root process must open an untrusted path (issue 13): ``O_NOFOLLOW`` (a symlink planted as
junit.xml cannot make the root worker read a root-only file), ``O_NONBLOCK`` and regular
files only (a FIFO cannot block the worker), one link only (no hard link to another file),
and at most ``MAX_REPORT_BYTES`` read. Anything else reads as "no readable report".
"""
from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from .models import TestOutcome

_KINDS = (("failure", "failed"), ("error", "error"), ("skipped", "skipped"))
MAX_REPORT_BYTES = 64 << 20


def read_report(path: Path, limit: int = MAX_REPORT_BYTES) -> bytes | None:
    """The bytes of a regular, singly-linked, non-symlink file of at most ``limit`` bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > limit:
            return None
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) if size <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_junit(path: Path, rewrite: "Rewriter") -> dict[str, TestOutcome] | None:
    """nodeid -> outcome for every testcase in the report; None when there is no readable report."""
    data = read_report(Path(path))
    try:
        root = ET.fromstring(data) if data is not None else None
    except ET.ParseError:
        return None
    if root is None:
        return None
    results: dict[str, TestOutcome] = {}
    for case in root.iter("testcase"):
        outcome = _case(case, rewrite)
        results[outcome.nodeid] = _worse(results.get(outcome.nodeid), outcome)
    return results


def _worse(old: TestOutcome | None, new: TestOutcome) -> TestOutcome:
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    return new if old is None or rank[new.outcome] >= rank[old.outcome] else old


def _case(case: ET.Element, rewrite: "Rewriter") -> TestOutcome:
    outcome, message, details = "passed", "", ""
    for tag, kind in _KINDS:
        node = case.find(tag)
        if node is not None:
            outcome = kind
            message = rewrite(node.get("message") or "")
            details = rewrite.trim(rewrite(node.text or ""))
            break
    line = case.get("line")
    return TestOutcome(
        nodeid=_nodeid(case), outcome=outcome, message=first_line(message) or first_line(details),
        details=details, file=case.get("file") or None,
        # pytest writes 0-based line numbers into xunit1 reports
        line=int(line) + 1 if line and line.isdigit() else None,
        duration_s=float(case.get("time") or 0.0))


def _nodeid(case: ET.Element) -> str:
    for prop in case.iter("property"):
        if prop.get("name") == "ledex_nodeid":
            return prop.get("value") or ""
    # collection errors and reports without our property: rebuild from file/class/name
    file, classname, name = case.get("file"), case.get("classname") or "", case.get("name") or ""
    if not file:
        if not classname:
            return name.replace(".", "/") + ".py"
        # other runners: "pkg.test_mod.TestClass" -> pkg/test_mod.py::TestClass::name
        parts = classname.split(".")
        modules, classes = [p for p in parts if not p[:1].isupper()], [p for p in parts if p[:1].isupper()]
        return "::".join(["/".join(modules) + ".py", *classes, name])
    module = file.removesuffix(".py").replace("/", ".")
    cls = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
    return "::".join(p for p in (file, *cls.split(".")) if p) + f"::{name}"


def first_line(text: str) -> str:
    """The first non-empty line, stripped (the one-line message of a TestOutcome)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


class Rewriter:
    """Replace the sandbox's temporary workspace path with the real workspace path."""

    def __init__(self, sandbox_root: Path, real_root: Path, origin: str | None = None) -> None:
        """`origin`: the folder the workspace is a copy of, where the copy is also shown (editable
        installs import it from there); its paths read as the workspace's too."""
        self.real = str(real_root)
        self.pairs = [(str(sandbox_root), str(real_root))]
        resolved = str(Path(sandbox_root).resolve())
        if resolved != str(sandbox_root):
            self.pairs.append((resolved, str(real_root)))
        if origin and origin != self.real:
            self.pairs.append((str(origin), str(real_root)))

    def __call__(self, text: str) -> str:
        for old, new in self.pairs:
            text = text.replace(old, new)
        return text

    def trim(self, text: str) -> str:
        """Drop the test runner's own frames before the first frame in the workspace."""
        lines = text.splitlines()
        if not lines or not lines[0].startswith("Traceback (most recent call last):"):
            return text
        prefix = f'  File "{self.real}/'
        first = next((i for i, ln in enumerate(lines) if ln.startswith(prefix)), None)
        if first is None or first <= 1:
            return text
        return "\n".join([lines[0], *lines[first:]])
