"""`ledex-train promote` / `ledex-train rollback`: gated, atomic adapter promotion.

A new GGUF adapter goes into service only if
  1. it is a complete GGUF LoRA adapter for the base's architecture (read back, checked);
  2. llama.cpp loads it on the base (done by the gate's first generation);
  3. the gate passes: on held-out problems (MBPP validation; never test), its fix rate is not
     lower than the model in service (promoted adapter, else the shipped one, else the plain base)
     minus --tolerance. The measurement is `ledex-train eval`'s own (training/fixeval.py): each
     wrong solution (verified mutants of the reference + solutions sampled once from the plain base,
     seeded, cached) is an editor project met through the product's fix loop, and both models
     debug the SAME failures with the same seeds, so the comparison is paired.
Then the file is copied into $LEDEX_HOME/models/adapters/ (temp name, fsync, rename, directory
fsync) and current.json is switched atomically (ledex.engine.registry.set_current); the server
watches current.json. A process killed at any point leaves either the old or the new model in
service, never a half-written one. history.jsonl records every promotion and rollback.

    ledex-train promote runs/sft/adapter.gguf --problems ../shared/data/mbpp.jsonl
    ledex-train rollback
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ledex.engine import registry
from ledex.training.config import add_dataclass_arguments, from_args
from ledex.training.core import write_json


@dataclass
class GateArgs:
    """Options of the promotion gate (held-out problems, wrong solutions, sampling)."""

    problems: str | None = field(default=None, metadata={"help": "Held-out problem set (MBPP JSONL or generic JSONL)."})
    split: str | None = field(default="validation", metadata={"help": "MBPP split for the gate (never train)."})
    n_problems: int = field(default=30, metadata={"help": "Held-out problems (a cheap check; evaluate does the full one)."})
    skip: int = field(default=0, metadata={"help": "Skip the first N problems of the split (to pick a subset)."})
    samples: int = field(default=2, metadata={"help": "Initial solutions sampled from the plain base per problem."})
    mutations: int = field(default=1, metadata={"help": "Plus N verified AST mutants of the reference per problem."})
    temperature: float = field(default=0.0, metadata={
        "help": "Refinement temperature (0: greedy, the least noisy paired comparison on few problems)."})
    max_tokens: int = field(default=384, metadata={"help": "Token limit per refinement."})
    tolerance: float = field(default=0.0, metadata={"help": "Promote if candidate rate >= current rate - tolerance."})
    max_regressions: int = field(default=-1, metadata={
        "help": "Refuse when the candidate fails more than N cases the current model fixes (paired; -1: no limit)."})
    min_gain: int = field(default=0, metadata={
        "help": "Refuse unless the candidate fixes at least N more cases than the current model."})
    seed: int = field(default=1234, metadata={"help": "Seed for the wrong solutions and the refinements."})
    threads: int | None = field(default=None, metadata={"help": "llama.cpp threads."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where the held-out wrong solutions are cached."})


@dataclass
class PromoteArgs(GateArgs):
    """Options of `ledex-train promote`: the gate's plus the adapter, the base and the switches."""

    adapter: str = field(default="", metadata={"help": "The GGUF adapter to promote (from `ledex-train export`)."})
    base: str = field(default="default", metadata={"help": "The base the adapter is for (what the server serves)."})
    no_gate: bool = field(default=False, metadata={"help": "Skip the evaluation gate (file checks still run)."})
    force: bool = field(default=False, metadata={"help": "Promote even if the gate says it is worse."})
    note: str = field(default="", metadata={"help": "Free text kept in the history."})
    dry_run: bool = field(default=False, metadata={
        "help": "Run the gate and print both rates as JSON; install nothing (a measurement, not a promotion)."})
    against: str = field(default="service", metadata={
        "help": "What --dry-run compares with: 'service' (the model in service) or 'base' (the plain base)."})
    report: str = field(default="", metadata={
        "help": "Write the outcome as JSON here: promoted (version) or refused (reason), with the gate's result."})


class PromotionError(RuntimeError):
    """Promotion refused; the model in service is unchanged. `gate` holds the gate's result when
    the gate refused (None for bad files and other refusals)."""

    def __init__(self, message: str, gate: dict | None = None):
        super().__init__(message)
        self.gate = gate


# --- the gate -----------------------------------------------------------------------------------


def gate_protocol(gate: GateArgs):
    """The gate's fixeval.Protocol: one answer at gate.temperature (0: greedy), one explain+refine round,
    the failure's top suspect (pass@1 of the editor evaluation at the gate's settings)."""
    from ledex.training.fixeval import Protocol

    return Protocol("gate", 1, 1, gate.temperature, 1)


