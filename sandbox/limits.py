"""Limits on a whole sandboxed run, not on each of its processes.

With a usable cgroup v2 hierarchy (the ``memory`` and ``pids`` controllers available to us:
as root the cgroup2 mount's root, else a delegated directory named by
``LEDEX_SANDBOX_CGROUP``; ``none`` forces the fallback), each run gets its own cgroup: ``memory.max`` = ``memory_mb``
(swap 0), ``pids.max`` = ``nproc``, ``cpu.max`` = one CPU; it is killed and removed after the
run. As root on a v1/hybrid host the v1 memory and pids hierarchies serve the same way
(``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``, ``pids.max``). Without one (a cgroup v1 or hybrid host, a container, no delegation) the fallback is:
at most ``FALLBACK_NPROC`` tasks per run (``isolation.fallback_nproc``; per CPU as root
only when runs share one uid, see ``runuid``): enough for threaded test suites, few enough
to stop a fork bomb (the reasons are at the constant), each with RLIMIT_AS = ``memory_mb``,
and a watchdog in the calling process that sums
the resident memory of the run's process tree every ``WATCH_INTERVAL_S`` and kills the tree
when it exceeds ``memory_mb`` (verdict: killed, "memory").

Run ``python -m ledex.sandbox.limits`` to see which applies on this machine.
"""
from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

# Tasks per run without a cgroup (RLIMIT_NPROC; threads count as tasks). 256, not the 64 it
# was: threaded test suites are normal - more-itertools' TestConcurrentTee starts 100
# consumer threads beside pytest's main thread and the per-test faulthandler watchdog (~103
# tasks, "can't start new thread" at 64), and 256 leaves room for such a test plus a thread
# pool or a multiprocessing Pool. It still stops a fork bomb: a bomb doubles each round and
# hits 256 within milliseconds, then gets EAGAIN until the wall clock kills it; the pid and
# thread tables (pid_max >= 32768) and the scheduler stay usable with a run per CPU at 256.
# What bounds memory is the resident-memory watch below (the product 256 x memory_mb of
# address space is no real bound, as 64 x memory_mb was not either). Same as Limits.nproc's
# default, which a cgroup's pids.max applies. Threads also take address space: each reserves
# an RLIMIT_STACK-sized stack (8 MiB by default) under RLIMIT_AS = memory_mb, so at the default
# 2048 MiB about 100-150 threads fit beside pytest (measured here: 100 run, 150 fail with
# "can't start new thread"); a suite with more threads at once needs a larger memory_mb.
FALLBACK_NPROC = 256
WATCH_INTERVAL_S = 0.25  # one /proc scan costs ~5 ms on a loaded box
_CONTROLLERS = ("memory", "pids")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _mounts(fstype: str) -> list[tuple[Path, set[str]]]:
    """(mount point, super options) of every ``fstype`` mount, from /proc/self/mountinfo."""
    found = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields = right.split()
            if fields[:1] == [fstype]:
                found.append((Path(left.split()[4]), set(fields[-1].split(","))))
    except (OSError, IndexError):
        pass
    return found


@functools.lru_cache(maxsize=None)
def cgroup_base() -> tuple[Path, ...] | None:
    """Directories under which per-run cgroups can be made (one for v2; memory and pids
    hierarchies for v1, root only), or None."""
    forced = os.environ.get("LEDEX_SANDBOX_CGROUP")
    if forced == "none":  # the fallback, on purpose
        return None
    v2 = Path(forced) if forced else next((m for m, _ in _mounts("cgroup2")), None)
    if v2 is not None and (forced or os.geteuid() == 0):
        try:
            if set(_CONTROLLERS) <= set((v2 / "cgroup.controllers").read_text().split()):
                (v2 / "ledex").mkdir(exist_ok=True)
                _enable(v2)
                _enable(v2 / "ledex")
                sweep_stale((v2 / "ledex",))
                return (v2 / "ledex",)
        except OSError:
            pass
    return None if forced or os.geteuid() != 0 else _v1_bases()


def _v1_bases() -> tuple[Path, ...] | None:
    """cgroup v1 (hybrid hosts): ``ledex`` directories in the memory and pids hierarchies."""
    v1 = _mounts("cgroup")
    try:
        bases = tuple(next(m for m, opts in v1 if c in opts) / "ledex" for c in _CONTROLLERS)
        for base in bases:
            base.mkdir(exist_ok=True)
        sweep_stale(bases)
        return bases
    except (StopIteration, OSError):
        return None


