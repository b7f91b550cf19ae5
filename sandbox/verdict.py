"""Turn a raw run into a Verdict: the worker's protocol-checked channel, cross-checked with JUnit.

The channel (sandbox/channel.py, which says which attack each check defeats) decides each
test's outcome; the JUnit report must agree with it (passed / skipped / failed-or-error)
and supplies the messages and tracebacks. Any disagreement, missing report, protocol
violation or non-zero exit status is a failure, never a pass.

Errors carry a kind (``Verdict.error_kind``): "startup" (pytest stopped before collecting:
unknown option, conftest raising), "collection", "not_found" (a requested test does not
exist), "tampering", "report" (missing/unreadable JUnit, unfinished session), "timeout",
"output", "internal" (pytest's INTERNALERROR: a conftest hook or plugin raised), "sandbox". The
message quotes pytest's own error line (the exception, not a hint).
"""
from __future__ import annotations

import re
import signal
from dataclasses import replace

from . import guard
from .channel import RANK, Channel, TestRecord, parse_channel
from .junit import first_line
from .models import TestOutcome, Verdict
from .runner import RawRun

__all__ = ["build", "merge", "parse_channel", "pytest_error", "score"]

_TIMEOUT_PREFIX = "ledex_sbx_plugin.TestTimeout: "
_PLUGIN_FRAME = re.compile(r'^  File "[^"]*/ledex_sbx_plugin\.py", line \d+, in \S+\n(?:    .*\n)?', re.MULTILINE)
# pytest's JUnit report names an INTERNALERROR as the test case classname="pytest" name="internal"
# (_pytest/junitxml.py, pytest_internalerror); the channel never sees it run.
INTERNAL_ERROR_ID = "pytest.py::internal"
# How a test stopped by a timeout is reported (here and by plugin.py, which runs inside the
# sandbox and cannot import this): the per-test timeout or the run's wall clock.
HUNG_PREFIX = "did not finish within"
# The suffix plugin.py (which cannot import this) gives the second and later of several items
# pytest collected with one node id: "cases.txt::case(6)[#2]"; pytest itself selects them all by
# the id without it (worker._command strips it)
DUPLICATE_MARK = "[#"
# How a test during which the test process exited is reported (os._exit, a crash in C code)
EXITED_PREFIX = "did not finish: the test process exited"
# How a pass of a run the sandbox does not trust (tampering, a broken protocol) is reported: an error.
UNTRUSTED_PREFIX = "not trusted: "
_MISSING_NAMED = 5  # requested tests named in a "did not run" error; the rest are counted
_FAULT_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def _klass(outcome: str) -> str:
    return "failed" if outcome in ("failed", "error") else outcome


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Timeout)(: .*)?$")


def pytest_error(text: str) -> str:
    r"""pytest's own error in ``text`` (a collection report or pytest's stderr), one line.

    The last ``E   `` line (the exception), else in a raw traceback the last exception line
    (``IndentationError: unexpected indent``), else an argparse ``error:`` line, else an
    ``ERROR:`` line, else the first lines that are not hints.

    >>> pytest_error('Traceback (most recent call last):\n  File "m.py", line 3\n    x\nIndentationError: unexpected indent')
    'IndentationError: unexpected indent'
    """
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    traceback = any(ln.startswith("Traceback (most recent call last)") for ln in lines)
    for pick in (lambda ln: ln.startswith("E   ") and not ln.startswith("E    "),
                 lambda ln: traceback and _EXCEPTION_LINE.match(ln) is not None,  # a raw traceback's last word
                 lambda ln: ": error: " in ln,
                 lambda ln: ln.startswith("ERROR: ") and not ln.startswith("ERROR: usage")):
        found = [ln for ln in lines if pick(ln)]
        if found:
            return found[-1].removeprefix("E   ").strip()[:500]
    plain = [ln.strip() for ln in lines if not ln.lower().startswith("hint")]
    return " ".join(plain[:6])[:500]


