"""Which isolation this machine offers, and the command prefix that applies it.

Order of preference: bubblewrap (network, pid, ipc and, for normal users, user namespaces,
plus a minimal read-only view built from nothing: system dirs, part of /etc, the interpreter
and its libraries wherever they live, the workspace copy, private size-limited /tmp, /run,
/dev/shm; see ``view``), then ``unshare`` (network and pid namespaces only: the whole file
system stays visible), then none, which is reported once, loudly.
``LEDEX_SANDBOX_ISOLATION`` = bubblewrap | unshare | none forces a mode (tests, CI);
``LEDEX_SANDBOX_DISK_MB`` sizes the scratch tmpfs (default 256). docs/security.md says what
each mode does and does not protect; ``python -c "import ledex.sandbox as s;
print(s.isolation_report())"`` says which applies here.

When ledex runs as root the sandboxed command runs as an unprivileged uid instead, one of
its own per run (``runuid``: concurrent runs cannot signal, trace or open each other), else
the shared ``LEDEX_SANDBOX_UID`` (default 65534 "nobody"): root ignores RLIMIT_NPROC and file
permissions, so without this a fork bomb would be unbounded and a hard-linked file
writable. The worker itself starts in a private mount namespace whose run directory is a
size-limited tmpfs (``copy_quota``; for a normal user through a user namespace). Per-process limits are applied by util-linux ``prlimit`` *inside* the namespaces;
whole-run limits (cgroup v2 or the fallback) come from ``limits``.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from . import limits as run_limits
from . import runuid
from . import view as view_mod
from .models import Limits
from .workspace import skip_dir
from .view import copy_import_paths  # noqa: F401 - the worker's PYTHONPATH comes from here

MODES = ("bubblewrap", "unshare", "none")
DEFAULT_UNPRIVILEGED_UID = 65534  # "nobody" on Debian, Ubuntu, Fedora and Alpine
MB = 1024 * 1024
DEFAULT_DISK_MB = 256  # per run: /tmp + HOME + TMPDIR (LEDEX_SANDBOX_DISK_MB)
SHM_MB = 64  # /dev/shm: multiprocessing's semaphores and small shared arrays
RUN_MB = 4
SCRATCH_NAMES = ("home", "tmp")
COPY_TMPFS_MAX_MB = 256  # larger workspaces are copied to disk (hard links for big files): RAM
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

    Under bubblewrap the interpreter's directories are mounted into a view of their own
    (``view.interpreter_view``), so dropping always works; elsewhere only if ``python`` runs
    as that uid (a pyenv under a 0700 /root does not). Root without the drop loses RLIMIT_NPROC: a fork bomb
    is then bounded only by the pid namespace and the wall clock.
    """
    ids = sandbox_ids()
    if ids is None or mode == "bubblewrap":
        return ids
    return ids if _probe([python, "-c", "pass"], ids) else None


def disk_quota_mb() -> int:
    """Size in MiB of the sandbox's scratch tmpfs (LEDEX_SANDBOX_DISK_MB, default 256)."""
    try:
        return max(16, int(os.environ.get("LEDEX_SANDBOX_DISK_MB", DEFAULT_DISK_MB)))
    except ValueError:
        return DEFAULT_DISK_MB


def copy_quota(request: dict[str, Any], root: Path) -> tuple[list[str], str | None]:
    """(argv prefix, None) starting the worker in a private mount namespace whose ``root`` is
    a tmpfs of the workspace's size + ``disk_quota_mb()``: the copy, everything the run writes
    into it and the report count against one limit, vanish with the worker however it ends
    (no cleanup to fail), and no other run can reach them by path (another mount namespace).

    Root mounts it directly (``unshare --mount``). A normal user gets it from a user namespace
    of its own (``unshare --user --map-root-user --mount``: an unprivileged tmpfs mount), and a
    second, nested one maps the user's own uid and gid back (``unshare --map-user``, util-linux
    2.38+), so the worker runs as that user again, without capabilities (bubblewrap refuses
    to start with them), and drops nothing it did not have. ([], why not) where it cannot:
    workspaces over ``COPY_TMPFS_MAX_MB`` (their copy would sit in RAM), or a kernel that forbids
    unprivileged user namespaces or mounts in them (``kernel.unprivileged_userns_clone=0``,
    ``user.max_user_namespaces=0``, AppArmor's ``apparmor_restrict_unprivileged_userns``).
    """
    size = _copy_bytes(Path(request["workspace"]))
    if size is None:
        return [], "no disk quota on the workspace copy: the workspace could not be measured"
    if size > COPY_TMPFS_MAX_MB * MB:
        return [], (f"no disk quota on the workspace copy: it is over {COPY_TMPFS_MAX_MB} MiB, so it "
                    "stays on disk (each file is still capped at Limits.file_mb)")
    blocker = _private_mount_blocker()
    if blocker:
        return [], blocker
    return _quota_prefix(root, size + disk_quota_mb() * MB), None


