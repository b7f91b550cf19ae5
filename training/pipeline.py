"""`ledex-train all`: the whole learning loop in one command, what the editor's "Train now" runs.

    ledex-train all --workspace . [--problems ../shared/data/mbpp.jsonl] [--limit 50]
    ledex-train all --workspace . --threads 1 --max-steps 8 --gate-problems 8 --gate-samples 0   # CPU-sized

1. collect: the workspace's feedback log (accepted fixes = correct trajectories, rejected
   ones = failures) plus any problem sets given; then an audit: an accepted fix that
   special-cases a literal input of the failing test (`overfit_reason`) is kept as a rejected
   one, so a user who accepts anything that passes cannot teach the model test-specific patches;
2. sft on the collected data (LoRA; QLoRA on a GPU), in a folder named after the data's hash
   (a rerun on the same data resumes; new feedback starts a fresh run);
3. export the adapter to GGUF;
4. promote it through the gate (held-out problems: MBPP's validation split, shipped in the
   package, or the first given problem set's; paired, at most --max-regressions cases the model
   in service fixes may be lost), so the running language server picks it up only if it is not
   worse.

Each step is the matching `ledex-train` subcommand; work goes under <workspace>/.ledex/train/,
and every run appends {steps: [{name, status, seconds}], outcome} to runs.jsonl there.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import time
from dataclasses import replace
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
    parser.add_argument("--threads", type=int, default=None, help="torch / llama.cpp threads (1 on a shared box)")
    parser.add_argument("--epochs", type=float, default=None, help="SFT epochs (default: sft's)")
    parser.add_argument("--max-steps", type=int, default=None, help="SFT optimizer steps at most")
    parser.add_argument("--learning-rate", type=float, default=None, help="SFT learning rate (default: sft's)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="SFT: longest example in tokens (editor episodes carry the test and its context)")
    parser.add_argument("--gate-problems", type=int, default=None, help="held-out problems the gate debugs")
    parser.add_argument("--gate-skip", type=int, default=None, help="skip the first N held-out problems")
    parser.add_argument("--gate-samples", type=int, default=None, help="wrong solutions sampled per gate problem")
    parser.add_argument("--gate-max-tokens", type=int, default=None, help="token limit per gate answer")
    parser.add_argument("--max-regressions", type=int, default=0,
                        help="gate: held-out cases the model in service fixes that the candidate may lose (-1: any)")
    parser.add_argument("--min-gain", type=int, default=0, help="gate: more held-out cases the candidate must fix")


def _optional(flags: dict[str, object]) -> list[str]:
    """--flag value pairs for the options that were given (None: the subcommand's default)."""
    return [item for flag, value in flags.items() if value is not None for item in (flag, str(value))]


def steps(args: argparse.Namespace, data_key: str = "latest") -> list[list[str]]:
    """The ledex-train command lines this run executes, in order (`data_key`: the SFT folder's suffix)."""
    work = Path(args.workspace).resolve() / ".ledex" / "train"
    log = Path(args.workspace).resolve() / ".ledex" / "episodes.sqlite3"
    data, runs = work / "trajectories.jsonl", work / f"sft-{data_key}"
    get = lambda name: getattr(args, name, None)  # noqa: E731 (older Namespaces lack the sizing flags)
    collect = ["collect", "--output", str(data)]
    if log.is_file():
        collect += ["--feedback-log", str(log)]
    if args.problems:
        collect += ["--problems", *args.problems]
    if args.limit:
        collect += ["--limit", str(args.limit)]
    sft = ["sft", "--data", str(data), "--output-dir", str(runs)] + _optional(
        {"--threads": get("threads"), "--epochs": get("epochs"), "--max-steps": get("max_steps"),
         "--learning-rate": get("learning_rate"), "--max-length": get("max_length")})
    promote = ["promote", "--adapter", str(runs / "adapter.gguf"), "--report", str(work / "promotion.json")]
    if args.no_gate:
        promote += ["--no-gate"]
    else:
        promote += ["--problems", args.problems[0] if args.problems else str(GATE_PROBLEMS)] + _optional(
            {"--threads": get("threads"), "--n-problems": get("gate_problems"), "--skip": get("gate_skip"),
             "--samples": get("gate_samples"), "--max-tokens": get("gate_max_tokens"),
             "--max-regressions": get("max_regressions"), "--min-gain": get("min_gain")})
    return [collect, sft, ["export", "--adapter-dir", str(runs / "adapter"), "--output", str(runs / "adapter.gguf")],
            promote]


# --- the feedback audit -----------------------------------------------------------------------


def _literals(text: str) -> set[str]:
    """Numbers and quoted strings spelled in `text` (the failing test), as Python reprs."""
    found = set(re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text))
    pairs = re.findall(r"'([^'\n]*)'|\"([^\"\n]*)\"", text)
    found |= {repr(part) for pair in pairs for part in pair if part}
    return found


