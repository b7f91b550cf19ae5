"""The worker's side of the outcome channel: the plugin's records, checked against a strict protocol.

The plugin (sandbox/plugin.py) writes one ``<nonce> <json>`` line per event to a pipe whose
read end only the worker holds; the worker's reader thread appends each line the moment it
arrives. Per test the protocol is ``begin`` -> ``phase`` (setup, call, teardown; call absent
when setup did not pass) -> ``end``, one test at a time, each collected test at most once.

What this defeats, and what it does not (issue 13, "the outcome channel out of reach"):

- Rewriting an earlier test's outcome: a line in the pipe cannot be taken back (the tested
  process holds only the write end; the worker is root outside its pid namespace, so not
  reachable through /proc). Code running during test B that writes a second record for
  test A, or any record for a test that is not the one running, is a protocol violation:
  the run is an error, never a pass.
- Skipping the test body (``Function.runtest = lambda self: None``, swapping the collected
  test function's ``__code__``): plain test functions carry a body-ran proof (pytest's own
  ``pytest_pyfunc_call`` returned for the item, and the function pytest collected still has
  the code object it had at collection; replacing ``item.obj`` itself is allowed, because
  plugins such as pytest-asyncio do it, and is left to the guard; for unittest
  TestCases, unittest itself called ``addSuccess`` on the item); a pass without it is
  tampering. Doctest and custom items have no such proof (``body`` is null).
- Rewriting pytest's report (a report that says passed for a phase whose call raised):
  each phase record carries whether the phase raised; a passed report for a raising phase
  is tampering.
- Dying mid-run (``os._exit`` after forging, a hang, a kill): the test that began and did
  not end is a failure ("did not finish"), a missing ``finish`` is an error, and a pass
  needs exit status 0 from the process the worker itself waited for.
- Lines without this run's nonce are ignored and counted (``forged``).

Not defeated here: code running inside the test that is being reported can, if it gets
the nonce and the pipe's fd (both live in its own process: gc, /proc/self/fd), write that
test's records and the rest of a plausible stream, then exit 0. Keeping workspace code
away from those objects is the job of the static gate and the audit-hook guard
(sandbox/gate.py, sandbox/guard.py); this module makes every other route a failure.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_PHASES = ("setup", "call", "teardown", "subtest")


@dataclass
class TestRecord:
    """What the channel said about one test."""

    __test__ = False

    nodeid: str
    phases: dict[str, tuple[str, bool]] = field(default_factory=dict)  # when -> (outcome, xfail)
    ended: bool = False
    body: bool | None = None  # True/False: proof checked; None: no proof for this item kind
    duration_s: float = 0.0
    skipped_subtests: int = 0  # pytest counts the test passed; JUnit may file it as skipped
    timed_out: bool = False  # the per-test alarm raised in it: failed, whatever its reports say
    limit_s: float = 0.0  # its per-test timeout when the plugin shortened it after a hang (0: the run's)
    # the first failed phase's message, traceback and 0-based line: text only, never an outcome
    failure: tuple[str, str, int | None] = ("", "", None)

    @property
    def outcome(self) -> str:
        """The test's outcome as pytest counts it: the worst phase; "failed", not "passed", when it
        timed out (code that swallowed the timeout; an xfail test that timed out stays xfailed)."""
        worst = "passed"
        for outcome, _xfail in self.phases.values():
            worst = outcome if RANK[outcome] > RANK[worst] else worst
        return "failed" if worst == "passed" and self.timed_out else worst


@dataclass
class Channel:
    """Records the plugin streamed, keeping only lines carrying this run's nonce."""

    started: bool = False
    finished: bool = False
    status: int | None = None  # pytest's session exit status, as the plugin saw it
    collected: int | None = None
    ids: list[str] = field(default_factory=list)
    tampered: set[str] = field(default_factory=set)
    tests: dict[str, TestRecord] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    forged: int = 0
    current: str | None = None  # the test that began and has not ended

    def violate(self, text: str) -> None:
        """Record a protocol violation, keeping the first 50."""
        if len(self.violations) < 50:
            self.violations.append(text)


