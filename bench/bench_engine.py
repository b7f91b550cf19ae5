"""Benchmark the fix engine (issue 2).

Run from the repo root:  .venv/bin/python bench/bench_engine.py [--quick]

1. Decode speed: tokens/s of `LlamaCppBackend.generate` (chat rendering, tokenizing,
   streaming, cancellation checks) vs raw llama-cpp-python `Llama.create_completion` on the
   same prompt tokens, same model instance, same sampling and seed, as a ratio of medians over
   interleaved repetitions after one warm-up each. Goal: >= 0.95. Both get the same prompt,
   so llama.cpp's prefix cache helps both equally.
2. The worker process the language server uses (`engine.genworker.WorkerBackend`): its
   tokens/s, protocol included, vs the same backend in-process, same prompt, seed and
   thread count, interleaved. Goal: >= 0.95 (the JSON-lines protocol must cost nothing).
3. Failure to first verified fix on examples/inventory: `failures.discover` (the test run),
   then `FixEngine.fix` per failure until one is verified, split into test run, generation
   and verification time (generation and verification overlap, so wall < their sum). The
   default 135M model rarely writes a verified fix; then the time to give up is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, median, ratio  # noqa: E402

from ledex.engine.backends import LlamaCppBackend, Sampling, load_backend  # noqa: E402
from ledex.engine.format import Problem, build_messages  # noqa: E402

# A realistic LEDEX refinement prompt (the shape every fix request has).
PROMPT = Problem(
    task="Write `low_stock(items, threshold)` returning the names whose quantity is at or below threshold.",
    wrong_code="def low_stock(items, threshold):\n    return [name for name, qty in items.items() if qty < threshold]",
    feedback="assert low_stock({'a': 2, 'b': 5}, 2) == ['a']\nAssertionError: assert [] == ['a']")


def decode_speed(backend: LlamaCppBackend, reps: int, max_tokens: int) -> dict:
    """Engine vs raw tokens/s on identical prompt tokens and sampling."""
    messages = build_messages(PROMPT)
    tokens = backend.tokenize(backend.render(messages))
    sampling = Sampling(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=7)

    def engine() -> tuple[float, int]:
        start = time.perf_counter()
        out = backend.generate(messages, sampling)
        return time.perf_counter() - start, out.completion_tokens

    def raw() -> tuple[float, int]:
        # the engine evaluates every prompt from scratch (so a seed reproduces its answer):
        # start raw from an empty KV cache too, or raw would skip the prompt on every rep
        backend.llm.reset()
        start = time.perf_counter()
        out = backend.llm.create_completion(tokens, max_tokens=max_tokens, temperature=sampling.temperature,
                                            top_p=sampling.top_p, seed=sampling.seed)
        return time.perf_counter() - start, out["usage"]["completion_tokens"]

    engine(), raw()  # warm-up: page in weights, fill the prefix cache for both
    engine_rates, raw_rates, counts = [], [], set()
    for _ in range(reps):
        for fn, rates in ((engine, engine_rates), (raw, raw_rates)):
            seconds, n = fn()
            rates.append(n / seconds)
            counts.add(n)
    engine_tps, raw_tps = median(engine_rates), median(raw_rates)
    return {"prompt_tokens": len(tokens), "completion_tokens": sorted(counts), "reps": reps,
            "engine_tok_s": round(engine_tps, 2), "raw_tok_s": round(raw_tps, 2),
            "ratio": ratio(engine_tps / raw_tps, ">= 0.95")}


def worker_speed(backend: LlamaCppBackend, model: str | None, threads: int, reps: int, max_tokens: int) -> dict:
    """WorkerBackend vs the in-process backend: tokens/s per call, wall clock of the caller."""
    from ledex.engine.genworker import WorkerBackend

    messages, sampling = build_messages(PROMPT), Sampling(max_tokens=max_tokens, seed=7)
    worker = WorkerBackend(model or "", threads=threads)
    try:
        def rate(b) -> tuple[float, float]:
            start = time.perf_counter()
            out = b.generate(messages, sampling)
            wall = time.perf_counter() - start
            return out.completion_tokens / wall, wall - out.seconds  # (tok/s, time outside the model)

        rate(worker), rate(backend)  # warm-up
        worker_runs, local_runs = [], []
        for _ in range(reps):
            worker_runs.append(rate(worker))
            local_runs.append(rate(backend))
    finally:
        worker.close()
    w, local = median([r for r, _ in worker_runs]), median([r for r, _ in local_runs])
    overhead_ms = 1000 * (median([o for _, o in worker_runs]) - median([o for _, o in local_runs]))
    return {"worker_tok_s": round(w, 2), "in_process_tok_s": round(local, 2), "reps": reps,
            "protocol_overhead_ms_per_call": round(overhead_ms, 1),
            "ratio": ratio(w / local, ">= 0.95")}


def first_fix(backend, samples: int, rounds: int, max_tokens: int, failures_limit: int) -> dict:
    """Time from the failing test run to the first verified fix on a copy of examples/inventory."""
    from ledex.engine.failures import discover
    from ledex.engine.fixer import FixConfig, FixEngine

    with tempfile.TemporaryDirectory(prefix="ledex-bench-") as tmp:
        workspace = Path(tmp) / "inventory"
        shutil.copytree(REPO / "examples" / "inventory", workspace)
        started = time.perf_counter()
        found = discover(workspace)
        test_run = time.perf_counter() - started
        config = FixConfig(samples=samples, rounds=rounds, stop_at_first=True, search=None,  # the model's path
                           sampling=Sampling(max_tokens=max_tokens))
        engine = FixEngine(backend, workspace, config)
        generation = verification = 0.0
        attempts, verified_test = [], None
        for failure in found.failures[:failures_limit]:
            result = engine.fix(failure)
            generation += result.timings["generation"]
            verification += result.timings["verification"]
            attempts.append({"test": failure.test, "candidates": len(result.candidates),
                             "usable": sum(c.patch is not None for c in result.candidates),
                             "verified": result.best is not None})
            if result.best is not None:
                verified_test = failure.test
                break
        wall = time.perf_counter() - started
    return {"failures_found": len(found.failures), "first_verified": verified_test,
            "seconds_to_first_verified_fix" if verified_test else "seconds_until_gave_up": round(wall, 2),
            "test_run_s": round(test_run, 2), "generation_s": round(generation, 2),
            "verification_s": round(verification, 2), "attempts": attempts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and samples (CI, shared boxes)")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp threads (default: half the cores; spin-waiting threads on a shared, "
                             "oversubscribed box make timings swing ~10x)")
    args = parser.parse_args(argv)
    reps, max_tokens = (3, 96) if args.quick else (7, 256)
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    backend = load_backend(args.model, n_threads=threads)
    speed = decode_speed(backend, reps, max_tokens)
    worker = worker_speed(backend, args.model, threads, reps, max_tokens)
    fix = first_fix(backend, samples=2 if args.quick else 4, rounds=1 if args.quick else 2,
                    max_tokens=256 if args.quick else 512, failures_limit=1 if args.quick else 3)
    seconds_key = next(k for k in fix if k.startswith("seconds_"))
    return emit({
        "title": "fix engine (issue 2)",
        "model": backend.identity.id,
        "decode": speed, "worker": worker, "first_fix": fix,
        "metrics": {"engine decode tok/s": speed["engine_tok_s"], "raw llama-cpp-python decode tok/s": speed["raw_tok_s"],
                    "worker process tok/s": worker["worker_tok_s"], "in-process tok/s": worker["in_process_tok_s"],
                    "worker protocol overhead ms/call": worker["protocol_overhead_ms_per_call"],
                    f"inventory: {seconds_key.replace('_', ' ')}": fix[seconds_key],
                    "inventory: test run s": fix["test_run_s"], "inventory: generation s": fix["generation_s"],
                    "inventory: verification s": fix["verification_s"],
                    "inventory: verified fix": fix["first_verified"] or "none"},
        "ratios": {"engine / raw decode tok/s": speed["ratio"],
                   "worker process / in-process tok/s": worker["ratio"]},
        "notes": [f"{'quick' if args.quick else 'full'} mode: {reps} interleaved reps of up to {max_tokens} tokens, "
                  f"{threads} llama.cpp thread(s), load average {os.getloadavg()[0]:.1f}"],
    })


if __name__ == "__main__":
    main()