def error_location(text: str) -> str:
    r"""Where pytest's own error happened, ``path:line``, from the last ``File "path", line N``
    in ``text`` (a SyntaxError's own line, a conftest's traceback), else ``""``.

    >>> error_location('E     File "/w/conftest.py", line 3\nE       def f(:\nE   SyntaxError: invalid syntax')
    '/w/conftest.py:3'
    """
    found = re.findall(r'File "([^"]+)", line (\d+)', text)
    return f"{found[-1][0]}:{found[-1][1]}" if found else ""


def merge(chan: Channel, junit: dict[str, TestOutcome] | None, rewrite, *,  # noqa: ANN001
          unfinished: str = "", timed_out: str = f"{HUNG_PREFIX} the sandbox's per-test timeout"
          ) -> tuple[list[TestOutcome], list[str]]:
    """Final per-test outcomes and the disagreements found between the channel and JUnit.
    `unfinished`, `timed_out`: the messages of a test that never ended / that the per-test alarm hit."""
    junit = junit or {}
    problems: list[str] = []
    outcomes = [_timed_out(rec, o, timed_out) for nodeid, rec in chan.tests.items()
                for o in [_merge_one(rec, junit.get(nodeid), problems, unfinished, have_report=bool(junit),
                                   rewrite=rewrite)]]
    for nodeid, text in chan.collect_errors.items():
        outcomes.append(_collect_error(nodeid, rewrite(text)))
    seen = {o.nodeid for o in outcomes}
    for nodeid, j in junit.items():
        if nodeid in seen or (j.outcome == "error" and _collect_file(j) in chan.collect_errors):
            continue  # JUnit's own name for a module that failed to collect: already reported
        if nodeid == INTERNAL_ERROR_ID:  # pytest's own crash: an error of the run, not a forged test
            outcomes.append(replace(j, outcome="error"))
            continue
        problems.append(f"{nodeid} is in the JUnit report but the sandbox never saw it run")
        outcomes.append(replace(j, outcome="error",
                                message=f"in the JUnit report ({j.outcome}) but never run by the sandbox runner"))
    return outcomes, problems


def per_test_timeout_text(test_s: float, shortened_s: float = 0.0) -> str:
    """How a test the per-test timeout stopped is worded; `shortened_s`: the plugin's shorter
    timeout after an earlier test of the run hung (plugin.py AFTER_HANG_FACTOR), 0 if none.

    >>> per_test_timeout_text(30.0, 5.0)
    "did not finish within 5 s (the sandbox's per-test timeout, shortened after an earlier test hung)"
    """
    if shortened_s:
        return f"{HUNG_PREFIX} {shortened_s:g} s (the sandbox's per-test timeout, shortened after an earlier test hung)"
    return f"{HUNG_PREFIX} {test_s:g} s (the sandbox's per-test timeout)"


def _timed_out(rec: TestRecord, merged: TestOutcome, message: str) -> TestOutcome:
    """A test the per-test alarm hit reads as hung (engine/failures.is_hung), whatever the code
    under test made of the timeout: its report and traceback stay in the details."""
    if not (rec.ended and rec.timed_out and merged.outcome in ("failed", "error")):
        return merged
    message = per_test_timeout_text(0.0, rec.limit_s) if rec.limit_s else message
    details = "\n".join(part for part in (merged.message, merged.details) if part)
    return replace(merged, message=message, details=details)


def _collect_file(j: TestOutcome) -> str:
    return j.file or j.nodeid.split("::")[0]