def parse_channel(lines: list[str], nonce: str) -> Channel:
    """Replay the received lines, in arrival order, through the protocol."""
    chan = Channel()
    for line in lines:
        tag, _, payload = line.partition(" ")
        if tag != nonce:
            chan.forged += 1
            continue
        try:
            rec = json.loads(payload)
            _HANDLERS[rec["ev"]](chan, rec)
        except (ValueError, KeyError, TypeError, AttributeError):
            chan.violate(f"malformed record {payload[:120]!r}")
    return chan


def _start(chan: Channel, rec: dict) -> None:
    if chan.started:
        chan.violate("a second start record")
    chan.started = True


def _collected(chan: Channel, rec: dict) -> None:
    if chan.collected is not None or chan.tests:
        chan.violate("collection reported twice or after tests ran")
    chan.collected = int(rec["n"])
    chan.ids = [str(i) for i in rec.get("ids", ())]
    chan.tampered.update(rec.get("tampered", ()))


def _begin(chan: Channel, rec: dict) -> None:
    nodeid = str(rec["nodeid"])
    if chan.finished or chan.current is not None:
        chan.violate(f"{nodeid} began while {chan.current or 'the session'} had not ended")
    if nodeid in chan.tests:
        chan.violate(f"{nodeid} began twice")
    if chan.collected is None or nodeid not in chan.ids:
        chan.violate(f"{nodeid} began but was not collected")
    limit = rec.get("limit")
    chan.tests[nodeid] = TestRecord(nodeid, limit_s=float(limit) if isinstance(limit, (int, float)) and limit > 0 else 0.0)
    chan.current = nodeid


def _running(chan: Channel, rec: dict) -> TestRecord | None:
    nodeid = str(rec["nodeid"])
    if nodeid != chan.current:
        chan.violate(f"a {rec['ev']} record for {nodeid} while {chan.current} was running")
        return None
    return chan.tests[nodeid]


def _phase(chan: Channel, rec: dict) -> None:
    test = _running(chan, rec)
    when, outcome = str(rec["when"]), str(rec["outcome"])
    if test is None or when not in _PHASES or outcome not in RANK:
        return
    if rec.get("raised") and outcome == "passed":
        chan.violate(f"{test.nodeid}: {when} raised but its report says passed")
    if when == "setup" and "teardown" in test.phases:  # a re-run (pytest-rerunfailures): the last attempt counts
        test.phases.clear()
    if when == "subtest":  # any number, during the call phase; only failures change the test's outcome
        test.skipped_subtests += outcome == "skipped"
        if outcome != "failed":
            return
        key = f"subtest{len(test.phases)}"
    elif when in test.phases or (when == "call" and "setup" not in test.phases):
        chan.violate(f"{test.nodeid}: {when} reported out of order")
        return
    else:
        key = when
    test.phases[key] = (outcome, bool(rec.get("xfail")))
    if outcome in ("failed", "error") and not any(test.failure):
        line = rec.get("line")
        test.failure = (str(rec.get("message") or ""), str(rec.get("text") or ""),
                        line if isinstance(line, int) and line >= 0 else None)


def _end(chan: Channel, rec: dict) -> None:
    test = _running(chan, rec)
    if test is None:
        return
    test.ended, test.duration_s = True, float(rec.get("d") or 0.0)
    test.body, test.timed_out = rec.get("body"), bool(rec.get("timeout"))
    if "setup" not in test.phases or "teardown" not in test.phases:
        chan.violate(f"{test.nodeid} ended without its setup and teardown reports")
    if test.outcome == "passed" and test.body is False:
        chan.violate(f"{test.nodeid} reported passed but its own test function never returned")
    chan.current = None


def _collect_error(chan: Channel, rec: dict) -> None:
    chan.collect_errors[str(rec["nodeid"])] = str(rec["text"])


def _finish(chan: Channel, rec: dict) -> None:
    if chan.finished:
        chan.violate("a second finish record")
    if chan.current is not None:
        chan.violate(f"the session finished while {chan.current} was running")
    chan.finished, chan.status = True, int(rec["status"])
    chan.tampered.update(rec.get("tampered", ()))


_HANDLERS = {"start": _start, "collected": _collected, "begin": _begin, "phase": _phase,
             "end": _end, "collect_error": _collect_error, "finish": _finish}
