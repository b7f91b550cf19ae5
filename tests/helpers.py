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
