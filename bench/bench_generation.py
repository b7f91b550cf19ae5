"""Benchmark generation v2 (issue 15): grammar-constrained answers and K answers in one batch.

Run from the repo root:  .venv/bin/python bench/bench_generation.py [--quick] [--tasks N] [--samples K]

1. Usable answers on HumanEvalFix (../shared/data/humanevalpack-python.jsonl, evaluation
   only): the first N tasks, each rendered as the editor renders a failure
   (`engine.fixer.problem_for`: the suspect function = the buggy solution in solution.py, the
   failing test = the task's check() as a pytest test, the feedback = that test's real error
   from the sandbox). K answers per task at the serving sampling (T=0.8, top-p 0.95, 512
   tokens), explain and refine mode, with and without the grammar, same seeds. "parses" =
   `parse_response` finds exactly one python block that parses; "usable" = it also becomes a
   patch of the suspect (`patching.make_patch`), i.e. what the fixer can verify. Goal >= 98%.
   "closed_at_budget": answers still open at max_tokens that the budget-aware closing closed
   (llamabatch); "hit_max_tokens": those it could not close. --dump writes the unusable ones.
   Sampling.wrong_code is set as the fixer sets it; "rewound" counts answers sent back for
   repeating it, "usable_pct_without_rewinds" is the share had they not been (exact: the
   other answers do not change).
2. Decode tokens/s with the grammar vs without: single sequences, same prompts and seeds,
   prompt-evaluation time excluded, interleaved. Goal >= 0.9.
3. K=4 and K=8 answers for one failure, one batch vs one after another (what the fixer did
   before: every answer re-evaluates the prompt), same seeds, so the same answers and token
   counts (checked). Wall ratio goals <= 0.5 (K=4), <= 0.35 (K=8); prompt evaluations counted.
4. --models A B ...: the same measurements for several GGUF files side by side (e.g. the
   embedded Q4_1 and a Q8_0 derived from it, `models.derived_model_path`), timings interleaved
   model by model in one run: single-sequence decode tok/s, prompt tok/s, K=4/K=8 ratios and
   usable share (grammar only).

The CPU may be shared: only the ratios inside one run mean anything.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_facts, median, ratio  # noqa: E402

from ledex.engine.backends import Sampling, load_backend  # noqa: E402
from ledex.engine.failures import Failure  # noqa: E402
from ledex.engine.fixer import problem_for  # noqa: E402
from ledex.engine.format import Candidate, Mode, build_messages, parse_response  # noqa: E402
from ledex.engine.grammar import answer_grammar
from ledex.engine.localize import Suspect  # noqa: E402
from ledex.engine.patching import PatchError, make_patch  # noqa: E402
from ledex.engine.problems import CodingProblem, judge_solutions  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "humanevalpack-python.jsonl"
SOLUTION = "solution.py"


def load_tasks(limit: int, start: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return rows[start:start + limit]


def test_source(row: dict) -> str:
    """The task's check(fn) as the pytest test an editor user would have."""
    entry = row["entry_point"]
    body = row["test"].strip().replace(f"def check({entry}):", f"def test_{entry}():", 1)
    body = body.replace("def check(candidate):", f"def test_{entry}():\n    candidate = {entry}", 1)
    lines = [line for line in body.splitlines() if not line.startswith("check(")]
    return "from solution import *\n\n" + "\n".join(lines).strip() + "\n"


def editor_failure(row: dict, root: Path) -> tuple[Failure, str]:
    """The failure the editor would show for the buggy solution, with its real error."""
    entry, source = row["entry_point"], row["prompt"] + row["buggy_solution"]
    test = test_source(row)
    problem = CodingProblem(f"hefix/{row['task_id']}", row["prompt"], (test.replace("from solution import *\n", ""),),
                            "", source, entry)
    verdict = judge_solutions(problem, [source], root, workers=1)[0]
    outcome = next((o for o in verdict.outcomes if o.outcome in ("failed", "error")), None)
    details = (outcome.details or outcome.message) if outcome else (verdict.error or "the test failed")
    node = next(n for n in ast.parse(source).body if getattr(n, "name", "") == entry)  # not a helper before it
    start = node.lineno - 1 - len(node.decorator_list)
    function = "\n".join(source.splitlines()[start:node.end_lineno])
    suspect = Suspect(SOLUTION, entry, start + 1, node.end_lineno, function, "traceback")
    failure = Failure(f"test_solution.py::test_{entry}", "test_solution.py", 1, details.splitlines()[-1] if details else "",
                      details, suspect, test)
    return failure, source


