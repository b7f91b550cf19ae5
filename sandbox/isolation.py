"""Which isolation this machine offers, and the command prefix that applies it.

Order of preference: bubblewrap (network, pid, ipc and user namespaces plus a read-only
view of the whole file system with only the sandbox's own directories writable), then
``unshare`` (network and pid namespaces only), then none, which is reported once, loudly.
``LEDEX_SANDBOX_ISOLATION`` = bubblewrap | unshare | none forces a mode (tests, CI).

When ledex runs as root the sandboxed command runs as an unprivileged uid instead
(``LEDEX_SANDBOX_UID``, default 65534 "nobody"): root ignores RLIMIT_NPROC and file
permissions, so without this a fork bomb would be unbounded and a hard-linked file
writable. Limits are applied by util-linux ``prlimit`` *inside* the namespaces, so
RLIMIT_NPROC counts only the sandbox's own processes, not the user's desktop.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .models import Limits

MODES = ("bubblewrap", "unshare", "none")
DEFAULT_UNPRIVILEGED_UID = 65534  # "nobody" on Debian, Ubuntu, Fedora and Alpine
_reported = False


def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) the sandbox drops to, or None when ledex is not running as root."""
    if os.geteuid() != 0:
        return None
    uid = int(os.environ.get("LEDEX_SANDBOX_UID", DEFAULT_UNPRIVILEGED_UID))
    return uid, uid


@functools.lru_cache(maxsize=None)
def run_ids(mode: str, python: str) -> tuple[int, int] | None:
    """(uid, gid) to run as in ``mode``, or None to keep ours.

    Under bubblewrap the caller's inaccessible HOME is replaced by a tmpfs holding only
    the interpreter, so dropping always works; elsewhere only if ``python`` runs as that uid
    (a pyenv under /root does not). Root without the drop loses RLIMIT_NPROC: a fork bomb
    is then bounded only by the pid namespace and the wall clock.
    """
    ids = sandbox_ids()
    if ids is None or mode == "bubblewrap":
        return ids
    return ids if _probe([python, "-c", "pass"], ids) else None


def hidden_home_binds(python: str) -> list[str]:
    """bwrap args (run as root) hiding root's HOME but keeping the interpreter reachable.

    The tmpfs and the directories leading to the interpreter's prefix are made 0755 so
    the unprivileged sandbox uid can traverse them; nothing else of HOME is visible.
    """
    home = os.path.realpath(os.path.expanduser("~"))
    if home in ("/", ""):
        return []
    keep = {os.path.dirname(os.path.dirname(os.path.realpath(python))),
            os.path.dirname(os.path.dirname(os.path.abspath(python)))}
    args = ["--perms", "0755", "--tmpfs", home]
    for path in sorted(k for k in keep if k.startswith(home + os.sep)):
        parts = Path(path).relative_to(home).parts
        for i in range(1, len(parts)):
            args += ["--perms", "0755", "--dir", os.path.join(home, *parts[:i])]
        args += ["--ro-bind", path, path]
    return args


def _probe(argv: Sequence[str], ids: tuple[int, int] | None) -> bool:
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10,
                              user=ids[0] if ids else None, group=ids[1] if ids else None,
                              extra_groups=[] if ids else None)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def _available(mode: str) -> bool:
    if mode == "bubblewrap":
        return bool(shutil.which("bwrap")) and _probe(
            [*_bwrap_namespaces(False), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             *_drop(sandbox_ids()), "true"], None)
    if mode == "unshare":
        return bool(shutil.which("unshare")) and _probe(
            ["unshare", "-r", "-n", "-p", "-f", "--kill-child", "true"], sandbox_ids())
    return mode == "none"


def detect_mode() -> str:
    """The isolation mode to use here (forced by LEDEX_SANDBOX_ISOLATION, else the best available)."""
    forced = os.environ.get("LEDEX_SANDBOX_ISOLATION", "auto").strip().lower()
    if forced in MODES:
        if not _available(forced):
            raise RuntimeError(f"LEDEX_SANDBOX_ISOLATION={forced} but it does not work on this machine")
        return forced
    return next(m for m in MODES if _available(m))


