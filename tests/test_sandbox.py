"""ledex.sandbox: normal runs, verdicts, integrity rules, parallel verification, cancellation.

Everything here runs real sandboxed pytest processes on small temp workspaces.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import snapshot, write_tree

from ledex.sandbox import Limits, PatchRejected, detect_mode, is_protected, isolation_report, run_tests, verify, verify_many
from ledex.sandbox.workspace import check_patch

BAD = "def add(a, b):\n    return a - b\n"
GOOD = "def add(a, b):\n    return a + b\n"
LOOP = "def add(a, b):\n    while True:\n        pass\n"
TESTS = ("from pkg.calc import add\n\n\n"
         "def test_add():\n    assert add(1, 2) == 3\n\n\n"
         "def test_zero():\n    assert add(0, 0) == 0\n")
ADD, ZERO = "tests/test_calc.py::test_add", "tests/test_calc.py::test_zero"
QUICK = Limits(wall_s=30)


def make_ws(tmp_path: Path, calc: str = BAD) -> Path:
    ws = tmp_path / "ws"
    return write_tree(ws, {"pkg/__init__.py": "", "pkg/calc.py": calc, "tests/test_calc.py": TESTS,
                           "pytest.ini": "[pytest]\n"})


def test_whole_suite_reports_each_test_with_real_paths(tmp_path):
    ws = make_ws(tmp_path)
    before = snapshot(ws)
    v = run_tests(ws, limits=QUICK)
    by_id = {o.nodeid: o for o in v.outcomes}
    assert not v.passed and v.error is None and v.killed_reason is None
    assert v.requested == () and v.pass_rate == pytest.approx(0.5)
    assert by_id[ZERO].outcome == "passed" and by_id[ZERO].message == ""
    fail = by_id[ADD]
    assert fail.outcome == "failed" and "assert -1 == 3" in fail.message
    assert (fail.file, fail.line) == ("tests/test_calc.py", 4)
    assert f'File "{ws}/pkg/calc.py", line 2, in add' not in fail.details  # the test frame fails
    assert f'File "{ws}/tests/test_calc.py", line 5, in test_add' in fail.details
    assert "ledex-sbx" not in fail.details and "_pytest" not in fail.details.splitlines()[1]
    assert v.isolation == detect_mode()
    assert snapshot(ws) == before


def test_traceback_frames_in_source_are_rewritten(tmp_path):
    ws = make_ws(tmp_path, calc="def add(a, b):\n    raise ValueError('boom')\n")
    v = run_tests(ws, [ADD], limits=QUICK)
    (out,) = v.outcomes
    assert out.outcome == "failed" and out.message.startswith("ValueError: boom")
    assert f'File "{ws}/pkg/calc.py", line 2, in add' in out.details


def test_verify_good_patch_passes_without_touching_workspace(tmp_path):
    ws = make_ws(tmp_path)
    before = snapshot(ws)
    v = verify(ws, {"pkg/calc.py": GOOD}, [ADD, ZERO], limits=QUICK)
    assert v.passed and v.pass_rate == 1.0 and v.error is None
    assert v.requested == (ADD, ZERO) and {o.nodeid for o in v.outcomes} == {ADD, ZERO}
    assert snapshot(ws) == before


def test_verify_partial_fix_has_partial_pass_rate(tmp_path):
    ws = make_ws(tmp_path)
    v = verify(ws, {"pkg/calc.py": "def add(a, b):\n    return 3\n"}, [ADD, ZERO], limits=QUICK)
    assert not v.passed and v.pass_rate == pytest.approx(0.5)


def test_requested_test_that_does_not_exist_is_not_a_pass(tmp_path):
    ws = make_ws(tmp_path, calc=GOOD)
    v = run_tests(ws, [ADD, "tests/test_calc.py::test_missing"], limits=QUICK)
    assert not v.passed and v.error and v.pass_rate < 1.0


def test_file_level_request_counts_every_test(tmp_path):
    ws = make_ws(tmp_path)
    v = verify(ws, {"pkg/calc.py": GOOD}, ["tests/test_calc.py"], limits=QUICK)
    assert v.passed and len(v.outcomes) == 2


def test_syntax_error_in_candidate_is_a_collection_error(tmp_path):
    ws = make_ws(tmp_path)
    v = verify(ws, {"pkg/calc.py": "def add(a, b) return\n"}, [ADD], limits=QUICK)
    assert not v.passed and v.pass_rate == 0.0
    assert "collection error" in v.error and "SyntaxError" in v.error
    assert any(o.outcome == "error" for o in v.outcomes)


def test_a_test_modules_own_syntax_error_names_its_line(tmp_path):
    ws = make_ws(tmp_path)
    (ws / "tests" / "test_broken.py").write_text("import os\n\n\ndef test_x(:\n    pass\n")
    v = run_tests(ws, ["tests/test_broken.py"], limits=QUICK)
    assert v.error.startswith("collection error in tests/test_broken.py: SyntaxError") and v.error.endswith("(line 4)")


@pytest.mark.parametrize("rel", ["tests/test_calc.py", "tests/conftest.py", "conftest.py",
                                 "pytest.ini", "pytest.py", "tests/helpers.py", "pkg/test_x.py"])
def test_patch_touching_tests_or_config_is_rejected(tmp_path, rel):
    ws = make_ws(tmp_path)
    before = snapshot(ws)
    v = verify(ws, {"pkg/calc.py": GOOD, rel: "def test_add():\n    pass\n"}, [ADD], limits=QUICK)
    assert not v.passed and v.error.startswith("rejected patch") and "protected" in v.error
    assert v.outcomes == () and snapshot(ws) == before


def test_patch_echoing_an_unchanged_test_file_is_accepted(tmp_path):
    ws = make_ws(tmp_path)
    v = verify(ws, {"pkg/calc.py": GOOD, "tests/test_calc.py": TESTS}, [ADD], limits=QUICK)
    assert v.passed


def test_patch_paths_outside_the_workspace_are_rejected(tmp_path):
    ws = make_ws(tmp_path)
    for rel in ("../evil.py", "/etc/evil.py", ".git/hooks/pre-commit"):
        with pytest.raises(PatchRejected):
            check_patch(ws, {rel: "x = 1\n"})
    assert not (tmp_path / "evil.py").exists()


def test_a_patch_into_build_output_is_rejected_and_into_a_package_named_build_is_not(tmp_path):
    """Build output (a `build` folder without __init__.py) is left out of the copy and never
    patched; a package named `build` is the project's code (sandbox.is_build_output)."""
    ws = make_ws(tmp_path)
    write_tree(ws, {"build/lib/calc.py": "x = 1\n", "src/build/calc.py": "x = 1\n", "src/build/__init__.py": ""})
    with pytest.raises(PatchRejected, match="ignored directory"):
        check_patch(ws, {"build/lib/calc.py": "x = 2\n"})
    assert check_patch(ws, {"src/build/calc.py": "x = 2\n"}) == {"src/build/calc.py": "x = 2\n"}