def sweep_stale(bases: tuple[Path, ...], older_than_s: float = 3600.0) -> None:
    """Remove run cgroups a killed caller left behind (empty ones, idle for an hour)."""
    cutoff = time.time() - older_than_s
    for base in bases:
        try:
            for child in base.iterdir():
                if child.is_dir() and child.stat().st_mtime < cutoff:
                    _rmdir_quietly(child)
        except OSError:
            pass


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()  # fails while a process is in it
    except OSError:
        pass


def _enable(cgroup: Path) -> None:
    have = set((cgroup / "cgroup.controllers").read_text().split())
    on = set((cgroup / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in (*_CONTROLLERS, "cpu") if c in have and c not in on]
    if wanted:
        (cgroup / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def create(run_id: str, memory_mb: int, nproc: int) -> str | None:
    """Fresh cgroups for one run with its limits written, as one ``os.pathsep``-joined string
    of directories, or None (use the fallback)."""
    bases = cgroup_base()
    if bases is None:
        return None
    dirs = [base / run_id for base in bases]
    memory = str(memory_mb * 1024 * 1024)
    try:
        for path in dirs:
            path.mkdir()
            for name, value in (("memory.max", memory), ("memory.swap.max", "0"),  # v2
                                ("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory),  # v1
                                ("pids.max", str(nproc)), ("cpu.max", "100000 100000")):
                _write(path / name, value)
        return os.pathsep.join(map(str, dirs))
    except OSError:
        remove(os.pathsep.join(map(str, dirs)))
        return None


def _write(path: Path, value: str) -> None:
    if path.exists():
        path.write_text(value)


def enter_prefix(cgroup: str | None) -> list[str]:
    """argv prefix moving the command into ``cgroup`` before it execs (run as its owner)."""
    if not cgroup:
        return []
    enter = 'IFS=:; for d in $0; do echo $$ > "$d/cgroup.procs" || exit 125; done; exec "$@"'
    return ["sh", "-c", enter, cgroup]


def remove(cgroup: str | None) -> None:
    """Kill everything in ``cgroup`` and remove it; never raises, gives up after ~2 s."""
    for part in (cgroup or "").split(os.pathsep):
        if part:
            _remove_one(Path(part))


def _remove_one(path: Path) -> None:
    for _ in range(100):
        try:
            (path / "cgroup.kill").write_text("1")  # v2, kernel 5.14+
        except OSError:
            _kill_listed(path)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _kill_listed(path: Path) -> None:
    try:
        pids = (path / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def was_oom_killed(cgroup: str) -> bool:
    """True when the kernel killed something in ``cgroup`` for exceeding its memory limit."""
    for part in cgroup.split(os.pathsep):
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            try:
                for line in Path(part, name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                pass
    return False


class MemoryWatch:
    """Fallback total-memory bound: polls the resident memory of ``root_pid``'s descendants.

    ``on_exceed`` is called once (from the watch thread) after the tree below ``root_pid``
    is SIGKILLed. Resident memory is counted per process (anonymous pages, from
    /proc/PID/statm), so pages shared after fork count once per process: a conservative sum.
    """

    def __init__(self, root_pid: int, memory_mb: int, on_exceed: Callable[[float], None]) -> None:
        self.root_pid, self.limit = root_pid, memory_mb * 1024 * 1024
        self.on_exceed = on_exceed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="ledex-memwatch")

    def __enter__(self) -> "MemoryWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)

    def _run(self) -> None:
        while not self.stop.wait(WATCH_INTERVAL_S):
            pids = descendants(self.root_pid)
            used = sum(_anon_rss(pid) for pid in pids)
            if used > self.limit:
                for pid in pids:
                    _kill(pid)
                self.on_exceed(used / (1024 * 1024))
                return


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid = _ppid(name)
            if ppid is not None:
                children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _ppid(pid: str) -> int | None:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            stat = os.read(fd, 512)
        finally:
            os.close(fd)
        return int(stat[stat.rindex(b")") + 2:].split(None, 2)[1])  # the name may hold ')'
    except (OSError, ValueError, IndexError):
        return None


def _anon_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            fields = fh.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def describe() -> str:
    """One line: which whole-run limits this machine gives."""
    bases = cgroup_base()
    if bases is not None and len(bases) == 1:
        return f"whole-run limits: cgroup v2 at {bases[0]} (memory, processes, one CPU per run)"
    if bases is not None:
        return (f"whole-run limits: cgroup v1 at {', '.join(map(str, bases))} (memory, processes; "
                "CPU per process by RLIMIT_CPU)")
    return (f"whole-run limits: no usable cgroup v2 (memory+pids controllers); fallback: at most "
            f"{FALLBACK_NPROC} processes/threads per run each limited to memory_mb "
            f"of address space, and the "
            f"run's total resident memory polled every {WATCH_INTERVAL_S:g} s and killed above memory_mb")


if __name__ == "__main__":
    print(describe())
