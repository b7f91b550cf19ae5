"""`ledex`: the headless command line.

    ledex fix [PATH] [--apply] [--samples K] [--rounds R] [--model M] [--adapter A] [--json]
    ledex model [--model M] [--adapter A]      # which model would be used, and its identity

Exit status of `fix`: 0 when no failure is left unfixed, 1 when some failure has no verified
fix, 2 on usage or environment errors (missing workspace, model that does not load...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ledex import __version__
from ledex.engine.apply import ApplyError, apply_patch
from ledex.engine.backends import Sampling, load_backend
from ledex.engine.failures import discover
from ledex.engine.fixer import FixConfig, FixEngine, FixResult
from ledex.engine.format import Mode
from ledex.engine.models import ModelError
from ledex.engine.registry import default_adapter
from ledex.sandbox import Limits

EXIT_OK, EXIT_UNFIXED, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ledex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    fix = commands.add_parser("fix", help="explain and fix the failing tests of a workspace")
    fix.add_argument("path", nargs="?", default=".", help="workspace folder (default: .)")
    fix.add_argument("--apply", action="store_true", help="write the best verified fix of each failure to disk")
    fix.add_argument("--samples", "-k", type=_positive, default=FixConfig.samples, help="answers sampled per round")
    fix.add_argument("--rounds", "-r", type=_positive, default=FixConfig.rounds, help="refinement rounds")
    fix.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.EXPLAIN.value,
                     help="explain-then-refine (LEDEX) or refine only")
    fix.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for one verification run")
    fix.add_argument("--discovery-timeout", type=float, default=300.0,
                     help="seconds allowed for the first run of the whole test suite")
    fix.add_argument("--seed", type=int, default=0, help="sampling seed (runs are reproducible per seed)")
    fix.add_argument("--max-tokens", type=_positive, default=Sampling.max_tokens,
                     help="longest answer (explanation + code) in tokens")
    fix.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    fix.add_argument("--test", action="append", default=[], help="only these test node ids (repeatable)")
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


def _adapter(args: argparse.Namespace) -> str | None:
    if args.adapter is not None:
        return args.adapter or None
    return None if args.model.startswith(("http://", "https://")) else default_adapter()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "model":
            backend = load_backend(args.model, _adapter(args))
            print(json.dumps(backend.identity.to_dict(), indent=2))
            return EXIT_OK
        return run_fix(args)
    except (ModelError, FileNotFoundError) as exc:
        print(f"ledex: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ledex: interrupted; your files are unchanged unless --apply had already written a fix",
              file=sys.stderr)
        return EXIT_ERROR


def run_fix(args: argparse.Namespace) -> int:
    from ledex.cli_output import Reporter

    workspace = Path(args.path).resolve()
    if not workspace.is_dir():
        raise FileNotFoundError(f"workspace not found: {args.path}")
    reporter = Reporter(as_json=args.json)
    with reporter.status("running the tests"):
        discovery = discover(workspace, tests=args.test, limits=Limits(wall_s=args.discovery_timeout, cpu_s=int(args.discovery_timeout)))
    reporter.notes(discovery.notes)
    if not discovery.failures:
        reporter.done_without_failures(discovery)
        return EXIT_OK
    backend = load_backend(args.model, _adapter(args))
    config = FixConfig(samples=args.samples, rounds=args.rounds, mode=Mode(args.mode),
                       sampling=Sampling(seed=args.seed, max_tokens=args.max_tokens), limits=Limits(wall_s=args.timeout))
    engine = FixEngine(backend, workspace, config)
    results: list[FixResult] = []
    for failure in discovery.failures:
        with reporter.progress(failure) as progress:
            result = engine.fix(failure, progress=progress)
        results.append(result)
        applied = _apply(workspace, result, reporter) if args.apply else None
        reporter.result(result, applied)
    reporter.finish(backend.identity, results, discovery.notes)
    return EXIT_OK if all(r.best for r in results) else EXIT_UNFIXED


def _apply(workspace: Path, result: FixResult, reporter) -> str | None:
    best = result.best
    if best is None:
        return None
    try:
        apply_patch(workspace, best.patch)
    except ApplyError as exc:
        reporter.note(f"{result.failure.test}: fix not applied: {exc}")
        return None
    return best.patch.path


if __name__ == "__main__":
    sys.exit(main())
