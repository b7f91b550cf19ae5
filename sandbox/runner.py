"""Run one wrapped command: bounded output tails, the plugin's private channel, the wall clock.

Everything the command starts is killed when it ends or times out: its process group,
its namespaces (bubblewrap ``--die-with-parent``, ``unshare --kill-child``) and, for
daemons that escaped both, any process whose initial environment carries the run's marker.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

MARKER_ENV = "LEDEX_SANDBOX_RUN"
_PR_SET_PDEATHSIG = 1
_CHUNK = 65536
DRAIN_S = 10.0  # after the command ended: how long its pipes may take to reach end of file


@dataclass
class RawRun:
    """What came out of the command, before any interpretation."""

    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    channel: list[str]
    duration_s: float
    timed_out: bool = False
    output_overflow: bool = False
    notes: list[str] = field(default_factory=list)


class _Tail:
    """Keeps the last ``keep`` bytes of a stream and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        """Append bytes, dropping whole old chunks once `keep` bytes remain without them."""
        self.total += len(data)
        self.chunks.append(data)
        self.size += len(data)
        while self.size - len(self.chunks[0]) >= self.keep:
            self.size -= len(self.chunks.popleft())

    def text(self) -> str:
        """The last `keep` bytes as text (invalid UTF-8 replaced)."""
        return b"".join(self.chunks)[-self.keep:].decode("utf-8", "replace")


def _pump(fd: int, tail: _Tail, overflow: threading.Event, budget: list[int]) -> None:
    while data := _read(fd):
        tail.add(data)
        budget[0] -= len(data)
        if budget[0] < 0:
            overflow.set()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _CHUNK)
    except OSError:
        return b""


def _pump_lines(fd: int, out: list[str]) -> None:
    buf = b""
    while data := _read(fd):
        buf += data
        *lines, buf = buf.split(b"\n")
        out.extend(line.decode("utf-8", "replace") for line in lines)
        if len(out) > 1_000_000:  # a candidate flooding the channel gains nothing; stop reading
            break
    os.close(fd)


def _write_secret(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the command never read it (not pytest, or died early)
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """preexec: SIGKILL this child if the worker dies (pdeathsig survives exec)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _start(argv, env, cwd, ids, pass_fds) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        list(argv), env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, pass_fds=pass_fds, start_new_session=True, bufsize=0,
        user=ids[0] if ids else None, group=ids[1] if ids else None,
        extra_groups=[] if ids else None, preexec_fn=_die_with_parent)


def run_command(argv: Sequence[str], *, env: dict[str, str], cwd: Path, secret: bytes,
                wall_s: float, output_kb: int, max_output_mb: int,
                ids: tuple[int, int] | None, sweep: bool) -> RawRun:
    """Run ``argv``; the plugin reads ``secret`` from LEDEX_SBX_SECRET_FD and writes to LEDEX_SBX_CHANNEL_FD."""
    secret_r, secret_w = os.pipe()
    chan_r, chan_w = os.pipe()
    env = dict(env, LEDEX_SBX_SECRET_FD=str(secret_r), LEDEX_SBX_CHANNEL_FD=str(chan_w))
    start = time.monotonic()
    try:
        proc = _start(argv, env, cwd, ids, (secret_r, chan_w))
    finally:
        os.close(secret_r)
        os.close(chan_w)
    marker = env[MARKER_ENV] if sweep else None
    return _supervise(proc, secret_w, chan_r, secret, start, wall_s, output_kb, max_output_mb, marker)


def _supervise(proc, secret_w, chan_r, secret, start, wall_s, output_kb, max_output_mb, marker):  # noqa: ANN001
    keep = output_kb * 1024
    out, err, channel = _Tail(keep), _Tail(keep), []
    overflow, budget = threading.Event(), [max_output_mb * 1024 * 1024]
    threads = [threading.Thread(target=_write_secret, args=(secret_w, secret), daemon=True),
               threading.Thread(target=_pump, args=(proc.stdout.fileno(), out, overflow, budget), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr.fileno(), err, overflow, budget), daemon=True),
               threading.Thread(target=_pump_lines, args=(chan_r, channel), daemon=True)]
    for t in threads:
        t.start()
    exited = threading.Event()
    threading.Thread(target=lambda: (proc.wait(), exited.set()), daemon=True).start()
    timed_out = not _wait_either(exited, overflow, wall_s)
    kill_tree(proc.pid, marker)
    exited.wait(5)
    drained = _drain(threads[1:])
    proc.stdout.close()
    proc.stderr.close()
    raw = RawRun(exit_code=proc.returncode, stdout_tail=out.text(), stderr_tail=err.text(),
                 channel=list(channel), duration_s=time.monotonic() - start,
                 timed_out=timed_out and not overflow.is_set(), output_overflow=overflow.is_set())
    if not drained:
        raw.notes.append(f"a pipe was still open {DRAIN_S:g} s after the test process ended "
                         "(a leftover process holds it): output and outcome records may be incomplete")
    return raw


def _drain(readers: list[threading.Thread]) -> bool:
    """Wait for the readers to reach end of file: every record written before the test process
    ended is read, however long a loaded machine takes to schedule them (a short fixed join
    cut the channel mid-stream under load). Bounded by ``DRAIN_S`` for pipes a leftover
    process still holds open. True when all of them finished."""
    deadline = time.monotonic() + DRAIN_S
    for t in readers:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in readers)


def _wait_either(exited: threading.Event, overflow: threading.Event, wall_s: float) -> bool:
    """True when the command exited or overflowed before the wall clock ran out."""
    deadline = time.monotonic() + wall_s
    while (left := deadline - time.monotonic()) > 0:
        if exited.wait(min(left, 0.05)) or overflow.is_set():
            return True
    return False


def kill_tree(pgid: int, marker: str | None) -> None:
    """SIGKILL the process group ``pgid`` and every process whose environment carries ``marker``."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if marker:
        sweep_marker(marker)


def sweep_marker(marker: str) -> int:
    """Kill processes started with ``LEDEX_SANDBOX_RUN=marker`` (daemons that left the group)."""
    needle = f"{MARKER_ENV}={marker}\0".encode()
    killed = 0
    for _ in range(3):  # a daemon may fork again while we scan
        found = [pid for pid in _pids() if needle in _environ(pid)]
        for pid in found:
            _kill(pid)
        killed += len(found)
        if not found:
            break
    return killed


def _pids() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
