"""The sandbox worker: ``python -m ledex.sandbox.worker`` reads one JSON request on stdin and
writes one JSON verdict on stdout.

Request fields: ``workspace``, ``root`` (an empty private directory the caller removes
afterwards), ``tests``, ``patch`` (null or {relpath: text}), ``limits``, ``python``,
``extra_args``, ``command`` (null or argv with {python} {junit} {tests} placeholders),
``isolation``, ``run_id`` and optionally ``coverage`` (true: per-test line coverage).
The reply is ``Verdict.to_dict()``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from . import covdata, gate, guard, isolation
from .junit import Rewriter, parse_junit
from .models import Limits, Verdict, error_verdict
from .runner import MARKER_ENV, run_command
from .verdict import DUPLICATE_MARK, build, parse_channel
from .workspace import CopyResult, PatchRejected, apply_patch, check_patch, copy_workspace

PLUGIN_NAME = "ledex_sbx_plugin"
# Passed to every pytest run, also under a custom command: native tracebacks are parseable,
# xunit1 puts file/line on each testcase, and the cache plugin would write into the copy.
# --capture=no: output goes to the worker's pipes (tail kept, rest discarded), never to a
# capture file that RLIMIT_FSIZE would cut with EFBIG (issue 12 item 10).
ADDOPTS = "--tb=native -o junit_family=xunit1 -p no:cacheprovider --capture=no"
_HANG_MARGIN_S = 7.0  # the plugin's faulthandler grace (5 s) plus room to report
_RESUME_MIN_S = 10.0  # wall time worth a second process for the tests a dead one never reached
MB = 1024 * 1024
DISK_FULL_BYTES = MB  # free space left on the run's tmpfs below which it counts as filled
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


def execute(req: dict[str, Any]) -> Verdict:
    """Run one request; never raises."""
    requested = tuple(req.get("tests") or ())
    mode = req.get("isolation") or isolation.detect_mode()
    start = time.monotonic()
    try:
        return _execute(req, requested, mode)
    except gate.GateRejected as exc:  # "not verified: uses X (...) at path:line"
        return error_verdict(str(exc), requested=requested, isolation=mode, error_kind="gate")
    except PatchRejected as exc:
        return error_verdict(f"rejected patch: {exc}", requested=requested, isolation=mode)
    except Exception as exc:  # the caller gets a verdict, not a stack trace on a pipe
        detail = traceback.format_exc(limit=5)
        return error_verdict(f"sandbox failure: {exc!r}\n{detail}", requested=requested,
                             isolation=mode, duration_s=time.monotonic() - start)


def _execute(req: dict[str, Any], requested: tuple[str, ...], mode: str) -> Verdict:
    workspace = Path(req["workspace"]).resolve()
    if not workspace.is_dir():
        return error_verdict(f"workspace {workspace} is not a directory", requested=requested,
                             isolation=mode)
    patch = check_patch(workspace, req["patch"]) if req.get("patch") is not None else {}
    gate.check_patch(workspace, patch)
    limits = Limits.from_dict(req.get("limits") or {})
    root = Path(req["root"])
    dirs = _layout(root)
    copy = copy_workspace(workspace, dirs["ws"], can_link=mode == "bubblewrap")
    apply_patch(dirs["ws"], patch)
    ids = tuple(req["ids"]) if req.get("ids") else None
    _hand_over(root, dirs, ids)
    env = _env(req, dirs)
    env.update(guard.environment(patch, copy.protected, dirs["report"],
                                 [dirs[k] for k in ("ws", "tmp", "home")], workspace) if patch else {})
    if req.get("coverage"):
        covdata.install(dirs["runner"], dirs["report"], env)
    argv = with_assignments_merged(_command(req, dirs, requested), env)
    wrapped = isolation.wrap(mode, argv, writable=[dirs[k] for k in ("ws", "home", "tmp", "report")],
                             readonly=_readonly(copy), cwd=dirs["ws"], limits=limits, ids=ids,
                             view=req.get("view"))
    nonce = secrets.token_hex(16)  # not the run id: that one is visible in the environment
    raw = run_command(wrapped, env=env, cwd=dirs["ws"], secret=_secret(nonce, copy, dirs, test_timeout(limits)),
                      wall_s=limits.wall_s, output_kb=limits.output_kb,
                      max_output_mb=limits.max_output_mb, sweep=mode == "none",
                      ids=None if mode == "bubblewrap" else ids)
    if ids:
        raw.notes.append(f"ran as uid {ids[0]} (ledex runs as root)")
    elif isolation.sandbox_ids():
        blocker = isolation.interpreter_blocker(argv[0], isolation.sandbox_ids()[0])
        raw.notes.append(f"ran as root: RLIMIT_NPROC is not enforced ({blocker}); install bubblewrap")
    rewrite = Rewriter(dirs["ws"], workspace, origin=(req.get("view") or {}).get("workspace"))
    raw.stdout_tail, raw.stderr_tail = rewrite(raw.stdout_tail), rewrite(raw.stderr_tail)
    chan = parse_channel(raw.channel, nonce)
    verdict = build(raw, chan, parse_junit(dirs["report"] / "junit.xml", rewrite), requested=requested,
                    isolation=mode, rewrite=rewrite, limits_wall=limits.wall_s,
                    test_s=test_timeout(limits))
    verdict = _with_coverage(verdict, dirs["report"]) if req.get("coverage") else verdict
    verdict = _disk_checked(verdict, root)
    left = limits.wall_s - raw.duration_s
    rest = [i for i in chan.ids if i not in chan.tests]
    if chan.current and rest and not raw.timed_out and left >= _RESUME_MIN_S:
        return _resumed(verdict, req, rest, left, mode)
    return verdict


def _resumed(first: Verdict, req: dict[str, Any], rest: list[str], wall_left: float, mode: str) -> Verdict:
    """The tests a dead test process never reached (a hang the per-test signal could not stop,
    ``os._exit`` in a test) run in a fresh copy within the wall time left (issue 12 item 12b).
    The first run's error stands: the result is never a pass."""
    root = Path(req["root"]) / f"resume-{len(first.outcomes)}"
    root.mkdir()
    limits = dict(req.get("limits") or {}, wall_s=wall_left)
    second = _execute(dict(req, tests=rest, root=str(root), limits=limits), tuple(rest), mode)
    coverage = {**(first.coverage or {}), **(second.coverage or {})} if first.coverage or second.coverage else None
    note = f"{len(rest)} test(s) the dead test process never reached ran in a fresh process"
    return replace(first, outcomes=first.outcomes + second.outcomes, coverage=coverage, pass_rate=0.0,
                   duration_s=round(first.duration_s + second.duration_s, 4),
                   notes=first.notes + (note,) + second.notes)


