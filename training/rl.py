"""`ledex-train rl`: LEDEX reinforcement learning on top of the SFT adapter (TRL GRPO or RLOO).

For every wrong solution in the collected trajectories (success AND failure trajectories, as
the paper does), the policy samples explain+refine answers to the LEDEX prompt, rendered with
the GGUF's chat template exactly as the server renders it. Each answer is scored by every
reward in the registry `ledex.training.rewards.REWARDS` (name -> function -> default weight):
R(e) (explanation vs explanations that led to correct fixes), R(r) (CodeBLEU vs correct fixes
+ sandbox pass rate) and a format/integrity term; TRL logs each one separately
(rewards/<name>/mean) and sums them with the weights (--weight-<name> overrides). A KL penalty (beta > 0) keeps the policy near the
SFT adapter: TRL copies the loaded adapter into a frozen "ref" adapter.

Credit, honestly: the paper (PPO) puts R(e) on the last explanation token and R(r) on the last
token, so a good explanation followed by a wrong fix still gets credit on the explanation
tokens. GRPO/RLOO have no value model and give every token of an answer the same
group-normalised advantage of one scalar, here w_e*R(e) + w_r*R(r) + w_f*format. The
explanation still counts (a better explanation raises the sum within its group), but it is not
localised to the explanation tokens; the KL term stays per token.

    ledex-train rl --data data/mbpp.jsonl --adapter ledex-runs/sft/adapter --output-dir ledex-runs/rl
    ledex-train rl ... --use-vllm            # generate with vLLM on a GPU (TRL's colocate mode)
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from ledex.engine.format import Mode, build_messages
from ledex.training import records, rewards
from ledex.training.config import add_dataclass_arguments, run_command
from ledex.training.core import TrainingError, load_policy, load_tokenizer
from ledex.training.trainrun import set_threads, train_and_save, write_metrics


@dataclass
class RLArgs:
    """Options of `ledex-train rl` (one flag per field)."""

    data: list[str] = field(default_factory=list, metadata={"help": "Trajectory files from `collect`."})
    adapter: str | None = field(default=None, metadata={
        "help": "SFT adapter (PEFT dir from `ledex-train sft`, or its output dir); none: a fresh LoRA on the base."})
    model: str = field(default="default", metadata={
        "help": "Base: 'default' (the embedded GGUF), a .gguf path, or a HF model path/id (same as SFT's)."})
    output_dir: str = field(default="ledex-runs/rl", metadata={"help": "Checkpoints and the final adapter."})
    algorithm: str = field(default="grpo", metadata={"help": "grpo or rloo (TRL trainers; same rewards)."})
    mode: str = field(default="explain", metadata={"help": "Prompt mode: explain (LEDEX) or refine."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=1e-5, metadata={
        "help": "LoRA learning rate (the paper's PPO used 2e-6 on full weights; LoRA needs more)."})
    beta: float = field(default=0.04, metadata={
        "help": "KL coefficient against the SFT policy (> 0: the paper's KL penalty on every token)."})
    num_generations: int = field(default=4, metadata={"help": "Answers sampled per wrong solution (GRPO group)."})
    batch_size: int = field(default=4, metadata={
        "help": "Per-device completions per step (a multiple of --num-generations)."})
    grad_accum: int = field(default=2, metadata={"help": "Gradient accumulation steps."})
    max_completion_length: int = field(default=384, metadata={
        "help": "Longest answer in tokens (explanation + one function; a cut answer gets the minimum)."})
    max_prompt_tokens: int = field(default=1536, metadata={"help": "Prompts longer than this are dropped."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (LEDEX samples at 0.8)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling."})
    weight_explanation: float = field(default=rewards.REWARDS["explanation"].weight, metadata={"help": "Weight of R(e) in the summed reward."})
    weight_refinement: float = field(default=rewards.REWARDS["refinement"].weight, metadata={"help": "Weight of R(r) in the summed reward."})
    weight_format: float = field(default=rewards.REWARDS["format"].weight, metadata={"help": "Weight of the format/integrity term."})
    embedder: str = field(default="minilm", metadata={
        "help": "Explanation embedder: 'minilm' (packaged, offline) or a sentence-transformers id such as "
                "sentence-transformers/all-roberta-large-v1 (the paper's; needs the hub or its cache)."})
    sandbox_workers: int | None = field(default=None, metadata={"help": "Parallel sandbox runs (default: cores)."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most N wrong solutions (quick runs)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank when starting without an SFT adapter."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha when starting without an SFT adapter."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU only; TRL's vllm_mode)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "vLLM mode: colocate or server."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations (default: on with a GPU; off on CPU where memory is not the limit)."})
    save_steps: int = field(default=25, metadata={"help": "Checkpoint every N steps (resume picks the latest)."})
    logging_steps: int = field(default=1, metadata={"help": "Log rewards every N steps."})
    resume: bool = field(default=True, metadata={"help": "Resume from the latest checkpoint in --output-dir."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class RLError(TrainingError):
    """Bad input for RL (no usable data, missing adapter); the message says what to fix."""




# --- dataset ------------------------------------------------------------------------------------


def references(trajectories: Sequence[records.Trajectory]) -> tuple[dict, dict]:
    """Correct codes and explanations by wrong_id, with the same task's as a fallback (by task text)."""
    by_wrong, by_task = defaultdict(lambda: ([], [])), defaultdict(lambda: ([], []))
    for t in trajectories:
        if not t.correct:
            continue
        for index in (by_wrong[t.wrong_id], by_task[t.task]):
            if t.code.strip() and t.code not in index[0]:
                index[0].append(t.code)
            if t.mode == Mode.EXPLAIN.value and t.explanation.strip() and t.explanation not in index[1]:
                index[1].append(t.explanation)
    return by_wrong, by_task