def overfit_reason(wrong_code: str, code: str, feedback: str) -> str | None:
    """Why an accepted fix looks test-specific, or None: it compares a value with a literal that the
    failing test spells and that the wrong code did not compare with (`if n == 7: return 42`), the
    usual shape of a patch that passes the test without fixing the function ("plausible but
    overfitting" patches, Smith et al., FSE 2015). Unparsable code: None (judged elsewhere).

    >>> overfit_reason("def f(n):\\n    return n", "def f(n):\\n    if n == 7:\\n        return 42\\n    return n",
    ...                "assert f(7) == 42")
    'compares with 7, a literal of the failing test'
    >>> overfit_reason("def f(n):\\n    return n < 3", "def f(n):\\n    return n <= 3", "assert f(3)") is None
    True
    """
    try:
        before = _compared_literals(ast.parse(wrong_code))
        after = _compared_literals(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return None
    spelled = _literals(feedback)
    for literal in sorted(after - before):
        if literal in spelled:
            return f"compares with {literal}, a literal of the failing test"
    return None


def _compared_literals(tree: ast.AST) -> set[str]:
    """Constants in `==`, `!=` and `in` comparisons of the code (reprs)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In)) for op in node.ops):
            for side in [node.left, *node.comparators]:
                found |= {repr(c.value) for c in ast.walk(side) if isinstance(c, ast.Constant)
                          and not isinstance(c.value, bool) and c.value is not None}
    return found


def audit(path: Path) -> dict:
    """Turn accepted feedback records that `overfit_reason` flags into rejected ones, in place.
    Returns {'accepted', 'flagged', 'reasons': {source: reason}}."""
    from ledex.training import records

    if not path.is_file():
        return {"accepted": 0, "flagged": 0, "reasons": {}}
    rows, reasons = list(records.read(path, skip_bad=True)), {}
    for index, row in enumerate(rows):
        if row.origin == "accepted" and (why := overfit_reason(row.wrong_code, row.code, row.feedback)):
            rows[index] = replace(row, correct=False, origin="rejected", extra={**row.extra, "audit": why})
            reasons[row.source] = why
    if reasons:
        records.write(path, rows)
    accepted = sum(r.origin == "accepted" for r in rows) + len(reasons)
    return {"accepted": accepted, "flagged": len(reasons), "reasons": reasons}


def data_key(path: Path) -> str:
    """12 hex digits of the training data's hash ('empty' when there is none)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "empty"


# --- running ----------------------------------------------------------------------------------


def _run_step(train, argv: list[str], number: int, timings: list[dict]) -> int:
    print(f"ledex-train all: step {number}/4: ledex-train {' '.join(argv)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    status = train(argv)
    timings.append({"name": argv[0], "status": status, "seconds": round(time.perf_counter() - started, 1)})
    if status != 0:
        print(f"ledex-train all: step {argv[0]} failed (exit {status}); the model in service is unchanged",
              file=sys.stderr)
    return status


def main(args: argparse.Namespace) -> int:
    """Run collect (+ audit), sft, export and promote in order through `ledex-train`; stops at the
    first failing step and returns its exit status (2 when there is nothing to learn from), 0 when
    all pass. Appends the run (step timings, audit, promotion outcome) to <work>/runs.jsonl.
    """
    from ledex.training.cli import main as train

    work = Path(args.workspace).resolve() / ".ledex" / "train"
    log = Path(args.workspace).resolve() / ".ledex" / "episodes.sqlite3"
    if not log.is_file() and not args.problems:
        print(f"ledex-train all: nothing to learn from: no feedback log at {log} and no --problems", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    (work / "promotion.json").unlink(missing_ok=True)
    timings: list[dict] = []
    status = _run_step(train, steps(args)[0], 1, timings)
    found = audit(work / "trajectories.jsonl") if status == 0 else {}
    if found.get("flagged"):
        print(f"ledex-train all: {found['flagged']} accepted fix(es) look test-specific; kept as rejected: "
              f"{found['reasons']}", file=sys.stderr)
    for number, argv in enumerate(steps(args, data_key(work / "trajectories.jsonl"))[1:] if status == 0 else [], 2):
        status = _run_step(train, argv, number, timings)
        if status != 0:
            break
    outcome = json.loads((work / "promotion.json").read_text()) if (work / "promotion.json").is_file() else None
    with open(work / "runs.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"at": time.time(), "status": status, "steps": timings, "audit": found,
                                 "outcome": outcome}) + "\n")
    return status