def _merge_one(rec: TestRecord, j: TestOutcome | None, problems: list[str],
               unfinished: str, have_report: bool, rewrite) -> TestOutcome:  # noqa: ANN001
    outcome = rec.outcome
    file = rec.nodeid.split("::")[0] or None
    if not rec.ended:
        return TestOutcome(rec.nodeid, "failed", unfinished or "did not finish", "", file, None,
                           rec.duration_s)
    if not have_report:  # the run died before pytest wrote it: the verdict is an error anyway
        return _from_channel(rec, outcome, file, rewrite)
    if j is None:
        problems.append(f"{rec.nodeid} has no JUnit entry")
        return TestOutcome(rec.nodeid, "error", f"{outcome}, but missing from the JUnit report", "",
                           file, None, rec.duration_s)
    if outcome == "passed" and j.outcome == "skipped" and rec.skipped_subtests:
        return replace(j, outcome="passed", message="", details="", duration_s=rec.duration_s)  # as pytest counts it
    if rec.timed_out and RANK[outcome] > RANK[j.outcome]:  # it swallowed its timeout: JUnit saw its report
        return replace(j, outcome=outcome, duration_s=rec.duration_s)
    if _klass(outcome) != _klass(j.outcome):
        problems.append(f"{rec.nodeid}: runner saw {outcome}, JUnit report says {j.outcome}")
        worst = outcome if RANK[outcome] > RANK[j.outcome] else j.outcome
        note = f"runner saw {outcome} but the JUnit report says {j.outcome} (report tampering?)"
        return replace(j, outcome="error" if worst == "passed" else worst, message=note)
    return replace(j, outcome=outcome, message=_message(rec, j), duration_s=rec.duration_s,
                   details=_shown_details(j.details))


def _shown_details(traceback: str) -> str:
    """A failure's traceback as the user sees it: without the runner plugin's frames, its
    timeout named as the test's."""
    return _PLUGIN_FRAME.sub("", traceback).replace(_TIMEOUT_PREFIX, "TestTimeout: ")


def _from_channel(rec: TestRecord, outcome: str, file: str | None, rewrite) -> TestOutcome:  # noqa: ANN001
    """A test's outcome with the message and traceback its failed phase sent on the channel (a run
    that died before pytest wrote the JUnit report: a test calling os._exit, fresh-user run X5)."""
    message, text, line = rewrite(rec.failure[0]), rewrite(rec.failure[1]), rec.failure[2]
    if outcome == "passed":
        return TestOutcome(rec.nodeid, outcome, "", "", file, None, rec.duration_s)
    details = _shown_details(rewrite.trim(text))
    said = first_line(message.removeprefix(_TIMEOUT_PREFIX)) or first_line(details)
    return TestOutcome(rec.nodeid, outcome, said or f"{outcome} (no JUnit report)", details, file,
                       None if line is None else line + 1, rec.duration_s)


def _message(rec: TestRecord, j: TestOutcome) -> str:
    """JUnit's message, with pytest's xfail/xpass words where JUnit's xunit1 loses them."""
    xfail = any(x for _o, x in rec.phases.values())
    if xfail and rec.outcome == "skipped":
        return j.message if j.message.startswith("xfail") else f"xfail: {j.message}".rstrip(": ")
    if xfail and rec.outcome == "passed":
        return "XPASS (unexpectedly passed; the xfail mark is not strict)"
    return j.message.removeprefix(_TIMEOUT_PREFIX)


_FILE_LINE = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+)')


def _collect_error(nodeid: str, text: str) -> TestOutcome:
    """A module that failed to collect; the message names the line at fault, and the file when
    it is not the test module itself (a syntax error in the code under test). Fresh-user run X9:
    a test module's own syntax error came without its line."""
    message = pytest_error(text) or "collection error"
    places = [m for m in _FILE_LINE.finditer(text) if not m["path"].startswith("<")
              and not m["path"].endswith("/ledex_sbx_plugin.py")]  # the collection watchdog raises there
    if places and not places[-1]["path"].endswith(nodeid.split("::")[0]):
        message += f" (in {places[-1]['path']}, line {places[-1]['line']})"
    elif places:
        message += f" (line {places[-1]['line']})"
    return TestOutcome(nodeid, "error", message, text, nodeid.split("::")[0] or None, None, 0.0)


def _matches(req: str, nodeid: str) -> bool:
    req = req.removeprefix("./").rstrip("/")
    return (req in ("", ".") or nodeid == req or nodeid.startswith(req + "::") or nodeid.startswith(req + "[")
            or nodeid.startswith(req + "/"))


