"""Benchmark ledex.sandbox: per-verification overhead and parallel speed-up.

Run from the repo root:  ``.venv/bin/python bench/bench_sandbox.py [--reps 7]``

1. Overhead: one sandboxed ``verify`` of a single pytest node vs running that node with
   ``python -m pytest`` directly (same interpreter, same workspace), as a ratio of
   medians over interleaved repetitions. Goal: <= 1.3.
2. Parallel: 8 candidates through ``verify_many`` (default pool) vs 8 ``verify`` calls
   one after another. Reported as a speed-up factor.

Prints one JSON object (and a markdown table) on stdout. Timings on a shared, loaded
machine are noisy: the load average is printed alongside.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledex.sandbox import Limits, default_workers, detect_mode, verify, verify_many

NODE = "tests/test_calc.py::test_add"
GOOD = "def add(a, b):\n    return a + b\n"
LIMITS = Limits(wall_s=120)


def make_workspace(root: Path) -> Path:
    files = {"pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a - b\n",
             "pytest.ini": "[pytest]\n",
             "tests/test_calc.py": "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def time_direct(ws: Path) -> float:
    """The same node run directly (the fix applied in place in a scratch copy)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NODE],
                   cwd=ws, capture_output=True, check=False)
    return time.perf_counter() - start


def time_sandboxed(ws: Path) -> float:
    start = time.perf_counter()
    verdict = verify(ws, {"pkg/calc.py": GOOD}, [NODE], limits=LIMITS)
    assert verdict.passed, verdict.error
    return time.perf_counter() - start


def overhead(ws: Path, direct_ws: Path, reps: int) -> dict:
    direct, boxed = [], []
    time_direct(direct_ws), time_sandboxed(ws)  # warm file caches
    for _ in range(reps):
        direct.append(time_direct(direct_ws))
        boxed.append(time_sandboxed(ws))
    d, b = statistics.median(direct), statistics.median(boxed)
    return {"direct_median_s": round(d, 3), "sandboxed_median_s": round(b, 3),
            "overhead_ratio": round(b / d, 3), "goal": 1.3}


def parallel(ws: Path, n: int = 8) -> dict:
    patches = [{"pkg/calc.py": GOOD + f"# candidate {i}\n"} for i in range(n)]
    start = time.perf_counter()
    for patch in patches:
        assert verify(ws, patch, [NODE], limits=LIMITS).passed
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    results = list(verify_many(ws, patches, [NODE], limits=LIMITS))
    par = time.perf_counter() - start
    assert len(results) == n and all(v.passed for _, v in results)
    return {"candidates": n, "workers": default_workers(n, LIMITS), "sequential_s": round(sequential, 3),
            "parallel_s": round(par, 3), "speedup": round(sequential / par, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        direct_ws = make_workspace(Path(tmp) / "direct")
        (direct_ws / "pkg/calc.py").write_text(GOOD)
        result = {"isolation": detect_mode(), "cpus": len(os.sched_getaffinity(0)),
                  "loadavg_before": os.getloadavg()[0],
                  "overhead": overhead(ws, direct_ws, args.reps), "parallel": parallel(ws),
                  "loadavg_after": os.getloadavg()[0]}
    print(json.dumps(result, indent=2))
    o, p = result["overhead"], result["parallel"]
    print(f"\n| metric | value |\n|---|---|\n| isolation | {result['isolation']} |\n"
          f"| direct pytest (median) | {o['direct_median_s']} s |\n"
          f"| sandboxed verify (median) | {o['sandboxed_median_s']} s |\n"
          f"| overhead ratio (goal <= 1.3) | {o['overhead_ratio']} |\n"
          f"| 8 candidates sequential / parallel | {p['sequential_s']} s / {p['parallel_s']} s |\n"
          f"| parallel speed-up ({p['workers']} workers) | {p['speedup']}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