def build_rows(trajectories: Sequence[records.Trajectory], render: Callable[[list[dict]], str],
               mode: Mode = Mode.EXPLAIN) -> tuple[list[dict], dict]:
    """One row per wrong solution that has tests: the rendered prompt and the reward columns."""
    by_wrong, by_task = references(trajectories)
    rows, seen, no_tests = [], set(), 0
    for t in trajectories:
        if t.wrong_id in seen:
            continue
        seen.add(t.wrong_id)
        if not t.tests:  # editor episodes carry no runnable tests: KTO learns from those
            no_tests += 1
            continue
        codes, explanations = by_wrong[t.wrong_id] if t.wrong_id in by_wrong else by_task.get(t.task, ([], []))
        rows.append({"prompt": render(build_messages(t.problem, mode)), "wrong_id": t.wrong_id,
                     "reference_codes": list(codes), "reference_explanations": list(explanations),
                     "tests": list(t.tests), "setup": t.setup, "entry_point": t.entry_point or ""})
    stats = {"records": len(trajectories), "wrong_solutions": len(seen), "prompts": len(rows),
             "skipped_without_tests": no_tests,
             "prompts_with_code_references": sum(bool(r["reference_codes"]) for r in rows),
             "prompts_with_explanation_references": sum(bool(r["reference_explanations"]) for r in rows)}
    return rows, stats


def build_dataset(args: RLArgs, tokenizer, fmt) -> tuple[Any, dict]:
    """The RL dataset (one row per wrong solution with tests, prompts rendered as served) and
    its counts. Raises RLError without data or when every prompt is longer than max_prompt_tokens.
    """
    from datasets import Dataset

    if not args.data:
        raise RLError("no training data: pass --data <trajectories.jsonl>")
    trajectories = [t for path in args.data for t in records.read(path, skip_bad=True)]

    rows, stats = build_rows(trajectories, fmt.render, Mode(args.mode))
    fitting = [r for r in rows if len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) <= args.max_prompt_tokens]
    stats["dropped_too_long"] = len(rows) - len(fitting)
    fitting = fitting[: args.max_prompts] if args.max_prompts else fitting
    if not fitting:
        raise RLError(f"no usable prompts in {', '.join(args.data)}: {stats}")
    return Dataset.from_list(fitting), stats


# --- trainer ------------------------------------------------------------------------------------


def reward_functions(args: RLArgs, judge=None, embedder=None) -> list[Callable]:
    """The registered rewards (`rewards.REWARDS`, in order) bound to a sandbox judge, the embedder
    (loaded on first use) and the prompt mode."""
    from ledex.training.embeddings import get_embedder

    class LazyEmbedder:  # load the embedder on first use: answers with no explanation never need it
        def encode(self, texts):
            return (embedder or get_embedder(args.embedder)).encode(texts)

    return rewards.bound_rewards(judge=judge or rewards.SandboxJudge(workers=args.sandbox_workers),
                                 embedder=LazyEmbedder(), mode=Mode(args.mode))


def weights(args: RLArgs, n_rewards: int) -> list[float]:
    """Registry weights, overridden by the args' weight_<name> fields; extra rewards (tests) weigh 1."""
    names = [f.name[len("weight_"):] for f in fields(args) if f.name.startswith("weight_")]
    chosen = rewards.reward_weights({name: getattr(args, f"weight_{name}") for name in names})
    return chosen + [1.0] * (n_rewards - len(chosen))