def _gate_root(gate: GateArgs) -> Path:
    return Path(gate.cache_dir or registry.ledex_home() / "gate-cache")


def _gate_sampler(gate: GateArgs, base: str):
    """generate(messages, sampling) -> text by the plain base, cached (<cache>/samples.jsonl); None
    without sampled cases."""
    if not gate.samples:
        return None
    from ledex.engine.backends import load_backend
    from ledex.training.eval_report import EvalStore
    from ledex.training.evaluate import generate

    store, loaded = EvalStore(_gate_root(gate) / "samples.jsonl"), []

    def sample(messages, sampling):
        if not loaded:  # loaded on the first miss only: a cached gate needs no model for its cases
            loaded.append(load_backend(base, None, **({"n_threads": gate.threads} if gate.threads else {})))
        return generate(loaded[0], store, messages, sampling)["text"]
    return sample


@dataclass(frozen=True)
class Case:
    """One held-out wrong solution in the MBPP prompt shape (not an editor project): the problem,
    the wrong code, its sandbox verdict and its origin ('sampled' or 'mutation'). Used by
    bench/learning_loop.py's held-out stream; the gate itself runs `run_gate` (editor projects)."""

    problem: object  # CodingProblem
    wrong_code: str
    verdict: object  # sandbox Verdict of the wrong code
    origin: str


def self_debug_rate(backend, cases: list[Case], gate: GateArgs, root: Path, label: str = "") -> dict:
    """The share of `cases` (held-out wrong solutions in the MBPP prompt shape, with the held-back
    tests bench/learning_loop.py judges by) the model fixes in one explain-then-refine answer,
    verified in the sandbox. The gate does not use it: `run_gate` evaluates editor projects.

    Seeds are gate.seed + case index and the temperature is gate.temperature, so two models are
    compared on the same cases with the same seeds (a paired comparison). Returns fixed, cases,
    rate (0..1; 0.0 without cases) and the same per case origin ("sampled", "mutation").
    """
    from tqdm import tqdm

    from ledex.engine.backends import Sampling
    from ledex.engine.format import Mode, build_messages, parse_response
    from ledex.engine.grammar import answer_grammar
    from ledex.engine.problems import judge_solutions, ledex_problem

    fixed, by_origin, per_case = 0, {}, []
    for index, case in enumerate(tqdm(cases, desc=f"gate: self-debug {label}", unit="case")):
        messages = build_messages(ledex_problem(case.problem, case.wrong_code, case.verdict), Mode.EXPLAIN)
        reply = backend.generate(messages, Sampling(gate.temperature, 0.95, gate.max_tokens, gate.seed + index,
                                                    answer_grammar(Mode.EXPLAIN, case.problem.entry_point)))
        parsed = parse_response(reply.text, Mode.EXPLAIN, truncated=reply.truncated)
        ok = bool(getattr(parsed, "code", None)) and judge_solutions(case.problem, [parsed.code], root)[0].passed
        fixed += ok
        per_case.append(bool(ok))
        tally = by_origin.setdefault(case.origin, [0, 0])
        tally[0] += ok
        tally[1] += 1
    return {"fixed": fixed, "cases": len(cases), "rate": fixed / len(cases) if cases else 0.0, "per_case": per_case,
            "by_origin": {k: {"fixed": a, "cases": b, "rate": a / b} for k, (a, b) in by_origin.items()}}


def gate_decision(current: list[bool], candidate: list[bool], gate: GateArgs) -> dict:
    """The gate's rule on paired per-case results (True: fixed) of the model in service and the
    candidate on the same cases and seeds: rate not lower than current - tolerance, at least
    gate.min_gain more fixes, and at most gate.max_regressions cases that only the current model
    fixes (-1: any number). Returns {'passed', 'gains', 'regressions', 'reasons'}.

    >>> gate_decision([True, False], [False, True], GateArgs(max_regressions=0))["reasons"]
    ['1 regression(s) > 0 allowed']
    >>> gate_decision([False, False], [False, False], GateArgs(min_gain=1))["passed"]
    False
    """
    gains = sum(b and not a for a, b in zip(current, candidate))
    regressions = sum(a and not b for a, b in zip(current, candidate))
    n = max(len(current), 1)
    reasons = []
    if sum(candidate) / n < sum(current) / n - gate.tolerance:
        reasons.append(f"rate {sum(candidate)}/{n} < {sum(current)}/{n} - tolerance {gate.tolerance}")
    if sum(candidate) - sum(current) < gate.min_gain:
        reasons.append(f"{sum(candidate) - sum(current)} more fixed < min gain {gate.min_gain}")
    if 0 <= gate.max_regressions < regressions:
        reasons.append(f"{regressions} regression(s) > {gate.max_regressions} allowed")
    return {"passed": not reasons, "gains": gains, "regressions": regressions, "reasons": reasons}


