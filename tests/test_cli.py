"""`ledex fix` end to end, as a user runs it: a real subprocess, the real embedded model,
the real sandbox; every claim it makes is checked independently."""

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import outcomes_of, tree_digest, write_tree

from ledex.engine.patching import unified_diff

RIGHT_STOCK = "It excludes the threshold.\n```python\ndef is_low_stock(quantity, threshold):\n    return quantity <= threshold\n```"


def ledex(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledex.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)


def apply_diff(workspace: Path, diff: str, path: str) -> None:
    """Apply a unified diff of one file with `patch` semantics, independently of ledex."""
    proc = subprocess.run(["patch", "-p1", "--no-backup-if-mismatch"], input=diff, text=True,
                          cwd=workspace, capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fix_with_the_embedded_model_reports_and_never_touches_files(example, tmp_path):
    before = tree_digest(example)
    # 1 answer of at most 200 tokens per failure: the real model end to end, sized for a CPU
    proc = ledex("fix", str(example), "--json", "--samples", "1", "--rounds", "1", "--max-tokens", "200", "--no-search")
    assert proc.returncode in (0, 1), proc.stderr
    document = json.loads(proc.stdout)
    assert document["model"]["id"].startswith("SmolLM2-135M-Instruct.Q4_1.gguf@")
    assert {f["test"] for f in document["failures"]} == {
        "tests/test_stock.py::test_low_stock_at_threshold",
        "tests/test_pricing.py::test_discount_takes_percent_off",
        "tests/test_text.py::test_slugify_lowercases_and_joins"}
    for failure in document["failures"]:
        assert failure["file"] and failure["line"] and failure["message"]
        answers = len(failure["candidates"]) + len(failure["unusable"])
        assert answers == 1  # K=1 answer: a candidate, or an unusable answer with a reason
        assert all(u["reason"] for u in failure["unusable"])
    assert tree_digest(example) == before  # no --apply: nothing written
    verified = [(f, c) for f in document["failures"] for c in f["candidates"] if c["verified"]]
    for failure, candidate in verified:  # re-run the tests ourselves for every verified claim
        copy = tmp_path / f"check-{abs(hash(candidate['diff']))}"
        subprocess.run(["cp", "-r", str(example), str(copy)], check=True)
        apply_diff(copy, candidate["diff"], failure["suspect"]["path"])
        assert outcomes_of(copy, failure["test"]) == {failure["test"]: "passed"}
    all_fixed = all(any(c["verified"] for c in f["candidates"]) for f in document["failures"])
    assert proc.returncode == (0 if all_fixed else 1)


@pytest.mark.long  # ~19 s; the embedded model through the CLI stays in make test (JSON output)
def test_text_output_shows_explanations_and_diffs(example):
    proc = ledex("fix", str(example), "--samples", "1", "--rounds", "1", "--max-tokens", "200",
                 "--test", "tests/test_stock.py")
    assert proc.returncode in (0, 1), proc.stderr
    assert "FAILED tests/test_stock.py::test_low_stock_at_threshold" in proc.stdout
    assert "suspect: inventory/stock.py::is_low_stock" in proc.stdout
    assert "failure(s) have a verified fix (model SmolLM2-135M" in proc.stdout


def test_every_problems_search_comes_before_any_problems_model_rounds(tmp_path):
    """greet's bug needs the model, add's is one edit the search finds in seconds: add's search
    used to wait for greet's model rounds (minutes with a real model: fresh-user run X5). Now
    greet is searched, add is searched and fixed, and greet gets the model's turn, with add's fix
    in place; both are reported, in the order they were done."""
    ws = write_tree(tmp_path / "ws", {
        "calc.py": 'def greet(name):\n    return "hello"\n\n\ndef add(a, b):\n    return a - b\n',
        "test_calc.py": ("from calc import add, greet\n\n\ndef test_greet():\n    assert greet('bo') == 'hello bo'\n\n\n"
                         "def test_add():\n    assert add(1, 2) == 3\n")})
    model = replay_file(tmp_path, ['Greets without the name.\n```python\ndef greet(name):\n    return "hello " + name\n```'])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = [line.removeprefix("ledex:").strip() for line in proc.stderr.splitlines()
              if line.startswith(("ledex: fixing", "ledex:   "))]
    assert stages == ["fixing 1 of 2: test_calc.py::test_greet (suspect greet)", stages[1],  # after its baseline re-run
                      stages[2], "fixing 2 of 2: test_calc.py::test_add (suspect add)", stages[4], stages[5],
                      "fixing 1 of 2: test_calc.py::test_greet (suspect greet), the model's turn", stages[7], stages[8]]
    assert stages[7].startswith("round 1: generating") and stages[2].startswith("search: done")
    assert stages[1].startswith("search: single-site edits (0/1) at ")
    assert proc.stdout.index("FAILED test_calc.py::test_add") < proc.stdout.index("FAILED test_calc.py::test_greet")
    assert "candidate 1 (written by the model, round 1) [verified]" in proc.stdout
    assert "ledex: 2 of 2 failure(s) have a verified fix" in proc.stdout


def test_a_verified_edit_that_may_fit_the_tests_says_so(tmp_path):
    """A verified search edit of a constant may fit the tests rather than the bug, so the model is
    asked too (README); the user saw the model's round run after a verified fix and no reason
    (fresh-user run X6, packaging 24.2). The candidate says so, in text and JSON."""
    ws = write_tree(tmp_path / "ws", {"calc.py": "def double(x):\n    return x * 3\n",
                                      "test_calc.py": "from calc import double\n\n\ndef test_double():\n"
                                                      "    assert double(4) == 8\n"})
    args = ("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1")
    text = ledex(*args)
    assert "[verified; a changed constant may fit the tests rather than the bug]" in text.stdout, text.stdout
    (failure,) = json.loads(ledex(*args, "--json").stdout)["failures"]
    best = failure["candidates"][0]
    assert best["verified"] and best["overfit_risk"] and "return x * 2" in best["diff"]


def test_apply_writes_a_fix_marked_as_an_overfitting_risk_only_when_asked(tmp_path):
    """marshmallow 3.23.1 (fresh-user run X12 F2): `pass` for `_registry[fullpath] = [cls]` (a dropped
    statement) verified, was marked "may fit the tests rather than the bug", and --apply wrote it and
    exited 0: the registry then kept stale classes. Such a fix is written with --apply-risky only."""
    files = {"calc.py": "def double(x):\n    return x * 3\n",
             "test_calc.py": "from calc import double\n\n\ndef test_double():\n    assert double(4) == 8\n"}
    ws = write_tree(tmp_path / "ws", files)
    args = ("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--json")
    refused = ledex(*args, "--apply")
    (failure,) = json.loads(refused.stdout)["failures"]
    assert failure["candidates"][0]["overfit_risk"] and failure["applied"] is None, failure
    assert failure["not_applied"].startswith("a changed constant may fit the tests rather than the bug, so it is not "
                                             "written") and "--apply-risky" in failure["not_applied"]
    assert (ws / "calc.py").read_text() == files["calc.py"] and refused.returncode == 1
    written = ledex(*args, "--apply-risky")
    assert json.loads(written.stdout)["failures"][0]["applied"] and written.returncode == 0, written.stdout
    assert (ws / "calc.py").read_text() == "def double(x):\n    return x * 2\n"


def test_package_metadata_and_a_package_named_build_are_the_projects_own(tmp_path):
    """The sandbox runs the tests as the user's own run does (fresh-user run X7, wcwidth: the copy
    left out `*.egg-info`, so importlib.metadata failed there only and a passing test was reported
    failing). A package named `build` is code to copy, localise and fix, not build output."""
    ws = write_tree(tmp_path / "ws", {
        "mytool.egg-info/PKG-INFO": "Metadata-Version: 2.1\nName: mytool\nVersion: 1.2.3\n",
        "build/__init__.py": "def is_big(x):\n    return x > 10\n",
        "dist/app.whl": "not a package: build output",
        "tests/test_tool.py": "import importlib.metadata\n\nfrom build import is_big\n\n\n"
                              "def test_version():\n    assert importlib.metadata.version('mytool') == '1.2.3'\n\n\n"
                              "def test_is_big():\n    assert is_big(10)\n"})
    assert outcomes_of(ws)["tests/test_tool.py::test_version"] == "passed"  # as the user runs it
    done = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--json", "--samples", "1", "--rounds", "1")
    (failure,) = json.loads(done.stdout)["failures"]  # test_version passes in the sandbox too
    assert failure["test"] == "tests/test_tool.py::test_is_big" and failure["suspect"]["path"] == "build/__init__.py"
    assert failure["candidates"][0]["verified"] and "+    return x >= 10" in failure["candidates"][0]["diff"], done.stderr


def test_a_fix_apply_cannot_write_is_shown_with_its_reason_and_exits_1(tmp_path):
    """--apply on an immutable file (chattr +i) stopped the run with an internal error and a
    traceback, and the verified diff was lost (fresh-user run X5): the diff and why it was not
    written are on stdout, the file is unchanged, the exit status says the failure is left unfixed."""
    ws = write_tree(tmp_path / "ws", {"calc.py": "def add(a, b):\n    return a - b\n",
                                      "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"})
    if subprocess.run(["chattr", "+i", str(ws / "calc.py")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--apply")
        document = json.loads(ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1",
                                    "--rounds", "1", "--apply", "--json").stdout)
    finally:
        subprocess.run(["chattr", "-i", str(ws / "calc.py")])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "+    return a + b" in proc.stdout and "not applied: cannot write calc.py: Operation not permitted" in proc.stdout
    assert "1 of 1 failure(s) have a verified fix; 1 verified fix(es) not written" in proc.stdout
    (failure,) = document["failures"]
    assert failure["applied"] is None and failure["not_applied"].startswith("cannot write calc.py")
    assert (ws / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


def test_apply_leaves_a_read_only_file_as_it_is(tmp_path):
    """The atomic replace needs only the folder's write permission: a mode-0444 file was
    overwritten (as root any file; fresh-user run X9). --apply refuses it with the diff shown."""
    ws = write_tree(tmp_path / "ws", {"calc.py": "def add(a, b):\n    return a - b\n",
                                      "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"})
    (ws / "calc.py").chmod(0o444)
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--apply")
    assert proc.returncode == 1 and "+    return a + b" in proc.stdout, proc.stdout + proc.stderr
    assert "not applied: calc.py is read-only (mode 0444): not written" in proc.stdout
    assert (ws / "calc.py").read_text() == "def add(a, b):\n    return a - b\n" and (ws / "calc.py").stat().st_mode & 0o777 == 0o444


def test_failures_an_unwritten_fix_repairs_are_tried_with_it_in_a_scratch_copy(tmp_path):
    """--apply could not write a verified fix (immutable file): the failures it repairs were
    then given model rounds of their own and reported FAILED (fresh-user run X7). They are
    re-run with it in a scratch copy, as a dry run does, and pass there; the files are unchanged."""
    ws = write_tree(tmp_path / "ws", {
        "calc.py": "def add(a, b):\n    return a - b\n",
        "total.py": "from calc import add\n\n\ndef total(items):\n    result = 0\n    for item in items:\n"
                    "        result = add(result, item)\n    return result\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        "test_total.py": "from calc import add\nfrom total import total\n\n\ndef test_total():\n"
                         "    assert total([1, 2]) == 3\n\n\ndef test_add_zero():\n    assert add(0, 0) == 0\n"})
    if subprocess.run(["chattr", "+i", str(ws / "calc.py")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--apply")
    finally:
        subprocess.run(["chattr", "-i", str(ws / "calc.py")])
    assert "not applied: cannot write calc.py: Operation not permitted" in proc.stdout, proc.stdout + proc.stderr
    assert ("FAILED test_total.py::test_total (test_total.py:5)\n  assert -3 == 3\n  passes with the fix for "
            "test_calc.py::test_add in place (tried in a scratch copy: that fix could not be written)") in proc.stdout
    assert "1 verified fix(es) not written" in proc.stdout and proc.returncode == 1
    assert "answer(s) unusable" not in proc.stdout  # the model was not asked about total
    assert (ws / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert "result = add(result, item)" in (ws / "total.py").read_text()


def test_failures_one_fix_makes_pass_are_listed_under_one_block(tmp_path):
    """pathspec 0.12.1 (fresh-user run X10 F8): 17 failures the first problem's fix made pass were
    17 identical blocks; the ones after the first are one line each."""
    ws = write_tree(tmp_path / "ws", {
        "calc.py": ("def add(a, b):\n    return a - b\n\n\ndef total(items):\n    result = 0\n    for item in items:\n"
                    "        result = add(result, item)\n    return result\n\n\ndef mean(items):\n"
                    "    return add(items[0], items[1]) / 2\n"),
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        # add passes in each file too: total and mean are their failures' top suspects, two more problems
        "test_total.py": ("from calc import add, total\n\n\ndef test_total():\n    assert total([1, 2]) == 3\n\n\n"
                          "def test_add_zero():\n    assert add(0, 0) == 0\n"),
        "test_mean.py": ("from calc import add, mean\n\n\ndef test_mean():\n    assert mean([1, 3]) == 2\n\n\n"
                         "def test_add_one():\n    assert add(1, 0) == 1\n")})
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1")
    covered = [line for line in proc.stdout.splitlines() if "passes with the fix for test_calc.py::test_add" in line]
    assert len(covered) == 1 and proc.returncode == 0, proc.stdout
    assert "\n  and test_" in proc.stdout and proc.stdout.count("\nFAILED ") == 2


def test_a_search_its_budget_ended_before_any_fix_says_so():
    """tinycss2 (fresh-user run X10 F10): the search ran out of time with its verifications still
    running, and the result said only "not verified"."""
    from types import SimpleNamespace

    from ledex.cli_output import cut_short
    from ledex.engine.search import SearchStats

    stats = SearchStats(candidates=40, screened=12, verified_runs=1, seconds=60.2, stopped="time")
    unverified = SimpleNamespace(verified=False, source="search")
    assert cut_short(SimpleNamespace(search=stats, candidates=[unverified])) == (
        "the search used its 60 s before verifying a fix (12 of 40 edits screened, 1 verification run(s)); "
        "--search-seconds gives it more")
    found = SimpleNamespace(verified=True, source="search")
    assert cut_short(SimpleNamespace(search=stats, candidates=[found])) == ""
    assert cut_short(SimpleNamespace(search=SearchStats(stopped="exhausted"), candidates=[])) == ""
    runs = SearchStats(candidates=900, screened=600, seconds=41.0, stopped="runs")  # X12 F9: seconds would not help
    assert cut_short(SimpleNamespace(search=runs, candidates=[unverified])).endswith(
        "used its test runs before verifying a fix (600 of 900 edits screened, 0 verification run(s)); its test runs "
        "are bounded (the function may be the wrong suspect)")


def test_the_search_budget_is_the_users_and_running_out_of_it_is_said_as_it_happens(example, tmp_path):
    """dpath 2.2.0 (fresh-user run X11 F1): in a whole run the search's 60 s ran out before its right
    edit verified (23 s alone), the progress line said "search: done" and no flag could give it more."""
    args = ["fix", str(example), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1",
            "--test", "tests/test_stock.py"]
    short = ledex(*args, "--search-seconds", "0.2")
    assert "ledex:   search: used its 0 s before verifying a fix (" in short.stderr, short.stderr
    assert "--search-seconds gives it more" in short.stdout and "[verified" not in short.stdout, short.stdout
    enough = ledex(*args, "--search-seconds", "120")
    assert "ledex:   search: done" in enough.stderr and "[verified" in enough.stdout, enough.stdout


def test_fixes_of_the_same_line_the_tests_cannot_tell_apart_are_marked_and_not_written(tmp_path):
    """hyperlink 21.0.0 (fresh-user run X11 F7): `split(":")[-1]` -> `[-2]` and the exact inverse `[0]`
    both verified; `[-2]`, wrong for every URL without a password, ranked first and --apply wrote it."""
    ws = write_tree(tmp_path / "ws", {
        "names.py": "def first_name(full):\n    return full.split(' ')[-1]\n",
        "tests/test_names.py": "from names import first_name\n\n\ndef test_first():\n    assert first_name('ada lovelace') == 'ada'\n"})
    before = tree_digest(ws)
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--apply", "--json")
    (failure,) = json.loads(proc.stdout)["failures"]
    verified = [c for c in failure["candidates"] if c["verified"]]
    assert {c["diff"].splitlines()[-1].strip() for c in verified} >= {"+    return full.split(' ')[0]", "+    return full.split(' ')[-2]"}
    assert all(c["alternatives"] == len(verified) - 1 and c["overfit_risk"] for c in verified), verified
    assert failure["not_applied"].startswith(f"the tests pass with {len(verified)} different edits of the same line")
    assert tree_digest(ws) == before and proc.returncode == 1, proc.stdout
    text = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1")
    assert "1 of 1 failure(s) have a verified fix; 1 of them only by a fix that may fit the tests rather than the bug" \
        in text.stdout, text.stdout  # not called fixed without a word (X11 F11)


def test_the_problem_with_most_failing_tests_is_fixed_first(tmp_path):
    """hyperlink 21.0.0 (fresh-user run X11 F2): four one-test problems were searched for 100 s
    before the 13-test problem whose fix repaired them all; discovery order put them first."""
    ws = write_tree(tmp_path / "ws", {
        "calc.py": "def half(x):\n    return x // 3\n\n\ndef double(x):\n    return x * 3\n",
        "tests/test_a.py": "from calc import half\n\n\ndef test_half():\n    assert half(4) == 2\n",
        "tests/test_b.py": "".join(f"from calc import double\n\n\ndef test_double_{n}():\n    assert double({n}) == {2 * n}\n"
                                   if n == 1 else f"\n\ndef test_double_{n}():\n    assert double({n}) == {2 * n}\n"
                                   for n in (1, 2, 3))})
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1")
    order = re.findall(r"^ledex: fixing \d+ of \d+: (\S+)", proc.stderr, re.MULTILINE)
    assert order[:2] == ["tests/test_b.py::test_double_1", "tests/test_a.py::test_half"], proc.stderr


def test_apply_writes_only_the_verified_fix(example, replay_endpoint):
    url = replay_endpoint(["Always low.\n```python\ndef is_low_stock(quantity, threshold):\n    return True\n```",
                           RIGHT_STOCK])
    original = (example / "inventory" / "stock.py").read_text()
    proc = ledex("fix", str(example), "--model", url, "--samples", "2", "--rounds", "1", "--apply",
                 "--test", "tests/test_stock.py", "--no-search")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "applied the best verified fix to inventory/stock.py" in proc.stdout
    fixed = (example / "inventory" / "stock.py").read_text()
    assert "return quantity <= threshold" in fixed
    assert unified_diff("x", original, fixed).count("\n+") == 2  # one changed line (+ the header)
    assert set(outcomes_of(example, "tests/test_stock.py").values()) == {"passed"}
    again = ledex("fix", str(example), "--model", url, "--json", "--no-search")
    assert "tests/test_stock.py" not in again.stdout  # the applied fix holds on a fresh run


def test_nothing_verified_exits_1_and_bad_usage_exits_2(example, replay_endpoint, tmp_path):
    url = replay_endpoint(["no idea"])
    proc = ledex("fix", str(example), "--model", url, "--samples", "1", "--rounds", "1", "--json", "--no-search")
    assert proc.returncode == 1
    assert all(f["unusable"][0]["reason"] == "no code block in the answer" for f in json.loads(proc.stdout)["failures"])
    assert ledex("fix", str(tmp_path / "missing")).returncode == 2
    assert "workspace not found" in ledex("fix", str(tmp_path / "missing")).stderr
    bad_model = ledex("fix", str(example), "--model", str(tmp_path / "nope.gguf"))
    assert bad_model.returncode == 2 and "model file not found" in bad_model.stderr
    assert ledex("fix", "--samples", "0").returncode == 2
    as_json = ledex("fix", str(tmp_path / "missing"), "--json")  # scripts get a document, not nothing
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["error"].startswith("workspace not found")
    a_file = ledex("fix", str(example / "inventory" / "stock.py"))
    assert a_file.returncode == 2 and "is a file, not a project folder" in a_file.stderr


def test_a_test_command_pytest_collects_nothing_with_is_reported_in_pytests_words(tmp_path):
    """pathspec 0.12.1 (fresh-user run X10 F6): `{bogus}` in test-command, or a `-k` that deselects
    every test, was reported as "pytest collected no tests ... set python_files", the wrong way
    to look. An unknown placeholder is refused up front; pytest's own reason is quoted."""
    ws = write_tree(tmp_path / "ws", {"mod.py": "def f():\n    return 2\n",
                                      "tests/test_mod.py": "from mod import f\n\n\ndef test_f():\n    assert f() == 1\n"})
    bogus = ledex("fix", str(ws), "--test-command", "{python} -m pytest -q {tests} {bogus}")
    assert bogus.returncode == 2 and "unknown placeholder(s) {bogus} in test-command" in bogus.stderr, bogus.stderr
    deselected = ledex("fix", str(ws), "--test-command", "{python} -m pytest -q -k nomatchatall {tests}", "--json")
    error = json.loads(deselected.stdout)["error"]
    assert deselected.returncode == 2 and error.startswith("0 ran: no tests ran: pytest said '1 deselected"), error
    assert "python_files" not in error


def test_broken_workspaces_get_clear_notes(tmp_path):
    broken = tmp_path / "broken"
    (broken / "tests").mkdir(parents=True)
    (broken / "mod.py").write_text("def f(:\n")
    (broken / "tests" / "test_mod.py").write_text("from mod import f\n\ndef test_f():\n    assert f() == 1\n")
    (broken / "tests" / "test_hang.py").write_text("def test_ok():\n    assert True\n")
    (broken / "latin1.py").write_bytes(b"# caf\xe9\n")
    before = tree_digest(broken)
    proc = ledex("fix", str(broken), "--json")
    assert proc.returncode == 2, proc.stderr  # pytest stops at a collection error: nothing ran (issue 12 item 11)
    assert "0 ran" in proc.stderr and "test_mod.py" in proc.stderr and "SyntaxError" in proc.stderr
    assert tree_digest(broken) == before
    uncollected = write_tree(tmp_path / "uncollected", {  # jsonpointer's layout: tests.py, no pytest config
        "mod.py": "def f():\n    return 2\n", "tests.py": "from mod import f\n\n\ndef test_f():\n    assert f() == 1\n"})
    for workspace in (uncollected, tmp_path / "empty"):
        workspace.mkdir(exist_ok=True)
        proc = ledex("fix", str(workspace), "--json")  # nothing tested is nothing fixed: an error, as for pytest
        assert proc.returncode == 2 and json.loads(proc.stdout)["error"].startswith("0 ran: pytest collected no tests")
        assert "python_files" in proc.stderr and json.loads(proc.stdout)["failures"] == []


MAKE = "def make(n):\n    if n > 0:\n        raise ValueError('negative')\n    return {'n': n}\n\n\ndef double(x):\n    return x * 2\n"
ZERO = "\n\ndef test_zero():\n    from pkg.core import make\n    assert make(0) == {'n': 0}\n"
TEST_A = "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n" + ZERO


@pytest.mark.parametrize("layout", ["conftest", "module"])
def test_a_bug_that_stops_the_tests_from_being_collected_is_localised_and_fixed(tmp_path, layout):
    """marshmallow 3.23.1 (fresh-user run X12 F1): tests/conftest.py imports tests/base.py, which
    builds objects when imported; a slip in the code it calls stopped pytest before any test ran
    ("0 ran (startup error)", exit 2, no suspect). The traceback's workspace frame is the suspect,
    and the fix must let the tests be collected and pass; the same for a test module's own import."""
    files = {"pkg/__init__.py": "", "pkg/core.py": MAKE, "tests/__init__.py": "", "tests/test_a.py": TEST_A}
    if layout == "conftest":
        files |= {"tests/base.py": "from pkg.core import make\n\nTHING = make(3)\n",
                  "tests/conftest.py": "from tests.base import THING\n"}
    else:
        files |= {"tests/test_b.py": "from pkg.core import make\n\nTHING = make(3)\n\n\ndef test_thing():\n"
                                     "    assert THING == {'n': 3}\n" + ZERO}
    ws = write_tree(tmp_path / "ws", files)
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--apply",
                 "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (failure,) = json.loads(proc.stdout)["failures"]
    assert failure["test"] == ("tests" if layout == "conftest" else "tests/test_b.py")
    assert (failure["suspect"]["path"], failure["suspect"]["function"]) == ("pkg/core.py", "make")
    assert failure["applied"] == "pkg/core.py", failure
    assert "    if n < 0:\n" in (ws / "pkg/core.py").read_text()
    if layout == "conftest":
        assert failure["message"] == "tests/conftest.py could not be loaded: ValueError: negative"
    syntax = write_tree(tmp_path / "syntax", {**files, "pkg/core.py": "def make(n:\n"})  # nothing of the code to fix
    assert ledex("fix", str(syntax), "--json").returncode == 2


def test_a_conftest_hook_that_raises_is_an_error_naming_it_not_a_failure_to_fix(tmp_path):
    """pytest's INTERNALERROR (here a hook in conftest.py; in python-dateutil's suite, a mark
    warning turned error without pytest-cov) was a failing "test" pytest.py::internal to fix."""
    ws = write_tree(tmp_path / "hook", {
        "conftest.py": "def pytest_collection_modifyitems(items):\n    raise RuntimeError('broken hook')\n",
        "test_ok.py": "def test_ok():\n    assert True\n"})
    proc = ledex("fix", str(ws), "--json")
    assert proc.returncode == 2, proc.stderr
    assert json.loads(proc.stdout)["error"] == ("0 ran: pytest stopped with an internal error in conftest.py:2 "
                                                "(pytest_collection_modifyitems): RuntimeError: broken hook")


def test_a_conftest_that_does_not_parse_is_an_error_naming_its_file_and_line(tmp_path):
    ws = write_tree(tmp_path / "syntax", {"conftest.py": "import pytest\n\ndef f(:\n    pass\n",
                                          "test_ok.py": "def test_ok():\n    assert False\n"})
    proc = ledex("fix", str(ws), "--json")
    assert proc.returncode == 2, proc.stderr
    assert json.loads(proc.stdout)["error"].endswith(f"SyntaxError: invalid syntax ({ws / 'conftest.py'}:3)")

def test_a_long_reason_is_shortened_in_text_output_and_whole_in_json(tmp_path):
    """An answer that drops a failing doctest's docstring makes pytest stop at 'not found': the
    reason named every requested test (315 ids, 20 kB per candidate on humanize): the sandbox now
    names 5 and counts the rest, and the text output still keeps a long reason's start and pytest's
    error at its end (long parametrize ids make this one long)."""
    ws = write_tree(tmp_path / "doc", {
        "pytest.ini": "[pytest]\naddopts = --doctest-modules\n",
        "calc.py": 'def double(x):\n    """>>> double(2)\n    4\n    """\n    return x * 3\n',
        "test_calc.py": "import pytest\n\nimport calc\n\n\n@pytest.mark.parametrize('x', range(60), "
                        "ids=lambda x: 'a_rather_long_parameter_id_' * 4 + str(x))\n"
                        "def test_double_is_a_multiple_of_x(x):\n    assert calc.double(x) % max(x, 1) == 0\n"})
    model = replay_file(tmp_path, ["No docstring.\n```python\ndef double(x):\n    return x * 2\n```"])
    args = ("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--no-search")
    text, as_json = ledex(*args), ledex(*args, "--json")
    reason = json.loads(as_json.stdout)["failures"][0]["candidates"][0]["reason"]
    assert reason.startswith("requested tests did not run: calc.py::calc.double") and len(reason) > 600
    assert reason.count("a_rather_long_parameter_id_" * 4) == 4 and re.search(r" and \d+ more", reason)
    (line,) = [line for line in text.stdout.splitlines() if "not verified" in line]
    assert len(line) < 600 and "characters more in --json" in line and line.endswith(reason[-100:] + "]")


def test_hanging_and_interpreter_killing_tests_are_reported_not_fatal(tmp_path):
    """A test that hangs past the run's time or kills the interpreter is a failure, and ledex goes on."""
    workspace = tmp_path / "hostile"
    workspace.mkdir()
    (workspace / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    proc = ledex("fix", str(workspace), "--json", "--test-timeout", "2")
    assert proc.returncode == 1, proc.stderr  # the hanging test is a failure (issue 12 item 12b), not a crash
    (failure,) = json.loads(proc.stdout)["failures"]
    assert failure["test"] == "test_hang.py::test_hangs" and "did not finish within 2 s" in failure["message"]
    (workspace / "test_hang.py").unlink()
    (workspace / "test_exit.py").write_text("import os\n\ndef test_dies():\n    os._exit(3)\n")
    proc = ledex("fix", str(workspace), "--json")
    assert proc.returncode == 1  # a failure with nothing to fix in the workspace
    (failure,) = json.loads(proc.stdout)["failures"]
    assert failure["test"] == "test_exit.py::test_dies" and "exit code 3" in failure["message"]



def test_a_hung_test_names_the_line_it_was_stuck_at(tmp_path):
    """Text mode said only "(stack sampling)" for a hang (webcolors, fresh-user run): the line of
    the loop, which the sandbox's stack samples found, is what the user looks at first."""
    ws = write_tree(tmp_path / "ws", {"calc.py": "def count(n):\n    k = 0\n    while n != 0:\n        k += 1\n"
                                                 "        n -= 2\n    return k\n",
                                      "test_calc.py": "from calc import count\n\n\ndef test_odd():\n    assert count(3) == 2\n"})
    model = replay_file(tmp_path, ["x"])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--no-search", "--test-timeout", "1")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"suspect: calc\.py::count \(the function the hung test was stuck in, at line [3-5]\)", proc.stdout)


def test_a_large_group_names_five_of_its_other_tests_and_counts_the_rest(tmp_path):
    ws = write_tree(tmp_path / "ws", {"calc.py": "def double(x):\n    return x * 3\n", "test_calc.py": (
        "import pytest\n\nfrom calc import double\n\n\n@pytest.mark.parametrize('x', range(1, 9))\n"
        "def test_double(x):\n    assert double(x) == 2 * x\n")})
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x"]), "--samples", "1", "--rounds", "1", "--no-search")
    (line,) = [ln for ln in proc.stdout.splitlines() if "same suspect, one fix for:" in ln]
    assert line.count("test_calc.py::test_double[") == 5 and line.endswith(" and 2 more (--json lists them)")


def test_a_hanging_sibling_is_not_re_run_by_verification(tmp_path):
    """Verification runs the failing test and the siblings that passed: one that hung in the
    discovery run is left out (re-running it would kill every candidate's run at --timeout)."""
    ws = write_tree(tmp_path / "hangs", {
        "calc.py": "def double(x):\n    return x + x + 1\n",
        "test_calc.py": "import time\n\nfrom calc import double\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
                        "def test_zero_is_int():\n    assert isinstance(double(0), int)\n\n\n"
                        "def test_hangs():\n    time.sleep(600)\n"})
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef double(x):\n    return x + x\n```"])
    proc = ledex("fix", str(ws), "--model", model, "--json", "--samples", "1", "--rounds", "1", "--test-timeout", "2",
                 "--no-search")
    assert proc.returncode == 1, proc.stderr  # test_hangs has nothing in the workspace to fix
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    assert "did not finish within 2 s" in failures["test_calc.py::test_hangs"]["message"]
    double = failures["test_calc.py::test_double"]
    assert double["reruns"] == ["test_calc.py::test_double", "test_calc.py::test_zero_is_int"]
    (candidate,) = double["candidates"]
    # every test of the verification run passed: the hanging one (a timed-out failure) was not in it
    assert candidate["verified"] and candidate["pass_rate"] == 1.0, candidate["reason"]
    assert (ws / "calc.py").read_text() == "def double(x):\n    return x + x + 1\n"  # no --apply
    phases = [line for line in proc.stderr.splitlines() if re.match(r"ledex: .*: \d+\.\d s$", line)]
    assert [p.split(" (")[0].split(":")[1].strip() for p in phases] == [  # each phase ends with its seconds
        "running the tests in the sandbox", "measuring line coverage of 1 test file(s) with failures",
        "ranking suspects", "loading the model replay",
        # a dry run goes on in a copy with the fix in place, where test_hangs is re-run (as after --apply)
        "copying the project to try each fix with the ones before it", "re-running 1 failing test(s) with the fix for test_calc.py"]
    assert "ledex: 3 test(s) ran, 2 failed" in proc.stderr and "ledex: fixing 1 of 2: test_calc.py::" in proc.stderr
    timings = json.loads(proc.stdout)["timings"]
    assert timings["discovery"] >= 2 and set(timings) == {"discovery", "coverage", "ranking", "model_load", "copy", "recheck"}


def test_on_a_terminal_progress_ticks_in_place_and_the_json_on_stdout_stays_one_document(example, tmp_path):
    """stderr a terminal (a pty), stdout a pipe: the phase lines tick (spinner, seconds so far)
    from the first second on, and stdout is still one JSON document."""
    model = replay_file(tmp_path, [RIGHT_STOCK])
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ledex.cli", "fix", str(example), "--model", model, "--json",
                             "--samples", "1", "--rounds", "1", "--test", "tests/test_stock.py", "--no-search"],
                            stdout=subprocess.PIPE, stderr=child, text=True)
    os.close(child)
    chunks = []
    reader = threading.Thread(target=_drain, args=(main, chunks))
    reader.start()
    out, _ = proc.communicate(timeout=600)
    reader.join()
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0, terminal
    assert json.loads(out)["failures"][0]["candidates"][0]["verified"]
    assert re.search(r"\r[|/\\-] ledex: running the tests in the sandbox \(at most 300 s\)… \d+ s\x1b\[K", terminal)
    assert re.search(r"\r\x1b\[Kledex: running the tests in the sandbox \(at most 300 s\): \d+\.\d s", terminal)


def test_ctrl_c_stops_the_fix_under_way_and_still_reports_what_was_done(tmp_path):
    ws = write_tree(tmp_path / "two", {
        "calc.py": "def double(x):\n    return x + x + 1\n\n\ndef halve(x):\n    return x / 3\n",
        "test_calc.py": "from calc import double, halve\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
                        "def test_halve():\n    assert halve(4) == 2\n"})
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef double(x):\n    return x + x\n```",
                                   "Divide by four.\n```python\ndef halve(x):\n    return x / 4\n```",
                                   "Spin.\n```python\ndef halve(x):\n    while True:\n        pass\n```"])
    proc = subprocess.Popen([sys.executable, "-m", "ledex.cli", "fix", str(ws), "--model", model, "--json",
                             "--samples", "1", "--rounds", "2", "--timeout", "600", "--test-timeout", "0", "--no-search"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = False
    for line in proc.stderr:  # halve's round 2 answer loops forever in its verification
        second = second or line.startswith("ledex: fixing 2 of 2")
        if second and "round 2: generating" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)  # not the 600 s the verification was allowed
    assert proc.returncode == 130, err
    document = json.loads(out)
    double, halve = document["failures"]
    assert double["test"] == "test_calc.py::test_double" and double["candidates"][0]["verified"]
    # the failure under way keeps its finished candidate (round 1), not the cancelled one
    assert halve["error"] == "interrupted after 1 candidate(s)", (halve, err[-3000:])  # a dry run: nothing to apply
    assert [(c["round"], c["verified"], "x / 4" in c["diff"]) for c in halve["candidates"]] == [(1, False, True)]
    assert "interrupted: 0 failure(s) not started; your files are unchanged" in document["notes"]
    assert (ws / "calc.py").read_text().endswith("return x / 3\n")

def _drain(fd: int, chunks: list) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)

# --- issue 12: patch fidelity with --apply, the model's context, the user's environment -----

OPS = '''"""Calculator operations."""


def double(x):
    # Double a number.
    # (An old note.)
    # (Another.)
    # (One more.)
    return x + x + 1


def triple(x):
    return x * 2


def quadruple(x):
    result = double(double(x))
    if result % 4:
        raise ValueError(f"{result} is no multiple of 4")
    return result


def clamp(x, lo, hi):
    return max(lo, min(x, hi))
'''
CLAMP = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
# double runs in five passing tests too, so fault localisation (Ochiai over the file's tests)
# suspects quadruple itself for test_quadruple: a separate problem that double's fix repairs
OPS_TESTS = ("import pytest\n\nfrom calc.ops import double, quadruple, triple\n\n\n"
             "def test_double():\n    assert double(2) == 4\n\n\n"
             "@pytest.mark.parametrize('x', range(1, 6))\ndef test_double_is_positive(x):\n    assert double(x) > 0\n\n\n"
             "def test_quadruple():\n    assert quadruple(1) == 4\n\n\n"
             "def test_triple():\n    assert triple(2) == 6\n")


def replay_file(tmp_path: Path, answers: list[str]) -> str:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    return f"replay:{path}"


def test_two_fixes_in_one_file_keep_the_rest_and_a_failure_one_of_them_repaired_counts_as_fixed(tmp_path):
    ws = write_tree(tmp_path / "calc-project", {"calc/__init__.py": "", "calc/ops.py": OPS,
                                                "tests/test_ops.py": OPS_TESTS})
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef double(x): return x + x\n```",
                                   "Wrong factor.\n```python\ndef triple(x): return x * 3\n```"])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "2", "--rounds", "1", "--apply", "--json", "--no-search")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = (ws / "calc" / "ops.py").read_text()
    old_double = OPS[OPS.index("def double"):OPS.index("\n\n\ndef triple")] + "\n"
    assert written == OPS.replace(old_double, "def double(x): return x + x\n").replace(
        "def triple(x):\n    return x * 2\n", "def triple(x): return x * 3\n")  # the rest byte for byte: clamp too
    assert written.endswith("\n\n\n" + CLAMP)
    assert set(outcomes_of(ws, "tests").values()) == {"passed"}
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    assert failures["tests/test_ops.py::test_double"]["applied"] == "calc/ops.py"
    assert failures["tests/test_ops.py::test_triple"]["applied"] == "calc/ops.py"
    # quadruple raised (its own suspect), and passes once double is fixed: re-run, not reported unfixed
    assert failures["tests/test_ops.py::test_quadruple"]["fixed_by"] == "tests/test_ops.py::test_double"


class _OneAnswerThenDown(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that answers once, then fails (a server that went down)."""

    answered = False

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if type(self).answered:
            self.send_error(500, "down")
            return
        type(self).answered = True
        answer = "Off by one.\n```python\ndef double(x): return x + x\n```"
        body = json.dumps({"choices": [{"index": 0, "message": {"content": answer}, "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):  # noqa: ANN002
        pass


def test_a_model_that_fails_mid_run_still_reports_the_fixes_already_written(tmp_path):
    """The endpoint went down after the first failure was fixed with --apply: the JSON said
    {"failures": []} about a file it had written; now the document keeps what was done."""
    ws = write_tree(tmp_path / "calc-project", {"calc/__init__.py": "", "calc/ops.py": OPS,
                                                "tests/test_ops.py": OPS_TESTS})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OneAnswerThenDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = ledex("fix", str(ws), "--model", f"http://127.0.0.1:{server.server_address[1]}/v1#m", "--samples", "1",
                     "--rounds", "1", "--apply", "--json", "--no-search", "--test", "tests/test_ops.py::test_double",
                     "--test", "tests/test_ops.py::test_triple")
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2, proc.stderr
    document = json.loads(proc.stdout)
    assert "HTTP Error 500" in document["error"] and document["exit"] == 2
    done = {f["test"]: f for f in document["failures"]}
    assert done["tests/test_ops.py::test_double"]["applied"] == "calc/ops.py"  # written, and said so
    assert "def double(x): return x + x\n" in (ws / "calc" / "ops.py").read_text()
    assert "fixes already written: calc/ops.py" in " ".join(document["notes"])


def test_a_suspect_longer_than_the_models_context_is_one_failures_message(tmp_path):
    body = "".join(f"    total = total * {i} + {i * 7919 % 1000}\n" for i in range(1500))
    ws = write_tree(tmp_path / "big", {
        "big.py": f"def huge(total):\n{body}    return total\n",
        "small.py": "def inc(x):\n    return x + 2\n",
        "test_both.py": "from big import huge\nfrom small import inc\n\n\ndef test_huge():\n    assert huge(0) == -1\n\n\n"
                        "def test_inc():\n    assert inc(1) == 2\n"})
    proc = ledex("fix", str(ws), "--json", "--samples", "1", "--rounds", "1", "--max-tokens", "24", "--no-search")
    assert proc.returncode == 1, proc.stderr  # the embedded model: a real context window
    assert "Traceback" not in proc.stderr
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    huge = failures["test_both.py::test_huge"]
    assert re.fullmatch(r"the suspect is \d{5} tokens \(the whole prompt \d+\), the model's context is \d+", huge["error"])
    assert huge["candidates"] == [] and huge["unusable"] == []
    small = failures["test_both.py::test_inc"]
    assert small["error"] is None and len(small["candidates"]) + len(small["unusable"]) == 1  # still handled


PROJECT = {
    "calc.py": "import projlib\n\n\ndef scale(x):\n    return x * projlib.FACTOR + 1\n",
    "conftest.py": "def pytest_addoption(parser):\n    parser.addoption('--answer', default='0')\n",
    "test_calc.py": "from calc import scale\n\n\ndef test_scale():\n    assert scale(2) == 6\n\n\n"
                    "def test_answer(request):\n    assert request.config.getoption('--answer') == '42'\n",
}
COMMAND = "{python} -m pytest -q --answer=42 --junitxml={junit} {tests}"


@pytest.fixture
def project_python():
    """A venv of the user's own, with a package (projlib) only it can import. It lives in a
    world-readable folder: as root, the sandbox runs tests as an unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="ledex-projenv-"))
    os.chmod(root, 0o755)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True)
    (root / "lib").mkdir()
    (root / "lib" / "projlib.py").write_text("FACTOR = 3\n")
    site = next(root.glob("env/lib/python3*/site-packages"))
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages"))  # pytest for the project's tests
    (site / "project.pth").write_text(f"{root / 'lib'}\n{ours}\n")
    yield root / "env" / "bin" / "python"
    shutil.rmtree(root)


def test_the_projects_python_and_test_command_run_discovery_and_verification(tmp_path, project_python):
    python = project_python
    ws = write_tree(tmp_path / "proj", PROJECT)
    model = replay_file(tmp_path, ["The +1 is wrong.\n```python\ndef scale(x):\n    return x * projlib.FACTOR\n```"])
    plain = ledex("fix", str(ws), "--model", model, "--json")  # ledex's own interpreter has no projlib
    assert plain.returncode == 2 and "projlib" in plain.stderr and "0 ran" in plain.stderr
    flags = ledex("fix", str(ws), "--model", model, "--json", "--samples", "1", "--rounds", "1", "--no-search",
                  "--python", str(python), "--test-command", COMMAND)
    assert flags.returncode == 0, flags.stdout + flags.stderr
    (failure,) = json.loads(flags.stdout)["failures"]
    assert failure["test"] == "test_calc.py::test_scale" and failure["candidates"][0]["verified"]
    relative = os.path.relpath(python, ws)  # [tool.ledex] python is relative to the project
    (ws / "pyproject.toml").write_text(f'[tool.ledex]\npython = "{relative}"\ntest-command = "{COMMAND}"\n')
    table = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--apply", "--no-search")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "return x * projlib.FACTOR\n" in (ws / "calc.py").read_text()


def test_bad_python_and_bad_tool_ledex_tables_exit_2_with_the_reason(tmp_path):
    ws = write_tree(tmp_path / "proj", {"test_ok.py": "def test_ok():\n    pass\n"})
    missing = ledex("fix", str(ws), "--python", str(tmp_path / "nope" / "python"))
    assert missing.returncode == 2 and "--python" in missing.stderr and "no executable" in missing.stderr
    (ws / "pyproject.toml").write_text('[tool.ledex]\npython = ".venv/bin/python"\n')
    assert "no executable" in ledex("fix", str(ws)).stderr
    (ws / "pyproject.toml").write_text('[tool.ledex]\ntest_command = "pytest"\n')
    typo = ledex("fix", str(ws))
    assert typo.returncode == 2 and "unknown [tool.ledex] key(s) test_command" in typo.stderr


def test_a_failure_handled_before_the_fix_that_repairs_it_counts_as_fixed(tmp_path):
    """python-slugify 9.2.0: the word-boundary failure (handled first, no fix: its top suspect
    was another function) passed once the fix found for test_release.py's failures was written,
    yet was reported unfixed and ledex exited 1. Earlier failures without a fix are re-run too."""
    ops = "def double(x):\n    return x * 3\n\n\ndef quadruple(x):\n    return double(double(x))\n"
    tests = ("import pytest\n\nfrom ops import double, quadruple\n\n\n"
             "def test_quadruple():\n    assert quadruple(1) == 4\n\n\n"
             "@pytest.mark.parametrize('x', range(1, 6))\ndef test_double_is_positive(x):\n    assert double(x) > 0\n\n\n"
             "def test_double():\n    assert double(2) == 4\n")
    ws = write_tree(tmp_path / "ws", {"ops.py": ops, "tests/test_ops.py": tests})
    model = replay_file(tmp_path, ["Wrong.\n```python\ndef quadruple(x):\n    return double(x) * 2\n```",
                                   "Wrong.\n```python\ndef double(x):\n    return x * 5\n```",
                                   "Doubles.\n```python\ndef double(x):\n    return x * 2\n```"])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--apply", "--json", "--no-search")
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    assert failures["tests/test_ops.py::test_double"]["applied"] == "ops.py", proc.stdout
    assert failures["tests/test_ops.py::test_quadruple"]["fixed_by"] == "tests/test_ops.py::test_double"
    assert proc.returncode == 0, proc.stderr


def test_the_hidden_candidates_line_names_a_reason_only_when_it_repeats():
    from types import SimpleNamespace as C

    from ledex.cli_output import hidden_summary

    model, search = "written by the model", "found by search"
    assert hidden_summary([C(source_label=model, reason="a"), C(source_label=search, reason="b")]) == \
        "2 more not verified (1 written by the model, 1 found by search)"
    assert hidden_summary([C(source_label=model, reason="a")] * 2) == "2 more not verified (2 written by the model); most often: a (2)"
    gate = C(source_label=model, reason="not verified: uses unittest at t.py:2")  # the gate's words (make demo)
    assert hidden_summary([gate] * 2).endswith("most often: uses unittest at t.py:2 (2)")


LABELS = ('def label(n):\n    return "n=" + str(n + 1)\n\n\n'
          'def banner(n):\n    return label(n).lower() + "!"\n')
# label also runs in passing tests, so fault localisation ranks banner first for test_banner
LABELS_TESTS = ("import pytest\n\nfrom labels import banner, label\n\n\n"
                "def test_label():\n    assert label(2) == 'n=2'\n\n\n"
                "@pytest.mark.parametrize('n', range(4))\ndef test_label_prefix(n):\n"
                "    assert label(n).startswith('n=')\n\n\n"
                "def test_banner():\n    assert banner(2) == 'N=2!'\n")  # fails through both bugs


def test_a_dry_run_verifies_each_fix_with_the_ones_before_it_as_apply_would_write_them(tmp_path):
    """test_banner fails through label's bug and its own: its fix passes only with label's fix.
    The dry run used to verify it on the unchanged code and call it unfixed while --apply fixed
    both (fresh-user run X3, roman 5.2); now both runs verify the same fixes, and the dry run
    leaves the files as they were."""
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```",
                                   "Wrong case.\n```python\ndef banner(n):\n    return label(n).upper() + \"!\"\n```"])
    runs = {}
    for mode in ("dry", "apply"):
        ws = write_tree(tmp_path / mode, {"labels.py": LABELS, "tests/test_labels.py": LABELS_TESTS})
        flags = ["--apply"] if mode == "apply" else []
        proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--json", "--no-search", *flags)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[mode] = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
        written = (ws / "labels.py").read_text()
        assert (written == LABELS) == (mode == "dry")
    for mode, failures in runs.items():
        banner = failures["tests/test_labels.py::test_banner"]
        assert banner["suspect"]["function"] == "banner" and banner["candidates"][0]["verified"], (mode, banner)
    assert runs["dry"]["tests/test_labels.py::test_banner"]["assumes"] == ["tests/test_labels.py::test_label"]
    assert runs["apply"]["tests/test_labels.py::test_banner"]["assumes"] == []
    text = ledex("fix", str(tmp_path / "dry"), "--model", model, "--samples", "1", "--rounds", "1", "--no-search")
    assert text.returncode == 0 and "verified with the fix for tests/test_labels.py::test_label in place" in text.stdout
    assert (tmp_path / "dry" / "labels.py").read_text() == LABELS and not list(Path(tempfile.gettempdir()).glob(
        "ledex-dry-run-*/dry"))  # the scratch copy is gone


def test_a_problem_after_a_fix_in_place_is_still_verified_against_its_passing_tests(tmp_path):
    """After a fix, the failures still waiting are re-run alone; they kept only what that run saw,
    so the next problem's candidates were verified without the passing tests of their file
    (fresh-user run X7, idna with two bugs: 5 tests re-run instead of 22, and a candidate breaking
    three passing tests was marked verified)."""
    ws = write_tree(tmp_path / "two", {
        "mod.py": "def inc(x):\n    return x + 2\n\n\ndef double(x):\n    return x * 3\n",
        "tests/test_1_inc.py": "from mod import inc\n\n\ndef test_inc():\n    assert inc(1) == 2\n",
        "tests/test_2_double.py": ("from mod import double\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
                                 "def test_double_zero():\n    assert double(0) == 0\n")})
    model = replay_file(tmp_path, ["Adds one too many.\n```python\ndef inc(x):\n    return x + 1\n```",
                                   "Two doubled is four.\n```python\ndef double(x):\n    return 4\n```"])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--json", "--no-search")
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    double = failures["tests/test_2_double.py::test_double"]
    assert double["assumes"] == ["tests/test_1_inc.py::test_inc"]  # handled with inc's fix in place
    assert "tests/test_2_double.py::test_double_zero" in double["reruns"], double
    (candidate,) = double["candidates"]
    assert not candidate["verified"] and "test_double_zero" in candidate["reason"], candidate


@pytest.mark.parametrize("reach", ["every test", "one test"])
def test_a_problem_that_fails_differently_after_a_later_fix_is_tried_again(reach, tmp_path):
    """The same two bugs, banner's tests first: banner's own fix cannot pass while label is broken;
    once label's fix is in place banner's tests fail differently and are tried again, so the order
    of the problems no longer decides what is fixed. "one test": label's bug shows only from 10
    on, so banner's first test says the same as before and only the other one changed
    (inflection 0.5.1, fresh-user run X4: ordinalize's group was not tried again)."""
    labels, tests = LABELS, LABELS_TESTS.replace("def test_label():", "def test_banner_first():\n"
                                                 "    assert banner(2) == 'N=2!'\n\n\ndef test_label():")
    if reach == "one test":
        labels = LABELS.replace("str(n + 1)", "str(n + 1 if n >= 10 else n)")
        tests = tests.replace("label(2) == 'n=2'", "label(12) == 'n=12'").replace(
            "def test_banner():\n    assert banner(2) == 'N=2!'", "def test_banner():\n    assert banner(12) == 'N=12!'")
    banner, label = ("Wrong case.\n```python\ndef banner(n):\n    return label(n).upper() + \"!\"\n```",
                     "Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```")
    # one answer per prompt: banner's problem (banner, then its next suspect label), test_label's, banner's again
    model = replay_file(tmp_path, [banner, label, label, banner])
    ws = write_tree(tmp_path / "ws", {"labels.py": labels, "tests/test_labels.py": tests})
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--json", "--no-search")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    failures = document["failures"]
    assert [f["test"] for f in failures] == ["tests/test_labels.py::test_label", "tests/test_labels.py::test_banner_first"]
    banner = failures[1]
    assert banner["candidates"][0]["verified"] and banner["assumes"] == ["tests/test_labels.py::test_label"]
    assert banner["again"] == "tests/test_labels.py::test_label"
    assert "fixing 3 of 3: tests/test_labels.py::test_banner_first" in proc.stderr  # the try again is counted
    if reach == "every test":  # text: the second entry says why the same test is back
        text = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--no-search").stdout
        again = text.index("tried again: it failed differently with the fix for tests/test_labels.py::test_label in place")
        assert text.index("FAILED tests/test_labels.py::test_banner_first") < again  # first try, then the second
    assert any(n.startswith("tests/test_labels.py::test_banner_first: fails differently with the fix for "
                            "tests/test_labels.py::test_label in place") for n in document["notes"])
    assert (ws / "labels.py").read_text() == labels


def test_a_retried_problems_tests_that_pass_now_count_as_fixed(tmp_path):
    """banner's group has a test that fails only through label's bug: once label's fix is in
    place it passes while the others fail differently and are tried again. It vanished from the
    count ("3 of 3 failure(s) have a verified fix; 87 not started" with nothing left to start:
    fresh-user run X5); now it is reported as passing with label's fix, on stdout too."""
    tests = LABELS_TESTS.replace("def test_label():", "def test_banner_first():\n    assert banner(2) == 'N=2!'\n\n\n"
                                 "def test_label():") + "\n\ndef test_banner_ends():\n    assert banner(2).endswith('2!')\n"
    banner, label = ("Wrong case.\n```python\ndef banner(n):\n    return label(n).upper() + \"!\"\n```",
                     "Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```")
    model = replay_file(tmp_path, [banner, label, label, banner])
    ws = write_tree(tmp_path / "ws", {"labels.py": LABELS, "tests/test_labels.py": tests})
    args = ("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--no-search")
    document = json.loads(ledex(*args, "--json").stdout)
    by_test = {f["test"]: f for f in document["failures"]}
    assert by_test["tests/test_labels.py::test_banner_ends"]["fixed_by"] == "tests/test_labels.py::test_label"
    assert by_test["tests/test_labels.py::test_banner_first"]["candidates"][0]["verified"]
    text = ledex(*args)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "ledex: 4 of 4 failure(s) have a verified fix (model" in text.stdout and "not started" not in text.stdout
    ends = text.stdout.index("FAILED tests/test_labels.py::test_banner_ends")
    assert "passes with the fix for tests/test_labels.py::test_label" in text.stdout[ends:]


def test_a_dry_run_of_an_editable_install_tests_its_scratch_copy(tmp_path):
    """`pip install -e .` of a src layout: the interpreter imports the project from its own
    folder, so a dry run going on in a scratch copy tested the user's unfixed code there and
    called the right second fix 'still failed' (fresh-user run X4, inflection in src layout);
    the sandbox now shows the copy where the editable install points."""
    from test_sandbox_isolation import make_venv

    ws = write_tree(tmp_path / "proj", {
        "pyproject.toml": ("[build-system]\nrequires = ['setuptools>=64']\nbuild-backend = 'setuptools.build_meta'\n\n"
                           "[project]\nname = 'labels'\nversion = '0.1'\n"),
        "src/labels/__init__.py": LABELS,
        "tests/test_labels.py": LABELS_TESTS.replace("from labels import", "from labels import")})
    python = make_venv(tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
                    "-e", str(ws)], check=True, capture_output=True, timeout=300)
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```",
                                   "Wrong case.\n```python\ndef banner(n):\n    return label(n).upper() + \"!\"\n```"])
    proc = ledex("fix", str(ws), "--model", model, "--samples", "1", "--rounds", "1", "--json", "--no-search",
                 "--python", str(python))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    failures = {f["test"]: f for f in json.loads(proc.stdout)["failures"]}
    banner = failures["tests/test_labels.py::test_banner"]
    assert banner["candidates"][0]["verified"] and banner["assumes"] == ["tests/test_labels.py::test_label"]
    assert (ws / "src" / "labels" / "__init__.py").read_text() == LABELS


