"""Writing a verified fix to the user's file, atomically (temp file, fsync, rename), so a
crash mid-write never leaves a half-written source file.

The file may have changed since the fix was computed (another fix written to it, an edit):
the patch is then moved onto the file as it is now (`patching.rebase`: the function found
again by qualified name, and only if its code is still what the fix replaced); otherwise
nothing is written and ApplyError says why.

Used by `ledex fix --apply`; tested in tests/test_patching.py.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ledex.engine.patching import Patch, PatchError, rebase
from ledex.sandbox import read_source_text, source_bytes


class ApplyError(RuntimeError):
    """The fix cannot be written; the file is unchanged."""


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (newlines kept as given), keeping its permissions: UTF-8, or for
    a .py file the encoding its PEP 263 line declares (sandbox.source_bytes; UnicodeEncodeError
    when a character has no place in it)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    data = source_bytes(text) if path.suffix in (".py", ".pyw") else text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".ledex-tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_patch(workspace: Path, patch: Patch, *, keep_read_only: bool = True) -> Patch:
    """Write `patch` to its file under `workspace`; returns the patch as written (rebased onto
    the file's current text). Raises ApplyError, leaving the file unchanged. With
    `keep_read_only` (the user's files) a file without its owner's write bit is refused: the atomic
    replace needs only the folder's permission, so it overwrote a mode-0444 file, and as root any
    (fresh-user run X9); a scratch copy of the project is written whatever its modes."""
    target = (Path(workspace) / patch.path).resolve()
    if not target.is_relative_to(Path(workspace).resolve()):
        raise ApplyError(f"{patch.path} is outside the workspace")
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        raise ApplyError(f"cannot read {patch.path}: {exc.strerror or exc}") from None
    if keep_read_only and not mode & stat.S_IWUSR:
        raise ApplyError(f"{patch.path} is read-only (mode {mode & 0o777:04o}): not written; make it writable "
                         "to apply the fix, or apply the diff by hand; the file is unchanged")
    current = read_source_text(target)
    if current is None:
        raise ApplyError(f"cannot read {patch.path} in the encoding it declares (UTF-8 when none); the file is unchanged")
    try:
        patch = rebase(patch, current)
    except PatchError as exc:
        raise ApplyError(f"{exc}; nothing was written (run ledex again)") from None
    try:
        atomic_write_text(target, patch.new_text)
    except OSError as exc:  # a read-only or immutable file or folder, a full disk (fresh-user run X5)
        raise ApplyError(f"cannot write {patch.path}: {exc.strerror or exc}; the file is unchanged") from None
    except UnicodeEncodeError as exc:
        raise ApplyError(f"cannot write {patch.path} in the encoding it declares: {exc}; the file is unchanged") from None
    return patch