def usable_share(backend, failures, modes, samples: int, max_tokens: int, free: bool = True,
                 dump: list | None = None, log: Path | None = None) -> dict:
    """Share of answers that parse / become a patch, per mode, with (and without) the grammar;
    each unusable answer (task, mode, seed, reason, text) is appended to `dump` if given, and
    every answer to `log` (JSON lines, written as they come: look at a long run while it runs)."""
    out = {}
    for mode in modes:
        for constrained in (True, False) if free else (True,):
            parsed = usable = total = length = tokens = closed = rewound = rewound_usable = 0
            reasons: dict[str, int] = {}
            for failure, source in failures:
                grammar = answer_grammar(mode, failure.suspect.qualname) if constrained else ""
                problem = problem_for(failure)
                sampling = Sampling(max_tokens=max_tokens, seed=1000, grammar=grammar, wrong_code=problem.wrong_code)
                for answer in backend.generate_batch(build_messages(problem, mode), sampling, samples):
                    total += 1
                    rewound += answer.rewinds > 0
                    tokens += answer.completion_tokens
                    length += answer.finish_reason == "length"
                    closed += answer.finish_reason == "stop" and answer.completion_tokens >= max_tokens
                    result = parse_response(answer.text, mode, truncated=answer.truncated)
                    ok, reason = _usable(result, source, failure)
                    parsed += isinstance(result, Candidate)
                    usable += ok
                    rewound_usable += ok and answer.rewinds > 0
                    record = {"task": failure.test, "mode": mode.value, "grammar": constrained, "seed": answer.seed,
                              "usable": ok, "reason": reason, "finish": answer.finish_reason,
                              "tokens": answer.completion_tokens, "rewinds": answer.rewinds, "text": answer.text}
                    if log is not None:
                        with log.open("a") as stream:
                            stream.write(json.dumps(record) + "\n")
                    if not ok:
                        reasons[reason[:60]] = reasons.get(reason[:60], 0) + 1
                        if dump is not None:
                            dump.append(record)
            key = f"{mode.value}_{'grammar' if constrained else 'free'}"
            out[key] = {"answers": total, "parses_pct": round(100 * parsed / total, 1),
                        "usable_pct": round(100 * usable / total, 1), "hit_max_tokens": length, "closed_at_budget": closed,
                        "mean_tokens": round(tokens / total, 1), "unusable_reasons": reasons,
                        # answers sent back for repeating the wrong code (llamabatch); without that
                        # they would have been "the same code as before", the others are unchanged
                        "rewound": rewound, "usable_pct_without_rewinds": round(100 * (usable - rewound_usable) / total, 1)}
            print(key, out[key], file=sys.stderr, flush=True)
    return out


def _usable(result, source: str, failure: Failure) -> tuple[bool, str]:
    if not isinstance(result, Candidate):
        return False, result.reason
    try:
        make_patch(source, failure.suspect, result.code)
    except PatchError as exc:
        return False, str(exc)
    return True, ""


def decode_speed(backend, failures, reps: int, max_tokens: int) -> dict:
    """tokens/s of decoding (prompt evaluation excluded), grammar vs free, interleaved."""
    rates: dict[str, list[float]] = {"grammar": [], "free": []}
    for rep in range(reps):
        for failure, _ in failures:
            messages = build_messages(problem_for(failure), Mode.EXPLAIN)
            for kind in ("grammar", "free"):
                grammar = answer_grammar(Mode.EXPLAIN, failure.suspect.qualname) if kind == "grammar" else ""
                before = backend.prompt_seconds
                answer = backend.generate(messages, Sampling(max_tokens=max_tokens, seed=rep, grammar=grammar))
                decode_s = answer.seconds - (backend.prompt_seconds - before)
                if answer.completion_tokens >= 8:
                    rates[kind].append(answer.completion_tokens / decode_s)
    return {"grammar_tok_s": round(median(rates["grammar"]), 2), "free_tok_s": round(median(rates["free"]), 2),
            "runs": len(rates["grammar"])}


def batch_vs_sequential(backend, failure, k: int, reps: int, max_tokens: int) -> dict:
    """One batch of k vs k single generations (each re-evaluating the prompt), interleaved."""
    messages = build_messages(problem_for(failure), Mode.EXPLAIN)
    sampling = Sampling(max_tokens=max_tokens, seed=2000, grammar=answer_grammar(Mode.EXPLAIN, failure.suspect.qualname))
    walls: dict[str, list[float]] = {"batched": [], "sequential": []}
    evals: dict[str, int] = {}
    same = True
    for _ in range(reps):
        evals_before, started = backend.prompt_evals, time.perf_counter()
        batched = {a.seed: (a.text, a.completion_tokens) for a in backend.generate_batch(messages, sampling, k)}
        walls["batched"].append(time.perf_counter() - started)
        evals["batched"] = backend.prompt_evals - evals_before
        evals_before, started = backend.prompt_evals, time.perf_counter()
        one_by_one = {}
        for i in range(k):
            answer = backend.generate(messages, Sampling(sampling.temperature, sampling.top_p, max_tokens,
                                                         sampling.seed + i, sampling.grammar))
            one_by_one[answer.seed] = (answer.text, answer.completion_tokens)
        walls["sequential"].append(time.perf_counter() - started)
        evals["sequential"] = backend.prompt_evals - evals_before
        same = same and batched == one_by_one
    tokens = sum(t for _, t in batched.values())
    return {"k": k, "batched_s": round(median(walls["batched"]), 2), "sequential_s": round(median(walls["sequential"]), 2),
            "ratio": median(walls["batched"]) / median(walls["sequential"]), "completion_tokens": tokens,
            "prompt_evals_batched": evals["batched"], "prompt_evals_sequential": evals["sequential"],
            "same_answers": same}