def test_pyproject_edit_allowed_only_outside_pytest_section(tmp_path):
    ws = make_ws(tmp_path)
    (ws / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n')
    ok = '[project]\nname = "y"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n'
    bad = '[project]\nname = "x"\n\n[tool.pytest.ini_options]\naddopts = "-q -p no:ledex"\n'
    assert check_patch(ws, {"pyproject.toml": ok}) == {"pyproject.toml": ok}
    with pytest.raises(PatchRejected):
        check_patch(ws, {"pyproject.toml": bad})


def test_protected_classification():
    assert all(map(is_protected, ["tests/a.py", "test_a.py", "pkg/a_test.py", "conftest.py",
                                  "setup.cfg", "pkg/sub/conftest.py", "_pytest/x.py", "x.pth"]))
    assert not any(map(is_protected, ["pkg/calc.py", "setup.py", "pkg/testutil.py"]))


def test_large_files_are_shared_but_never_written_through(tmp_path):
    ws = make_ws(tmp_path, calc=(
        "from pathlib import Path\n\n"
        "def add(a, b):\n"
        "    try:\n"
        "        with open('data.bin', 'r+b') as fh:\n"
        "            fh.write(b'PWNED')\n"
        "    except OSError:\n"
        "        pass\n"
        "    return a + b\n"))
    (ws / "data.bin").write_bytes(b"\0" * (2 << 20))
    before = snapshot(ws)
    v = run_tests(ws, [ADD], limits=QUICK)
    assert v.outcomes and snapshot(ws) == before


def test_a_previous_coverage_data_file_does_not_stop_the_tests_writing_a_new_one(tmp_path):
    """pytest-cov erases and rewrites .coverage in the rootdir (parse 1.22.4 ships --cov in its
    options); a large stale one was linked read-only into the copy: "readonly database"."""
    ws = write_tree(tmp_path / "ws", {"tests/test_cov.py": (
        "import sqlite3\n\n\ndef test_writes_coverage_data():\n"
        "    con = sqlite3.connect('.coverage')\n    con.execute('create table if not exists t (x)')\n"
        "    con.execute('insert into t values (1)')\n    con.commit()\n"),
        ".coveragerc": "[run]\nbranch = True\n"})
    stale = sqlite3.connect(ws / ".coverage")
    stale.execute("create table t (x)")
    stale.execute("insert into t values (?)", (b"\0" * (2 << 20),))  # large: linked, not copied
    stale.commit()
    stale.close()
    (ws / ".coverage.host.1.2").write_bytes(b"\0" * 10)
    before = snapshot(ws)
    v = run_tests(ws, limits=QUICK)
    assert [(o.outcome, o.message) for o in v.outcomes] == [("passed", "")] and v.error is None
    assert snapshot(ws) == before

def test_verify_many_yields_every_candidate_by_index(tmp_path):
    ws = make_ws(tmp_path)
    patches = [{"pkg/calc.py": BAD}, {"pkg/calc.py": GOOD}, {"pkg/calc.py": BAD}, {"pkg/calc.py": GOOD}]
    results = dict(verify_many(ws, patches, [ADD], limits=QUICK, workers=2))
    assert sorted(results) == [0, 1, 2, 3]
    assert {i for i, v in results.items() if v.passed} == {1, 3}


def test_verify_many_stops_at_first_verified_fix_and_kills_the_rest(tmp_path):
    ws = make_ws(tmp_path)
    patches = [{"pkg/calc.py": LOOP}, {"pkg/calc.py": GOOD}, {"pkg/calc.py": LOOP}, {"pkg/calc.py": LOOP}]
    start = time.monotonic()
    got = []
    for i, v in verify_many(ws, patches, [ADD], limits=Limits(wall_s=60), workers=2):
        got.append((i, v.passed))
        if v.passed:
            break  # the caller stops iterating: the rest are cancelled and killed
    assert got == [(1, True)]
    assert time.monotonic() - start < 30  # the looping candidates were killed, not waited for


def test_verify_many_cancel_event_kills_running_candidates(tmp_path):
    ws = make_ws(tmp_path)
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    start = time.monotonic()
    got = list(verify_many(ws, [{"pkg/calc.py": LOOP}] * 3, [ADD], limits=Limits(wall_s=60),
                           workers=2, cancel=cancel))
    assert got == [] and time.monotonic() - start < 20


def test_custom_command_with_placeholders(tmp_path):
    ws = make_ws(tmp_path, calc=GOOD)
    cmd = ["{python}", "-m", "pytest", "-p", "no:asyncio", "--junitxml={junit}", "{tests}"]
    v = run_tests(ws, [ADD], limits=QUICK, command=cmd)
    assert v.passed and [o.nodeid for o in v.outcomes] == [ADD]


@pytest.mark.parametrize("prefix", [["env", "PYTHONPATH=src", "PYTEST_ADDOPTS=-p no:asyncio"],
                                    ["PYTHONPATH=src", "PYTEST_ADDOPTS=-p no:asyncio"]])
def test_a_commands_pythonpath_joins_the_sandboxs(tmp_path, prefix):
    """`env PYTHONPATH=src {python} -m pytest` (a src layout without an install) replaced the
    sandbox's PYTHONPATH, which carries its plugin: every run said "Error importing plugin" (fresh-user
    run X5). The command's entries are added to the sandbox's; a bare `VAR=value` prefix runs
    through env; PYTEST_ADDOPTS joins the sandbox's options the same way."""
    ws = write_tree(tmp_path / "ws", {"src/calc.py": "def add(a, b):\n    return a - b\n",
                                      "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n"
                                                            "    assert add(1, 2) == 3\n"})
    cmd = [*prefix, "{python}", "-m", "pytest", "--junitxml={junit}", "{tests}"]
    failing = run_tests(ws, ["tests/test_calc.py::test_add"], limits=QUICK, command=cmd)
    assert failing.error is None and [(o.nodeid, o.outcome) for o in failing.outcomes] == [
        ("tests/test_calc.py::test_add", "failed")] and "assert -1 == 3" in failing.outcomes[0].message
    fixed = verify(ws, {"src/calc.py": "def add(a, b):\n    return a + b\n"}, ["tests/test_calc.py::test_add"],
                   limits=QUICK, command=cmd)
    assert fixed.passed


def test_a_pytest_command_without_junit_placeholder_still_reports(tmp_path):
    """`{python} -m pytest -o pythonpath=src {tests}` (fresh-user run X5) has no `{junit}`: pytest
    wrote no report and every run was an error ("no readable JUnit report"). The sandbox asks for
    the report through PYTEST_ADDOPTS instead."""
    ws = make_ws(tmp_path, calc=GOOD)
    v = run_tests(ws, [ADD], limits=QUICK, command=["{python}", "-m", "pytest", "-p", "no:asyncio", "{tests}"])
    assert v.passed and v.error is None and [o.nodeid for o in v.outcomes] == [ADD]


@pytest.fixture(scope="module")
def python_without_coverage():
    """A virtualenv with pytest and nothing else (no coverage.py), as many projects' are; in a
    world-readable folder (as root, the sandbox runs tests as an unprivileged user)."""
    import _pytest
    import iniconfig
    import packaging
    import pluggy
    import py
    import pygments

    root = Path(tempfile.mkdtemp(prefix="ledex-bare-env-"))
    root.chmod(0o755)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True)
    lib = root / "lib"
    lib.mkdir()
    for module in (pytest, _pytest, pluggy, iniconfig, packaging, pygments, py):
        source = Path(module.__file__)
        source = source.parent if source.name == "__init__.py" else source
        if source.is_dir():  # copies: the sandbox's view of the file system binds the paths a .pth names
            shutil.copytree(source, lib / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, lib / source.name)
    (next(root.glob("env/lib/python3*/site-packages")) / "lib.pth").write_text(f"{lib}\n")
    python = root / "env" / "bin" / "python"
    assert subprocess.run([python, "-c", "import coverage"], capture_output=True).returncode != 0
    yield python
    shutil.rmtree(root)