_MOUNT = 'mount -t tmpfs -o "size=$2,mode=0755,nosuid,nodev" ledex-sbx "$1" || exit 125; shift 2; '


def _quota_prefix(root: Path, size: int) -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _MOUNT + 'exec "$@"', "sh", str(root), str(size)]
    back = f'exec unshare --user --map-user={os.geteuid()} --map-group={os.getegid()} -- "$@"'
    return ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--",
            "sh", "-c", _MOUNT + back, "sh", str(root), str(size)]


@functools.lru_cache(maxsize=None)
def _private_mount_blocker() -> str | None:
    """None where this user can put a run directory on a private tmpfs (probed once), else why not."""
    if not (shutil.which("unshare") and shutil.which("mount")):
        return "no disk quota on the workspace copy: unshare or mount (util-linux) is not installed"
    probe = Path(tempfile.mkdtemp(prefix="ledex-quota-probe-"))
    try:
        if _probe([*_quota_prefix(probe, MB), "true"], None):
            return None
    finally:
        probe.rmdir()
    if os.geteuid() == 0:
        return "no disk quota on the workspace copy: root cannot mount a tmpfs here (a container?)"
    return ("no disk quota on the workspace copy: this kernel does not let a normal user mount a "
            "tmpfs in a user namespace of its own (unshare --user --mount failed; see "
            "kernel.unprivileged_userns_clone, user.max_user_namespaces, AppArmor's "
            "apparmor_restrict_unprivileged_userns; util-linux older than 2.38 lacks --map-user); "
            "the copy stays on disk, each file capped at Limits.file_mb")


def _copy_bytes(workspace: Path) -> int | None:
    """Bytes the copy of ``workspace`` will take (what ``copy_workspace`` copies), or None."""
    total = 0
    try:
        for dirpath, dirnames, filenames in os.walk(workspace):
            dirnames[:] = [d for d in dirnames if not skip_dir(Path(dirpath, d))]
            total += 4096 * (1 + len(dirnames))
            for name in filenames:
                total += os.lstat(os.path.join(dirpath, name)).st_size + 4096
                if total > COPY_TMPFS_MAX_MB * MB:
                    return total
    except OSError:
        return None
    return total


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


# What each mode does and does not protect (docs/security.md has the full threat model).
PROTECTION = {
    "bubblewrap": (
        "sandbox isolation: bubblewrap (no network, private pids/ipc, a minimal read-only view)",
        "visible: the workspace copy, the interpreter and its libraries (read-only), system dirs "
        "and part of /etc; private size-limited /tmp, /run, /dev/shm, HOME and TMPDIR",
        "not visible: your HOME, host sockets (D-Bus, X11, journald), other projects, other runs",
    ),
    "unshare": (
        "sandbox isolation: unshare (no network, private pids only)",
        "NOT protected: the whole file system is visible (HOME, host sockets, other projects) and "
        "writable where your user (or the sandbox uid) may write; install bubblewrap",
        "other runs' copies are private (each in its own mount namespace and, as root, with a "
        "uid of its own)",
    ),
    "none": (
        "WARNING: sandbox isolation: NONE. Model-written code runs with your network and file "
        "system, limited only by rlimits and a throw-away copy",
        "NOT protected: network, HOME, host sockets, other projects and runs. Install bubblewrap "
        "(apt-get install bubblewrap) or enable user namespaces",
    ),
}


def isolation_report(python: str | None = None) -> str:
    """What the sandbox protects here, one point a line: the mode (first line), what is and is
    not visible, the whole-run limits, and who the code runs as. Printed once to stderr,
    loudly, when the mode is "none"."""
    global _reported
    mode = detect_mode()
    python = python or sys.executable
    lines = [*PROTECTION[mode], run_limits.describe(), _disk(), _who(mode, python)]
    text = "\n".join(line for line in lines if line)
    if mode == "none" and not _reported:
        _reported = True
        print(f"\n{'!' * 78}\n{text}\n{'!' * 78}\n", file=sys.stderr)
    return text


