"""Typed values of the sandbox API: limits going in, per-test outcomes and a verdict coming out.

These cross the worker's JSON protocol, so each has a plain ``to_dict``/``from_dict`` pair.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped")
KILL_REASONS = ("timeout", "memory", "cpu", "output", "crash", "tamper")  # tamper: sandbox/guard.py


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed test run."""

    wall_s: float = 60.0  # wall clock; the whole process tree is killed after it
    cpu_s: int = 60  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 2048  # RLIMIT_AS; pytest itself needs ~100 MB of address space
    file_mb: int = 64  # RLIMIT_FSIZE: bounds any single file, pytest's capture file included
    nproc: int = 256  # RLIMIT_NPROC inside the sandbox's own user namespace / uid
    output_kb: int = 256  # stdout/stderr tail kept; the rest is read and discarded
    network: bool = False  # True keeps the host network (no network namespace)
    # Flood guard, not an output cap: a run that prints more than this is killed ("output").
    # Output up to it is drained and discarded past the kept tail (``output_kb``), so a test
    # printing tens of MB keeps its real outcome (issue 12 item 10).
    max_output_mb: int = 1024
    # Per-test timeout (SIGALRM in the plugin, then a faulthandler stack dump 5 s later): a
    # hanging test fails with the stack where it hung and the next test runs. Used only when
    # it leaves room inside wall_s (test_timeout_s + 7 s <= wall_s); 0 disables it.
    test_timeout_s: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        """All limits as a dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Limits":
        """Limits from a dict; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TestOutcome:
    """One executed (or collection-failed) test."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str  # relative to the workspace root, e.g. "tests/test_calc.py::test_add"
    outcome: str  # one of OUTCOMES
    message: str  # one line ("" when passed)
    details: str  # traceback text, sandbox root rewritten to the real workspace path
    file: str | None  # test file relative to the workspace
    line: int | None  # 1-based line of the test function
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TestOutcome":
        """A TestOutcome from to_dict's output."""
        return cls(**data)


@dataclass(frozen=True)
class Verdict:
    """The result of one sandboxed run; ``passed`` is True only when every requested test ran and passed."""

    passed: bool
    outcomes: tuple[TestOutcome, ...]
    requested: tuple[str, ...]  # node ids asked for; () = whole suite
    pass_rate: float  # passed / max(requested-or-executed count, 1): the RL reward
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    killed_reason: str | None  # one of KILL_REASONS or None
    error: str | None  # why the run could not be evaluated (rejected patch, no report, ...)
    isolation: str  # "bubblewrap" | "unshare" | "none"
    exit_code: int | None = None  # the test command's exit status (informational only)
    notes: tuple[str, ...] = field(default=())  # non-fatal observations (e.g. "ran as uid 65534")
    # why ``error`` is set: startup | collection | not_found | tampering | report | timeout |
    # output | patch | gate (sandbox/gate.py) | disk (the run filled its disk quota, sandbox/worker.py)
    # | sandbox (see sandbox/verdict.py); None when error is None
    error_kind: str | None = None
    # Only when the run asked for it: {nodeid: {relpath: [line, ...]}}, the workspace lines each
    # test executed (coverage.py, see covplugin.py). Advice for localisation, never a verdict input.
    coverage: dict[str, dict[str, list[int]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict, outcomes as dicts too."""
        data = asdict(self)
        data["outcomes"] = [o.to_dict() for o in self.outcomes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Verdict":
        """A Verdict from to_dict's output (lists become tuples; notes default to none)."""
        data = dict(data)
        data["outcomes"] = tuple(TestOutcome.from_dict(o) for o in data["outcomes"])
        data["requested"] = tuple(data["requested"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)

    @property
    def ran(self) -> int:
        """Tests that ran (collection errors excluded)."""
        return sum("::" in o.nodeid for o in self.outcomes)

    @property
    def failed(self) -> tuple[TestOutcome, ...]:
        """Outcomes that were not passed or skipped."""
        return tuple(o for o in self.outcomes if o.outcome in ("failed", "error"))


def error_verdict(message: str, *, requested: tuple[str, ...] = (), isolation: str = "none",
                  duration_s: float = 0.0, killed_reason: str | None = None,
                  error_kind: str = "sandbox") -> Verdict:
    """A verdict for a run that could not be evaluated at all."""
    return Verdict(passed=False, outcomes=(), requested=requested, pass_rate=0.0, stdout_tail="",
                   stderr_tail="", duration_s=duration_s, killed_reason=killed_reason,
                   error=message, isolation=isolation, error_kind=error_kind)
