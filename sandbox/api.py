"""Public entry points: each run is one ``python -m ledex.sandbox.worker`` process.

The worker sits in its own process group; cancelling a run SIGKILLs that group, which
takes the sandbox with it (bubblewrap ``--die-with-parent``, ``unshare --kill-child``,
parent-death signal), then sweeps any process carrying the run's environment marker.
Each job also owns the run's whole-run limits (``limits``: its cgroup, or the resident-memory
watch) and the run directory, removed by ``workspace.remove_tree`` (never raises); the
worker starts in a private mount namespace with that directory on a size-limited tmpfs
(``isolation.copy_quota``: root directly, a normal user through a user namespace; where the
kernel forbids it, the verdict's notes say so). A job that raises on a pool thread
becomes that candidate's error verdict. Use: ``from ledex.sandbox import verify``.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from . import isolation, runuid
from . import limits as run_limits
from .models import Limits, Verdict, error_verdict
from .runner import sweep_marker
from .view import interpreter_view
from .workspace import remove_tree

# Margin on top of Limits.wall_s before the caller gives up on a worker that itself hangs
# (copying a huge workspace, a stuck file system); the worker enforces wall_s on the tests.
WORKER_GRACE_S = 120.0


class _Job:
    """One worker process for one request; killable from another thread."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = dict(request, run_id=uuid.uuid4().hex)
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self.memory_used_mb: float | None = None

    def run(self) -> Verdict:
        """Run the request in a fresh worker process (own uid and cgroup when available) and
        return its Verdict; an error verdict if cancelled before it started."""
        requested = tuple(self.request["tests"])
        root = Path(tempfile.mkdtemp(prefix="ledex-sbx-"))
        lease = runuid.Lease()
        notes = [self._own_uid(lease)]
        cgroup = self._cgroup()
        try:
            with self.lock:
                if self.cancelled:
                    return error_verdict("cancelled", requested=requested)
                prefix, no_quota = isolation.copy_quota(self.request, root)
                self.proc = _spawn_worker(prefix)
            verdict = self._bounded(self._communicate(root, requested, cgroup), cgroup)
            notes = tuple(n for n in (*notes, no_quota) if n)
            return replace(verdict, notes=verdict.notes + notes) if notes else verdict
        except OSError as exc:  # no processes or memory left to start the worker
            return error_verdict(f"could not start the sandbox worker: {exc}", requested=requested,
                                 isolation=self.request["isolation"])
        finally:
            sweep_marker(self.request["run_id"]) if self.cancelled else None
            run_limits.remove(cgroup)
            remove_tree(root)
            lease.release()  # only now: nothing of the run is left to act as that uid

    def _own_uid(self, lease: runuid.Lease) -> str | None:
        """As root: a uid of the run's own (``runuid``) in place of the shared sandbox uid, or
        a note saying why the run shares it."""
        ids = self.request.get("ids")
        if not ids:
            return None
        uid = lease.acquire()
        if uid is None:
            return (f"shares uid {ids[0]} with other runs (no uid of its own: LEDEX_SANDBOX_UIDS="
                    f"{':'.join(map(str, runuid.uid_range()))} is not mapped here or all in use)")
        self.request["ids"] = [uid, uid]
        return None

    def _cgroup(self) -> str | None:
        """The run's own cgroup v2 (whole-run memory/pids/CPU), or None for the fallback."""
        req = self.request
        if req["isolation"] != "bubblewrap" and req.get("ids"):
            return None  # a command started as the sandbox uid could not move itself into it
        lim = req["limits"]
        cgroup = run_limits.create(req["run_id"], int(lim["memory_mb"]), int(lim["nproc"]))
        req["view"] = dict(req.get("view") or {}, cgroup=cgroup)
        return cgroup

    def _communicate(self, root: Path, requested: tuple[str, ...], cgroup: str | None) -> Verdict:
        assert self.proc is not None
        payload = json.dumps(dict(self.request, root=str(root)))
        timeout = float(self.request["limits"]["wall_s"]) + WORKER_GRACE_S
        watch = nullcontext() if cgroup else run_limits.MemoryWatch(
            self.proc.pid, int(self.request["limits"]["memory_mb"]), self._over_memory)
        with watch:
            try:
                out, err = self.proc.communicate(payload.encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                out, err = self.proc.communicate()
        _killpg(self.proc.pid)  # anything the worker left in its group
        if self.cancelled:
            return error_verdict("cancelled", requested=requested)
        try:
            return Verdict.from_dict(json.loads(out))
        except (ValueError, KeyError, TypeError):
            tail = err.decode("utf-8", "replace")[-2000:]
            return error_verdict(f"sandbox worker failed (exit {self.proc.returncode}): {tail}",
                                 requested=requested, isolation=self.request["isolation"])

    def _over_memory(self, used_mb: float) -> None:
        self.memory_used_mb = used_mb

    def _bounded(self, verdict: Verdict, cgroup: str | None) -> Verdict:
        """The verdict, turned into a "memory" kill when the run as a whole went over memory_mb."""
        limit = self.request["limits"]["memory_mb"]
        if self.memory_used_mb is not None:
            why = f"{self.memory_used_mb:.0f} MiB resident across its processes"
        elif cgroup and run_limits.was_oom_killed(cgroup):
            why = "its cgroup reached memory.max"
        else:
            return verdict
        return replace(verdict, passed=False, pass_rate=0.0, killed_reason="memory",
                       error=f"killed: the run used more than memory_mb={limit} MiB in total ({why})")

    def kill(self) -> None:
        """Cancel the job: SIGKILL the worker's process group if it started (from any thread)."""
        with self.lock:
            self.cancelled = True
            if self.proc is not None:
                _killpg(self.proc.pid)


def _spawn_worker(prefix: Sequence[str] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "ledex.sandbox.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _request(workspace: Path, tests: Sequence[str], patch: Mapping[str, str] | None, limits: Limits,
             python: str | None, extra_args: Sequence[str], command: Sequence[str] | None,
             origin: Path | None = None) -> dict:
    mode = isolation.detect_mode()
    if mode == "none":
        isolation.isolation_report()  # says so once, loudly
    # origin: the folder `workspace` is a copy of (a dry run's scratch copy): the interpreter's
    # editable installs name the origin, so the run's copy stands in for it there
    view = interpreter_view(python or sys.executable, Path(origin or workspace))
    python = view["python"]
    ids = isolation.run_ids(mode, python)
    return {"workspace": str(Path(workspace).resolve()), "tests": list(tests), "ids": ids, "view": view,
            "patch": dict(patch) if patch is not None else None, "limits": limits.to_dict(),
            "python": python, "extra_args": list(extra_args),
            "command": list(command) if command else None, "isolation": mode}


def run_tests(workspace: Path, tests: Sequence[str] = (), *, limits: Limits = Limits(),
              python: str | None = None, extra_args: Sequence[str] = (),
              command: Sequence[str] | None = None, coverage: bool = False, origin: Path | None = None) -> Verdict:
    """Run the workspace's tests (all when ``tests`` is empty) in a throw-away sandboxed copy.

    ``coverage=True`` also measures which workspace lines each test executed (coverage.py,
    which must be importable by ``python``) into ``Verdict.coverage``; else a note says why not.
    """
    request = _request(workspace, tests, None, limits, python, extra_args, command, origin)
    return _Job(dict(request, coverage=bool(coverage))).run()


def verify(workspace: Path, patch: Mapping[str, str], tests: Sequence[str], *,
           limits: Limits = Limits(), python: str | None = None, extra_args: Sequence[str] = (),
           command: Sequence[str] | None = None) -> Verdict:
    """Apply ``patch`` ({relpath: full new text}) to a pristine copy and run ``tests`` there."""
    return _Job(_request(workspace, tests, patch, limits, python, extra_args, command)).run()


def default_workers(n_jobs: int, limits: Limits = Limits()) -> int:
    """One worker per CPU, fewer if their memory limits would not fit in RAM."""
    cpus = len(os.sched_getaffinity(0))
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    return max(1, min(cpus, ram_mb // max(limits.memory_mb, 1), n_jobs))


def verify_many(workspace: Path, patches: Sequence[Mapping[str, str]], tests: Sequence[str], *,
                limits: Limits = Limits(), python: str | None = None, workers: int | None = None,
                cancel: threading.Event | None = None, extra_args: Sequence[str] = (),
                command: Sequence[str] | None = None, origin: Path | None = None) -> Iterator[tuple[int, Verdict]]:
    """Verify candidates on a bounded pool, yielding (index, verdict) as each completes.

    ``origin``: the folder ``workspace`` is a copy of (a dry run's scratch copy with earlier fixes
    written): the interpreter's editable installs point there, so each run's copy is shown and
    imported in its place, and paths under it read as ``workspace``'s (run_tests takes it too).

    When ``cancel`` is set or the caller stops iterating (``break`` at the first verified
    fix), the remaining candidates are cancelled and running ones killed; they are not yielded.
    """
    jobs = [_Job(_request(workspace, tests, p, limits, python, extra_args, command, origin)) for p in patches]
    if not jobs:
        return
    done: queue.Queue[tuple[int, Verdict]] = queue.Queue()
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(len(jobs), limits),
                              thread_name_prefix="ledex-sandbox")
    try:
        for i, job in enumerate(jobs):
            pool.submit(_deliver, i, job, done)
        yield from _collect(jobs, done, cancel)
    finally:
        for job in jobs:
            job.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def _deliver(index: int, job: _Job, done: queue.Queue) -> None:
    """Run one job on a pool thread; whatever happens, its verdict (maybe an error) is delivered."""
    verdict = None
    try:
        verdict = job.run()
    except BaseException as exc:  # noqa: BLE001 - a dead thread must fail its verdict, not hang _collect
        verdict = error_verdict(f"sandbox job failed: {exc!r}", requested=tuple(job.request["tests"]),
                                isolation=job.request.get("isolation", "none"))
    finally:
        done.put((index, verdict or error_verdict("sandbox job ended without a verdict")))


def _collect(jobs: list[_Job], done: queue.Queue,
             cancel: threading.Event | None) -> Iterator[tuple[int, Verdict]]:
    for _ in range(len(jobs)):
        item = _next(done, cancel)
        if item is None:
            return
        yield item


def _next(done: queue.Queue, cancel: threading.Event | None) -> tuple[int, Verdict] | None:
    while cancel is None or not cancel.is_set():
        try:
            return done.get(timeout=0.05)  # short poll so a set cancel is noticed quickly
        except queue.Empty:
            continue
    return None
