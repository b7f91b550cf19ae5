"""Turn a raw run into a Verdict: the plugin's private channel and the JUnit report must agree.

Nothing here looks at the exit code to decide a pass; it is only used to name a kill reason.
"""
from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field, replace

from .models import TestOutcome, Verdict
from .runner import RawRun

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


@dataclass
class Channel:
    """Records the plugin streamed, keeping only lines carrying this run's nonce."""

    started: bool = False
    finished: bool = False
    collected: int | None = None
    tampered: set[str] = field(default_factory=set)
    tests: dict[str, tuple[str, float]] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)
    forged: int = 0


def parse_channel(lines: list[str], nonce: str) -> Channel:
    chan = Channel()
    for line in lines:
        tag, _, payload = line.partition(" ")
        if tag != nonce:
            chan.forged += 1
            continue
        try:
            _apply(chan, json.loads(payload))
        except (ValueError, KeyError, TypeError):
            chan.forged += 1
    return chan


def _apply(chan: Channel, rec: dict) -> None:
    ev = rec["ev"]
    if ev == "start":
        chan.started = True
    elif ev == "test":
        old = chan.tests.get(rec["nodeid"])
        if old is None or _RANK[rec["outcome"]] > _RANK[old[0]]:
            chan.tests[rec["nodeid"]] = (rec["outcome"], float(rec["d"]))
    elif ev == "collect_error":
        chan.collect_errors[rec["nodeid"]] = str(rec["text"])
    elif ev in ("collected", "finish"):
        chan.tampered.update(rec.get("tampered", ()))
        if ev == "collected":
            chan.collected = int(rec["n"])
        else:
            chan.finished = True


def merge(chan: Channel, junit: dict[str, TestOutcome] | None, rewrite) -> tuple[list[TestOutcome], list[str]]:  # noqa: ANN001
    """Final per-test outcomes and the disagreements found between the two sources."""
    junit = junit or {}
    problems: list[str] = []
    outcomes = [_merge_one(nodeid, state, junit.get(nodeid), problems)
                for nodeid, state in chan.tests.items()]
    for nodeid, text in chan.collect_errors.items():
        j = junit.get(nodeid)
        outcomes.append(j if j and j.outcome == "error" else _collect_error(nodeid, rewrite(text)))
    seen = {o.nodeid for o in outcomes}
    for nodeid, j in junit.items():
        if nodeid in seen or (j.outcome == "error" and j.file in chan.collect_errors):
            continue  # JUnit's own name for a module that failed to collect: already reported
        if j.outcome == "passed":  # a pass the runner never saw: forged or not executed
            problems.append(f"{nodeid} passes in the JUnit report but never ran")
            j = replace(j, outcome="error", message="reported passed but not executed by the sandbox runner")
        outcomes.append(j)
    return outcomes, problems


def _merge_one(nodeid: str, state: tuple[str, float], j: TestOutcome | None,
               problems: list[str]) -> TestOutcome:
    outcome, duration = state
    if j is None:
        file = nodeid.split("::")[0]
        msg = "" if outcome == "passed" else f"{outcome} (no JUnit entry)"
        return TestOutcome(nodeid, outcome, msg, "", file or None, None, duration)
    if (outcome == "passed") == (j.outcome == "passed"):
        return j
    problems.append(f"{nodeid}: runner saw {outcome}, JUnit report says {j.outcome}")
    worst = outcome if outcome != "passed" else j.outcome
    note = f"runner saw {outcome} but the JUnit report says {j.outcome} (report tampering?)"
    return replace(j, outcome=worst, message=note)


def _collect_error(nodeid: str, text: str) -> TestOutcome:
    last = [ln for ln in text.splitlines() if ln.strip()]
    message = last[-1].strip()[:500] if last else "collection error"
    return TestOutcome(nodeid, "error", message, text, nodeid.split("::")[0] or None, None, 0.0)


