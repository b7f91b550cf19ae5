"""Sandbox run budgets for any user: a total disk quota on the workspace copy (root and normal
users), runs that cannot touch each other, and a task limit that lets threaded tests run but
stops fork bombs. Each test runs real sandboxed pytest; the normal-user tests run ledex itself
as uid 65534 with the system python (apt's python3-pytest), so they need root to start.
Run: ``.venv/bin/python -m pytest -q tests/test_sandbox_quota.py``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from helpers import write_tree

from ledex.sandbox import Limits, api as sandbox_api, detect_mode, run_tests

QUICK = Limits(wall_s=60, cpu_s=30)
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
FILL = """from pathlib import Path

def test_fill():  # fills the copy with small files and leaves them there
    for i in range(100000):
        Path(f'f{i}').write_bytes(b'x' * 65536)
"""


def _system_pytest() -> bool:
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import pytest"], capture_output=True).returncode == 0


needs_root_and_system_pytest = pytest.mark.skipif(
    os.geteuid() != 0 or not _system_pytest(),
    reason="needs root (to become a normal user / other uids) and a system python with pytest")


def test_filling_the_copy_gives_a_disk_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_SANDBOX_DISK_MB", "16")
    ws = write_tree(tmp_path / "ws", {"pytest.ini": "[pytest]\n", "tests/test_fill.py": FILL})
    v = run_tests(ws, limits=QUICK)
    if any("no disk quota" in n for n in v.notes):
        pytest.skip(next(n for n in v.notes if "no disk quota" in n))
    assert not v.passed and v.error_kind == "disk" and v.pass_rate == 0.0, (v.error_kind, v.error)
    assert "filled its disk quota" in v.error and "LEDEX_SANDBOX_DISK_MB=16" in v.error
    assert sorted(p.name for p in ws.iterdir()) == ["pytest.ini", "tests"]  # the user's files untouched
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("ledex-sbx-*") if (p / "ws" / "f0").exists()]
    assert leftovers == []


# --- a normal user ------------------------------------------------------------------------

USER_SCRIPT = """
import json, os, sys
from ledex.sandbox import Limits, run_tests
out = {}
for mode in sys.argv[2:]:
    os.environ['LEDEX_SANDBOX_ISOLATION'] = mode
    v = run_tests(sys.argv[1], limits=Limits(wall_s=60, cpu_s=30))
    out[mode] = [v.passed, v.error_kind, v.error, list(v.notes), os.getuid()]