def test_sigterm_stops_a_dry_run_and_removes_its_scratch_copy(tmp_path):
    """`timeout`, a CI cancel or `kill` send SIGTERM: the run stops (exit 143), reports what it had
    done, and the dry run's copy of the project is removed on the way out (fresh-user run X4: it
    was left in $TMPDIR)."""
    spin = "Spin.\n```python\ndef banner(n):\n    while True:\n        pass\n```"
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```", spin])
    ws = write_tree(tmp_path / "ws", {"labels.py": LABELS, "tests/test_labels.py": LABELS_TESTS})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ledex.cli", "fix", str(ws), "--model", model, "--samples", "1",
                             "--rounds", "1", "--no-search", "--test-timeout", "0", "--timeout", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    for line in proc.stderr:  # banner's answer loops forever in its verification, in the copy
        if line.startswith("ledex: fixing 2 of 2"):
            break
    assert list(scratch.glob("ledex-dry-run-*/ws"))  # the copy exists while banner is tried
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert not list(scratch.glob("ledex-dry-run-*")) and (ws / "labels.py").read_text() == LABELS
    # what was done is reported, as for Ctrl-C (X5: SIGTERM printed no result)
    assert "FAILED tests/test_labels.py::test_label" in out and "ledex: 1 of 2 failure(s) have a verified fix" in out


def test_a_dry_run_without_room_for_its_copy_goes_on_without_it(tmp_path):
    """$TMPDIR on a small file system of its own (a RAM-sized /tmp, a project with data files):
    the dry run's copy cannot be made. The run used to stop there as an internal error with 61
    failures never tried (fresh-user run X4); now it says why, tries the problems after it on
    the unchanged code (as before the copy existed) and leaves nothing behind."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here to mount a small tmpfs in")
    model = replay_file(tmp_path, ["Off by one.\n```python\ndef label(n):\n    return \"n=\" + str(n)\n```",
                                   "Wrong case.\n```python\ndef banner(n):\n    return label(n).upper() + \"!\"\n```"])
    ws = write_tree(tmp_path / "ws", {"labels.py": LABELS, "tests/test_labels.py": LABELS_TESTS})
    (ws / "data").mkdir()
    (ws / "data" / "blob.bin").write_bytes(os.urandom(512 * 1024))  # more than the 256 KiB tmpfs holds
    small = tmp_path / "small"
    small.mkdir()
    script = 'mount -t tmpfs -o size=256k tmpfs "$TMPDIR" && "$@"; status=$?; ls -A "$TMPDIR" > "$LEFT"; exit $status'
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
                           sys.executable, "-m", "ledex.cli", "fix", str(ws), "--model", model, "--samples", "1",
                           "--rounds", "1", "--json", "--no-search"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TMPDIR": str(small), "LEFT": str(tmp_path / "left.txt")})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # banner's fix cannot pass without label's: not verified
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    document = json.loads(proc.stdout)
    failures = {f["test"]: f for f in document["failures"]}
    assert failures["tests/test_labels.py::test_label"]["candidates"][0]["verified"]
    banner = failures["tests/test_labels.py::test_banner"]
    assert banner["candidates"] and banner["assumes"] == []  # tried, on the unchanged code
    note = next(n for n in document["notes"] if "tried without its fix" in n)
    assert "No space left on device" in note and "TMPDIR" in note, note
    assert (tmp_path / "left.txt").read_text() == ""  # the partial copy was removed
    assert (ws / "labels.py").read_text() == LABELS


