"""pytest plugin: per-test line coverage (coverage.py, one dynamic context per test node id).

Copied into the sandbox as ``ledex_sbx_cov`` and loaded through ``PYTEST_PLUGINS`` only when
a run asks for coverage (``run_tests(..., coverage=True)``). It measures the files under the
working directory (the workspace copy) except test code, ignores the project's own coverage configuration,
switches coverage.py's context to ``item.nodeid`` around each test's setup, call and
teardown, and at the end writes ``{"tests": {nodeid: {relpath: [line, ...]}}}`` (or
``{"error": "..."}``) as ``coverage-<pid>.json`` into ``$LEDEX_SBX_COVERAGE_DIR``.

Coverage is advice for fault localisation, never an input to a verdict: code under test can
forge it, which only misleads the ranking of suspects. Standard library, pytest, coverage and the
sandbox's ``ledex_sbx_memo``.
"""
from __future__ import annotations

import json
import os
import sys

import ledex_sbx_memo  # sandbox/memo.py, beside this plugin
import pytest

_DIR = os.environ.get("LEDEX_SBX_COVERAGE_DIR", "")
# Test code by pytest's default names, the usual test folders and Django's tests.py: its lines
# are never suspects, and not tracing them saves much of coverage's cost in loop-heavy tests.
_TEST_CODE = ["*/tests/*", "*/test/*", "*/testing/*", "*/test_*.py", "*_test.py", "*/tests.py", "*/conftest.py"]
_ROOT = os.getcwd()


def _import_coverage():  # noqa: ANN202 - the coverage module or None
    """The project's coverage.py, else the copy of ledex's own (the folder in
    $LEDEX_SBX_COVERAGE_FALLBACK, searched last so the project's own always wins)."""
    try:
        import coverage
        return coverage
    except ImportError:
        pass
    fallback = os.environ.get("LEDEX_SBX_COVERAGE_FALLBACK", "")
    if not fallback:
        return None
    sys.path.append(fallback)
    try:
        import coverage
        return coverage
    except Exception:  # noqa: BLE001 - a copy this Python version cannot run (syntax, ABI)
        return None


def _start():  # noqa: ANN202 - coverage.Coverage or an error string
    coverage = _import_coverage()
    if coverage is None:
        return "coverage is not installed in the interpreter that runs the tests (nor usable from ledex's)"
    cov = coverage.Coverage(data_file=None, source=[_ROOT], omit=_TEST_CODE, config_file=False, branch=False)
    cov.start()
    return cov


_COV = _start() if _DIR else None


def _switch(context: str) -> None:
    """Never lets coverage break a test run: on any error measuring stops and the error is kept."""
    global _COV
    if _COV is None or isinstance(_COV, str):
        return
    try:
        _COV.switch_context(context)
    except Exception as exc:  # e.g. a thread left running by an earlier test racing the flush
        try:
            _COV.stop()
        except Exception:
            pass
        _COV = f"coverage stopped at {context or 'a test end'}: {exc!r}"[:300]


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):  # noqa: ANN001
    """Pytest hook wrapper: the project's pytest-cov is off for this run, as with `--no-cov`,
    before its own hook of this name starts a second coverage.py tracer that replaces ours
    (fresh-user run X7: wcwidth's `addopts = --cov=wcwidth` left "No data was collected", and
    the suspects were ordered without coverage). Outcomes never depend on it."""
    if _COV is not None:
        early_config.known_args_namespace.no_cov = True
    yield


_CACHES: list = []  # the workspace's memoised functions (ledex_sbx_memo), found once collection imported them


def pytest_collection_finish(session):  # noqa: ANN001
    """Pytest hook: find the workspace's lru_cache/cache wrappers, now that the tests imported the code."""
    if _COV is not None:
        _CACHES[:] = ledex_sbx_memo.workspace_caches(_ROOT)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001
    """Pytest hook wrapper: attribute coverage to the test's node id while it runs (the runner
    plugin's, which numbers items pytest collected with one id), each test starting with the
    workspace's caches empty, so its lines are the ones it needs, not only those no earlier test
    memoised (fresh-user run X7: wcwidth's @lru_cache wcwidth() hid _bisearch from most tests)."""
    ledex_sbx_memo.clear(_CACHES)
    _switch(next((value for name, value in item.user_properties if name == "ledex_nodeid"), item.nodeid))
    yield
    _switch("")


def _per_test(cov) -> dict[str, dict[str, list[int]]]:  # noqa: ANN001
    data = cov.get_data()
    tests: dict[str, dict[str, list[int]]] = {}
    for path in sorted(data.measured_files()):  # a set: the report's order would change from run to run
        rel = os.path.relpath(path, _ROOT)
        if rel.startswith(".."):
            continue
        for line, contexts in (data.contexts_by_lineno(path) or {}).items():
            for context in contexts:
                if context:
                    tests.setdefault(context, {}).setdefault(rel.replace(os.sep, "/"), []).append(line)
    for files in tests.values():
        for lines in files.values():
            lines.sort()
    return tests


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001
    """Pytest hook: write per-test coverage (or the error that stopped it) to coverage-<pid>.json."""
    if _COV is None:
        return
    if isinstance(_COV, str):
        payload = {"error": _COV}
    else:
        try:
            _COV.stop()
            payload = {"tests": _per_test(_COV)}
        except Exception as exc:
            payload = {"error": f"coverage data unreadable: {exc!r}"[:300]}
    with open(os.path.join(_DIR, f"coverage-{os.getpid()}.json"), "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
