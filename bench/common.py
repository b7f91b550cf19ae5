"""Shared helpers for the bench/ scripts: machine facts, timing, the result convention.

Convention (see bench/README.md): every `bench/bench_<name>.py` has
`main(argv: list[str] | None = None) -> dict`, accepts `--quick`, and returns a JSON-able dict
with optional keys "metrics" {name: number|str}, "ratios" {name: {"value", "goal", "ok"}},
"notes" [str]; anything else is kept in report.json as is. `emit(result)` prints it.

Import from a bench script (bench/ is not a package):
    sys.path.insert(0, str(Path(__file__).resolve().parent)); from common import ...
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def machine_facts() -> dict:
    """What the numbers were measured on (a shared 2-core box reads very differently from a laptop)."""
    facts = {"cpu": _cpu_model(), "cpus_usable": len(os.sched_getaffinity(0)), "cpus_total": os.cpu_count(),
             "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
             "loadavg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
             "platform": platform.platform(), "git_commit": _git("rev-parse", "--short", "HEAD"),
             "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    for dist in ("ledex", "llama-cpp-python", "torch", "transformers", "trl", "peft"):
        try:
            facts[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, goal: str) -> dict:
    """{"value", "goal", "ok"} for a ratio with a goal such as ">= 0.95" or "<= 1.3"."""
    op, _, bound = goal.partition(" ")
    ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return {"value": round(value, 3), "goal": goal, "ok": bool(ok)}


def emit(result: dict) -> dict:
    """Print a bench result as JSON (what a person running the script alone sees) and return it."""
    print(json.dumps(result, indent=2, default=str))
    return result