def test_help_says_each_default_once():
    """`ledex fix --help` printed "(default: [tool.ledex] python ..., else the one running ledex)
    (default: None)" (fresh-user run X7): an option whose help words its default gets no second one."""
    proc = subprocess.run([sys.executable, "-m", "ledex.cli", "fix", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"})
    options = [" ".join(chunk.split()) for chunk in proc.stdout.split("\n  -")[1:]]  # one option's help each
    assert proc.returncode == 0 and len(options) > 15
    assert [text for text in options if text.count("default") > 1 or "(default: None)" in text] == []
    assert any(text.startswith("-samples") and "(default: 4)" in text for text in options)
    assert any(text.startswith("-python") and "(default: [tool.ledex] python" in text for text in options)


POLLUTED = {
    "pkg/__init__.py": "",
    "pkg/codec.py": 'ALPHABET = "0123456789"\n\n\ndef width():\n    return len(ALPHABET) + 1\n\n\n'
                    "def encode(n):\n    base = len(ALPHABET)\n    out = ''\n    while True:\n"
                    "        n, r = divmod(n, base)\n        out = ALPHABET[r] + out\n        if n == 0:\n            return out\n",
    "tests/test_a.py": 'from pkg import codec\n\n\ndef test_binary_width():\n    codec.ALPHABET = "01"\n'
                       "    assert codec.width() == 2\n    codec.ALPHABET = '0123456789'\n",  # fails before it restores
    "tests/test_b.py": "from pkg import codec\n\n\ndef test_decimal():\n    assert codec.encode(12) == '12'\n",
}
HARMLESS = ("Use a copy.\n```python\ndef encode(n):\n    base = len(ALPHABET[:])\n    out = ''\n    while True:\n"
            "        n, r = divmod(n, base)\n        out = ALPHABET[r] + out\n        if n == 0:\n            return out\n```")


def test_a_failure_that_passes_when_re_run_alone_gets_no_verified_fix(tmp_path):
    """test_decimal fails in the whole suite only because test_binary_width left ALPHABET = "01"
    behind; re-run without it, it passes, so any edit "verified" and --apply wrote one (fresh-user
    run X9, shortuuid 1.0.13). Its unchanged code is re-run first: no candidate, and the reason."""
    ws = write_tree(tmp_path / "ws", POLLUTED)
    before = tree_digest(ws)
    proc = ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x", HARMLESS, HARMLESS]), "--samples", "1",
                 "--rounds", "1", "--no-search", "--apply")
    document = json.loads(ledex("fix", str(ws), "--model", replay_file(tmp_path, ["x", HARMLESS, HARMLESS]),
                                "--samples", "1", "--rounds", "1", "--no-search", "--json").stdout)
    by_test = {f["test"]: f for f in document["failures"]}
    decimal = by_test["tests/test_b.py::test_decimal"]
    assert decimal["candidates"] == [] and decimal["applied"] is None
    assert decimal["not_reproduced"].startswith("tests/test_b.py::test_decimal passed when re-run with the unchanged code")
    assert "not reproduced: tests/test_b.py::test_decimal passed when re-run" in proc.stdout
    assert "len(ALPHABET[:])" not in proc.stdout and tree_digest(ws) == before  # nothing written
    assert by_test["tests/test_a.py::test_binary_width"]["not_reproduced"] is None  # a real failure is tried


def test_a_failure_that_needs_an_earlier_test_file_is_re_run_after_it_or_not_tried(tmp_path):
    """pathspec 0.12.1 (fresh-user run X10 F3): a test that needs what an earlier test set up was
    re-run first and failed with another error, so no candidate could verify (11 min of model
    rounds). Re-runs keep the suite's order, across files too: the fix is found. Where the test
    that sets things up is not re-run (it does not import the code), the re-run fails otherwise:
    not reproduced, no candidate, and why."""
    files = {"pkg/__init__.py": "", "pkg/state.py": "CONFIG = {}\n\n\ndef scale(x):\n    return x * CONFIG['factor'] + 1\n",
             "tests/test_a_setup.py": ("from pkg import state\n\n\ndef test_setup():\n    state.CONFIG['factor'] = 2\n"
                                       "    assert state.CONFIG\n"),
             "tests/test_b_scale.py": "from pkg.state import scale\n\n\ndef test_scale():\n    assert scale(3) == 6\n"}
    found = json.loads(ledex("fix", str(write_tree(tmp_path / "ws", files)), "--model", replay_file(tmp_path, ["x"]),
                             "--samples", "1", "--rounds", "1", "--json").stdout)
    (scale,) = found["failures"]
    assert scale["reruns"] == ["tests/test_a_setup.py::test_setup", "tests/test_b_scale.py::test_scale"]
    assert scale["candidates"][0]["verified"] and scale["not_reproduced"] is None, scale
    files["pkg/state.py"] = "import os\n\n\ndef scale(x):\n    return x * int(os.environ['LEDEX_T_FACTOR']) + 1\n"
    files["tests/test_a_setup.py"] = "import os\n\n\ndef test_setup():\n    os.environ['LEDEX_T_FACTOR'] = '2'\n"
    proc = ledex("fix", str(write_tree(tmp_path / "env", files)), "--model", replay_file(tmp_path, ["x"]),
                 "--samples", "1", "--rounds", "1", "--json")
    (scale,) = json.loads(proc.stdout)["failures"]
    assert scale["candidates"] == [] and scale["not_reproduced"].startswith(
        "tests/test_b_scale.py::test_scale failed otherwise when re-run with the unchanged code (KeyError instead "
        "of the suite's AssertionError"), scale


def test_a_selected_test_is_verified_against_every_test_a_fix_must_keep_passing(example, tmp_path):
    """`--test ID` chose the failure and also shrank its verification to that one test: a search
    fix that broke 73 of 553 tests was verified and written (fresh-user run X9, validators). The
    selected failure is now verified as in a whole run: the rest of its file and the test files
    importing its suspect (test_reorder.py here)."""
    (example / "tests" / "test_reorder.py").write_text(
        "from inventory.stock import is_low_stock\n\n\ndef test_big_stock_is_not_low():\n    assert not is_low_stock(101, 5)\n")
    always = RIGHT_STOCK.replace("return quantity <= threshold", "return True")  # breaks test_not_low_when_plenty
    big = RIGHT_STOCK.replace("return quantity <= threshold", "return quantity <= threshold or quantity > 100")
    proc = ledex("fix", str(example), "--model", replay_file(tmp_path, [always, big]), "--samples", "2", "--rounds", "1",
                 "--no-search", "--json", "--test", "tests/test_stock.py::test_low_stock_at_threshold")
    (failure,) = json.loads(proc.stdout)["failures"]
    assert failure["test"] == "tests/test_stock.py::test_low_stock_at_threshold"
    assert {"tests/test_stock.py::test_not_low_when_plenty", "tests/test_reorder.py::test_big_stock_is_not_low"} \
        <= set(failure["reruns"])
    reasons = sorted(c["reason"] for c in failure["candidates"])
    assert [c["verified"] for c in failure["candidates"]] == [False, False], reasons
    assert reasons == ["the fix breaks tests/test_reorder.py::test_big_stock_is_not_low",
                       "the fix breaks tests/test_stock.py::test_not_low_when_plenty"]
    # the selection ran, and each fix was checked against its files and dependents: both counted, the
    # JSON's "tests" being the tests that ran (fresh-user run X10 F2: it said 1 beside 119 re-runs)
    wider = sum((example / "tests" / name).read_text().count("\ndef test_") for name in ("test_stock.py", "test_reorder.py"))
    assert json.loads(proc.stdout)["tests"] == wider > 1
    assert (f"ledex: 1 selected test(s) ran, 1 failed; {wider} test(s) of their files and dependents ran: a fix must "
            f"keep the {wider - 1} passing one(s) passing") in proc.stderr


def test_failing_tests_that_were_not_selected_are_reported_and_related(example, tmp_path):
    """dpath 2.2.0 (fresh-user run X11 F11, F12): with `--test`, the wider run's other failures of the
    same bug were in no report, counted among the tests a fix "must keep passing", and no candidate
    was judged by them; a fix that left them failing was written. They are in `failing`, the summary,
    and each problem's related failing tests."""
    (example / "tests" / "test_reorder.py").write_text(
        "from inventory.stock import is_low_stock\n\n\ndef test_reorder_at_threshold():\n    assert is_low_stock(3, 3)\n")
    proc = ledex("fix", str(example), "--model", replay_file(tmp_path, [RIGHT_STOCK]), "--samples", "1", "--rounds", "1",
                 "--no-search", "--json", "--test", "tests/test_stock.py::test_low_stock_at_threshold")
    document = json.loads(proc.stdout)
    assert document["failing"] == ["tests/test_stock.py::test_low_stock_at_threshold",
                                   "tests/test_reorder.py::test_reorder_at_threshold"]
    assert "1 other test(s) there fail too (not selected)" in proc.stderr, proc.stderr
    (failure,) = document["failures"]
    (candidate,) = failure["candidates"]
    assert candidate["verified"] and candidate["also_fixes"] == [1, 1], candidate