def compare_models(specs: list[str], failures, samples: int, max_tokens: int, reps: int, usable: bool = True) -> dict:
    """Section 4: each model's decode/prompt speed, K ratios and usable share, timings interleaved."""
    backends = {spec: load_backend(spec) for spec in specs}
    out: dict = {spec: {"model": b.identity.id} for spec, b in backends.items()}
    for spec, backend in backends.items():  # usable share first: no timing in it
        if usable:
            out[spec]["usable"] = usable_share(backend, failures, [Mode.EXPLAIN, Mode.REFINE], samples, max_tokens,
                                               free=False)
    for _ in range(reps):
        for spec, backend in backends.items():
            out[spec].setdefault("decode", []).append(decode_speed(backend, failures[:2], 1, min(max_tokens, 256)))
    for k in (4, 8):
        for spec, backend in backends.items():
            out[spec][f"batch_k{k}"] = batch_vs_sequential(backend, failures[0][0], k, reps, max_tokens)
            print(spec, k, out[spec][f"batch_k{k}"], file=sys.stderr, flush=True)
    for spec, backend in backends.items():
        out[spec]["prompt_tok_s"] = round(backend.prompt_tokens / backend.prompt_seconds, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few tasks, short answers (a smoke run)")
    parser.add_argument("--tasks", type=int, default=6, help="HumanEvalFix tasks for the usable share")
    parser.add_argument("--first-task", type=int, default=0, help="index of the first of those tasks")
    parser.add_argument("--modes", nargs="+", default=["explain", "refine"], choices=["explain", "refine"])
    parser.add_argument("--log", type=Path, help="append every answer (JSON lines) here as it comes")
    parser.add_argument("--samples", type=int, default=4, help="answers per task and mode")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=1, help="repetitions of the speed and batch measurements")
    parser.add_argument("--skip", nargs="*", default=[], choices=["usable", "speed", "batch"])
    parser.add_argument("--grammar-only", action="store_true", help="usable share with the grammar only")
    parser.add_argument("--dump", type=Path, help="write the unusable answers (JSON) here, to classify them")
    parser.add_argument("--models", nargs="+", help="compare these model settings side by side (section 4 only)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.samples, args.max_tokens = 3, 2, 128
    if args.models:
        with tempfile.TemporaryDirectory(prefix="ledex-bench-gen-") as tmp:
            failures = [editor_failure(row, Path(tmp)) for row in load_tasks(args.tasks)]
        started = time.perf_counter()
        result = {"machine": machine_facts(), "metrics": {"models": compare_models(args.models, failures, args.samples,
                                                                                   args.max_tokens, args.reps,
                                                                                   "usable" not in args.skip)}}
        result["metrics"]["seconds"] = round(time.perf_counter() - started, 1)
        result["notes"] = [f"load average at the end: {machine_facts()['loadavg_1m']} (shared CPU: ratios only)"]
        return emit(result)
    backend = load_backend()
    with tempfile.TemporaryDirectory(prefix="ledex-bench-gen-") as tmp:
        failures = [editor_failure(row, Path(tmp)) for row in load_tasks(args.tasks, args.first_task)]
    result: dict = {"machine": machine_facts(), "metrics": {}, "ratios": {}, "notes": []}
    started = time.perf_counter()
    if "usable" not in args.skip:
        dump: list = []
        shares = usable_share(backend, failures, [Mode(m) for m in args.modes], args.samples, args.max_tokens,
                              free=not args.grammar_only, dump=dump, log=args.log)
        if args.dump:
            args.dump.write_text(json.dumps(dump, indent=1))
        result["metrics"]["humanevalfix_usable"] = shares | {"tasks": len(failures), "first_task": args.first_task,
                                                             "samples_per_task": args.samples}
        for key, share in shares.items():
            if key.endswith("grammar"):
                result["ratios"][f"usable_share_{key}"] = ratio(share["usable_pct"] / 100, ">= 0.98")
    if "speed" not in args.skip:
        speed = decode_speed(backend, failures[:2], 1 if args.quick else args.reps, min(args.max_tokens, 256))
        result["metrics"]["decode"] = speed
        result["ratios"]["decode_tok_s_grammar_vs_free"] = ratio(speed["grammar_tok_s"] / speed["free_tok_s"], ">= 0.9")
        print("decode", speed, file=sys.stderr, flush=True)
    if "batch" not in args.skip:
        for k, goal in ((4, "<= 0.5"), (8, "<= 0.35")):
            run = batch_vs_sequential(backend, failures[0][0], k, 1 if args.quick else args.reps, args.max_tokens)
            result["metrics"][f"batch_k{k}"] = run
            result["ratios"][f"batched_vs_sequential_wall_k{k}"] = ratio(run["ratio"], goal)
            print("batch", run, file=sys.stderr, flush=True)
    result["metrics"]["seconds"] = round(time.perf_counter() - started, 1)
    result["notes"].append(f"load average at the end: {machine_facts()['loadavg_1m']} (shared CPU: ratios only)")
    return emit(result)


if __name__ == "__main__":
    main()