def isolation_report() -> str:
    """One line on the isolation available; printed once to stderr, loudly, when it is "none"."""
    global _reported
    mode = detect_mode()
    ids = sandbox_ids()
    who = f"; sandboxed code runs as uid {ids[0]}" if run_ids(mode, sys.executable) else ""
    text = {
        "bubblewrap": "sandbox isolation: bubblewrap (no network, private pids, read-only file system)",
        "unshare": "sandbox isolation: unshare (no network, private pids; the file system is NOT "
                   "read-only, install bubblewrap for that)",
        "none": "WARNING: sandbox isolation: NONE. Model-written code runs with your network and "
                "file system, limited only by rlimits and a throw-away copy. Install bubblewrap "
                "(apt-get install bubblewrap) or enable user namespaces.",
    }[mode] + who
    if mode == "none" and not _reported:
        _reported = True
        print(f"\n{'!' * 78}\n{text}\n{'!' * 78}\n", file=sys.stderr)
    return text


def prlimit_prefix(limits: Limits) -> list[str]:
    """prlimit(1) arguments applying ``limits`` to the command that follows."""
    mb = 1024 * 1024
    return ["prlimit", f"--nproc={limits.nproc}", f"--as={limits.memory_mb * mb}",
            f"--fsize={limits.file_mb * mb}",
            # soft limit sends SIGXCPU (reported as "cpu"); the hard one a second later SIGKILL
            f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", "--core=0", "--"]


def wrap(mode: str, argv: Sequence[str], *, writable: Sequence[Path], readonly: Sequence[Path],
         cwd: Path, limits: Limits, ids: tuple[int, int] | None) -> list[str]:
    """``argv`` wrapped in the isolation ``mode`` and the resource limits.

    Under bubblewrap a uid drop happens inside (bwrap itself runs as root so it can reach
    root's interpreter); in the other modes the caller starts the wrapper as ``ids``.
    """
    inner = prlimit_prefix(limits) + list(argv)
    if mode == "bubblewrap":
        return _bwrap(writable, readonly, cwd, limits, ids, argv[0]) + _drop(ids) + inner
    if mode == "unshare":
        net = [] if limits.network else ["-n"]
        # a shell as pid 1: the namespace's init ignores signals it has no handler for,
        # which would swallow SIGXCPU; and it reaps the orphans daemons leave behind
        return ["unshare", "-r", *net, "-p", "-f", "--kill-child", "--",
                "sh", "-c", '"$@"; exit $?', "sh", *inner]
    return inner


def _drop(ids: tuple[int, int] | None) -> list[str]:
    if not ids:
        return []
    return ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--"]


def _bwrap_namespaces(network: bool) -> list[str]:
    if sandbox_ids() is None:  # unprivileged: a user namespace comes with --unshare-all
        return ["bwrap", "--unshare-all", *(["--share-net"] if network else [])]
    # as root: no user namespace (its uid map would hold only root, so no uid drop inside);
    # keep just the capabilities setpriv needs to drop to the sandbox uid
    return ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            *([] if network else ["--unshare-net"]), "--cap-drop", "ALL",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def _bwrap(writable: Sequence[Path], readonly: Sequence[Path], cwd: Path, limits: Limits,
           ids: tuple[int, int] | None, python: str) -> list[str]:
    args = [*_bwrap_namespaces(limits.network), "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", *(hidden_home_binds(python) if ids else []),
            "--dev", "/dev", "--proc", "/proc",
            # multiprocessing needs a writable /dev/shm; 64 MiB of RAM at most
            "--size", str(64 * 1024 * 1024), "--tmpfs", "/dev/shm"]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    for path in readonly:
        args += ["--ro-bind", str(path), str(path)]
    return args + ["--chdir", str(cwd), "--"]
