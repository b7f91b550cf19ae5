"""`ledex fix` end to end, as a user runs it: a real subprocess, the real embedded model,
the real sandbox; every claim it makes is checked independently."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import outcomes_of, tree_digest

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
    proc = ledex("fix", str(example), "--json", "--samples", "1", "--rounds", "1", "--max-tokens", "200")
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


def test_text_output_shows_explanations_and_diffs(example):
    proc = ledex("fix", str(example), "--samples", "1", "--rounds", "1", "--max-tokens", "200",
                 "--test", "tests/test_stock.py")
    assert proc.returncode in (0, 1), proc.stderr
    assert "FAILED tests/test_stock.py::test_low_stock_at_threshold" in proc.stdout
    assert "suspect: inventory/stock.py::is_low_stock" in proc.stdout
    assert "failure(s) have a verified fix (model SmolLM2-135M" in proc.stdout


def test_apply_writes_only_the_verified_fix(example, replay_endpoint):
    url = replay_endpoint(["Always low.\n```python\ndef is_low_stock(quantity, threshold):\n    return True\n```",
                           RIGHT_STOCK])
    original = (example / "inventory" / "stock.py").read_text()
    proc = ledex("fix", str(example), "--model", url, "--samples", "2", "--rounds", "1", "--apply",
                 "--test", "tests/test_stock.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "applied the best verified fix to inventory/stock.py" in proc.stdout
    fixed = (example / "inventory" / "stock.py").read_text()
    assert "return quantity <= threshold" in fixed
    assert unified_diff("x", original, fixed).count("\n+") == 2  # one changed line (+ the header)
    assert set(outcomes_of(example, "tests/test_stock.py").values()) == {"passed"}
    again = ledex("fix", str(example), "--model", url, "--json")
    assert "tests/test_stock.py" not in again.stdout  # the applied fix holds on a fresh run


def test_nothing_verified_exits_1_and_bad_usage_exits_2(example, replay_endpoint, tmp_path):
    url = replay_endpoint(["no idea"])
    proc = ledex("fix", str(example), "--model", url, "--samples", "1", "--rounds", "1", "--json")
    assert proc.returncode == 1
    assert all(f["unusable"][0]["reason"] == "no code block in the answer" for f in json.loads(proc.stdout)["failures"])
    assert ledex("fix", str(tmp_path / "missing")).returncode == 2
    assert "workspace not found" in ledex("fix", str(tmp_path / "missing")).stderr
    bad_model = ledex("fix", str(example), "--model", str(tmp_path / "nope.gguf"))
    assert bad_model.returncode == 2 and "model file not found" in bad_model.stderr
    assert ledex("fix", "--samples", "0").returncode == 2


def test_broken_workspaces_get_clear_notes(tmp_path):
    broken = tmp_path / "broken"
    (broken / "tests").mkdir(parents=True)
    (broken / "mod.py").write_text("def f(:\n")
    (broken / "tests" / "test_mod.py").write_text("from mod import f\n\ndef test_f():\n    assert f() == 1\n")
    (broken / "tests" / "test_hang.py").write_text("def test_ok():\n    assert True\n")
    (broken / "latin1.py").write_bytes(b"# caf\xe9\n")
    before = tree_digest(broken)
    proc = ledex("fix", str(broken), "--json")
    assert proc.returncode == 0, proc.stderr  # nothing fixable failed: the collection error is a note
    document = json.loads(proc.stdout)
    assert any("could not collect" in note and "test_mod.py" in note for note in document["notes"])
    assert tree_digest(broken) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = ledex("fix", str(empty), "--json")
    assert proc.returncode == 0 and "no tests were found" in " ".join(json.loads(proc.stdout)["notes"])


def test_hanging_and_interpreter_killing_tests_are_reported_not_fatal(tmp_path):
    workspace = tmp_path / "hostile"
    workspace.mkdir()
    (workspace / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    proc = ledex("fix", str(workspace), "--json", "--discovery-timeout", "5")
    assert proc.returncode in (0, 1) and "stopped (timeout)" in " ".join(json.loads(proc.stdout)["notes"])
    (workspace / "test_hang.py").unlink()
    (workspace / "test_exit.py").write_text("import os\n\ndef test_dies():\n    os._exit(3)\n")
    proc = ledex("fix", str(workspace), "--json")
    assert proc.returncode in (0, 1)
    assert json.loads(proc.stdout)["notes"], "a run that kills the interpreter must be reported"
