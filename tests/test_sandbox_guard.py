"""The runtime guard (sandbox/guard.py) on its own: a python process with the guard as its
sitecustomize, one untrusted file, no sandbox. Tampering from that file kills the process with
the marker on stderr; the same calls from trusted code, and honest stdlib use, run normally.
Each case is one short interpreter start (~0.1 s).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ledex.sandbox import guard

GUARD_SRC = Path(guard.__file__)

HONEST = """
import collections, dataclasses, enum, functools, json, logging, re, tempfile, typing
with tempfile.TemporaryDirectory() as d:
    with open(d + '/a.json', 'w') as fh:
        json.dump({'a': [1, 2]}, fh)
P = collections.namedtuple('P', 'a b')
@dataclasses.dataclass
class D:
    a: int = 1
class E(enum.Enum):
    A = 1
T = typing.TypeVar('T')
logging.getLogger('x').warning('hi')
try:
    1 / 0
except ZeroDivisionError:
    logging.exception('boom')
functools.lru_cache(None)(len)('abc')
assert json.load(open('data.json')) == [1, 2]  # a protected data file the tests would pass in
assert re.fullmatch('a+', 'aaa') and eval('1 + 2') == 3
print('survived')
"""

HOSTILE = {
    "gc walk": ("import gc\ngc.get_objects()", "gc.get_objects"),
    "frame access": ("import sys\nsys._getframe(1)", "sys._getframe"),
    "frame via inspect": ("import inspect\ninspect.stack()", "sys._getframe"),
    "frame via traceback": ("try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame",
                            "object.__getattr__ traceback.tb_frame"),
    "/proc": ("open('/proc/self/status').read()", "open process internals"),
    "test file": ("open('test_x.py').read()", "open a test file: test_x.py"),
    "report": ("open(REPORT + '/junit.xml', 'w')", "open the runner's report"),
    "outside the copy": ("open('/etc/hostname').read()", "open a file outside the sandbox copy"),
    "writes python": ("open('evil.py', 'w').write('x = 1')", "open writes Python code"),
    "move a test file": ("import os\nos.replace('test_x.py', 'moved.py')", "os.rename a test file"),
    "test folder permissions": ("import os\nos.chmod('.', 0o777)", "os.chmod moves or changes the tests"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
    "ctypes": ("import ctypes", "ctypes.dlopen"),
    "a function's constants": ("def f():\n    return 3\nf.__code__.co_consts", "object.__getattr__ function.__code__"),
    "code swap": ("def f():\n    pass\nf.__code__ = compile('1', 'x', 'eval')", "object.__setattr__ function.__code__"),
    "compiled under a stdlib name": (
        "g = {}\nexec(compile('def f():\\n    return open(\"/proc/self/maps\").read()', "
        "'/usr/lib/python3/json/x.py', 'exec'), g)\nimport atexit\natexit.register(g['f'])",
        "open process internals"),
}


def prepare(tmp_path: Path, body: str, trusted: str = "", test: str = "EXPECTED = 3\n") -> tuple[Path, dict[str, str]]:
    """runner/ (the guard as sitecustomize), ws/ (cand.py untrusted, test_x.py protected), report/."""
    runner, ws, report = tmp_path / "runner", tmp_path / "ws", tmp_path / "report"
    for d in (runner, ws, report):
        d.mkdir(exist_ok=True)
    shutil.copyfile(GUARD_SRC, runner / "sitecustomize.py")
    (ws / "test_x.py").write_text(test)
    (ws / "cand.py").write_text(f"REPORT = {str(report)!r}\n{body}\n")
    (ws / "trusted.py").write_text(trusted or "import cand\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(runner), "TMPDIR": str(ws), "PYTHONDONTWRITEBYTECODE": "1",
           **guard.environment(["cand.py"], ["test_x.py", "data.json"], str(report), [ws])}
    (ws / "data.json").write_text("[1, 2]")
    return ws, env


def run(tmp_path: Path, body: str, trusted: str = "", *argv: str, test: str = "EXPECTED = 3\n") -> subprocess.CompletedProcess:
    ws, env = prepare(tmp_path, body, trusted, test)
    return subprocess.run([sys.executable, *argv, "trusted.py"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_tampering_from_the_untrusted_file_kills_the_process(tmp_path, kind):
    body, marker = HOSTILE[kind]
    proc = run(tmp_path, body)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert f"{guard.MARKER} {marker}" in proc.stderr
    assert guard.reason(proc.stderr).startswith(f"not verified: tampering: {marker}")


def test_honest_standard_library_use_runs(tmp_path):
    proc = run(tmp_path, HONEST)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr


def test_the_same_calls_from_trusted_code_run(tmp_path):
    trusted = "import gc, sys, inspect\ngc.get_objects(); sys._getframe(); inspect.stack()\n" \
              "open('test_x.py').read()\nimport cand\nprint('survived')\n"
    proc = run(tmp_path, "X = 1", trusted)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr


def test_pytest_assertion_rewriting_and_coverage_run_under_the_guard(tmp_path):
    pytest.importorskip("coverage")
    test = "from cand import add\n\ndef test_add():\n    assert add(1, 2) == 3\n"
    trusted = "import sys, pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'test_x.py']))\n"
    proc = run(tmp_path, "def add(a, b):\n    return a + b\n", trusted, "-m", "coverage", "run",
               "--data-file", str(tmp_path / "ws" / "cov.data"), test=test)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_no_untrusted_files_means_no_hook(tmp_path, monkeypatch):
    monkeypatch.setenv(guard.CONFIG_ENV, json.dumps({"untrusted": []}))
    assert guard.install() is None


def test_candidate_objects_in_event_arguments_run_no_code_inside_the_hook(tmp_path):
    """A str subclass path or a metaclass's __module__ would otherwise run candidate code while
    the guard's own events are ignored; the guard reads them through C accessors only."""
    body = ("import gc\nclass S(str):\n    def startswith(self, *a):\n        gc.get_objects()\n        return True\n"
            "class M(type):\n    @property\n    def __module__(cls):\n        return gc.get_referrers(cls)\n"
            "open(S('/proc/self/status'))")
    proc = run(tmp_path, body)
    assert proc.returncode == -signal.SIGKILL and f"{guard.MARKER} open process internals" in proc.stderr