def _disk() -> str:
    blocker = _private_mount_blocker()
    if blocker:
        return blocker
    return (f"disk: each run's copy on a private tmpfs of the workspace's size + {disk_quota_mb()} MiB "
            f"(LEDEX_SANDBOX_DISK_MB; workspaces up to {COPY_TMPFS_MAX_MB} MiB)")


def _who(mode: str, python: str) -> str:
    ids = sandbox_ids()
    if ids is None:
        return "sandboxed code runs as your user (it cannot read what your user cannot)"
    if run_ids(mode, python):
        first, count = runuid.uid_range()
        own = (f"a uid of its own per run ({first}..{first + count - 1}, LEDEX_SANDBOX_UIDS)"
               if runuid.mapped(first, count) else f"uid {ids[0]} (shared by all runs)")
        return f"sandboxed code runs as {own}, not root"
    return (f"sandboxed code runs as ROOT: {interpreter_blocker(python, ids[0])} "
            "(install bubblewrap, which mounts the interpreter wherever it lives)")


def interpreter_blocker(python: str, uid: int) -> str:
    """Why uid ``uid`` cannot run ``python``: the first directory on its path (as given, then
    resolved) that others cannot enter, with the chmod that fixes it."""
    given, real = Path(os.path.abspath(python)), Path(os.path.realpath(python))
    for parent in [*reversed(given.parents), *reversed(real.parents), real]:
        try:
            st = parent.stat()
        except OSError:
            continue
        needed = 0o001 if parent != real else 0o005
        if st.st_uid != uid and st.st_mode & needed != needed:
            return (f"uid {uid} cannot use {python}: {parent} is mode {st.st_mode & 0o7777:o} "
                    f"(chmod o+{'x' if parent != real else 'rx'} {parent}, or use an interpreter elsewhere)")
    return f"uid {uid} cannot run {python}"


