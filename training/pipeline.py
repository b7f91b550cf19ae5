"""`ledex-train all`: the whole learning loop in one command, what the editor's "Train now" runs.

    ledex-train all --workspace . [--problems ../shared/data/mbpp.jsonl] [--limit 50]

1. collect: the workspace's feedback log (accepted fixes = correct trajectories, rejected
   ones = failures) plus any problem sets given;
2. sft on the collected data (LoRA; QLoRA on a GPU);
3. export the adapter to GGUF;
4. promote it through the gate (held-out problems: MBPP's validation split, shipped in the
   package, or the first given problem set's), so the running language server picks it up
   only if it is not worse.

Each step is the matching `ledex-train` subcommand, run with the same defaults; work goes
under <workspace>/.ledex/train/ so reruns resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ledex

# Held-out problems for the gate when the user gives none (MBPP validation, CC-BY-4.0).
GATE_PROBLEMS = Path(ledex.__file__).resolve().parent / "data" / "mbpp_validation.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train all`."""
    parser.add_argument("--workspace", default=".", help="workspace whose .ledex/episodes.sqlite3 to learn from")
    parser.add_argument("--problems", nargs="*", default=[], help="problem sets to add (e.g. MBPP JSONL)")
    parser.add_argument("--limit", type=int, default=None, help="at most N problems from each set (CPU-sized runs)")
    parser.add_argument("--no-gate", action="store_true", help="promote without the held-out check (not advised)")


def steps(args: argparse.Namespace) -> list[list[str]]:
    """The ledex-train command lines this run executes, in order."""
    work = Path(args.workspace).resolve() / ".ledex" / "train"
    log = Path(args.workspace).resolve() / ".ledex" / "episodes.sqlite3"
    data, runs = work / "trajectories.jsonl", work / "sft"
    collect = ["collect", "--output", str(data)]
    if log.is_file():
        collect += ["--feedback-log", str(log)]
    if args.problems:
        collect += ["--problems", *args.problems]
    if args.limit:
        collect += ["--limit", str(args.limit)]
    promote = ["promote", "--adapter", str(runs / "adapter.gguf")]
    promote += ["--no-gate"] if args.no_gate else ["--problems", args.problems[0] if args.problems else str(GATE_PROBLEMS)]
    return [collect, ["sft", "--data", str(data), "--output-dir", str(runs)],
            ["export", "--adapter-dir", str(runs / "adapter"), "--output", str(runs / "adapter.gguf")], promote]


def main(args: argparse.Namespace) -> int:
    """Run collect, sft, export and promote in order through `ledex-train`; stops at the first
    failing step and returns its exit status (2 when there is nothing to learn from), 0 when all pass.
    """
    from ledex.training.cli import main as train

    log = Path(args.workspace).resolve() / ".ledex" / "episodes.sqlite3"
    if not log.is_file() and not args.problems:
        print(f"ledex-train all: nothing to learn from: no feedback log at {log} and no --problems", file=sys.stderr)
        return 2
    for number, argv in enumerate(steps(args), 1):
        print(f"ledex-train all: step {number}/4: ledex-train {' '.join(argv)}", file=sys.stderr, flush=True)
        status = train(argv)
        if status != 0:
            print(f"ledex-train all: step {argv[0]} failed (exit {status}); the model in service is unchanged",
                  file=sys.stderr)
            return status
    return 0
