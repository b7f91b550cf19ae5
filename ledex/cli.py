"""`ledex`: the headless command line.

    ledex fix [PATH] [--apply | --apply-risky] [--samples K] [--rounds R] [--model M] [--adapter A] [--json]
              [--python PY] [--test-command CMD] [--test-timeout S]
    ledex model [--model M] [--adapter A]      # which model would be used, and its identity

The project's pyproject.toml may name its interpreter and test command in a [tool.ledex]
table (`python`, `test-command`; see ledex.engine.project); --python and --test-command win.
With --apply, each written fix is followed by a re-run of the failures still waiting, so a
failure the fix also repaired is reported as fixed by it (and the others are fixed against
the file as it now is). Without --apply the same happens in a scratch copy of the project, so
the dry run verifies each fix together with the ones before it, as --apply would write them.
A fix marked as a test-overfitting risk (engine/ranking.overfit_risk) is written only with
--apply-risky (fresh-user run X12 F2).

Exit status of `fix`: 0 when no failure is left unfixed, 1 when some failure has no verified
fix, 2 on usage or environment errors (missing workspace, model that does not load...).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import threading
import traceback
from pathlib import Path

from ledex import __version__
from ledex.engine.backends import Sampling, load_backend
from ledex.engine.failures import DiscoveryError, discover, discover_selected
from ledex.engine.fixer import SEARCH_DEFAULT, FixConfig, FixEngine
from ledex.engine.format import Mode
from ledex.engine.models import ModelError, model_kind
from ledex.engine.notes import NoteKind, note_kind
from ledex.engine.project import (Harness, ProjectConfigError, parse_test_command, read_project_settings,
                                  resolve_python)
from ledex.engine.registry import default_adapter
from ledex.fixrun import FixRun, discovery_limits
from ledex.sandbox import Limits

EXIT_OK, EXIT_UNFIXED, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
INTERRUPTED = "your files are unchanged unless --apply had already written a fix (each fix is written whole, atomically)"


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after each option's help, except where the help already says
    its default in words, and for on/off flags that are off unless given (fresh-user run X7:
    "(default: [tool.ledex] python ..., else the one running ledex) (default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or (action.nargs == 0 and action.default is False):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The `ledex` argument parser: subcommands `fix` and `model` (options and defaults in --help;
    the defaults of K, R and the answer length come from FixConfig and Sampling)."""
    parser = argparse.ArgumentParser(prog="ledex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ledex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    fix = commands.add_parser("fix", help="explain and fix the failing tests of a workspace",
                              formatter_class=DefaultsHelp)
    fix.add_argument("path", nargs="?", default=".", help="workspace folder")
    fix.add_argument("--apply", action="store_true", help="write the best verified fix of each failure to disk (not "
                     "one marked as a test-overfitting risk: see --apply-risky)")
    fix.add_argument("--apply-risky", action="store_true", help="--apply, also writing a verified fix marked as a "
                     "test-overfitting risk (a dropped statement or condition, a changed constant, another variable); "
                     "never one of several edits of a line that the tests cannot tell apart")
    fix.add_argument("--samples", "-k", type=_positive, default=FixConfig.samples, help="answers sampled per round")
    fix.add_argument("--rounds", "-r", type=_positive, default=FixConfig.rounds, help="refinement rounds")
    fix.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.EXPLAIN.value,
                     help="explain-then-refine (LEDEX) or refine only")
    fix.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for one verification run")
    fix.add_argument("--test-timeout", type=_seconds, default=Limits.test_timeout_s,
                     help="seconds one test may run before it counts as hung (its stack is reported); 0: no limit")
    fix.add_argument("--discovery-timeout", type=float, default=300.0,
                     help="seconds allowed for the first run of the whole test suite")
    fix.add_argument("--seed", type=int, default=0, help="sampling seed (runs are reproducible per seed)")
    fix.add_argument("--max-tokens", type=_positive, default=Sampling.max_tokens,
                     help="longest answer (explanation + code) in tokens")
    fix.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    fix.add_argument("-v", "--verbose", action="store_true",
                     help="text mode: every candidate's explanation and diff (default: the verified ones, else "
                     "the best two attempts; the rest counted in one line)")
    fix.add_argument("--search", action=argparse.BooleanOptionalAction, default=True,
                     help="try single-site edits of the suspects before the model (search-based candidates, on by "
                     "default; --no-search: the model's candidates only; see docs/benchmarks.md)")
    fix.add_argument("--search-seconds", type=_seconds, default=SEARCH_DEFAULT.max_seconds,
                     help="wall-clock budget of the search per problem, its verifications included (default "
                     "%(default).0f; a suite whose re-runs are slow may need more: the result says when it ran out)")
    fix.add_argument("--test", action="append", default=[], help="fix only the failures of these test node ids (repeatable); their fixes are verified as in a whole run")
    fix.add_argument("--python", default=None, help="interpreter that runs the project's tests (default: "
                     "[tool.ledex] python in pyproject.toml, else the one running ledex)")
    fix.add_argument("--test-command", default=None, help="command that runs the tests, with {python} {junit} "
                     "{tests} placeholders (default: [tool.ledex] test-command, else '{python} -m pytest')")
    _model_arguments(fix)
    model = commands.add_parser("model", help="show which model would be used")
    _model_arguments(model)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="", help="'' (embedded SmolLM2-135M), a .gguf path, "
                        "hf://owner/repo/file.gguf, or an OpenAI-compatible http(s)://…/v1[#model] URL")
    parser.add_argument("--adapter", default=None, help="GGUF LoRA adapter (default: the promoted one, if any)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def _adapter(args: argparse.Namespace) -> str | None:
    if args.adapter is not None:
        return args.adapter or None
    return default_adapter() if model_kind(args.model).takes_adapter else None


# pytest exits 5 when it collects nothing; a run that tested nothing has fixed nothing (fresh-user
# run: jsonpointer's tests.py is not in pytest's default python_files, and `ledex fix` said exit 0).
NO_TESTS = ("0 ran: pytest collected no tests (test files must match pytest's python_files, by default "
            "test_*.py or *_test.py: set python_files in the project's pytest configuration, or pass "
            "--test-command)")


def main(argv: list[str] | None = None) -> int:
    """Run `ledex` with `argv` (default: sys.argv[1:]); returns the exit status (module doc).
    Errors a user can act on (missing workspace or model, bad [tool.ledex], no test ran) are
    reported as one line on stderr (and a JSON document with --json), never a traceback;
    argparse itself exits 2 on bad usage (SystemExit)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "apply_risky", False):
        args.apply = True
    try:
        if args.command == "model":
            backend = load_backend(args.model, _adapter(args))
            print(json.dumps(backend.identity.to_dict(), indent=2))
            return EXIT_OK
        return run_fix(args)
    except (ModelError, FileNotFoundError, ProjectConfigError, DiscoveryError) as exc:
        return _fail(args, EXIT_ERROR, str(exc))
    except KeyboardInterrupt as stop:
        return _fail(args, EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED,
                     f"interrupted; {INTERRUPTED}")


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    """Say why ledex stopped on stderr; with --json also as {"error": …, "exit": …} on stdout."""
    print(f"ledex: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit": code, "failures": []}))
    return code


def project_harness(args: argparse.Namespace, workspace: Path) -> Harness:
    """[tool.ledex] from the workspace's pyproject.toml, overridden by --python / --test-command."""
    project = read_project_settings(workspace)
    python = resolve_python(args.python, Path.cwd(), "--python") if args.python else project.python
    command = parse_test_command(args.test_command, "--test-command") if args.test_command else project.command
    return Harness(python, command)


def run_fix(args: argparse.Namespace) -> int:
    """`ledex fix` with parsed `args`: discover the failures (sandboxed run, coverage, suspects),
    load the model, fix each problem, print the result; returns EXIT_OK / EXIT_UNFIXED /
    EXIT_INTERRUPTED. Raises FileNotFoundError (workspace), ProjectConfigError, DiscoveryError
    (no test ran) and ModelError (model not loadable), which main() turns into exit 2."""
    from ledex.cli_output import Reporter

    workspace = Path(args.path).resolve()
    if not workspace.is_dir():
        kind = "is a file, not a project folder" if workspace.exists() else "not found"
        raise FileNotFoundError(f"workspace {kind}: {args.path}")
    harness = project_harness(args, workspace)
    reporter = Reporter(as_json=args.json, verbose=args.verbose, applying=args.apply)
    with reporter.phases() as phase:
        phase("discovery", f"running the tests in the sandbox (at most {args.discovery_timeout:g} s)")
        find = discover_selected if args.test else discover  # --test: verified as in a whole run all the same
        discovery = find(workspace, tests=args.test, harness=harness, limits=discovery_limits(args), on_phase=phase)
    reporter.summary(discovery)
    nothing_ran = next((n for n in discovery.notes if note_kind(n) is NoteKind.NO_TESTS), None)
    if nothing_ran is not None:
        raise DiscoveryError(discovery.verdict, f"0 ran: {nothing_ran}" if "pytest said" in nothing_ran else NO_TESTS)
    reporter.notes(discovery.notes)
    if not discovery.failures:
        reporter.done_without_failures(discovery)
        return EXIT_OK
    with reporter.status(f"loading the model {args.model or '(embedded SmolLM2-135M)'}", key="model_load"):
        backend = load_backend(args.model, _adapter(args))
    config = FixConfig(samples=args.samples, rounds=args.rounds, mode=Mode(args.mode),
                       sampling=Sampling(seed=args.seed, max_tokens=args.max_tokens),
                       limits=Limits(wall_s=args.timeout, test_timeout_s=args.test_timeout),
                       harness=harness,
                       search=dataclasses.replace(SEARCH_DEFAULT, max_seconds=args.search_seconds) if args.search else None)
    run = FixRun(args, workspace, reporter, FixEngine(backend, workspace, config))
    try:
        return _run_all(run, reporter, discovery, backend)
    finally:
        run.close()


def _written_text(handled: list) -> str:
    """What an interrupted run wrote, by file (fresh-user run X9: the note said "unless --apply had
    already written a fix" while ledex knew it had written one).

    >>> from types import SimpleNamespace as Handled
    >>> _written_text([Handled(applied="calc.py"), Handled(applied=None)])
    '--apply wrote the fixes above to calc.py (each whole, atomically); nothing else was changed'
    >>> _written_text([Handled(applied=None)])
    'your files are unchanged'
    """
    written = sorted({h.applied for h in handled if h.applied})
    if not written:
        return "your files are unchanged"
    return f"--apply wrote the fixes above to {', '.join(written)} (each whole, atomically); nothing else was changed"


def _run_all(run: "FixRun", reporter, discovery, backend) -> int:  # noqa: ANN001
    """run.all on the discovered failures, reported; Ctrl-C and a run that stopped keep what was done."""
    try:
        with _cancelled_on_interrupt(run.cancel):
            handled = run.all(discovery.failures, discovery.unselected)
    except KeyboardInterrupt as stop:  # the failures handled so far are still reported (with --json: the document)
        partial = run.interrupted()
        for item in ([partial] if partial is not None else []) + run.searched_only("interrupted"):
            reporter.result(item)
            run.handled.append(item)
        left = len(discovery.failures) - sum(1 + len(h.result.failure.also) for h in run.handled)
        reporter.note(f"interrupted: {left} failure(s) not started; " + _written_text(run.handled))
        reporter.finish(backend.identity, run.handled, discovery)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the model went away mid-run (ModelError) or a bug
        return _stopped(run, discovery, exc)
    reporter.finish(backend.identity, handled, discovery)
    return EXIT_OK if all(h.fixed and not h.not_applied for h in handled) else EXIT_UNFIXED


def _stopped(run: "FixRun", discovery, exc: Exception) -> int:  # noqa: ANN001
    """An error that stops the run after discovery (an endpoint that went down, a bug): the
    failures handled so far, and the fixes --apply wrote, are still reported (with --json in
    the one document, with "error" and "exit"); exit 2. A bug's traceback goes to stderr."""
    if not isinstance(exc, ModelError):
        traceback.print_exc(file=sys.stderr)
    message = str(exc) if isinstance(exc, ModelError) else f"internal error: {type(exc).__name__}: {exc}"
    run.cancel.set()
    partial = run.interrupted()
    if partial is not None:
        written = "; not applied" if run.args.apply else ""
        partial.error = f"stopped by an error after {len(partial.result.candidates)} candidate(s){written}"
    for item in ([partial] if partial is not None else []) + run.searched_only("stopped by an error"):
        run.reporter.result(item)
        run.handled.append(item)
    left = len(discovery.failures) - sum(1 + len(h.result.failure.also) for h in run.handled)
    written = [h.applied for h in run.handled if h.applied]
    run.reporter.note(f"stopped: {message}; {left} failure(s) not finished"
                      + (f"; fixes already written: {', '.join(written)}" if written else ""))
    run.reporter.finish(run.engine.backend.identity, run.handled, discovery, error=message, exit_code=EXIT_ERROR)
    print(f"ledex: error: {message}", file=sys.stderr)
    return EXIT_ERROR


@contextlib.contextmanager
def _cancelled_on_interrupt(cancel: threading.Event):
    """Ctrl-C sets `cancel` before KeyboardInterrupt unwinds, so the generation and the sandbox
    runs under way stop now (their pools wait for them on the way out) instead of finishing."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def interrupt(signum, frame):  # noqa: ANN001
        cancel.set()
        raise KeyboardInterrupt

    def terminate(signum, frame):  # noqa: ANN001 - `timeout`, a CI cancel, `kill`: stop, and clean up on the way
        cancel.set()
        raise Terminated

    previous = signal.signal(signal.SIGINT, interrupt), signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a CI cancel, `kill`): handled like Ctrl-C, what was done is reported
    (fresh-user run X5: it printed nothing), with exit status EXIT_TERMINATED."""


if __name__ == "__main__":
    sys.exit(main())
