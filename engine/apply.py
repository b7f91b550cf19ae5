"""Writing a verified fix to the user's file: only if the file is still what the fix was
computed against, and atomically (temp file, fsync, rename), so a crash mid-write never
leaves a half-written source file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ledex.engine.patching import Patch


class ApplyError(RuntimeError):
    """The fix cannot be written; the file is unchanged."""


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8, newlines kept as given), keeping its permissions."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".ledex-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_patch(workspace: Path, patch: Patch) -> None:
    target = (Path(workspace) / patch.path).resolve()
    if not target.is_relative_to(Path(workspace).resolve()):
        raise ApplyError(f"{patch.path} is outside the workspace")
    try:
        current = target.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApplyError(f"cannot read {patch.path}: {exc}") from exc
    if current != patch.old_text:
        raise ApplyError(f"{patch.path} changed since the fix was computed; run ledex again")
    atomic_write_text(target, patch.new_text)
