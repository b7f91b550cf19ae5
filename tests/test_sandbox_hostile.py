"""ledex.sandbox against hostile candidates: each is contained, the workspace and HOME unchanged.

Limits are kept small (wall_s of a few seconds, tiny nproc/memory/file sizes) so these
stay quick and safe on a 2-core machine. Processes started by hostile code carry a unique
token in their command line; every test checks none survives (and kills any that did).
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import snapshot, write_tree

from ledex.sandbox import Limits, verify

TESTS = ("from pkg.calc import add\n\n\n"
         "def test_add():\n    assert add(1, 2) == 3\n")
ADD = "tests/test_calc.py::test_add"
# wall_s leaves room for pytest's own start-up on a loaded 2-core machine
HOSTILE = Limits(wall_s=15, cpu_s=10, memory_mb=512, file_mb=16, nproc=32, max_output_mb=8)


def make_ws(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    ws = tmp_path / "ws"
    all_files = {"pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a - b\n",
                 "tests/test_calc.py": TESTS, "pytest.ini": "[pytest]\n", **(files or {})}
    return write_tree(ws, all_files)


def survivors(token: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def token():
    tok = f"ledexhostile{uuid.uuid4().hex}"
    yield tok
    for pid in survivors(tok):  # never leave a leak behind on this machine, even on failure
        os.kill(pid, signal.SIGKILL)


def candidate(tmp_path: Path, body: str, limits: Limits = HOSTILE, **kw):
    """Verify a pkg/calc.py candidate against test_add; return (verdict, workspace, before)."""
    ws = make_ws(tmp_path)
    before = snapshot(ws)
    start = time.monotonic()
    v = verify(ws, {"pkg/calc.py": body}, [ADD], limits=limits, **kw)
    assert time.monotonic() - start < limits.wall_s + 25
    assert snapshot(ws) == before
    return v


def spawner(code: str, token: str) -> str:
    """Source that starts ``code`` in a new python process tagged with ``token``."""
    return f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {code!r} + '# {token}'])\n"


def test_fork_bomb_is_bounded_and_killed(tmp_path, token):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    body = spawner(bomb, token) + "import time\n\ndef add(a, b):\n    time.sleep(60)\n"
    v = candidate(tmp_path, body, Limits(wall_s=5, nproc=32))
    assert not v.passed and v.killed_reason == "timeout"
    time.sleep(0.5)
    assert survivors(token) == []


def test_infinite_loop_times_out(tmp_path):
    v = candidate(tmp_path, "def add(a, b):\n    while True:\n        pass\n", Limits(wall_s=3))
    assert not v.passed and v.killed_reason == "timeout" and "timed out" in v.error
    assert v.pass_rate == 0.0


def test_cpu_limit_kills_a_busy_loop(tmp_path):
    v = candidate(tmp_path, "def add(a, b):\n    while True:\n        pass\n", Limits(wall_s=20, cpu_s=1))
    assert not v.passed and v.killed_reason == "cpu"


def test_memory_balloon_hits_the_address_space_limit(tmp_path):
    body = "def add(a, b):\n    hog = []\n    while True:\n        hog.append(bytearray(50 << 20))\n"
    v = candidate(tmp_path, body)
    assert not v.passed and v.killed_reason == "memory"


def test_multi_gigabyte_file_is_capped(tmp_path):
    body = ("def add(a, b):\n    chunk = b'x' * (1 << 20)\n"
            "    with open('big.bin', 'wb') as fh:\n"
            "        for _ in range(3 * 1024):\n            fh.write(chunk)\n    return a + b\n")
    v = candidate(tmp_path, body)
    assert not v.passed and "File too large" in v.outcomes[0].details


def test_cannot_delete_or_edit_the_workspace_or_home(tmp_path):
    victim = Path.home() / f".ledex-sandbox-victim-{uuid.uuid4().hex}"
    victim.write_text("keep me")
    ws = tmp_path / "ws"
    body = (
        "import os, shutil\nfrom pathlib import Path\n\n"
        "def add(a, b):\n"
        f"    for path in [{str(victim)!r}, {str(ws / 'pkg' / 'calc.py')!r}, {str(ws / 'tests' / 'test_calc.py')!r}]:\n"
        "        try:\n            Path(path).write_text('pwned')\n        except OSError:\n            pass\n"
        "        try:\n            os.remove(path)\n        except OSError:\n            pass\n"
        f"    shutil.rmtree({str(ws)!r}, ignore_errors=True)\n"
        f"    Path({str(Path.home())!r}, 'pwned-by-sandbox').touch() if False else None\n"
        "    return a + b\n")
    try:
        v = candidate(tmp_path, body)  # asserts the workspace snapshot is unchanged
        assert victim.read_text() == "keep me"
        assert v.outcomes  # it did run
    finally:
        victim.unlink(missing_ok=True)


@pytest.mark.parametrize("mode", ["auto", "unshare"])
def test_no_network_even_to_loopback(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("LEDEX_SANDBOX_ISOLATION", mode)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(8)
    port = server.getsockname()[1]
    got: list[bytes] = []

    def accept():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100) or b"connected")
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    body = ("import socket\n\ndef add(a, b):\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
            "    except OSError:\n        pass\n    return a + b\n")
    v = candidate(tmp_path, body)
    server.close()
    thread.join()
    assert got == [] and v.outcomes
    assert mode == "auto" or v.isolation == "unshare"


def test_environment_secrets_do_not_reach_the_candidate(tmp_path, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("LEDEX_TEST_API_TOKEN", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    body = "import os\nprint(dict(os.environ))\n\ndef add(a, b):\n    raise AssertionError(repr(dict(os.environ)))\n"
    v = candidate(tmp_path, body)
    text = v.stdout_tail + v.stderr_tail + "".join(o.details + o.message for o in v.outcomes)
    assert "HOME" in text and secret not in text
    assert f"'HOME': '{Path.home()}'" not in text


def test_daemon_does_not_outlive_the_run(tmp_path, token):
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(120)\n"
    body = spawner(daemon, token) + "\ndef add(a, b):\n    return a + b\n"
    v = candidate(tmp_path, body, Limits(wall_s=20))
    assert v.passed  # a correct fix that also started a daemon: the daemon still dies
    time.sleep(0.5)
    assert survivors(token) == []


def test_rewriting_a_test_file_at_runtime_does_not_pass(tmp_path):
    files = {"tests/test_a.py": "import pkg.calc\n\n\ndef test_a():\n    pass\n",
             "tests/test_b.py": "def test_b():\n    assert 1 == 2\n"}
    ws = make_ws(tmp_path, files)
    before = snapshot(ws)
    body = ("import os\n\nfor rel in ['tests/test_b.py', 'conftest.py', 'pytest.ini']:\n"
            "    try:\n        with open(rel + '.new', 'w') as fh:\n"
            "            fh.write('def test_b():\\n    pass\\n' if rel.endswith('_b.py') else '')\n"
            "        os.replace(rel + '.new', rel)\n"
            "    except OSError:\n        pass\n\n"
            "def add(a, b):\n    return a + b\n")
    v = verify(ws, {"pkg/calc.py": body}, ["tests/test_a.py::test_a", "tests/test_b.py::test_b"],
               limits=HOSTILE)
    assert not v.passed and snapshot(ws) == before


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_exit_at_import_is_not_a_pass(tmp_path, exit_call):
    v = candidate(tmp_path, f"import os, sys\n{exit_call}\n\ndef add(a, b):\n    return a + b\n")
    assert not v.passed and v.error and v.pass_rate == 0.0


def test_exit_inside_the_test_is_not_a_pass(tmp_path):
    v = candidate(tmp_path, "import os\n\ndef add(a, b):\n    os._exit(0)\n")
    assert not v.passed and v.error


@pytest.mark.parametrize("how", ["module", "function"])
def test_skipping_itself_is_not_a_pass(tmp_path, how):
    body = ("import pytest\npytest.skip('nope', allow_module_level=True)\n\ndef add(a, b):\n    return 0\n"
            if how == "module" else "import pytest\n\ndef add(a, b):\n    pytest.skip('nope')\n")
    v = candidate(tmp_path, body)
    assert not v.passed and v.pass_rate == 0.0


def test_monkey_patching_pytest_reports_is_detected(tmp_path):
    body = ("import _pytest.reports as r\n"
            "_orig = r.TestReport.from_item_and_call.__func__\n\n"
            "def _forged(cls, item, call):\n"
            "    rep = _orig(cls, item, call)\n    rep.outcome = 'passed'\n    rep.longrepr = None\n    return rep\n\n"
            "r.TestReport.from_item_and_call = classmethod(_forged)\n\n"
            "def add(a, b):\n    return a - b\n")
    v = candidate(tmp_path, body)
    assert not v.passed and "disagree" in v.error
    assert v.outcomes[0].outcome == "failed"


def test_forged_junit_report_is_detected(tmp_path):
    forged = ('<testsuites><testsuite><testcase classname="tests.test_calc" name="test_add" '
              'file="tests/test_calc.py" line="3"><properties><property name="ledex_nodeid" '
              f'value="{ADD}"/></properties></testcase></testsuite></testsuites>')
    body = ("import atexit, sys\n\n"
            "def _forge():\n"
            "    for arg in sys.argv:\n"
            "        if arg.startswith('--junitxml='):\n"
            f"            open(arg.split('=', 1)[1], 'w').write({forged!r})\n\n"
            "atexit.register(_forge)\n\n"
            "def add(a, b):\n    return a - b\n")
    v = candidate(tmp_path, body)
    assert not v.passed and v.outcomes[0].outcome == "failed"


def test_forged_channel_lines_are_ignored(tmp_path):
    body = ("import os, json\n\n"
            "def add(a, b):\n"
            "    for fd in range(3, 64):\n"
            "        try:\n"
            "            os.write(fd, b'x ' + json.dumps({'ev': 'test', 'nodeid': 'tests/test_calc.py::test_add',"
            " 'outcome': 'passed', 'd': 0}).encode() + b'\\n')\n"
            "        except OSError:\n            pass\n"
            "    return a - b\n")
    v = candidate(tmp_path, body)
    assert not v.passed and v.outcomes[0].outcome == "failed"


@pytest.mark.parametrize("capture", [True, False])
def test_hundreds_of_megabytes_of_output(tmp_path, capture):
    body = "import sys\n\ndef add(a, b):\n    line = 'y' * 1023 + '\\n'\n    for _ in range(300 * 1024):\n        sys.stdout.write(line)\n    return a + b\n"
    limits = Limits(wall_s=20, file_mb=16, output_kb=64, max_output_mb=8)
    v = candidate(tmp_path, body, limits, **({} if capture else {"extra_args": ["-s"]}))
    assert not v.passed
    assert len(v.stdout_tail) <= 64 * 1024 and len(v.stderr_tail) <= 64 * 1024
    if not capture:
        assert v.killed_reason == "output"