print('RESULT ' + json.dumps(out))
"""


def _as_normal_user(base: Path, modes: list[str], path_first: Path | None = None, body: str = FILL) -> dict:
    """Run USER_SCRIPT as uid 65534 on a workspace whose test is `body` (default: fills the copy);
    {mode: [passed, kind, error, notes, uid]}."""
    pkg = base / "lib" / "ledex"
    shutil.copytree(Path(sandbox_api.__file__).parent, pkg / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__init__.py").write_text("")
    ws = write_tree(base / "ws", {"pytest.ini": "[pytest]\n", "tests/test_fill.py": body})
    for path in [base, *base.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    os.chmod(base, 0o755)
    path = f"{path_first}:{os.environ['PATH']}" if path_first else os.environ["PATH"]
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-c", USER_SCRIPT,
         str(ws), *modes], capture_output=True, text=True, timeout=300, cwd="/",
        env={"PATH": path, "HOME": str(base), "PYTHONPATH": str(pkg.parent), "LEDEX_SANDBOX_DISK_MB": "16"})
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout + done.stderr[-3000:]
    import json

    return json.loads(line.removeprefix("RESULT "))


@needs_root_and_system_pytest
def test_a_normal_user_filling_the_copy_gets_a_disk_verdict():
    """Issue 13: the copy's quota for a normal user, through a user namespace of its own."""
    base = Path(tempfile.mkdtemp(prefix="ledex-quota-user-"))
    try:
        modes = ["bubblewrap", "unshare", "none"] if detect_mode() == "bubblewrap" else ["none"]
        result = _as_normal_user(base, modes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for mode, (passed, kind, error, notes, uid) in result.items():
        assert uid == NOBODY
        assert not passed and kind == "disk" and "filled its disk quota" in error, (mode, kind, error, notes)


@needs_root_and_system_pytest
def test_where_the_kernel_forbids_it_the_verdict_says_there_is_no_quota():
    """A kernel without unprivileged user namespaces (here: an ``unshare`` that fails as it
    would there) leaves the copy on disk; the verdict's notes say so and why."""
    base = Path(tempfile.mkdtemp(prefix="ledex-quota-user-"))
    try:
        fake = base / "fakebin"
        fake.mkdir()
        (fake / "unshare").write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
        (fake / "unshare").chmod(0o755)
        mode = "bubblewrap" if detect_mode() == "bubblewrap" else "none"
        small = "from pathlib import Path\n\ndef test_small():\n    Path('f').write_bytes(b'x' * 65536)\n"
        result = _as_normal_user(base, [mode], path_first=fake, body=small)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    passed, kind, error, notes, _uid = result[mode]
    assert kind != "disk" and passed, (kind, error)  # the run works, without a quota
    assert any("no disk quota on the workspace copy" in n and "user namespace" in n for n in notes), notes


# --- concurrent runs ----------------------------------------------------------------------

HOLDER = """import os, time
from pathlib import Path

def test_hold():
    Path('mine.txt').write_text('A')
    Path(SHARED, 'a.json').write_text(repr((os.readlink('/proc/self'), os.getcwd())))
    deadline = time.time() + 40
    while not Path(SHARED, 'b-done').exists() and time.time() < deadline:
        time.sleep(0.1)
    assert Path('mine.txt').read_text() == 'A'
"""

INTRUDER = """import ast, glob, os, signal, time
from pathlib import Path

def attempts(pid, cwd):
    yield lambda: Path(cwd, 'mine.txt').write_text('B')
    yield lambda: Path(cwd, 'mine.txt').read_text()
    yield lambda: os.listdir(f'/proc/{pid}/cwd')
    yield lambda: os.listdir(f'/proc/{pid}/root/')
    yield lambda: os.kill(int(pid), signal.SIGKILL)
    for other in glob.glob('/tmp/ledex-sbx-*/ws/mine.txt'):
        yield lambda: Path(other).write_text('B')

def test_intrude():
    deadline = time.time() + 30
    while not Path(SHARED, 'a.json').exists() and time.time() < deadline:
        time.sleep(0.1)
    pid, cwd = ast.literal_eval(Path(SHARED, 'a.json').read_text())
    reached = []
    for i, attempt in enumerate(attempts(pid, cwd)):
        try:
            attempt()
            reached.append(i)
        except OSError:
            pass
    Path(SHARED, 'b-done').write_text('')
    assert reached == []
"""


@needs_root_and_system_pytest
@pytest.mark.parametrize("mode", ["unshare", "none"])
def test_concurrent_runs_cannot_touch_each_other(tmp_path, monkeypatch, mode):
    """Issue 13: in the modes without a file system view, each run has a uid of its own and
    its copy on a tmpfs in its own mount namespace; another run can neither write nor read
    it, reach it through /proc/PID/cwd or /root, nor signal its processes."""
    monkeypatch.setenv("LEDEX_SANDBOX_ISOLATION", mode)
    shared = Path(tempfile.mkdtemp(prefix="ledex-shared-"))
    shared.chmod(0o1777)
    try:
        head = f"SHARED = {str(shared)!r}\n"
        a = write_tree(tmp_path / "a", {"pytest.ini": "[pytest]\n", "tests/test_a.py": head + HOLDER})
        b = write_tree(tmp_path / "b", {"pytest.ini": "[pytest]\n", "tests/test_b.py": head + INTRUDER})
        verdicts = {}
        threads = [threading.Thread(target=lambda n=n, ws=ws: verdicts.update(
            {n: run_tests(ws, limits=QUICK, python=SYSTEM_PYTHON)})) for n, ws in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    for name, v in verdicts.items():
        details = "\n".join(o.message + o.details[-1500:] for o in v.outcomes)
        assert v.passed, (name, v.error, details, v.notes)
        assert any("ran as uid" in n for n in v.notes), v.notes


# --- the task limit -----------------------------------------------------------------------

THREADS_AND_BOMB = """import errno, os, threading, time

def test_many_threads():  # more-itertools' TestConcurrentTee: 100 consumer threads, all alive at once
    done = []
    workers = [threading.Thread(target=lambda: (time.sleep(1), done.append(1))) for _ in range(100)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(done) == 100

def test_fork_bomb_is_stopped():
    children = []
    try:
        for _ in range(5000):
            pid = os.fork()
            if pid == 0:  # a zombie until reaped: still counted, and no memory for the watch to sum
                os._exit(0)
            children.append(pid)
        raise AssertionError('5000 processes started')
    except OSError as exc:
        assert exc.errno == errno.EAGAIN
    finally:
        for pid in children:
            os.waitpid(pid, 0)
    assert len(children) < 256
"""


def test_threaded_tests_run_and_a_fork_bomb_is_stopped(tmp_path, cgroups):
    ws = write_tree(tmp_path / "ws", {"pytest.ini": "[pytest]\n", "tests/test_tasks.py": THREADS_AND_BOMB})
    v = run_tests(ws, limits=QUICK)
    details = "\n".join(o.nodeid + ": " + o.message + o.details[-1500:] for o in v.outcomes)
    assert v.passed and len(v.outcomes) == 2, (v.error, details)