def _matches(req: str, nodeid: str) -> bool:
    req = req.removeprefix("./").rstrip("/")
    return (nodeid == req or nodeid.startswith(req + "::") or nodeid.startswith(req + "[")
            or nodeid.startswith(req + "/"))


def score(requested: tuple[str, ...], outcomes: list[TestOutcome]) -> tuple[int, int, list[str]]:
    """(passed units, total units, requested entries that matched nothing)."""
    if not requested:
        return sum(o.outcome == "passed" for o in outcomes), len(outcomes), []
    passed = total = 0
    missing = []
    for req in requested:
        matched = [o for o in outcomes if _matches(req, o.nodeid)]
        if not matched:
            missing.append(req)
        total += max(len(matched), 1)
        passed += sum(o.outcome == "passed" for o in matched)
    return passed, total, missing


def kill_reason(raw: RawRun, outcomes: list[TestOutcome]) -> str | None:
    if raw.output_overflow:
        return "output"
    if raw.timed_out:
        return "timeout"
    sig = _signal_of(raw.exit_code)
    if sig == signal.SIGXCPU:
        return "cpu"
    texts = [raw.stderr_tail[-20000:]] + [o.details[-4000:] + o.message for o in outcomes]
    if any("MemoryError" in t for t in texts):
        return "memory"
    return "crash" if sig else None


def _signal_of(code: int | None) -> int | None:
    if code is None:
        return None
    if code < 0:
        return -code
    return code - 128 if 128 < code < 160 else None  # shells and bwrap report 128+signal


def build(raw: RawRun, chan: Channel, junit: dict[str, TestOutcome] | None, *,
          requested: tuple[str, ...], isolation: str, rewrite, limits_wall: float) -> Verdict:  # noqa: ANN001
    outcomes, problems = merge(chan, junit, rewrite)
    passed_n, total, missing = score(requested, outcomes)
    killed = kill_reason(raw, outcomes)
    error = _error(raw, chan, junit, problems, missing, killed, limits_wall)
    ok = error is None and killed is None and total > 0 and passed_n == total
    if not requested:  # whole suite: skips set by the (pristine) tests themselves are fine
        ok = (error is None and killed is None and passed_n > 0
              and all(o.outcome in ("passed", "skipped") for o in outcomes)
              and chan.collected == len(chan.tests))
    notes = [f"ignored {chan.forged} forged channel line(s)"] if chan.forged else []
    return Verdict(passed=ok, outcomes=tuple(outcomes), requested=requested,
                   pass_rate=0.0 if killed or chan.tampered else passed_n / max(total, 1),
                   stdout_tail=raw.stdout_tail, stderr_tail=raw.stderr_tail,
                   duration_s=round(raw.duration_s, 4), killed_reason=killed, error=error,
                   isolation=isolation, exit_code=raw.exit_code, notes=tuple(notes + raw.notes))


def _error(raw, chan, junit, problems, missing, killed, wall) -> str | None:  # noqa: ANN001
    code = raw.exit_code
    if killed == "timeout":
        return f"timed out after {wall:g}s; the whole process tree was killed"
    if killed == "output":
        return "killed: the run printed more output than allowed"
    if not chan.started:
        return f"the test command never started pytest with the sandbox plugin (exit code {code})"
    if chan.tampered:
        return "protected files were modified during the run: " + ", ".join(sorted(chan.tampered))
    if chan.collect_errors:
        nodeid, text = next(iter(chan.collect_errors.items()))
        return f"collection error in {nodeid}: {_collect_error(nodeid, text).message}"
    if not chan.finished:
        return f"pytest did not finish its session (exit code {code}): the process exited or was killed mid-run"
    if junit is None:
        return f"no JUnit report was written (exit code {code})"
    if problems:
        return "runner and JUnit report disagree: " + "; ".join(problems[:5])
    if missing:
        return "requested tests did not run: " + ", ".join(missing)
    return None