def _disk_checked(verdict: Verdict, root: Path) -> Verdict:
    """A run that left its private tmpfs (``isolation.copy_quota``) full fails with error_kind
    "disk": whatever else went wrong (ENOSPC in a test, no room for the JUnit report) came
    from that. Tampering verdicts stay what they are; a run that passed regardless keeps its
    pass with a note."""
    size = _full_tmpfs_bytes(root)
    if size is None:
        return verdict
    text = (f"the run filled its disk quota: {size // MB} MiB on a private tmpfs (the workspace "
            f"copy + LEDEX_SANDBOX_DISK_MB={isolation.disk_quota_mb()}), shared by the copy, what "
            "the tests write into it and the report")
    if verdict.passed:
        return replace(verdict, notes=verdict.notes + (text,))
    if verdict.error_kind in ("tampering", "gate") or verdict.killed_reason == "tamper":
        return verdict
    return replace(verdict, error_kind="disk", error=text, pass_rate=0.0)


def _full_tmpfs_bytes(root: Path) -> int | None:
    """The size of the tmpfs mounted on ``root`` when less than ``DISK_FULL_BYTES`` of it is
    free, else None (also when ``root`` is not a mount of its own: no quota to fill)."""
    try:
        if os.stat(root).st_dev == os.stat(root.parent).st_dev:
            return None
        st = os.statvfs(root)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize if st.f_bavail * st.f_frsize < DISK_FULL_BYTES else None


def _with_coverage(verdict: Verdict, report: Path) -> Verdict:
    coverage, note = covdata.collect(report)
    return replace(verdict, coverage=coverage, notes=verdict.notes + ((note,) if note else ()))


def _layout(root: Path) -> dict[str, Path]:
    dirs = {name: root / name for name in ("home", "tmp", "report", "runner")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("plugin.py"), dirs["runner"] / f"{PLUGIN_NAME}.py")
    shutil.copyfile(Path(__file__).with_name("memo.py"), dirs["runner"] / "ledex_sbx_memo.py")
    shutil.copyfile(Path(__file__).with_name("stacks.py"), dirs["runner"] / "ledex_sbx_stacks.py")
    shutil.copyfile(Path(__file__).with_name("guard.py"), dirs["runner"] / "sitecustomize.py")
    dirs["ws"] = root / "ws"
    return dirs


def _hand_over(root: Path, dirs: dict[str, Path], ids: tuple[int, int] | None) -> None:
    """Make the writable directories the sandbox uid's; copied files stay ours (read-only to it)."""
    root.chmod(0o755)
    if not ids:
        return
    for key in ("home", "tmp", "report"):
        os.chown(dirs[key], *ids)
    for dirpath, _dirs, _files in os.walk(dirs["ws"]):
        os.chown(dirpath, *ids)


def _readonly(copy: CopyResult) -> list[Path]:
    return [copy.root / rel for rel in copy.protected] + list(copy.linked)


