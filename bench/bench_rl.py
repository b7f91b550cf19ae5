"""RL rollout + reward throughput, and where the time goes (issue 6).

Runs a few real GRPO steps of `ledex-train rl` (default model, fresh LoRA, real sandbox, real
CodeBLEU, the packaged MiniLM embedder) on MBPP-train wrong solutions made by
`ledex.training.mutate` (a mutant as the wrong code, the mutation oracle's explanation and the
original as the correct refinement), and splits each step's wall time into:

    generation   the policy sampling answers (transformers generate, or vLLM with --use-vllm)
    sandbox      running the answers' code against the tests
    embedding    sentence embeddings for R(e)
    codebleu     the rest of reward computation (parsing, CodeBLEU, gaming checks)
    update       everything else: policy/reference log-probs, backward, optimizer

    .venv/bin/python bench/bench_rl.py --quick      # 2 steps, 2 answers x 64 tokens
    .venv/bin/python bench/bench_rl.py              # 4 steps, 4 answers x 256 tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_facts  # noqa: E402

MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"


def make_records(path: Path, n_problems: int) -> int:
    from ledex.engine.problems import load_mbpp
    from ledex.training import records
    from ledex.training.mutate import mutants
    from ledex.training.records import Trajectory

    rows = []
    for problem in load_mbpp(MBPP, "train"):
        found = mutants(problem.solution, limit=1)
        if not found:
            continue
        mutant = found[0]
        common = dict(source=problem.id, task=problem.task_text(), wrong_code=mutant.code,
                      feedback=f"{problem.tests[0]}\nAssertionError", tests=problem.tests, setup=problem.setup,
                      entry_point=problem.entry_point, origin="mutation")
        rows.append(Trajectory(explanation=mutant.explanation(), code=mutant.original, correct=True, pass_rate=1.0,
                               teacher="mutation-oracle", **common))
        if len(rows) >= n_problems:
            break
    return records.write(path, rows)


class Clock:
    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        return timed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 steps, 2 answers of 64 tokens")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU)")
    options = parser.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    from ledex.training import rewards
    from ledex.training.embeddings import get_embedder
    from ledex.training.rl import RLArgs, build_trainer

    steps = options.steps or (2 if options.quick else 4)
    generations, length = (2, 64) if options.quick else (4, 256)
    work = Path(tempfile.mkdtemp(prefix="ledex-bench-rl-"))
    n_records = make_records(work / "mbpp-mutants.jsonl", steps * 2)
    args = RLArgs(data=[str(work / "mbpp-mutants.jsonl")], output_dir=str(work / "out"), max_steps=steps,
                  num_generations=generations, batch_size=generations, grad_accum=1, max_completion_length=length,
                  save_steps=10_000, progress=False, use_vllm=options.use_vllm, resume=False)
    clock = Clock()
    judge = rewards.SandboxJudge(work / "sandbox")
    started = time.perf_counter()
    embedder = get_embedder(args.embedder)
    embedder_load = time.perf_counter() - started
    embedder.encode = clock.wrap("embedding", embedder.encode)
    started = time.perf_counter()
    trainer = build_trainer(args, judge=clock.wrap("sandbox", judge), embedder=embedder)
    setup_s = time.perf_counter() - started
    trainer._generate_single_turn = clock.wrap("generation", trainer._generate_single_turn)
    trainer._calculate_rewards = clock.wrap("rewards", trainer._calculate_rewards)

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.began = time.perf_counter()

        def on_step_end(self, *a, **k):
            clock.seconds["steps"] += time.perf_counter() - self.began

    trainer.add_callback(StepClock())
    trainer.train()
    s = clock.seconds
    total = s["steps"]
    split = {"generation": s["generation"], "sandbox": s["sandbox"], "embedding": s["embedding"],
             "codebleu": s["rewards"] - s["sandbox"] - s["embedding"],
             "update": total - s["generation"] - s["rewards"]}
    completions = steps * generations
    logged = [row for row in trainer.state.log_history if "reward" in row]
    metrics = {"completions_scored_per_min": round(60 * completions / total, 2),
               "reward_only_completions_per_min": round(60 * completions / max(s["rewards"], 1e-9), 1),
               "step_s": round(total / steps, 2), "steps": steps, "completions": completions,
               "max_completion_tokens": length, "sandbox_runs": judge.runs,
               **{f"share_{k}": f"{100 * v / total:.1f}%" for k, v in split.items()},
               **{f"seconds_{k}": round(v, 2) for k, v in split.items()},
               "setup_s (model load + dataset)": round(setup_s, 1), "embedder_load_s": round(embedder_load, 1),
               "mean_reward": round(sum(r["reward"] for r in logged) / max(len(logged), 1), 3),
               "device": "cuda" if torch.cuda.is_available() else "cpu"}
    return {"metrics": metrics, "machine": machine_facts(), "records": n_records,
            "notes": ["update = policy + reference log-probs, backward and optimizer step",
                      "the 135M default model rarely finishes a code block in few tokens: most answers are "
                      "rejected by the parser before the sandbox, so sandbox time grows with a better policy"]}


if __name__ == "__main__":
    emit(main())
