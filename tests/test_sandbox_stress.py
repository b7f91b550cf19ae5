"""Sandbox verdicts under load: many parallel runs on a busy machine, judged as on an idle one.

A rare false negative ("the session finished while test_add was running", a protocol
violation, so a "tampering" verdict, for an honest test) came from the per-test alarm
firing while pytest and the sandbox plugin were *reporting* between two phases: the
exception escaped pytest's phase capture and a record was never sent. On a loaded machine
any test near its per-test timeout could hit that window. Here the timeout is tiny and the
tests' durations straddle it, so alarms land everywhere - inside phases, between them, in
the reporting - while every CPU is kept busy and more runs go in parallel than there are
CPUs. Every verdict must still read each test as passed or "did not finish within", never
as a broken protocol. Run: ``.venv/bin/python -m pytest -q tests/test_sandbox_stress.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import write_tree

from ledex.sandbox import Limits, verify_many

TEST_S = 0.06  # the per-test timeout; the tests sleep 0 .. 0.116 s around it
RUNS = 4
BURN = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass"  # ends even if we die


def _workspace(tmp_path: Path) -> Path:
    tests = "import time\nfrom pkg.calc import add\n\n" + "".join(
        f"def test_add{i}():\n    time.sleep({i * 0.004:.3f})\n    assert add(1, 2) == 3\n\n" for i in range(30))
    return write_tree(tmp_path / "ws", {"pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a - b\n",
                                        "tests/test_calc.py": tests})


def test_parallel_runs_under_cpu_load_never_read_as_a_broken_protocol(tmp_path):
    ws = _workspace(tmp_path)
    cpus = len(os.sched_getaffinity(0))
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(cpus)]
    try:
        patches = [{"pkg/calc.py": f"def add(a, b):\n    return a + b\n# {i}\n"} for i in range(RUNS)]
        limits = Limits(wall_s=60, cpu_s=60, test_timeout_s=TEST_S)
        verdicts = dict(verify_many(ws, patches, ["tests/test_calc.py"], limits=limits, workers=cpus + 1))
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert len(verdicts) == RUNS
    seen = set()
    for v in verdicts.values():
        assert v.error_kind is None and v.killed_reason is None, (v.error_kind, v.error)
        assert len(v.outcomes) == 30
        for o in v.outcomes:
            # the alarm may land in the body (failed) or in setup/teardown (error), never as a broken protocol
            timed_out = o.outcome in ("failed", "error") and f"did not finish within {TEST_S:g} s" in o.message
            assert o.outcome == "passed" or timed_out, (o.nodeid, o.outcome, o.message)
            seen.add("timeout" if timed_out else "passed")
    assert seen == {"passed", "timeout"}  # the alarm did land, and not on everything
