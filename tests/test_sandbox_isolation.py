"""ledex.sandbox isolation: what a run can see and use, for any user, and that cleanup holds.

Each test plants something on the host, runs a real sandboxed pytest whose test asserts
from the inside what it must (not) see, and checks the verdict. Run:
``.venv/bin/python -m pytest -q tests/test_sandbox_isolation.py``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from helpers import write_tree

from ledex.sandbox import Limits, detect_mode, isolation_report, run_tests, verify, verify_many
from ledex.sandbox import api as sandbox_api

QUICK = Limits(wall_s=60, cpu_s=30)
ADD = "tests/test_calc.py::test_add"
bwrap_only = pytest.mark.skipif(detect_mode() != "bubblewrap", reason="needs bubblewrap")


def probe_ws(tmp_path: Path, body: str) -> Path:
    """A workspace whose one test runs ``body`` (asserts) inside the sandbox."""
    return write_tree(tmp_path / "ws", {"pytest.ini": "[pytest]\n",
                                        "tests/test_probe.py": body})


def assert_all_passed(v) -> None:  # noqa: ANN001
    details = "\n".join(o.details for o in v.outcomes)
    assert v.passed and v.outcomes, f"{v.error}\n{details}\n{v.stdout_tail[-3000:]}"


@bwrap_only
def test_view_hides_home_sockets_other_projects_and_host_tmp(tmp_path, monkeypatch):
    secret = Path.home() / f".ledex-secret-{uuid.uuid4().hex}"
    secret.write_text("id_rsa")
    other = write_tree(tmp_path / "other-project", {"secret.txt": "other"})
    sock_path = Path("/tmp") / f"ledex-host-{uuid.uuid4().hex}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    os.chmod(sock_path, 0o777)  # world-connectable, like D-Bus or X11
    server.listen()
    abstract_name = f"\0ledex-host-{uuid.uuid4().hex}"  # like X11's and D-Bus's abstract sockets
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen()
    TMP_TOP = Path(os.path.relpath(tmp_path, "/tmp")).parts[0]
    # the interpreter's own tree (a venv wherever the checkout lives: /work, /check, /srv...)
    runtime = (sys.prefix, sys.base_prefix, sandbox_api.__file__)
    runtime_tops = {Path(p).parts[1] for p in runtime}
    runtime_tmp = {Path(p).relative_to("/tmp").parts[0] for p in runtime if p.startswith("/tmp/")}
    body = f"""
import os, socket, multiprocessing
from pathlib import Path

def test_view():
    assert not Path({str(secret)!r}).exists()
    assert not Path({str(other)!r}).exists()
    assert not Path({str(sock_path)!r}).exists()
    assert not Path('/root/.ssh').exists() and not Path('/home').exists()
    try:
        socket.socket(socket.AF_UNIX).connect({abstract_name!r})
        raise AssertionError('reached an abstract unix socket of the host')
    except OSError:
        pass
    assert not Path('/etc/shadow').exists() and not Path('/var/log').exists()
    # only the run's own directory and the copy mounted at the workspace's own path
    assert set(os.listdir('/tmp')) <= {{{TMP_TOP!r}, *{sorted(runtime_tmp)!r},
                                        *(p for p in os.listdir('/tmp') if p.startswith('ledex-sbx-'))}}
    for d in ('/tmp', '/run', '/dev/shm', os.environ['HOME'], os.environ['TMPDIR']):
        Path(d, 'w').write_text('ok')
    for ro in ('/', '/usr', '/etc'):
        try:
            Path(ro, 'pwned').write_text('x')
            raise AssertionError(ro + ' is writable')
        except OSError:
            pass
    assert set(os.listdir('/')) <= {{'usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'etc',
        'dev', 'proc', 'tmp', 'run', 'var', 'root', 'opt', 'nix', *{sorted(runtime_tops)!r}}}
    with multiprocessing.Pool(2) as pool:  # needs a writable /dev/shm
        assert pool.map(abs, [-1, -2]) == [1, 2]
"""
    try:
        v = run_tests(probe_ws(tmp_path, body), limits=QUICK)
        assert_all_passed(v)
    finally:
        server.close()
        abstract.close()
        sock_path.unlink()
        secret.unlink()


@bwrap_only
def test_scratch_space_has_a_total_quota(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_SANDBOX_DISK_MB", "32")
    body = """
import errno, os
from pathlib import Path

def fill(where):
    written = 0
    try:
        for i in range(100000):  # small files, as in the 630 MiB attack
            Path(where, f'f{i}').write_bytes(b'x' * 65536)
            written += 65536
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return written

def test_fill():
    assert fill(os.environ['TMPDIR']) <= 32 << 20
    assert fill('/dev/shm') <= 64 << 20
    if CHECK_COPY:  # the copy itself sits on a tmpfs of the workspace's size + the quota
        assert fill('.') <= 33 << 20
        for name in os.listdir('.'):  # room again for the report (shares the quota)
            if name.startswith('f'):
                os.remove(name)