def in_service(home: Path | None = None) -> str | None:
    """The adapter the server uses now (None: the plain base)."""
    return registry.default_adapter(home)


def run_gate(candidate: str, gate: GateArgs, base: str = "default", current: str | None = None) -> dict:
    """The editor evaluation (training/fixeval.py, the code `ledex-train eval` runs) of the model in
    service (`current`, None = plain base) and the candidate on the same held-out cases
    (fixcases.gate_cases: MBPP validation mutants + base-sampled wrong code, as editor projects) with
    the same seeds, at `gate_protocol`. Results are kept in <cache>/gate-results.jsonl keyed by model,
    case, settings and code, so the model in service is measured once.

    Returns {'current': ..., 'candidate': ...} (each: fixed, cases, rate 0..1, per_case list of bool in
    case order, by_origin, adapter) | `gate_decision`'s result. Raises PromotionError when no case is
    found or a model does not load."""
    from ledex.engine.backends import load_backend
    from ledex.engine.models import ModelError
    from ledex.training import fixcases, fixeval
    from ledex.training.evaluate import Version

    if not gate.problems:
        raise PromotionError("the gate needs held-out problems: --problems <mbpp.jsonl> (or --no-gate)")
    cases = fixcases.gate_cases(gate, _gate_sampler(gate, base))
    kwargs = {"n_threads": gate.threads} if gate.threads else {}

    def loader(version):
        try:
            return load_backend(version.model, version.adapter, **kwargs)
        except ModelError as exc:
            raise PromotionError(f"{version.name} model does not load: {exc}") from exc
    versions = [Version("current", base, current), Version("candidate", base, candidate)]
    store = fixeval.ResultStore(_gate_root(gate) / "gate-results.jsonl")
    rows, _ = fixeval.run_cases(cases, versions, [gate_protocol(gate)], store, loader=loader, seed=gate.seed,
                                max_tokens=gate.max_tokens, progress=False)
    results = {v.name: _gate_result([r for r in rows if r["version"] == v.name]) | {"adapter": v.adapter}
               for v in versions}
    if not results["current"]["cases"]:
        raise PromotionError("the gate found no wrong solutions to debug (more --n-problems?)")
    return results | gate_decision(results["current"]["per_case"], results["candidate"]["per_case"], gate)


def _gate_result(rows: list[dict]) -> dict:
    """fixed, cases, rate, per_case and by_origin of one model's gate rows (cases no test fails left
    out): the editor evaluation's own count (eval_report.fix_result) in the gate's words."""
    from ledex.training.eval_report import fix_result

    counted = fix_result(rows)
    return {"fixed": counted["fixed"], "cases": counted["tasks"], "rate": counted["rate"] or 0.0,
            "per_case": [bool(r["fixed"]) for r in rows if not r.get("skipped")],
            "by_origin": {k: {"fixed": c["fixed"], "cases": c["tasks"], "rate": c["rate"]}
                          for k, c in counted["by_category"].items()}}