def _command(req: dict[str, Any], dirs: dict[str, Path], tests: Sequence[str]) -> list[str]:
    python = req.get("python") or sys.executable
    junit = str(dirs["report"] / "junit.xml")
    template = req.get("command") or [
        "{python}", "-m", "pytest", "-q", f"--rootdir={dirs['ws']}", "--junitxml={junit}",
        *req.get("extra_args", ()), "{tests}"]
    argv: list[str] = []
    for part in template:
        if part == "{tests}":  # an item numbered apart from others with its node id: pytest selects them all by it
            argv.extend(dict.fromkeys(t.split(DUPLICATE_MARK)[0] for t in tests))
        else:
            argv.append(part.replace("{python}", python).replace("{junit}", junit))
    return argv


# variables a command may set that the sandbox sets too: joined to the sandbox's value (which comes
# first: its plugin and guard live on its PYTHONPATH), never replacing it
_JOINED = {"PYTHONPATH": os.pathsep, "PYTEST_PLUGINS": ",", "PYTEST_ADDOPTS": " "}
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)


def with_assignments_merged(argv: list[str], env: dict[str, str]) -> list[str]:
    """`argv` with its leading environment assignments (`env A=1 {python} ...`, or `A=1 {python}
    ...`, which runs through `env`) joined to the sandbox's own values of PYTHONPATH,
    PYTEST_PLUGINS and PYTEST_ADDOPTS (fresh-user run X5: `env PYTHONPATH=src` replaced the
    sandbox's, and every run failed with "Error importing plugin").

    >>> with_assignments_merged(["PYTHONPATH=src", "X=1", "py"], {"PYTHONPATH": "/runner"})
    ['env', 'PYTHONPATH=/runner:src', 'X=1', 'py']
    >>> with_assignments_merged(["env", "PYTEST_ADDOPTS=-x", "py"], {"PYTEST_ADDOPTS": "-q"}), with_assignments_merged(["py", "A=1"], {})
    (['env', 'PYTEST_ADDOPTS=-q -x', 'py'], ['py', 'A=1'])
    """
    start = 1 if argv[:1] == ["env"] else 0
    end = start
    while end < len(argv) and _ASSIGNMENT.fullmatch(argv[end]):
        end += 1
    if end == start:
        return argv
    merged = []
    for token in argv[start:end]:
        name, value = _ASSIGNMENT.fullmatch(token).groups()
        ours = env.get(name, "") if name in _JOINED else ""
        merged.append(f"{name}={ours}{_JOINED[name]}{value}" if ours and value else f"{name}={ours or value}")
    return ["env", *merged, *argv[end:]]


def _env(req: dict[str, Any], dirs: dict[str, Path]) -> dict[str, str]:
    """A scrubbed environment: nothing of the caller's but locale and PATH."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    tmp = str(dirs["tmp"])
    # the copy's import roots first: an editable install of the project must not import the original
    path = [str(dirs["runner"]), *isolation.copy_import_paths(req.get("view"), dirs["ws"])]
    # PYTHONHASHSEED pinned: every run of a project collects the same test ids (parametrize over a
    # set of strings numbers its cases in set order, which string hashing randomises per process:
    # isodate 0.7.2's test_format[...-expected0-...]; the ids discovery named were "not found" in
    # every verification run, so no fix could be verified)
    env.update(HOME=str(dirs["home"]), TMPDIR=tmp, TMP=tmp, TEMP=tmp, USER="sandbox", PYTHONHASHSEED="0",
               PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1", PYTHONPATH=os.pathsep.join(path),
               PYTEST_PLUGINS=PLUGIN_NAME, PYTEST_ADDOPTS=ADDOPTS, **{MARKER_ENV: req["run_id"]})
    if req.get("command") and not any("{junit}" in part for part in req["command"]):
        # a test command without {junit} (`{python} -m pytest -o pythonpath=src {tests}`: fresh-user
        # run X5) wrote no report, and every run was an error: the report is asked for here instead
        env["PYTEST_ADDOPTS"] += " " + shlex.quote(f"--junitxml={dirs['report'] / 'junit.xml'}")
    return env


def test_timeout(limits: Limits) -> float:
    """The per-test timeout the plugin arms, or 0 when it would not fit inside the wall clock."""
    t = limits.test_timeout_s
    return t if 0 < t and t + _HANG_MARGIN_S <= limits.wall_s else 0.0


def _secret(nonce: str, copy: CopyResult, dirs: dict[str, Path], test_s: float) -> bytes:
    payload = json.dumps({"manifest": copy.protected, "root": str(dirs["ws"]), "test_s": test_s})
    return f"{nonce}\n{payload}".encode()


def main() -> int:
    """Worker entry: read a JSON request on stdin, execute it, write the Verdict JSON to stdout."""
    req = json.loads(sys.stdin.read())
    verdict = execute(req)
    sys.stdout.write(json.dumps(verdict.to_dict()))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