"""
    body = f"CHECK_COPY = {os.geteuid() == 0}\n" + body
    assert_all_passed(run_tests(probe_ws(tmp_path, body), limits=QUICK))


@bwrap_only
def test_interpreter_in_a_directory_other_users_cannot_read(tmp_path, monkeypatch):
    """Issue 19 item 6: root with HOME elsewhere and Python under a 0700 directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    python = make_venv(locked / "venv")
    ws = write_tree(tmp_path / "ws", {"pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a - b\n",
                                      "tests/test_calc.py": "from pkg.calc import add\n\n\ndef test_add():\n"
                                                            "    assert add(1, 2) == 3\n"})
    v = verify(ws, {"pkg/calc.py": "def add(a, b):\n    return a + b\n"}, [ADD], limits=QUICK, python=str(python))
    assert v.passed, (v.error, v.stderr_tail[-2000:])
    if os.geteuid() == 0:
        assert any("uid" in n for n in v.notes)


def test_when_the_sandbox_uid_cannot_use_the_interpreter_the_report_names_the_fix():
    from ledex.sandbox.isolation import interpreter_blocker

    base = Path(tempfile.mkdtemp(prefix="ledex-blocker-test-"))  # pytest's tmp dirs are 0700 themselves
    try:
        locked = base / "opt-x"
        (locked / "bin").mkdir(parents=True)
        (locked / "bin" / "python3").symlink_to(sys.executable)
        locked.chmod(0o700)
        base.chmod(0o755)
        text = interpreter_blocker(str(locked / "bin" / "python3"), 65534)
        assert f"{locked} is mode 700 (chmod o+x {locked}" in text
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_venv(path: Path) -> Path:
    """A venv on this interpreter's base that also sees the test venv's packages (pytest,
    setuptools), as ``--system-site-packages`` would on a system Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = sysconfig.get_path("purelib")
    Path(site, "zz_ledex_test_base.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


EDITABLE = {
    "pyproject.toml": ("[build-system]\nrequires = ['setuptools>=64']\nbuild-backend = 'setuptools.build_meta'\n\n"
                       "[project]\nname = 'eproj'\nversion = '0.1'\n"),
    "PKG/eproj/__init__.py": "",
    "PKG/eproj/calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from eproj.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
}


@pytest.mark.parametrize("layout,venv_inside,mode", [
    ("src", True, "auto"),  # a static .pth path entry; the venv in the project (.venv)
    ("flat", False, "auto"),  # setuptools' __editable__ finder; the venv elsewhere
    ("src", True, "unshare"),
    ("flat", False, "none"),
])
def test_editable_install_imports_the_patched_copy(tmp_path, monkeypatch, layout, venv_inside, mode):
    """Issue 12 item 13: ``pip install -e .`` in the project's own venv."""
    if mode != "auto":
        monkeypatch.setenv("LEDEX_SANDBOX_ISOLATION", mode)
    prefix = "src/" if layout == "src" else ""
    ws = write_tree(tmp_path / "proj", {k.replace("PKG/", prefix): v for k, v in EDITABLE.items()})
    python = make_venv(ws / ".venv" if venv_inside else tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--no-index", "-e", str(ws)], check=True, capture_output=True, timeout=300)
    calc = f"{prefix}eproj/calc.py"
    # -P: the working directory is not on sys.path, as under the `pytest` entry point
    kw = dict(limits=QUICK, python=str(python),
              command=["{python}", "-P", "-m", "pytest", "-q", "--junitxml={junit}", "{tests}"])
    good = verify(ws, {calc: "def add(a, b):\n    return a + b\n"}, [ADD], **kw)
    assert good.passed, (good.error, good.stdout_tail[-2000:])
    broken = verify(ws, {calc: "raise RuntimeError('patched copy imported')\n"}, [ADD], **kw)
    assert not broken.passed
    assert "patched copy imported" in "".join(o.details + o.message for o in broken.outcomes) + broken.stdout_tail
    assert (ws / calc).read_text() == EDITABLE["PKG/eproj/calc.py"]


def test_cleanup_survives_a_3000_deep_directory_chain(tmp_path):
    ws = write_tree(tmp_path / "ws", {"pytest.ini": "[pytest]\n", "tests/test_deep.py": """
import os

def test_deep():
    os.chdir(os.path.dirname(os.path.dirname(__file__)))
    for _ in range(3000):
        os.mkdir('d')
        os.chdir('d')
"""})
    v = run_tests(ws, limits=QUICK)
    assert v.outcomes and not v.error
    patches = [{"x.py": "y = 2\n"}, {"x.py": "y = 1\n"}]
    assert len(list(verify_many(ws, patches, ["tests/test_deep.py::test_deep"], limits=QUICK))) == 2
    assert not [p for p in Path(tempfile.gettempdir()).glob("ledex-sbx-*") if (p / "ws" / "d").exists()]


def test_a_pool_thread_that_dies_fails_its_verdict(tmp_path, monkeypatch):
    ws = write_tree(tmp_path / "ws", {"pkg/calc.py": "def add(a, b):\n    return a - b\n",
                                      "tests/test_calc.py": "from pkg.calc import add\n\n\ndef test_add():\n"
                                                            "    assert add(1, 2) == 3\n"})
    real = sandbox_api._Job.run

    def dies_on_second(self):  # noqa: ANN001
        if "# two" in self.request["patch"]["pkg/calc.py"]:
            raise MemoryError("thread died")
        return real(self)

    monkeypatch.setattr(sandbox_api._Job, "run", dies_on_second)
    patches = [{"pkg/calc.py": "def add(a, b):\n    return a + b\n"},
               {"pkg/calc.py": "def add(a, b):\n    return a + b\n# two\n"}]
    done = {}
    worker = threading.Thread(target=lambda: done.update(verify_many(ws, patches, [ADD], limits=QUICK)))
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "verify_many hung on a dead pool thread"
    assert done[0].passed and not done[1].passed and "thread died" in done[1].error


def test_memory_is_bounded_for_the_whole_run_not_each_process(tmp_path, cgroups):
    body = """
import multiprocessing, time

def hog(_):
    block = b'x' * (150 << 20)  # resident, well under the per-process limit
    time.sleep(6)  # all five alive at once: the cgroup or the watch sees their sum

def test_hog():
    procs = [multiprocessing.Process(target=hog, args=(i,)) for i in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
"""
    v = run_tests(probe_ws(tmp_path, body), limits=Limits(wall_s=40, memory_mb=512, nproc=32))
    assert not v.passed and v.killed_reason == "memory", (v.error, v.killed_reason)


def test_without_a_cgroup_few_processes_bound_the_address_space():
    from ledex.sandbox import isolation, limits

    argv = isolation.wrap("unshare", ["python"], writable=[], readonly=[], cwd=Path("/"),
                          limits=Limits(nproc=256, memory_mb=512), ids=None, view={})
    expected = limits.FALLBACK_NPROC * (len(os.sched_getaffinity(0)) if os.geteuid() == 0 else 1)
    assert f"--nproc={min(256, expected)}" in argv and f"--as={512 << 20}" in argv
    with_cgroup = isolation.wrap("none", ["python"], writable=[], readonly=[], cwd=Path("/"),
                                 limits=Limits(nproc=256), ids=None, view={"cgroup": "/sys/fs/cgroup/x"})
    assert "--nproc=256" in with_cgroup and with_cgroup[:2] == ["sh", "-c"]


SYSTEM_PYTHON = "/usr/bin/python3"


def _system_pytest() -> bool:
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import pytest"], capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not _system_pytest() or detect_mode() != "bubblewrap",
                    reason="needs root (to become a normal user), bubblewrap and a system python with pytest")