def score(requested: tuple[str, ...], outcomes: list[TestOutcome]) -> tuple[int, int, list[str]]:
    """(passed units, total units, requested entries that matched nothing). A requested file (no
    `::`) with no test is not missing: pytest stops on a path that does not exist or a module
    that cannot be imported (a start-up or collection error), so it is a file whose tests are
    all defined away (hyperlink 21.0.0's test_socket.py on Linux: fresh-user run X11 F6 called
    it a test run problem)."""
    if not requested:
        return sum(o.outcome == "passed" for o in outcomes), len(outcomes), []
    passed = total = 0
    missing = []
    for req in requested:
        matched = [o for o in outcomes if _matches(req, o.nodeid)]
        if not matched and "::" not in req:
            continue
        if not matched:
            missing.append(req)
        total += max(len(matched), 1)
        passed += sum(o.outcome == "passed" for o in matched)
    return passed, total, missing


def kill_reason(raw: RawRun, outcomes: list[TestOutcome]) -> str | None:
    """Why the run was killed: "tamper", "output", "timeout", "cpu", "memory" or
    "crash"; None if it was not."""
    if guard.MARKER in raw.stderr_tail:  # the runtime guard killed the run (sandbox/guard.py)
        return "tamper"
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


def hang_stack(stderr: str) -> str:
    """faulthandler's dump of the main thread, as a native traceback (outermost frame first)."""
    block = stderr.rsplit("most recent call first):", 1)
    if len(block) < 2:
        return ""
    frames = []
    for line in block[1].splitlines()[1:]:
        m = _FAULT_FRAME.match(line)
        if not m:
            break
        frames.append(f'  File "{m["path"]}", line {m["line"]}, in {m["func"]}')
    return "\n".join(["Traceback (most recent call last):", *reversed(frames)]) if frames else ""


def _unfinished(raw: RawRun, wall: float, test_s: float, shortened_s: float = 0.0) -> tuple[str, str]:
    """(message, details) for the test that began and never ended."""
    stack = hang_stack(raw.stderr_tail)
    if raw.timed_out:
        return f"{HUNG_PREFIX} {wall:g} s (the run's wall clock); the run was killed", stack
    if stack and test_s:
        return per_test_timeout_text(test_s, shortened_s), stack
    return f"{EXITED_PREFIX} while it ran (exit code {raw.exit_code})", stack


def build(raw: RawRun, chan: Channel, junit: dict[str, TestOutcome] | None, *,
          requested: tuple[str, ...], isolation: str, rewrite, limits_wall: float,  # noqa: ANN001
          test_s: float = 0.0) -> Verdict:
    """The Verdict of a run from its raw process result, the plugin's channel records and
    the JUnit report."""
    running = chan.tests.get(chan.current) if chan.current else None
    message, stack = _unfinished(raw, limits_wall, test_s, running.limit_s if running else 0.0)
    outcomes, problems = merge(chan, junit, rewrite, unfinished=message, timed_out=per_test_timeout_text(test_s))
    outcomes = [replace(o, details=rewrite(stack)) if o.nodeid == chan.current and stack else o
                for o in outcomes]
    passed_n, total, missing = score(requested, outcomes)
    killed = kill_reason(raw, outcomes)
    kind, error = _error(raw, chan, junit, problems, missing, killed, limits_wall, rewrite)
    ok = error is None and killed is None and total > 0 and passed_n == total
    if not requested:  # whole suite: skips set by the (pristine) tests themselves are fine
        ok = (error is None and killed is None and passed_n > 0
              and all(o.outcome in ("passed", "skipped") for o in outcomes)
              and chan.collected == len(chan.tests))
    if kind == "tampering":  # no pass from a tampered run is believed
        outcomes = [replace(o, outcome="error", message=f"{UNTRUSTED_PREFIX}{error}"[:500])
                    if o.outcome == "passed" else o for o in outcomes]
    if ok and raw.exit_code != 0:
        ok, kind, error = False, "report", f"every test passed but pytest exited with status {raw.exit_code}"
    notes = [f"ignored {chan.forged} forged channel line(s)"] if chan.forged else []
    bad = killed or kind in ("tampering", "report", "internal")  # an untrustworthy run earns no reward
    return Verdict(passed=ok, outcomes=tuple(outcomes), requested=requested,
                   pass_rate=0.0 if bad else passed_n / max(total, 1),
                   stdout_tail=raw.stdout_tail, stderr_tail=raw.stderr_tail,
                   duration_s=round(raw.duration_s, 4), killed_reason=killed, error=error,
                   isolation=isolation, exit_code=raw.exit_code, notes=tuple(notes + raw.notes),
                   error_kind=kind)