def trainer_config(args: RLArgs, n_rewards: int):
    """TRL's GRPOConfig or RLOOConfig for these args, with the registry's reward weights
    (`weights`) for `n_rewards` reward functions.
    """
    import torch
    from trl import GRPOConfig, RLOOConfig

    gpu = torch.cuda.is_available()
    config_cls = {"grpo": GRPOConfig, "rloo": RLOOConfig}[args.algorithm]
    return config_cls(
        output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate, beta=args.beta,
        num_generations=args.num_generations, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, max_completion_length=args.max_completion_length,
        temperature=args.temperature, top_p=args.top_p, reward_weights=weights(args, n_rewards),
        use_vllm=args.use_vllm, vllm_mode=args.vllm_mode,
        gradient_checkpointing=gpu if args.gradient_checkpointing is None else args.gradient_checkpointing,
        logging_steps=args.logging_steps, save_steps=args.save_steps, save_total_limit=2, report_to="none",
        seed=args.seed, disable_tqdm=not args.progress, bf16=gpu, use_cpu=not gpu, dataloader_pin_memory=gpu)


def build_trainer(args: RLArgs, *, judge=None, embedder=None, extra_rewards: Sequence[Callable] = (),
                  cache_base: bool = False):
    """The TRL trainer, ready to `.train()`; judge/embedder/extra_rewards are for tests and benchmarks."""
    from trl import GRPOTrainer, RLOOTrainer

    if args.algorithm not in ("grpo", "rloo"):
        raise RLError(f"--algorithm must be grpo or rloo, not {args.algorithm!r}")
    if args.beta <= 0:
        print("ledex-train rl: beta <= 0 drops the KL penalty against the SFT policy", file=sys.stderr)
    tokenizer, fmt = load_tokenizer(args.model)
    tokenizer.padding_side = "left"  # generation pads on the left
    dataset, stats = build_dataset(args, tokenizer, fmt)
    model, peft_config = load_policy(args.model, args.adapter, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                     cache=cache_base)
    funcs = reward_functions(args, judge, embedder) + list(extra_rewards)
    trainer_cls = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[args.algorithm]
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=trainer_config(args, len(funcs)),
                          train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    trainer.ledex_stats, trainer.ledex_format = stats, fmt
    return trainer


def reward_log(trainer) -> list[dict]:
    """Per logged step: the mean of each reward component, the total and the KL."""
    keep = [f"rewards/{r.function.__name__}/mean" for r in rewards.REWARDS.values()] + ["reward", "kl", "loss"]
    return [{"step": row.get("step"), **{k: row[k] for k in keep if k in row}}
            for row in trainer.state.log_history if any(k in row for k in keep[:3])]


def train(args: RLArgs, **build: Any) -> dict:
    """Run RL; writes <output_dir>/adapter (PEFT, the policy only) and <output_dir>/ledex-rl.json;
    returns the metrics (dataset counts, `trainrun.train_and_save`'s, per-step rewards) and the trainer.
    Raises RLError for bad input, TrainingError for a base or adapter that does not load."""
    set_threads(args.threads)
    trainer = build_trainer(args, **build)
    run = train_and_save(trainer, args.output_dir, resume=args.resume)
    metrics = write_metrics(args.output_dir, "rl", {
        **trainer.ledex_stats, "algorithm": args.algorithm, **run, "rewards": reward_log(trainer),
        "base": args.model, "parent_adapter": args.adapter, "args": asdict(args)})
    return metrics | {"trainer": trainer}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train rl` (one per RLArgs field)."""
    add_dataclass_arguments(parser, RLArgs)


def summary(metrics: dict) -> str:
    """One line for the terminal: prompts, steps, seconds, the last logged reward means, the adapter."""
    last = metrics["rewards"][-1] if metrics["rewards"] else {}
    return (f"{metrics['prompts']} wrong solutions, {metrics['steps']} steps in {metrics['seconds']} s; last rewards "
            + ", ".join(f"{k.split('/')[1] if '/' in k else k} {v:.2f}" for k, v in last.items() if k != "step")
            + f"; adapter: {metrics['adapter_dir']}")


def main(args: argparse.Namespace) -> int:
    """`ledex-train rl`: exit status 0, or 2 with the message for bad input."""
    from ledex.training.embeddings import EmbedderError

    return run_command("rl", RLArgs, args, train, summary, (TrainingError, EmbedderError, records.RecordError))