def test_a_normal_user_gets_the_same_view():
    """Not only root: ledex itself run by uid 65534 with the system python (apt's python3-pytest)."""
    base = Path(tempfile.mkdtemp(prefix="ledex-user-test-"))  # pytest's own tmp dirs are 0700
    try:
        _run_as_normal_user(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as_normal_user(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE")
    pkg = tmp_path / "lib" / "ledex"
    shutil.copytree(Path(sandbox_api.__file__).parent, pkg / "sandbox")
    (pkg / "__init__.py").write_text("")
    ws = write_tree(tmp_path / "ws", {"pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a - b\n",
                                      "tests/test_calc.py": (
                                          "import os\nfrom pathlib import Path\nfrom pkg.calc import add\n\n\n"
                                          f"def test_add():\n    assert not Path({str(home / '.ssh')!r}).exists()\n"
                                          "    assert os.getuid() == 65534\n    assert add(1, 2) == 3\n")})
    script = ("import sys\nfrom ledex.sandbox import verify, run_tests\n"
              f"bad = run_tests({str(ws)!r})\n"
              f"good = verify({str(ws)!r}, {{'pkg/calc.py': 'def add(a, b):\\n    return a + b\\n'}}, [{ADD!r}])\n"
              "print('RESULT', bad.passed, bad.isolation, good.passed, good.error)\n")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chown(path, 65534, 65534)
    os.chmod(tmp_path, 0o755)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON, "-c", script],
                          capture_output=True, text=True, timeout=300, cwd="/",
                          env={"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(pkg.parent)})
    assert "RESULT False bubblewrap True None" in done.stdout, done.stdout + done.stderr[-3000:]


def test_isolation_report_says_what_is_and_is_not_protected():
    text = isolation_report()
    mode = detect_mode()
    assert mode in text
    assert "memory" in text and "processes" in text
    if mode == "bubblewrap":
        assert "HOME" in text and "sockets" in text