def test_coverage_is_measured_where_the_projects_interpreter_lacks_coverage_py(tmp_path, python_without_coverage):
    """A project's virtualenv without coverage.py got no coverage, so no suspect was ranked by it
    (fresh-user run X5, itsdangerous): the coverage run falls back on a copy of ledex's own."""
    ws = make_ws(tmp_path)
    v = run_tests(ws, [ADD], limits=QUICK, coverage=True, python=str(python_without_coverage))
    assert [o.outcome for o in v.outcomes] == ["failed"], v.error
    assert v.coverage and v.coverage[ADD]["pkg/calc.py"], v.notes


def test_command_that_is_not_pytest_is_an_error_not_a_pass(tmp_path):
    ws = make_ws(tmp_path, calc=GOOD)
    v = run_tests(ws, [ADD], limits=QUICK, command=["true"])
    assert not v.passed and v.exit_code == 0 and "never started pytest" in v.error


def test_worker_speaks_one_json_request_one_json_verdict(tmp_path):
    ws = make_ws(tmp_path, calc=GOOD)
    root = tmp_path / "root"
    root.mkdir()
    req = {"workspace": str(ws), "root": str(root), "tests": [ADD], "patch": None,
           "limits": QUICK.to_dict(), "python": sys.executable, "run_id": "t1"}
    done = subprocess.run([sys.executable, "-m", "ledex.sandbox.worker"], input=json.dumps(req),
                          capture_output=True, text=True, timeout=120)
    data = json.loads(done.stdout)
    assert data["passed"] is True and data["outcomes"][0]["nodeid"] == ADD
    shutil.rmtree(root, ignore_errors=True)


def test_isolation_report_names_the_mode():
    report = isolation_report()
    assert detect_mode() in report.lower() or "none" in report.lower()


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-r", "-n", "-p", "-f", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="unshare -r -n -p is not permitted here")
def test_unshare_fallback_runs_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_SANDBOX_ISOLATION", "unshare")
    ws = make_ws(tmp_path)
    bad = run_tests(ws, [ADD], limits=QUICK)
    good = verify(ws, {"pkg/calc.py": GOOD}, [ADD, ZERO], limits=QUICK)
    assert bad.isolation == good.isolation == "unshare"
    assert not bad.passed and bad.outcomes[0].outcome == "failed"
    assert f'File "{ws}/tests/test_calc.py", line 5' in bad.outcomes[0].details
    assert good.passed and good.pass_rate == 1.0


def test_forced_none_isolation_still_runs_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEDEX_SANDBOX_ISOLATION", "none")
    ws = make_ws(tmp_path)
    v = verify(ws, {"pkg/calc.py": GOOD}, [ADD], limits=QUICK)
    assert v.passed and v.isolation == "none"
    assert "NONE" in isolation_report()
