"""`ledex-train collect --sources`: editor-shaped trajectories (issue 16) on the real sandbox.

A tiny local package (written here) and a few MBPP tasks (skipped without ../shared) go through
the whole path: planted bug, the serving code path's failure and prompt, grounded explanation,
verified answer, resumable cache, manifest. The prompt is compared with what the real `ledex fix`
sends to a model endpoint for the same project state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledex.training import records
from ledex.training.collect import CollectConfig, CollectError, run
from ledex.training.sources import SourceError, load_projects, refuse_evaluation

from conftest import SHARED
from helpers import write_tree

CALC = '''def clamp(x, low, high):
    """x limited to [low, high]."""
    if x < low:
        return low
    if x > high:
        return high
    return x
'''
STACK = '''class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def size(self):
        return len(self.items)
'''
TESTS = '''from pkg.calc import clamp
from pkg.stack import Stack


def test_clamp_low():
    assert clamp(-5, 0, 10) == 0


def test_clamp_high():
    assert clamp(50, 0, 10) == 10


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_stack_size():
    s = Stack()
    s.push(1)
    s.push(2)
    assert s.size() == 2
'''


def _package(root: Path, stack: bool = True) -> Path:
    files = {"pkg/__init__.py": "", "pkg/calc.py": CALC, "tests/test_calc.py": TESTS}
    if stack:
        files["pkg/stack.py"] = STACK
    else:
        files["tests/test_calc.py"] = TESTS.replace("from pkg.stack import Stack\n", "").split("\n\ndef test_stack")[0]
    return write_tree(root / "pkgfix", files)


def _config(tmp_path: Path, sources: list[str], **kw) -> CollectConfig:
    return CollectConfig(output=str(tmp_path / "out" / "d.jsonl"), sources=sources, seed=1, workers=2, **kw)


def test_collected_prompt_is_what_ledex_fix_sends(tmp_path, replay_endpoint):
    from ledex.cli import main as ledex_main
    from ledex.engine.format import build_messages
    from ledex.engine.operators import single_site_edits

    fixture = _package(tmp_path, stack=False)
    manifest = run(_config(tmp_path, [f"dir:{fixture}#MIT"], mutations=2), progress=False)
    rows = list(records.read(tmp_path / "out" / "d.jsonl"))
    assert rows and manifest["verified"] == len(rows) and manifest["skipped_too_long"] == 0
    row = rows[0]
    assert row.correct and row.licence == "MIT" and row.operator and row.verdicts["refined"]["passed"]
    assert row.feedback.startswith(f"Test {row.extra['test']} failed.")
    # The same project state: the working copy with the same bug written again.
    workspace = Path(row.extra["workspace"])
    original = (workspace / row.extra["file"]).read_text(encoding="utf-8")
    edit = next(e for e in single_site_edits(original, row.extra["function"])
                if (e.line, e.description) == (row.extra["line"], row.extra["edit"]))
    (workspace / row.extra["file"]).write_text(edit.code, encoding="utf-8")
    url = replay_endpoint(["no answer here"])
    assert ledex_main(["fix", str(workspace), "--model", url, "--samples", "1", "--rounds", "1", "--no-search"]) == 1
    sent = [request["messages"] for request in replay_endpoint.requests]
    assert build_messages(row.problem) in sent  # byte-identical conversation, every turn


@pytest.mark.skipif(not (SHARED / "data" / "mbpp.jsonl").is_file(), reason="needs ../shared/data/mbpp.jsonl")
def test_mbpp_tasks_become_projects_with_grounded_explanations(tmp_path):
    from ledex.training.explain import observe

    config = _config(tmp_path, [f"mbpp:{SHARED / 'data' / 'mbpp.jsonl'}#prompt"], mutations=2, limit=3,
                     coverage=False)
    manifest = run(config, progress=False)
    rows = list(records.read(config.output))
    assert rows and manifest["units"] == 3 and manifest["yield_by_source"]["mbpp"]["trajectories"] == len(rows)
    assert sum(v for k, v in manifest["planted"].items() if not k.startswith("seconds")) >= len(rows)
    for row in rows:
        assert row.licence == "CC-BY-4.0" and row.split == "prompt" and row.teacher == "mutation-oracle"
        assert "tests/test_" in row.feedback and "mutat" not in row.explanation.lower()
        assert len(row.explanation) <= 480 and "```" not in row.explanation and not row.explanation.startswith("`")
        seen = observe(row.feedback, row.feedback)
        quoted = [v.rstrip("…") for v in (seen.got, seen.want, seen.error) if v]
        assert quoted and all(v[:40] in row.feedback for v in quoted)  # the values come from pytest's output
        assert any(f"`{v[:40]}" in row.explanation for v in quoted), row.explanation
        assert f"line {row.extra['line']}" in row.explanation
    assert len({r.explanation.split(".")[0].split("`")[0] for r in rows}) > 1 or len(rows) < 3  # varied wording


def test_evaluation_sets_are_refused(tmp_path):
    from ledex.training.cli import main

    for name in ("pypi:more-itertools", "pypi:toolz==1.0.0", "pypi:cachetools", "dir:/x/toolz",
                 "mbpp:../shared/data/humanevalpack-python.jsonl", "humaneval"):
        with pytest.raises(SourceError, match="evaluation only"):
            refuse_evaluation(name)
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"task_id": 11, "text": "t", "code": "def f():\n    return 1",
                                "test_list": ["assert f() == 1"], "test_setup_code": ""}) + "\n", encoding="utf-8")
    for split in ("test", "validation"):
        with pytest.raises(SourceError, match="not training data"):
            load_projects([f"mbpp:{mbpp}#{split}"], tmp_path / "p", tmp_path / "c")
    with pytest.raises(CollectError, match="evaluation only"):
        run(_config(tmp_path, ["pypi:more_itertools"]), progress=False)
    assert main(["collect", "--sources", "pypi:cachetools", "--output", str(tmp_path / "d.jsonl")]) == 2
    assert not (tmp_path / "d.jsonl").exists()


def test_a_package_source_is_fetched_with_version_sha256_and_licence(tmp_path):
    from ledex.training.sources import package_project, sha256

    try:
        project = package_project("inflection==0.5.1", tmp_path / "fetch", tmp_path / "projects")
    except SourceError as exc:
        pytest.skip(f"no package registry here: {exc}")
    sdist = tmp_path / "fetch" / "sdists" / project.package["sdist"]
    assert project.package == {"name": "inflection", "version": "0.5.1", "sha256": sha256(sdist),
                               "sdist": "inflection-0.5.1.tar.gz", "licence": "MIT"}
    assert (project.root / "tests" / "test_inflection.py").is_file() and project.licence == "MIT"
    assert "camelize" in project.targets["inflection/__init__.py"]


def _collect_started(tmp_path, **popen):
    """(argv, output, cache, process) of a collect of the 4-function fixture, once it cached a unit."""
    out = tmp_path / "out" / "d.jsonl"
    argv = [sys.executable, "-m", "ledex.training.cli", "collect", "--sources", f"dir:{_package(tmp_path)}#MIT",
            "--output", str(out), "--mutations", "1", "--coverage", "false", "--workers", "1", "--seed", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **popen)
    cache = Path(f"{out}.cache")
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 1 and proc.poll() is None:
        time.sleep(0.2)
    return argv, out, cache, proc


def test_killed_collect_resumes_without_duplicates(tmp_path):
    argv, out, cache, proc = _collect_started(tmp_path, stderr=subprocess.DEVNULL, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(cache.glob("*.json")))
    assert done_before >= 1 and not out.exists()  # killed mid-run: units cached, no dataset yet
    assert subprocess.run(argv, capture_output=True, timeout=600).returncode == 0
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert manifest["units"] == manifest["units_done"] == len(list(cache.glob("*.json"))) == 4
    assert len({r["id"] for r in rows}) == len(rows) == manifest["trajectories"]
    cached = [r["id"] for f in cache.glob("*.json") for r in json.loads(f.read_text())["records"]]
    assert sorted(cached) == sorted(r["id"] for r in rows)


def test_a_collect_stopped_by_sigterm_writes_what_it_finished(tmp_path):
    """A collect run in the background (nohup: Ctrl-C cannot reach it) stopped with SIGTERM left
    its cache and no dataset (collect run 7). It finishes the units under way and writes every
    finished unit, this run's and earlier ones'."""
    _, out, cache, proc = _collect_started(tmp_path, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "stopping (SIGTERM)" in err, err
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= manifest["units_done"] == len(list(cache.glob("*.json"))) < manifest["units"] == 4
    cached = [r["id"] for f in cache.glob("*.json") for r in json.loads(f.read_text())["records"]]
    assert sorted(cached) == sorted(r["id"] for r in rows)


def test_records_that_do_not_fit_the_served_context_are_counted(tmp_path):
    from ledex.training.editordata import _fit

    small = records.Trajectory("x", "task", "def f():\n    return 1", "Test t failed.", "Because.",
                               "def f():\n    return 2", True, 1.0)
    big = records.Trajectory("y", "task", "def g():\n" + "    x = 1\n" * 2000, "Test t failed.", "Because.",
                             "def g():\n    return 2", True, 1.0)
    fitting, too_long, lengths = _fit([small, big], 1024)
    assert fitting == [small] and too_long == 1 and 0 < lengths[0] < 1024
    assert records.histogram(lengths)["<=256"] == 1


def test_a_test_module_that_cannot_be_collected_does_not_empty_the_baseline(tmp_path):
    """A test-only dependency missing (itsdangerous' freezegun) made pytest stop the whole
    session: the baseline had no passing test and six packages gave no bug. The other modules
    still run (--continue-on-collection-errors in the baseline only)."""
    from ledex.training.plant import baseline
    from ledex.training.sources import Project

    root = write_tree(tmp_path / "proj", {
        "pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a + b\n",
        "tests/test_calc.py": "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        "tests/test_needs_dep.py": "import no_such_test_dependency_xyz\n\n\ndef test_x():\n    pass\n"})
    project = Project("proj", root, "dir:proj", "MIT", "train", {"pkg/calc.py": ("add",)})
    found = baseline(project)
    assert found.passed == frozenset({"tests/test_calc.py::test_add"})
    assert found.covering == {"pkg/calc.py::add": ("tests/test_calc.py::test_add",)}


def test_a_function_with_a_wrapped_signature_is_collected_with_its_signature_on_one_line(tmp_path):
    """The answer grammar writes a `def` on one line; a function whose file wraps its signature
    (black's style) was dropped as "answer grammar cannot write it" (108 functions of the packages
    collected so far). Its right answer is now the function with the signature joined, which the
    patcher puts back as the file wrote it, and it verifies."""
    wrapped = CALC.replace("def clamp(x, low, high):", "def clamp(\n    x,  # the value\n    low,\n    high,\n):")
    fixture = write_tree(tmp_path / "wrapped", {"pkg/__init__.py": "", "pkg/calc.py": wrapped,
                                               "tests/test_calc.py": TESTS.replace("from pkg.stack import Stack\n", "")
                                               .split("\n\ndef test_stack")[0]})
    manifest = run(_config(tmp_path, [f"dir:{fixture}#MIT"], mutations=2), progress=False)
    rows = list(records.read(tmp_path / "out" / "d.jsonl"))
    assert rows and manifest["planted"].get("function: answer grammar cannot write it", 0) == 0
    for row in rows:
        assert row.code.startswith("def clamp(x, low, high):\n") and row.correct
        assert "def clamp(\n    x,  # the value\n" in row.wrong_code  # the prompt shows the function as the file has it


def test_an_overloaded_function_is_one_unit_and_the_manifest_counts_what_is_written(tmp_path):
    """pydash 8.1.0: `union_with` (two @t.overload stubs and the code) was three units sharing one
    cache file, so its records were read three times: the manifest said 3,972 verified while 2,728
    distinct records were written."""
    from ledex.training.sources import targets_of

    stubs = "import typing as t\n\n\n" + "".join(f"@t.overload\ndef clamp(x: {k}, low: {k}, high: {k}) -> {k}: ...\n\n\n"
                                               for k in ("int", "float"))
    fixture = write_tree(tmp_path / "over", {"pkg/__init__.py": "", "pkg/calc.py": stubs + CALC,
                                             "tests/test_calc.py": TESTS.replace("from pkg.stack import Stack\n", "")
                                             .split("\n\ndef test_stack")[0]})
    assert targets_of(fixture) == {"pkg/calc.py": ("clamp",)}
    manifest = run(_config(tmp_path, [f"dir:{fixture}#MIT"], mutations=2), progress=False)
    rows = list(records.read(tmp_path / "out" / "d.jsonl"))
    assert rows and manifest["verified"] == sum(r.correct for r in rows) == manifest["records_written"]
    assert all("@t.overload" not in r.wrong_code for r in rows)


def test_an_explanation_of_a_missing_statement_does_not_quote_its_blank_line():
    """pydash records: a planted bug that removed a statement left its line blank, and the
    explanation said "line 2333 reads ``"."""
    from ledex.training.explain import Fault, explain, observe

    fault = Fault("transform", 2333, "", "", "next(walk, None)", "drop_statement")
    texts = {explain(fault, observe("assert [] == [1]", "AssertionError: assert [] == [1]"), "t.py::test_t", seed)
             for seed in range(12)}
    assert len(texts) > 1 and all("line 2333" in t and "``" not in t for t in texts), texts


def test_a_planted_off_by_one_on_a_value_that_is_no_number_is_not_kept(tmp_path):
    """Collect run 11: 70 of 165 "bound" records were `iteratee + 1` on a function, `obj - 1` on a
    dict (TypeError), bugs nobody writes, explained as "it stops one step too early or too late".
    The +-1 on the number argument of the same call is kept."""
    import shutil

    from ledex.engine.operators import single_site_edits
    from ledex.training.plant import PlantOptions, _one_bug, baseline, right_answer
    from ledex.training.sources import load_projects

    code = "def apply(f, xs, step):\n    return [call(f, x, step) for x in xs]\n\n\ndef call(f, x, step):\n    return f(x) * step\n"
    tests = ("from pkg.fn import apply, call\n\n\ndef test_apply():\n    assert apply(str, [1, 2], 2) == ['11', '22']\n\n\n"
             "def test_call():\n    assert call(abs, -3, 2) == 6\n")
    fixture = write_tree(tmp_path / "fn", {"pkg/__init__.py": "", "pkg/fn.py": code, "tests/test_fn.py": tests})
    project, = load_projects([f"dir:{fixture}#MIT"], tmp_path / "root", tmp_path / "fetch")
    base, folder = baseline(project), tmp_path / "work"
    shutil.copytree(project.root, folder)
    edits = {e.after: e for e in single_site_edits(code, "apply") if e.operator == "bound"}
    kept = {}
    for after in ("f + 1", "step + 1"):
        (folder / "pkg/fn.py").write_text(edits[after].code)
        kept[after] = _one_bug(project, "pkg/fn.py", "apply", base, folder, PlantOptions(coverage=False), edits[after],
                               right_answer(code, "pkg/fn.py", "apply"), 1, {})[1]
    assert kept == {"f + 1": "+-1 on a value that is not a number", "step + 1": "kept"}
