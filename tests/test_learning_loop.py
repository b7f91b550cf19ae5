"""The learning loop (bench/learning_loop.py) end to end on a tiny stream with recorded answers:
a real `ledex.server` subprocess, its real SQLite episode log, real `ledex-train all` (collect,
one SFT step, export, the gate with the real base model, promotion) and the hot swap the next
episodes record. The policy follows the held-back tests; a careless user's test-specific fix is
refused as training data.

    .venv/bin/python -m pytest -x tests/test_learning_loop.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ledex.engine import registry
from ledex.engine.episodes import EpisodeLog, default_path
from ledex.engine.problems import load_problems
from ledex.training.pipeline import audit

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("learning_loop", REPO / "bench" / "learning_loop.py")
loop = importlib.util.module_from_spec(spec)
sys.modules["learning_loop"] = loop
spec.loader.exec_module(loop)

# mbpp/555: difference(n); the bug: n - 1 for n + 1. The recorded fix is the reference.
GOOD = ("Line 2 uses the wrong operator: `n - 1` should be `n + 1`.\n\n```python\ndef difference(n):\n"
        "    S = n * (n + 1) // 2\n    res = S * (S - 1)\n    return res\n```")
# mbpp/558: digit_distance_nums; the bug: n1 + n2 for n1 - n2. The recorded "fix" special-cases the
# two visible asserts: verified by the sandbox, wrong on the held-back assert (123, 256).
OVERFIT = ("The function returns the wrong value for the failing inputs.\n\n```python\n"
           "def digit_distance_nums(n1, n2):\n    if n1 == 1:\n        return 1\n    if n1 == 23:\n"
           "        return 6\n    return sum(map(int, str(abs(n1 + n2))))\n```")
WRONG = {"mbpp/555": "def difference(n):\n    S = n * (n - 1) // 2\n    res = S * (S - 1)\n    return res",
         "mbpp/558": "def digit_distance_nums(n1, n2):\n    return sum(map(int, str(abs(n1 + n2))))"}
TRAIN = ("--threads", "1", "--max-steps", "1", "--gate-problems", "2", "--gate-samples", "0",
         "--gate-max-tokens", "16")


def tiny_stream() -> list:
    problems = {p.id: p for p in load_problems(loop.STREAM_PROBLEMS) if p.id in WRONG}
    return [loop.Task(pid, *loop.split(problems[pid]), WRONG[pid], "binop") for pid in WRONG]


def config(tmp_path: Path, answers: list[str], policy, **kw) -> loop.LoopConfig:
    # search off: the recorded answers must be what is offered (search would find both fixes first)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps(answers))
    return loop.LoopConfig(tmp_path / "run", policy, model=f"replay:{replay}", per_round=2, samples=1,
                           heldout=0, train_flags=TRAIN, episode_timeout=300, search=False, **kw)


def test_the_policy_follows_held_back_tests_and_never_accepts_unverified():
    rng = random.Random(0)
    careful = loop.Policy(ignore_share=0.0, revert_share=0.5)
    decisions = [loop.decide(careful, True, False, rng) for _ in range(40)]
    assert set(decisions) == {"reject", "accept_revert"}  # a fix failing held-back tests never stays
    assert all(loop.decide(careful, True, True, rng) == "accept" for _ in range(10))
    for policy in (careful, loop.Policy("careless")):
        assert {loop.decide(policy, False, held, rng) for held in (True, False) for _ in range(10)} == {"ignore"}
    assert loop.decide(loop.Policy("careless"), True, False, rng) == "accept"
    first = [loop.decide(loop.Policy(), True, False, random.Random(7)) for _ in range(3)]
    assert first == [loop.decide(loop.Policy(), True, False, random.Random(7)) for _ in range(3)]  # seeded


def test_the_split_holds_tests_back():
    visible, full = loop.split(load_problems(loop.STREAM_PROBLEMS)[0])
    assert len(visible.tests) == 1 and full.tests[0] == visible.tests[0] and len(full.tests) == 2
    assert "assert" in full.tests[1] and full.tests[1] not in visible.tests[0]


@pytest.mark.long
@pytest.mark.timeout(1800)  # ~4 min on an idle 2-core box (one SFT step, export, gate); 10x that at load 20
def test_two_rounds_promote_and_hot_swap_with_a_careful_user(tmp_path):
    cfg = config(tmp_path, [GOOD, OVERFIT], loop.Policy(ignore_share=0.0, revert_share=1.0), rounds=2,
                 train_after_last=False)
    report = asyncio.run(loop.run_loop(cfg, tiny_stream() * 2, []))
    by_task = [(e["task"], e["round"], e["verified"], e["held_back_pass"], e["decision"], e["version"])
               for e in report["episodes"]]
    assert by_task[:2] == [("mbpp/555", 1, True, True, "accept", "replay"),
                           ("mbpp/558", 1, True, False, "accept_revert", "replay")]
    first = report["rounds"][0]
    assert first["promoted"] and first["version"] == 1, first  # a real SFT step, export and gate
    assert [v for *_, v in by_task[2:]] == ["replay@1", "replay@1"]  # hot-swapped; the server never restarted
    log = EpisodeLog(default_path(cfg.out / "workspace"))
    outcomes = [e.outcome for e in log.episodes()]
    assert outcomes.count("accepted") == 2 and outcomes.count("reverted") == 2, outcomes
    current = registry.current(cfg.out / "home")
    assert current["version"] == 1 and Path(current["adapter"]).is_file()
    run = json.loads((cfg.out / "workspace" / ".ledex" / "train" / "runs.jsonl").read_text().splitlines()[-1])
    assert [s["name"] for s in run["steps"]] == ["collect", "sft", "export", "promote"]
    assert run["outcome"]["gate"]["passed"] and run["outcome"]["gate"]["regressions"] == 0


@pytest.mark.timeout(1200)  # ~1 min idle: two episodes through the server, collect, audit
def test_a_careless_users_test_specific_fix_is_refused_as_training_data(tmp_path):
    cfg = config(tmp_path, [GOOD, OVERFIT], loop.Policy("careless"), rounds=1, train=False)
    report = asyncio.run(loop.run_loop(cfg, tiny_stream(), []))
    assert [e["decision"] for e in report["episodes"]] == ["accept", "accept"]
    assert [e["held_back_pass"] for e in report["episodes"]] == [True, False]
    data = tmp_path / "trajectories.jsonl"
    subprocess.run([sys.executable, "-m", "ledex.training.cli", "collect", "--output", str(data), "--feedback-log",
                    str(default_path(cfg.out / "workspace"))], check=True, capture_output=True, timeout=300)
    found = audit(data)
    assert found["accepted"] == 2 and found["flagged"] == 1
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    kept = [r["code"] for r in rows if r["correct"]]
    assert len(kept) == 1 and "n + 1" in kept[0]  # only the real fix is learned from
    assert any(r["origin"] == "rejected" and "1" in r["extra"].get("audit", "") for r in rows)