def prlimit_prefix(limits: Limits) -> list[str]:
    """prlimit(1) arguments applying ``limits`` to the command that follows."""
    mb = 1024 * 1024
    return ["prlimit", f"--nproc={limits.nproc}", f"--as={limits.memory_mb * mb}",
            f"--fsize={limits.file_mb * mb}",
            # soft limit sends SIGXCPU (reported as "cpu"); the hard one a second later SIGKILL
            f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", "--core=0", "--"]


def wrap(mode: str, argv: Sequence[str], *, writable: Sequence[Path], readonly: Sequence[Path],
         cwd: Path, limits: Limits, ids: tuple[int, int] | None,
         view: dict[str, Any] | None = None) -> list[str]:
    """``argv`` wrapped in the isolation ``mode`` and the resource limits.

    ``writable``: directories the run may write (``cwd`` is the workspace copy); under
    bubblewrap the ones named ``home``/``tmp`` get a fresh size-limited tmpfs instead.
    ``readonly``: files inside them mounted read-only. ``view``: ``view.interpreter_view()``
    of the interpreter (probed from ``argv[0]`` when omitted).
    Under bubblewrap a uid drop happens inside (bwrap itself runs as root so it can mount
    root's interpreter); in the other modes the caller starts the wrapper as ``ids``.
    """
    view = view or (view_mod.interpreter_view(argv[0], cwd) if mode == "bubblewrap" else {})
    cgroup = view.get("cgroup")
    per_process = limits if cgroup else replace(limits, nproc=fallback_nproc(mode, limits.nproc, ids))
    inner = prlimit_prefix(per_process) + list(argv)
    enter = run_limits.enter_prefix(cgroup)
    if mode == "bubblewrap":
        return enter + _bwrap(writable, readonly, cwd, limits, view) + _drop(ids) + inner
    if mode == "unshare":
        net = [] if limits.network else ["-n"]
        # a shell as pid 1: the namespace's init ignores signals it has no handler for,
        # which would swallow SIGXCPU; and it reaps the orphans daemons leave behind
        return enter + ["unshare", "-r", *net, "-p", "-f", "--kill-child", "--",
                        "sh", "-c", '"$@"; exit $?', "sh", *inner]
    return enter + inner


def fallback_nproc(mode: str, nproc: int, ids: Sequence[int] | None = None) -> int:
    """RLIMIT_NPROC without a cgroup: at most ``limits.FALLBACK_NPROC`` tasks (why that number:
    its docstring).

    RLIMIT_NPROC counts the tasks of one uid in one user namespace. In a user namespace of
    its own (bubblewrap or unshare as a normal user) that is the run, and so it is as root
    when the run has a uid of its own (``ids``, from ``runuid``); runs that share the sandbox
    uid (``sandbox_ids()``) share one count, so they get ``FALLBACK_NPROC`` per CPU (the
    pool runs one run per CPU). Mode none as a normal user counts all of the user's
    processes, so ``nproc`` stays as given there (no per-run bound; docs/security.md).
    """
    shared = sandbox_ids()
    if shared is not None:
        per_cpu = len(os.sched_getaffinity(0)) if ids is None or tuple(ids) == shared else 1
        return min(nproc, run_limits.FALLBACK_NPROC * per_cpu)
    return nproc if mode == "none" else min(nproc, run_limits.FALLBACK_NPROC)


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
           view: dict[str, Any]) -> list[str]:
    made: set[str] = set()
    args = [*_bwrap_namespaces(limits.network), "--die-with-parent", "--new-session",
            *view_mod.system_binds(), "--dev", "/dev", "--proc", "/proc", *_scratch(),
            *view_mod.interpreter_binds(view, "binds", made)]
    for path in writable:
        args += view_mod.parent_dirs(str(path), made) + _writable(path)
    for path in _run_files(cwd.parent, writable):  # the plugin and what the worker put beside it
        args += view_mod.parent_dirs(str(path), made) + ["--ro-bind", str(path), str(path)]
    original = _original_path(view, cwd)
    if original:  # editable installs and .pth entries name the original path: show the copy there
        args += view_mod.parent_dirs(original, made) + ["--bind", str(cwd), original]
    for path in readonly:
        args += ["--ro-bind", str(path), str(path)]
        if original and Path(path).is_relative_to(cwd):
            args += ["--ro-bind", str(path), os.path.join(original, Path(path).relative_to(cwd))]
    args += view_mod.interpreter_binds(view, "ws_binds", made)
    # the view's own root (a tmpfs bwrap made) must not be a place to write to
    return args + ["--remount-ro", "/", "--chdir", str(cwd), "--"]


def _run_files(run_root: Path, writable: Sequence[Path]) -> list[Path]:
    skip = {Path(p) for p in writable}
    try:
        return sorted(p for p in run_root.iterdir() if p not in skip)
    except OSError:
        return []


def _scratch() -> list[str]:
    """Private, empty, size-limited /tmp, /dev/shm (multiprocessing needs it) and /run."""
    disk = disk_quota_mb() * MB
    return ["--perms", "01777", "--size", str(disk), "--tmpfs", "/tmp",
            "--perms", "01777", "--size", str(SHM_MB * MB), "--tmpfs", "/dev/shm",
            "--perms", "01777", "--size", str(RUN_MB * MB), "--tmpfs", "/run",
            "--perms", "0755", "--dir", "/var", "--symlink", "/tmp", "/var/tmp"]


def _writable(path: Path) -> list[str]:
    """HOME and TMPDIR start empty on the sandbox's own tmpfs; the copy and the report dir
    are the worker's (it reads them after the run)."""
    if path.name not in SCRATCH_NAMES:
        return ["--bind", str(path), str(path)]
    if Path(path).is_relative_to("/tmp"):
        return ["--perms", "01777", "--dir", str(path)]  # inside the /tmp tmpfs and its quota
    return ["--perms", "01777", "--size", str(disk_quota_mb() * MB), "--tmpfs", str(path)]


def _original_path(view: dict[str, Any], cwd: Path) -> str | None:
    """The user's workspace path, when the copy can be mounted over it without hiding the
    sandbox's own directories or a system directory."""
    original = view.get("workspace")
    if not original or not os.path.isabs(original) or original == str(cwd):
        return None
    run_root = str(cwd.parent)
    unsafe = {"/", "/tmp", "/dev", "/proc", "/run", "/etc", *view_mod.SYSTEM_DIRS}
    if original in unsafe or view_mod._within(run_root, original) or view_mod._within(original, run_root):
        return None
    return original