# The head of faulthandler's dump when the plugin's collection watchdog (plugin._watch_collection)
# ends the process; the frames follow, innermost first (hang_stack reads them).
WATCHDOG = re.compile(r"Timeout \((?P<took>[\d:]+)\)!\nThread [^\n]*\(most recent call first\):\n")


def _error(raw, chan, junit, problems, missing, killed, wall, rewrite) -> tuple[str | None, str | None]:  # noqa: ANN001
    code = raw.exit_code
    printed = raw.stderr_tail + "\n" + raw.stdout_tail[-4000:]
    said = rewrite(pytest_error(printed))
    if killed == "tamper":
        return "tampering", guard.reason(raw.stderr_tail)
    if killed == "timeout":
        running = f" while {chan.current} was running" if chan.current else ""
        return "timeout", f"timed out after {wall:g}s{running}; the whole process tree was killed"
    if killed == "output":
        return "output", "killed: the run printed more output than allowed"
    if not chan.started:
        return "startup", f"the test command never started pytest with the sandbox plugin (exit code {code}): {said}"
    if chan.tampered:
        return "tampering", "protected files were modified during the run: " + ", ".join(sorted(chan.tampered))
    if chan.violations:
        return "tampering", ("the test process broke the reporting protocol (its reports disagree with "
                             "what ran): " + "; ".join(chan.violations[:5]))
    hung = WATCHDOG.search(printed) if chan.collected is None else None
    frame = hung and _FAULT_FRAME.match(printed, hung.end())
    if frame:  # the plugin's collection watchdog ended the process
        return "startup", (f"collecting the tests did not finish within {hung['took']} (the sandbox's collection "
                           f"watchdog); stuck in {frame['func']} ({rewrite(frame['path'])}:{frame['line']})")
    if chan.collected is None and not chan.collect_errors:
        where = rewrite(error_location(printed))
        said += f" ({where})" if where and where not in said else ""
        return "startup", f"pytest stopped before running any test (exit code {code}; 0 ran): {said}"
    if chan.collect_errors:
        nodeid, text = next(iter(chan.collect_errors.items()))
        return "collection", f"collection error in {nodeid}: {_collect_error(nodeid, rewrite(text)).message}"
    if chan.current:
        return "report", f"the test process exited while {chan.current} was running (exit code {code})"
    if not chan.finished:
        return "report", f"pytest did not finish its session (exit code {code}): the process exited or was killed mid-run"
    if junit is None:
        return "report", f"no readable JUnit report was written (exit code {code})"
    if problems:
        return "tampering", "runner and JUnit report disagree: " + "; ".join(problems[:5])
    if INTERNAL_ERROR_ID in junit:
        return "internal", f"pytest stopped with an internal error: {pytest_error(junit[INTERNAL_ERROR_ID].details) or said}"
    if missing:  # pytest's own words about them, not the last failure's (X11 F6 quoted another test's assertion)
        said = next((rewrite(ln.strip()) for ln in printed.splitlines() if ln.startswith("ERROR: ")
                     and any(m.split("::")[0] in ln for m in missing)), "")
        return "not_found", f"requested tests did not run: {_name_some(missing)}" + (f" (pytest: {said})" if said else "")
    return None, None


def _name_some(ids: list[str]) -> str:
    """'a, b, c' or 'a, b, c, d, e and 310 more' (a whole suite's ids made 20 kB messages)."""
    more = len(ids) - _MISSING_NAMED
    return ", ".join(ids[:_MISSING_NAMED]) + (f" and {more} more" if more > 0 else "")
