"""Helpers for tests: hashing a tree, re-running pytest independently of ledex."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def tree_digest(root: Path) -> str:
    """Hash of every file's path and bytes under root (caches excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and ".pytest_cache" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def outcomes_of(workspace: Path, *node_ids: str) -> dict[str, str]:
    """Run pytest ourselves (not through ledex) and return {nodeid: outcome} from -rA lines."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *node_ids],
                          cwd=workspace, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR"):
            outcomes[rest.split(" - ")[0].strip()] = word.lower()
    return outcomes


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under root (folders made as needed); returns root."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# A two-function project whose failures share a suspect (issue 12 items 6-7): chunked calls take
# with its arguments swapped; take raises, so the traceback blames it, while coverage ranks chunked
# (called by every failing test) first: suspects [chunked, take].
CHUNKS = {
    "seq/__init__.py": "",
    "seq/more.py": (
        "from functools import partial\nfrom itertools import islice\n\n\n"
        "def take(n, iterable):\n    return list(islice(iterable, n))\n\n\n"
        "def chunked(iterable, n):\n    return iter(partial(take, iter(iterable), n), [])\n"
    ),
    "tests/test_more.py": (
        "from seq.more import chunked, take\n\n\n"
        "def test_take():\n    assert take(2, 'abc') == ['a', 'b']\n\n\n"
        "def test_chunked_even():\n    assert list(chunked('abcd', 2)) == [['a', 'b'], ['c', 'd']]\n\n\n"
        "def test_chunked_odd():\n    assert list(chunked('abc', 2)) == [['a', 'b'], ['c']]\n\n\n"
        "def test_chunked_empty():\n    assert list(chunked('', 3)) == []\n"
    ),
}