# --- the registry ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_adapter(adapter: Path, home: Path | None, version: int, digest: str) -> Path:
    """Copy into models/adapters/ under a new name: temp file, fsync, rename, fsync the folder."""
    folder = registry.models_dir(home) / "adapters"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"v{version:04d}-{digest[:12]}.gguf"
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(adapter, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
        _fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PromotionError(f"could not install the adapter into {folder}: {exc}") from exc
    return target


def history(home: Path | None = None) -> list[dict]:
    """Every promotion and rollback event of $LEDEX_HOME's registry, oldest first (a line cut by
    a crash is skipped).
    """
    path = registry.models_dir(home) / "history.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash mid-append: the events before it still count
    return events


def promoted_stack(home: Path | None = None) -> list[dict]:
    """The promotions still in effect, oldest first (a rollback pops the newest)."""
    stack = []
    for event in history(home):
        if event.get("event") == "promote":
            stack.append(event["record"])
        elif event.get("event") == "rollback" and stack:
            stack.pop()
    return stack


def promote(adapter: str | Path, *, home: Path | None = None, base: str = "default", gate: GateArgs | None = None,
            force: bool = False, note: str = "", metrics: dict | None = None) -> dict:
    """Check, gate and promote `adapter`; returns the new current record. Raises PromotionError."""
    from ledex.engine.models import ModelError, file_hash, parse_model_spec
    from ledex.training.export import ExportError, base_info, check_adapter

    adapter = Path(adapter)
    if not adapter.is_file():
        raise PromotionError(f"adapter not found: {adapter}")
    try:
        base_path = parse_model_spec(base).location
        meta = check_adapter(adapter, arch=base_info(base_path).arch)
    except (ExportError, ModelError) as exc:
        raise PromotionError(str(exc)) from exc
    digest = file_hash(adapter)
    gate_result = None
    if gate is not None:
        gate_result = run_gate(str(adapter), gate, base, in_service(home))
        if not gate_result["passed"] and not force:
            raise PromotionError(f"gate failed: candidate self-debug rate {gate_result['candidate']['rate']:.1%} vs "
                                 f"current {gate_result['current']['rate']:.1%} on {gate_result['current']['cases']} "
                                 f"held-out wrong solutions ({'; '.join(gate_result.get('reasons', ['rate too low']))}); the current model "
                                 "stays in service (--force overrides)", gate_result)
    version = max([e.get("record", {}).get("version", 0) for e in history(home)] + [0]) + 1
    installed = install_adapter(adapter, home, version, digest)
    record = {"adapter": str(installed.resolve()), "version": version, "promoted_at": time.time(),
              "adapter_hash": digest, "source": str(adapter.resolve()), "base": base_path,
              "base_hash": file_hash(base_path), "adapter_meta": meta, "gate": gate_result, "metrics": metrics or {},
              "note": note, "forced": bool(force and gate_result and not gate_result["passed"])}
    registry.set_current(record, home)
    registry.append_history({"event": "promote", "record": record}, home)
    return record


def rollback(home: Path | None = None) -> dict | None:
    """Put the previously promoted adapter back in service (None: back to the shipped/plain model)."""
    stack = promoted_stack(home)
    if not stack:
        raise PromotionError("nothing to roll back: no promotion in the history")
    undone = stack.pop()
    previous = next((r for r in reversed(stack) if Path(r["adapter"]).is_file()), None)
    record = dict(previous) if previous else {"adapter": None, "version": 0}
    record["rolled_back_from"] = undone.get("version")
    registry.set_current(record, home)
    registry.append_history({"event": "rollback", "from": undone.get("version"), "to": record.get("version")}, home)
    return previous


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train promote` (one per PromoteArgs field)."""
    add_dataclass_arguments(parser, PromoteArgs)


def main(args: argparse.Namespace) -> int:
    """`ledex-train promote`: exit status 0 when promoted (or measured, with --dry-run), 1 with
    the reason when refused; the model in service is unchanged then.
    """
    config = from_args(PromoteArgs, args)
    gate = None if config.no_gate else GateArgs(**{k: v for k, v in asdict(config).items() if k in GateArgs.__dataclass_fields__})
    if config.dry_run:
        try:
            if gate is None:
                raise PromotionError("--dry-run runs the gate: drop --no-gate")
            result = run_gate(config.adapter, gate, config.base, None if config.against == "base" else in_service())
        except PromotionError as exc:
            print(f"ledex-train promote: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(result | {"gate_args": asdict(gate)}, indent=2, default=str))
        return 0
    try:
        record = promote(config.adapter, base=config.base, gate=gate, force=config.force, note=config.note)
    except PromotionError as exc:
        print(f"ledex-train promote: {exc}", file=sys.stderr)
        _report(config.report, {"promoted": False, "reason": str(exc), "gate": exc.gate})
        return 1
    _report(config.report, {"promoted": True, "version": record["version"], "gate": record.get("gate")})
    if record.get("gate"):
        g = record["gate"]
        print(f"gate: candidate {g['candidate']['rate']:.1%} vs current {g['current']['rate']:.1%} "
              f"({g['current']['cases']} held-out wrong solutions)")
    print(f"promoted v{record['version']}: {record['adapter']}")
    return 0


def _report(path: str, outcome: dict) -> None:
    if path:
        write_json(Path(path), outcome)


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    """`ledex-train rollback` takes no options."""
    pass


def rollback_main(args: argparse.Namespace) -> int:
    """`ledex-train rollback`: exit status 0, or 1 when there is nothing to roll back."""
    try:
        previous = rollback()
    except PromotionError as exc:
        print(f"ledex-train rollback: {exc}", file=sys.stderr)
        return 1
    print(f"in service: {previous['adapter'] if previous else 'the shipped default (or plain base)'}")
    return 0
