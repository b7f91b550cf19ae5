"""One uid of its own for each sandboxed run when ledex runs as root.

With one shared sandbox uid (65534) concurrent runs could signal and ptrace each other,
reach each other's files through ``/proc/PID/root`` and ``/proc/PID/cwd`` (the ptrace
access check passes for the same uid), write into each other's copies in the unshare and
none modes, and shared one RLIMIT_NPROC count. A uid per run makes the kernel's ordinary
permission checks keep them apart, in every isolation mode.

The uids come from ``LEDEX_SANDBOX_UIDS`` = ``FIRST:COUNT`` (default ``2147352576:65536``,
the top of the 31-bit range, which neither distributions nor systemd assign: systemd's
UIDS-GIDS.md leaves 1879048192-2147483647 unused; uids above 2^31 break some tools). Each
run leases one with an exclusive ``flock`` on ``<tmp>/ledex-sbx-uids/<uid>`` (a root-only
directory), so separate ledex processes (the CLI, the language server, a trainer) never hand
out the same uid at once; the lease ends after the run's processes are killed and its
directory removed. The uids have no ``/etc/passwd`` entry (``USER``, ``HOME`` are set for
the run). Where the range is not mapped (a container whose uid map stops at 65535) or no
lease is free, the run keeps the shared uid and its notes say so.

Try it: ``sudo python -c "from ledex.sandbox import runuid; print(runuid.Lease().acquire())"``.
"""
from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path

DEFAULT_RANGE = (2147352576, 65536)
_TRIES = 64
_POOL = 4096


def uid_range() -> tuple[int, int]:
    """(first uid, count) from LEDEX_SANDBOX_UIDS ("FIRST:COUNT"), else the default."""
    first, _, count = os.environ.get("LEDEX_SANDBOX_UIDS", "").partition(":")
    try:
        return (int(first), max(1, int(count))) if first else DEFAULT_RANGE
    except ValueError:
        return DEFAULT_RANGE


def mapped(first: int, count: int) -> bool:
    """True when uids and gids ``first`` .. ``first + count - 1`` exist in our user namespace."""
    return all(_covers(Path(f"/proc/self/{name}"), first, count) for name in ("uid_map", "gid_map"))


def _covers(path: Path, first: int, count: int) -> bool:
    try:
        rows = [tuple(map(int, line.split())) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return False
    return any(inside <= first and first + count <= inside + length for inside, _outside, length in rows)


class Lease:
    """A uid held for one run (``acquire``), given back by ``release`` (idempotent)."""

    def __init__(self) -> None:
        self.uid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """A free uid of the range, now held by this lease; None when root is not running us,
        the range is not mapped here, or every uid tried is in use."""
        first, count = uid_range()
        if os.geteuid() != 0 or not mapped(first, count):
            return None
        folder = _lease_dir()
        if folder is None:
            return None
        # random (a leftover of a run that just ended is unlikely to meet its uid again) within
        # the first _POOL of the range (at most that many lock files ever exist)
        for offset in random.sample(range(min(count, _POOL)), min(count, _POOL, _TRIES)):
            if self._try(folder, first + offset):
                return self.uid
        return None

    def _try(self, folder: Path, uid: int) -> bool:
        try:
            fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.uid, self._fd = uid, fd
        return True

    def release(self) -> None:
        """Give the uid back (closing the lock file drops its flock)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
        self.uid, self._fd = None, None


def _lease_dir() -> Path | None:
    """``<tmp>/ledex-sbx-uids``, root's and 0700 (made if missing), or None if it is not."""
    folder = Path(tempfile.gettempdir()) / "ledex-sbx-uids"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if st.st_uid != 0 or (st.st_mode & 0o077) or not os.path.isdir(folder) or os.path.islink(folder):
        return None
    return folder
