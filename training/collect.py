"""`ledex-train collect`: the LEDEX data pipeline (execution-verified trajectories).

For every problem with unit tests:
  1. wrong solutions: K samples from the model (temperature 1.0, as in the paper), plus
     optional AST mutations of the reference solution (training/mutate.py); each is judged in
     the sandbox and kept only if it fails;
  2. the teacher (any backend: the model itself = self-bootstrap, a bigger GGUF, an endpoint)
     writes N explanation+refinement answers per wrong solution (temperature 0.8), each
     refinement judged in the sandbox; mutants also get the mutation-oracle trajectory
     (the known fix, with a faithful explanation);
  3. success AND failure trajectories are written (training/records.py), deduplicated.
Editor feedback (engine/episodes.py) adds accepted fixes as correct trajectories and
rejected/reverted ones as failures. Correct initial solutions go to `<output>.initial.jsonl`
(SFT trains on them too, as the paper does; RL/KTO read only the main file).

Resumable: every finished problem is cached under --cache-dir (keyed by problem and
settings); a rerun skips cached problems. A yield table like the paper's is printed.

    ledex-train collect --problems ../shared/data/mbpp.jsonl --split train --output data/mbpp.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ledex.engine.format import Mode, build_messages, parse_response
from ledex.engine.grammar import answer_grammar
from ledex.training import records
from ledex.training.config import add_dataclass_arguments, run_command
from ledex.training.core import write_json
from ledex.training.mutate import mutants
from ledex.training.records import Trajectory


@dataclass
class CollectConfig:
    """Options of `ledex-train collect` (one flag per field; the paper's values are in each help)."""

    output: str = field(default="ledex-data/trajectories.jsonl", metadata={"help": "Dataset to write (JSONL)."})
    problems: list[str] = field(default_factory=list, metadata={
        "help": "Problem sets: MBPP JSONL, any {prompt, tests, solution} JSONL, or hf:<dataset id> (online only)."})
    split: str | None = field(default="train", metadata={"help": "MBPP split (train/validation/test); none = all."})
    feedback_log: list[str] = field(default_factory=list, metadata={"help": "Editor episode logs (episodes.sqlite3)."})
    model: str = field(default="default", metadata={"help": "Model that writes the initial (wrong) solutions."})
    adapter: str | None = field(default=None, metadata={"help": "GGUF LoRA adapter on the model."})
    teacher: str | None = field(default=None, metadata={
        "help": "Teacher for explanations+refinements; default: the model itself (self-bootstrap)."})
    samples: int = field(default=4, metadata={
        "help": "K initial solutions per problem (paper: 20; small default so a CPU run finishes)."})
    temperature: float = field(default=1.0, metadata={"help": "Initial-solution temperature (paper: 1.0)."})
    refinements: int = field(default=2, metadata={"help": "N teacher answers per wrong solution (paper: 10)."})
    refine_temperature: float = field(default=0.8, metadata={"help": "Teacher temperature (paper: 0.8)."})
    max_wrong: int = field(default=3, metadata={"help": "Wrong solutions per problem sent to the teacher (bounds cost)."})
    mutations: int = field(default=2, metadata={"help": "AST mutants of the reference solution per problem (0: off)."})
    mutation_oracle: bool = field(default=True, metadata={
        "help": "Add the known fix of each mutant as a correct trajectory (bootstraps a model too weak to teach)."})
    max_tokens: int = field(default=384, metadata={"help": "Token limit per answer (MBPP functions are short)."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    workers: int | None = field(default=None, metadata={"help": "Parallel sandbox runs (default: one per CPU)."})
    threads: int | None = field(default=None, metadata={"help": "llama.cpp threads (default: all CPUs)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (per problem offsets are derived from it)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Per-problem cache (default: <output>.cache/)."})
    sources: list[str] = field(default_factory=list, metadata={
        "help": "Editor-shaped sources (issue 16): mbpp:<file>, pypi:<name>[==<version>], dir:<folder>[#<licence>]; "
                "bugs planted with engine.operators, prompts from the fix engine (training/plant.py)."})
    work_dir: str | None = field(default=None, metadata={"help": "Projects and their working copies (default: <output>.work/)."})
    fetch_cache: str | None = field(default=None, metadata={
        "help": "Where pip-downloaded sdists go (default: ~/.cache/ledex/fetch; never inside the repository)."})
    coverage: bool = field(default=True, metadata={"help": "Order suspects with coverage, as `ledex fix` does."})
    context_tokens: int = field(default=8192, metadata={
        "help": "Served context (backends.DEFAULT_N_CTX): prompt + answer must fit, else the record is skipped."})
    max_minutes: float | None = field(default=None, metadata={"help": "Start no new work after this many minutes."})


class CollectError(RuntimeError):
    """Input collect cannot use; the message says what to fix."""


# --- sources --------------------------------------------------------------------------------


def load_sources(config: CollectConfig):
    """The training problems of every --problems source (first --limit), as CodingProblems.

    Raises CollectError for HumanEval (evaluation only, the LEDEX protocol) and for a problem
    set that cannot be read.
    """
    from ledex.engine.problems import ProblemSetError, load_problems

    problems = []
    for source in config.problems:
        if source == "humaneval" or "humaneval" in Path(source).name.lower():
            raise CollectError("HumanEval is for evaluation only, never training (LEDEX protocol)")
        try:
            problems += _load_hf(source[3:], config.split) if source.startswith("hf:") else load_problems(source, config.split)
        except ProblemSetError as exc:
            raise CollectError(str(exc)) from exc
    return problems[: config.limit] if config.limit else problems


def _load_hf(dataset_id: str, split: str | None):
    """An MBPP-shaped hub dataset (needs the network; a local JSONL is the offline path)."""
    from datasets import load_dataset

    from ledex.engine.problems import load_mbpp

    rows = load_dataset(dataset_id, split=split or "train")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return load_mbpp(handle.name, None)


def episode_trajectories(path: str) -> list[Trajectory]:
    """Editor feedback: accepted fixes are correct refinements, rejected/reverted ones failures."""
    from ledex.engine.episodes import EpisodeLog

    if not Path(path).is_file():
        raise CollectError(f"feedback log not found: {path}")
    found = []
    for episode in EpisodeLog(path).episodes():
        if episode.outcome not in ("accepted", "rejected", "reverted") or not episode.wrong_code.strip():
            continue
        for candidate in episode.candidates:
            chosen = episode.chosen_candidate == candidate.idx
            good = episode.outcome == "accepted" and chosen and candidate.verified
            if not candidate.code.strip() or (episode.outcome == "accepted" and not chosen):
                continue  # unchosen alternatives of an accepted fix say nothing about their quality
            found.append(Trajectory(
                source=f"feedback/{episode.id}", task=episode.task, wrong_code=episode.wrong_code,
                feedback=episode.feedback, explanation=candidate.explanation, code=candidate.code,
                correct=good, pass_rate=1.0 if good else float(candidate.pass_rate), teacher=episode.model,
                origin="accepted" if good else "rejected", extra={"outcome": episode.outcome}))
    return found


# --- one problem ------------------------------------------------------------------------------


@dataclass
class Wrong:
    """One wrong solution of a problem: its code, the sandbox verdict, where it came from and,
    for a mutation, the Mutant (whose known fix is the oracle answer).
    """

    code: str
    verdict: object
    origin: str  # "sampled" | "mutation"
    mutant: object = None


class Collector:
    """Collects one problem at a time: K initial solutions from `model` (temperature
    config.temperature), plus AST mutants of the reference; up to config.max_wrong wrong ones get N
    explain+refine answers from `teacher`, each verified in the sandbox under `root`.
    """

    def __init__(self, config: CollectConfig, model, teacher, root: Path):
        self.config, self.model, self.teacher, self.root = config, model, teacher, root

    def problem(self, problem, seed: int) -> tuple[list[Trajectory], list[Trajectory]]:
        """(trajectories, correct initial solutions) for one problem."""
        from ledex.engine.problems import judge_solutions

        initial, wrong = self._initial(problem, seed)
        wrong += self._mutants(problem, seed)
        picked = _pick(wrong, self.config.max_wrong)
        out = []
        if self.teacher is not None and self.config.refinements:
            out += self._teach(problem, picked, seed)
        if self.config.mutation_oracle:
            ok = [w for w in picked if w.origin == "mutation"]
            verdicts = judge_solutions(problem, [w.mutant.original for w in ok[:1]], self.root, workers=self.config.workers)
            if verdicts and verdicts[0].passed:  # the canonicalised reference still passes: oracle fixes are right
                out += [self._record(problem, w, w.mutant.explanation(), w.mutant.original, verdicts[0],
                                     "mutation-oracle") for w in ok]
        return out, initial

    def _initial(self, problem, seed):
        from ledex.engine.backends import Sampling
        from ledex.engine.problems import extract_code, initial_messages, judge_solutions

        codes = []
        if self.model is not None and self.config.samples:
            sampling = Sampling(self.config.temperature, 0.95, self.config.max_tokens, seed)
            for i in range(self.config.samples):
                reply = self.model.generate(initial_messages(problem), dataclasses.replace(sampling, seed=seed + i))
                codes.append(extract_code(reply.text))
        codes = _unique(c for c in codes if c.strip())
        verdicts = judge_solutions(problem, codes, self.root, workers=self.config.workers) if codes else []
        initial = [Trajectory(problem.id, problem.task_text(), "", "", "", c, True, 1.0, teacher=self._name(self.model),
                              origin="initial", tests=problem.tests, setup=problem.setup, entry_point=problem.entry_point)
                   for c, v in zip(codes, verdicts) if v.passed]
        if problem.solution.strip():
            initial.append(Trajectory(problem.id, problem.task_text(), "", "", "", problem.solution.strip(), True, 1.0,
                                      teacher="reference", origin="initial", tests=problem.tests,
                                      setup=problem.setup, entry_point=problem.entry_point))
        return initial, [Wrong(c, v, "sampled") for c, v in zip(codes, verdicts) if not v.passed and not v.error]

    def _mutants(self, problem, seed):
        from ledex.engine.problems import judge_solutions

        if not self.config.mutations or not problem.solution.strip():
            return []
        # Ask for a few extra: some mutants still pass (dead code, equivalent operators).
        found = mutants(problem.solution, limit=self.config.mutations + 1, seed=seed)
        verdicts = judge_solutions(problem, [m.code for m in found], self.root, workers=self.config.workers)
        return [Wrong(m.code, v, "mutation", m) for m, v in zip(found, verdicts) if not v.passed][: self.config.mutations]

    def _teach(self, problem, picked: list[Wrong], seed: int) -> list[Trajectory]:
        from ledex.engine.backends import Sampling
        from ledex.engine.problems import judge_solutions, ledex_problem

        answers = []  # (wrong, explanation, code or None, raw)
        for w in picked:
            messages = build_messages(ledex_problem(problem, w.code, w.verdict), Mode.EXPLAIN)
            for i in range(self.config.refinements):
                sampling = Sampling(self.config.refine_temperature, 0.95, self.config.max_tokens, seed + 1000 + i,
                                    answer_grammar(Mode.EXPLAIN, problem.entry_point))  # the shape served
                reply = self.teacher.generate(messages, sampling)
                parsed = parse_response(reply.text, Mode.EXPLAIN, truncated=reply.truncated)
                answers.append((w, getattr(parsed, "explanation", reply.text.strip()), getattr(parsed, "code", None)))
        codes = [code for _, _, code in answers if code]
        verdicts = iter(judge_solutions(problem, codes, self.root, workers=self.config.workers) if codes else [])
        out = []
        for w, explanation, code in answers:
            verdict = next(verdicts) if code else None
            out.append(self._record(problem, w, explanation, code or "", verdict, self._name(self.teacher)))
        return out

    def _record(self, problem, w: Wrong, explanation, code, verdict, teacher) -> Trajectory:
        from ledex.engine.problems import ledex_problem

        lp = ledex_problem(problem, w.code, w.verdict)
        passed = bool(verdict and verdict.passed)
        return Trajectory(problem.id, lp.task, lp.wrong_code, lp.feedback, explanation, code, passed,
                          float(verdict.pass_rate) if verdict else 0.0, teacher=teacher, origin=w.origin,
                          tests=problem.tests, setup=problem.setup, entry_point=problem.entry_point,
                          extra={"operator": w.mutant.operator} if w.mutant else {})

    @staticmethod
    def _name(backend) -> str:
        return backend.identity.id if backend is not None else ""


def _unique(items) -> list[str]:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _pick(wrong: list[Wrong], limit: int) -> list[Wrong]:
    """Alternate sampled and mutated wrong solutions so both kinds reach the teacher."""
    sampled = [w for w in wrong if w.origin == "sampled"]
    mutated = [w for w in wrong if w.origin == "mutation"]
    mixed = [w for pair in zip(sampled, mutated) for w in pair]
    mixed += sampled[len(mutated):] + mutated[len(sampled):]
    return _dedup_wrong(mixed)[:limit]


def _dedup_wrong(wrong: list[Wrong]) -> list[Wrong]:
    seen, out = set(), []
    for w in wrong:
        if w.code not in seen:
            seen.add(w.code)
            out.append(w)
    return out


# --- the run ---------------------------------------------------------------------------------


def _settings_key(config: CollectConfig, model, teacher) -> str:
    keep = {k: v for k, v in dataclasses.asdict(config).items()
            if k not in ("output", "problems", "feedback_log", "limit", "workers", "threads", "cache_dir")}
    keep["model"] = model.identity.id if model else None
    keep["teacher"] = teacher.identity.id if teacher else None
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


def _cache_path(cache: Path, problem_id: str, key: str) -> Path:
    return cache / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', problem_id)}-{key}.jsonl"


def _load_backends(config: CollectConfig):
    from ledex.engine.backends import load_backend

    kwargs = {"n_threads": config.threads} if config.threads else {}
    need_model = config.samples > 0
    need_teacher = config.refinements > 0
    model = load_backend(config.model, config.adapter, **kwargs) if need_model or (need_teacher and not config.teacher) else None
    if not need_teacher:
        return model, None
    teacher = load_backend(config.teacher, **kwargs) if config.teacher else model  # endpoints ignore n_threads
    return model, teacher


def run(config: CollectConfig, *, model=None, teacher=None, progress: bool = True) -> dict:
    """Collect; returns the yield table. Backends may be passed in (tests, evaluation)."""
    from tqdm import tqdm

    if config.sources:
        from ledex.training.editordata import run_editor

        return run_editor(config, progress=progress)
    if not config.problems and not config.feedback_log:
        raise CollectError("nothing to collect from: give --problems, --sources and/or --feedback-log")
    problems = load_sources(config)
    if config.problems and not problems:
        raise CollectError("the problem sets hold no problems (wrong --split?)")
    if model is None and teacher is None and problems:
        model, teacher = _load_backends(config)
    output = Path(config.output)
    cache = Path(config.cache_dir or f"{output}.cache")
    cache.mkdir(parents=True, exist_ok=True)
    key = _settings_key(config, model, teacher)
    collector = Collector(config, model, teacher, cache / "workspaces")
    trajectories, initial = [], []
    for index, problem in enumerate(tqdm(problems, desc="collect", unit="problem", disable=not progress)):
        path = _cache_path(cache, problem.id, key)
        if path.is_file():
            rows = list(records.read(path, skip_bad=True))
        else:
            found, first = collector.problem(problem, config.seed + 7919 * index)
            rows = found + first
            records.write(path, rows)  # atomic: an interrupted problem is simply redone
        trajectories += [r for r in rows if r.origin != "initial"]
        initial += [r for r in rows if r.origin == "initial"]
    for log in config.feedback_log:
        trajectories += episode_trajectories(log)
    written = records.write(output, trajectories)
    records.write(records.initial_path(output), initial)
    table = yield_table(trajectories)
    table["records_written"], table["initial_solutions"] = written, len({r.id for r in initial})
    write_json(output.with_suffix(".yield.json"), table)
    return table


def yield_table(trajectories: list[Trajectory]) -> dict:
    """The paper's yield table, overall and per origin of the wrong solution."""
    table = {"all": records.summary(trajectories)}
    for origin in sorted({t.origin for t in trajectories}):
        table[origin] = records.summary([t for t in trajectories if t.origin == origin])
    by_teacher = {}
    for t in trajectories:
        by_teacher.setdefault(t.teacher, []).append(t)
    table["by_teacher"] = {name: records.summary(rows) for name, rows in by_teacher.items()}
    return table


def format_table(table: dict) -> str:
    """The yield table as fixed-width text: one row per origin and per teacher (wrong
    solutions, fixed, refine rate %, trajectories, correct trajectories).
    """
    lines = [f"{'origin':<16}{'wrong':>8}{'fixed':>8}{'rate':>8}{'traj':>8}{'correct':>9}"]
    rows = [(k, v) for k, v in table.items() if isinstance(v, dict) and "refine_rate" in v]
    rows += [(k[:16], v) for part in ("yield_by_source", "yield_by_operator") for k, v in table.get(part, {}).items()]
    rows += [(f"teacher:{k[:7]}", v) for k, v in table.get("by_teacher", {}).items()]
    for name, s in rows:
        lines.append(f"{name:<16}{s['wrong_solutions']:>8}{s['wrong_solutions_fixed']:>8}{s['refine_rate']:>8.1%}"
                     f"{s['trajectories']:>8}{s['correct_trajectories']:>9}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train collect` (one per CollectConfig field)."""
    add_dataclass_arguments(parser, CollectConfig)


def main(args: argparse.Namespace) -> int:
    """`ledex-train collect`: prints the yield table; exit status 0, or 2 with the message for bad input."""
    return run_command("collect", CollectConfig, args, run, format_table, (CollectError, records.RecordError))
