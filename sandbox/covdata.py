"""Worker side of per-test coverage: install the plugin into a run, read back what it wrote.

The files are written by the sandboxed process, so they are opened like any untrusted report:
no symlinks, regular files only, size-capped, non-blocking; anything unreadable is dropped.
The result shape is ``{nodeid: {relpath: [line, ...]}}`` (1-based line numbers, paths
relative to the workspace, "/"-separated).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

PLUGIN_NAME = "ledex_sbx_cov"
ENV_DIR = "LEDEX_SBX_COVERAGE_DIR"
FALLBACK_ENV = "LEDEX_SBX_COVERAGE_FALLBACK"  # a folder with ledex's own coverage package
MAX_BYTES = 64 * 1024 * 1024  # a suite of ~10k tests with ~100 lines each fits easily

Coverage = dict[str, dict[str, list[int]]]


def install(runner_dir: Path, report_dir: Path, env: dict[str, str]) -> None:
    """Copy the plugin next to the runner plugin and load it in the run's environment, with a
    copy of the coverage.py that runs ledex for the plugin to fall back on (FALLBACK_ENV) where the
    project's interpreter has none: a project's virtualenv seldom installs it, and without it no
    suspect is ranked by coverage (fresh-user runs X5, itsdangerous)."""
    shutil.copyfile(Path(__file__).with_name("covplugin.py"), runner_dir / f"{PLUGIN_NAME}.py")
    plugins = [p for p in env.get("PYTEST_PLUGINS", "").split(",") if p]
    env["PYTEST_PLUGINS"] = ",".join([*plugins, PLUGIN_NAME])
    env[ENV_DIR] = str(report_dir)
    fallback = _copy_own_coverage(runner_dir / "coverage-fallback")
    if fallback is not None:
        env[FALLBACK_ENV] = str(fallback)


def _copy_own_coverage(folder: Path) -> Path | None:
    """`folder` holding a copy of this interpreter's coverage package (its C tracer loads only in
    the same Python version; coverage.py uses its Python tracer elsewhere), or None without one."""
    try:
        import coverage
    except ImportError:
        return None
    source = Path(coverage.__file__).parent
    shutil.copytree(source, folder / "coverage", ignore=shutil.ignore_patterns("__pycache__", "htmlfiles"))
    return folder


def _read_capped(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    finally:
        os.close(fd)


def _merge(into: Coverage, tests: object) -> None:
    if not isinstance(tests, dict):
        return
    for nodeid, files in tests.items():
        if not isinstance(files, dict):
            continue
        mine = into.setdefault(str(nodeid), {})
        for rel, lines in files.items():
            if isinstance(lines, list):
                merged = set(mine.get(str(rel), ())) | {n for n in lines if isinstance(n, int)}
                mine[str(rel)] = sorted(merged)


def collect(report_dir: Path) -> tuple[Coverage | None, str | None]:
    """(coverage, note): the merged per-test line sets, or None and why there are none."""
    coverage: Coverage = {}
    errors, found = [], False
    for path in sorted(report_dir.glob("coverage-*.json")):
        raw = _read_capped(path)
        try:
            payload = json.loads(raw) if raw is not None else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            continue
        found = True
        if "error" in payload:
            errors.append(str(payload["error"])[:200])
        _merge(coverage, payload.get("tests"))
    if not found:
        return None, "no coverage: the test run wrote no coverage data"
    if errors and not coverage:
        return None, f"no coverage: {errors[0]}"
    return coverage, None
