"""pytest plugin that streams what really ran to the sandbox worker over a private pipe.

Copied into the sandbox as ``ledex_sbx_plugin`` and loaded through ``PYTEST_PLUGINS``,
so it is imported before any conftest or candidate code. It reads a per-run nonce and
the protected-file manifest from a one-shot pipe (then closes it and scrubs the fd
numbers from ``os.environ``), and tags every record it writes with the nonce. Outcomes
come from hook wrappers around the test phases themselves, not from pytest's reports,
so candidate code that monkey-patches report creation or forges the JUnit file
produces a disagreement instead of a pass. Standard library and pytest only.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

_SKIP = pytest.skip.Exception
_XFAIL = pytest.xfail.Exception
_write = os.write  # bound now: later monkey-patching of os.write does not reach us


def _read_secret() -> tuple[str, dict, str, int]:
    fd_in = int(os.environ.pop("LEDEX_SBX_SECRET_FD"))
    fd_out = int(os.environ.pop("LEDEX_SBX_CHANNEL_FD"))
    chunks = []
    while chunk := os.read(fd_in, 65536):
        chunks.append(chunk)
    os.close(fd_in)
    nonce, _, payload = b"".join(chunks).decode().partition("\n")
    data = json.loads(payload)
    return nonce, data["manifest"], data["root"], fd_out


_NONCE, _MANIFEST, _ROOT, _FD = _read_secret()
_state: dict[str, object] = {}


def _emit(record: dict) -> None:
    line = (_NONCE + " " + json.dumps(record) + "\n").encode()
    try:
        while line:
            line = line[_write(_FD, line):]
    except OSError:
        pass  # channel closed by candidate code: the missing records fail the run


def _phase_outcome(excinfo, phase: str) -> str:
    if excinfo is None:
        return "passed"
    if isinstance(excinfo[1], (_SKIP, _XFAIL)):
        return "skipped"
    return "failed" if phase == "call" else "error"


_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def _record(phase: str, outcome) -> None:  # noqa: ANN001 - pluggy Result
    result = _phase_outcome(outcome.excinfo, phase)
    current = str(_state.get("outcome", "passed"))
    if _RANK[result] > _RANK[current]:
        _state["outcome"] = result


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item):  # noqa: ANN001
    outcome = yield
    _record("setup", outcome)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item):  # noqa: ANN001
    outcome = yield
    _state["called"] = True
    _record("call", outcome)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):  # noqa: ANN001
    outcome = yield
    _record("teardown", outcome)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001
    _state.clear()
    item.user_properties.append(("ledex_nodeid", item.nodeid))
    start = time.perf_counter()
    yield
    outcome = str(_state.get("outcome", "passed"))
    if outcome == "passed" and not _state.get("called"):
        outcome = "error"  # the test body never ran
    _emit({"ev": "test", "nodeid": item.nodeid, "outcome": outcome,
           "d": round(time.perf_counter() - start, 6)})


def pytest_collectreport(report):  # noqa: ANN001
    if report.failed:
        _emit({"ev": "collect_error", "nodeid": report.nodeid, "text": str(report.longrepr)[-4000:]})


def _tampered() -> list[str]:
    changed = []
    for rel, digest in _MANIFEST.items():
        try:
            with open(os.path.join(_ROOT, rel), "rb") as fh:
                ok = hashlib.sha256(fh.read()).hexdigest() == digest
        except OSError:
            ok = False
        if not ok:
            changed.append(rel)
    return changed


def pytest_collection_finish(session):  # noqa: ANN001
    _emit({"ev": "collected", "n": len(session.items), "tampered": _tampered()})


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001
    _emit({"ev": "finish", "status": int(exitstatus), "tampered": _tampered()})


_emit({"ev": "start", "pid": os.getpid()})
