"""Evaluation on editor projects: every benchmark failure met the way `ledex fix` meets it.

The one evaluation code path of `ledex-train eval --benchmarks humanevalfix mbpp-mutants
mbpp-sampled inventory` and of the promotion gate (`ledex-train promote`, training/promote.py).
A case (training/fixcases.py) is a small pytest project (the module with a bug, its tests): its
tests run in the sandbox once (failures.discover: the failure, its traceback, the ranked
suspects; a project with several failure groups is one case per group) and every model version
then gets the very same failure through the product's own fix loop (engine.fixer.FixEngine,
search candidates off: the model's fix rate), with identical seeds. Protocols:

- pass1: one greedy answer (T=0), one explain+refine round, the failure's top suspect only.
  "Fixed" = the patched module passes every test the fix loop re-runs (the failing ones and
  their siblings). For HumanEvalFix this is the number OctoPack reports, except that the model
  is shown the failing test and its error (OctoPack's models were not).
- defaults: the product's defaults (FixConfig: K answers at T=0.8 per round, R rounds, up to 3
  suspects); "fixed" = at least one verified fix, what the editor would offer.
- the gate's: pass1 at the gate's temperature and token limit (promote.gate_protocol).

Reported per set x version x protocol: fixed / cases, per category (bug type, operator, origin),
usable answers; for every later version against the first, McNemar's exact test per set x
protocol. Cases whose tests all pass (a mutant the tests do not catch) are left out and counted.
Outputs in --out: editor-eval.md, editor-eval.json and editor-eval-results.jsonl (one line per
version x protocol x case, keyed by `ResultStore.key`: an interrupted run resumes where it
stopped, and a result is reused only when nothing that could change it has changed).

    ledex-train eval --benchmarks humanevalfix mbpp-mutants --limit 164 --fix-protocols pass1 --out runs/eval
    ledex-train eval --benchmarks humanevalfix --versions base=default --versions sft=default+sft.gguf
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ledex.engine.backends import Backend, PromptTooLong, Sampling, load_backend
from ledex.engine.failures import DiscoveryError, Failure, discover, group_by_suspect
from ledex.engine.fixer import FixConfig, FixEngine
from ledex.engine.format import Mode
from ledex.sandbox import Limits
from ledex.training.eval_report import _digest, append_line, code_fingerprint, fix_markdown, fix_summary
from ledex.training.fixcases import Case

PROTOCOL_NAMES = ("pass1", "defaults")
DISCOVERY_LIMITS = Limits(wall_s=120.0, cpu_s=120)
REPORT = "editor-eval"  # editor-eval.md / .json / -results.jsonl


@dataclass(frozen=True)
class Protocol:
    """How one version attacks one failure: K answers per round, R rounds, temperature, suspects tried."""

    name: str
    samples: int
    rounds: int
    temperature: float
    suspects: int

    def fix_config(self, seed: int, max_tokens: int) -> FixConfig:
        """The FixConfig of this protocol: explain-then-refine, the product's verification limits."""
        return FixConfig(samples=self.samples, rounds=self.rounds, mode=Mode.EXPLAIN, suspects=self.suspects,
                         sampling=Sampling(temperature=self.temperature, seed=seed, max_tokens=max_tokens),
                         limits=Limits(wall_s=60.0), stop_at_first=True,
                         search=None)  # the model's fix rate: no search candidates (bench_search measures those)


def protocol(name: str) -> Protocol:
    """'pass1' (greedy, 1 answer, 1 round, top suspect) or 'defaults' (FixConfig's K, R, T, suspects).
    Raises ValueError for another name."""
    if name == "pass1":
        return Protocol("pass1", 1, 1, 0.0, 1)
    if name == "defaults":
        base = FixConfig()
        return Protocol("defaults", base.samples, base.rounds, base.sampling.temperature, base.suspects)
    raise ValueError(f"unknown protocol {name!r} ({', '.join(PROTOCOL_NAMES)})")


class ResultStore:
    """Per-case outcomes in an append-only JSONL, keyed by `key`; a line cut by a crash is ignored."""

    def __init__(self, path: Path):
        self.path, self._lock, self.rows = Path(path), threading.Lock(), {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    continue  # that case is run again

    @staticmethod
    def key(identity: dict | str, proto: Protocol, case: Case, seed: int, max_tokens: int) -> str:
        """Everything that can change one outcome: the model (identity with full hashes), the case's
        project files and failure group, the protocol and the whole FixConfig it runs with (every
        field, Sampling's and Limits' included: asdict, so a field added later is covered too), and
        the answering code (eval_report.code_fingerprint)."""
        config = asdict(proto.fix_config(seed, max_tokens))
        return "fix:" + _digest(identity, asdict(proto), case.set, case.id, case.fingerprint, config,
                                code_fingerprint())

    def put(self, row: dict) -> None:
        with self._lock:
            self.rows[row["key"]] = row
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_line(self.path, json.dumps(row))  # one write: processes sharing the file do not interleave


def editor_failure(path: Path, group: int = 0, *, limits: Limits = DISCOVERY_LIMITS) -> Failure | None:
    """The `group`-th problem `ledex fix` works on in this project: the sandboxed test run's failures
    (failures.discover, suspects ranked), grouped by top suspect (failures.group_by_suspect). None when
    every test passes or there are fewer groups."""
    failures = discover(path, limits=limits).failures
    groups = group_by_suspect(failures) if failures else []
    return groups[group] if group < len(groups) else None


class Failures:
    """Each case's project and discovered failure, computed once (on first need) and shared by every
    version; the next case's discovery runs in the background while the model works on this one."""

    def __init__(self, cases: Sequence[Case], root: Path):
        self.cases, self.root = list(cases), root
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ledex-fixeval-discover")
        self.futures: dict[int, Future] = {}

    def _discover(self, index: int):
        path = self.cases[index].write(self.root / str(index))
        try:
            return path, editor_failure(path, self.cases[index].group)
        except DiscoveryError as exc:  # `ledex fix` stops there too (exit 2): not a case to fix
            return path, str(exc)

    def get(self, index: int):
        """(project folder, Failure, or None when no test fails, or the error when no test ran:
        a sampled wrong answer whose module does not import) of cases[index]; starts the discovery
        of cases[index + 1]."""
        for i in (index, index + 1):
            if i < len(self.cases) and i not in self.futures:
                self.futures[i] = self.pool.submit(self._discover, i)
        return self.futures[index].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def fix_case(backend: Backend, path: Path, failure: Failure | str | None, proto: Protocol, seed: int,
             max_tokens: int) -> dict:
    """One version x protocol x case: fixed (a verified fix), answers, usable answers, the reason of
    the first failed answer and the verified explanation + diff; skipped when no test fails
    (`failure` None) or none ran (`failure` is discovery's error)."""
    if failure is None or isinstance(failure, str):
        return {"fixed": False, "skipped": True, "answers": 0, "usable": 0,
                "reason": f"no test ran: {failure[:300]}" if failure else "no failing test"}
    engine = FixEngine(backend, path, proto.fix_config(seed, max_tokens))
    started = time.perf_counter()
    try:
        result = engine.fix(failure)
    except PromptTooLong as exc:
        return {"fixed": False, "answers": 0, "usable": 0, "reason": f"prompt too long: {exc}"}
    best = result.best
    first = next((c for c in result.candidates if not c.verified), None)
    return {"fixed": best is not None, "answers": len(result.candidates),
            "usable": sum(c.patch is not None for c in result.candidates),
            "reason": first.reason[:300] if first else "", "seconds": round(time.perf_counter() - started, 1),
            "explanation": best.explanation if best else "", "diff": best.diff if best else "",
            "suspect": failure.suspect.qualname if failure.suspect else ""}


VersionLoader = Callable[[object], Backend]


def default_loader(threads: int) -> VersionLoader:
    """load_backend(version.model, version.adapter) at the product's context size, `threads` llama.cpp threads."""
    return lambda version: load_backend(version.model, version.adapter, n_threads=threads)


def _identity(backend: Backend) -> dict | str:
    identity = backend.identity
    return identity.to_dict() if hasattr(identity, "to_dict") else str(identity)


def run_cases(cases: Sequence[Case], versions: Sequence, protos: Sequence[Protocol], store: ResultStore, *,
              loader: VersionLoader, seed: int = 0, max_tokens: int = Sampling.max_tokens,
              progress: bool = True) -> tuple[list[dict], dict]:
    """Every version x protocol x case, from `store` where it is there, else through the fix loop
    (one model in memory at a time). Returns (rows, version name -> model identity id); a row holds
    key, version, identity, protocol, set, case, category and fix_case's fields."""
    identities, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="ledex-fixeval-") as tmp:
        failures = Failures(cases, Path(tmp))
        try:
            for version in versions:
                backend = loader(version)
                identities[version.name] = backend.identity.id
                for proto in protos:
                    rows += _run_one(backend, version.name, proto, cases, failures, store, seed, max_tokens, progress)
                del backend
        finally:
            failures.close()
    return rows, identities


def _run_one(backend, name, proto, cases, failures, store, seed, max_tokens, progress) -> list[dict]:
    rows = []
    for i, case in enumerate(cases):
        key = store.key(_identity(backend), proto, case, seed, max_tokens)
        row = store.rows.get(key)
        if row is None:
            path, failure = failures.get(i)
            row = {"key": key, "version": name, "identity": backend.identity.id, "protocol": proto.name,
                   "set": case.set, "case": case.id, "category": case.category,
                   **fix_case(backend, path, failure, proto, seed, max_tokens)}
            store.put(row)
        rows.append(row | {"version": name})
        if progress:
            state = "skipped" if row.get("skipped") else "fixed" if row["fixed"] else "not fixed"
            print(f"[{name} {proto.name}] {i + 1}/{len(cases)} {case.set} {case.id}: {state} "
                  f"({row.get('seconds', 0)} s)", file=sys.stderr, flush=True)
    return rows


def run_report(cases: Sequence[Case], versions: Sequence, protocols: Sequence[str], out: Path, *,
               loader: VersionLoader, seed: int = 0, max_tokens: int = Sampling.max_tokens,
               progress: bool = True) -> dict:
    """`run_cases` with results in <out>/editor-eval-results.jsonl, then the report: editor-eval.md and
    editor-eval.json in `out` (see eval_report.fix_summary for its shape); returns it."""
    out.mkdir(parents=True, exist_ok=True)
    protos = [protocol(p) for p in protocols]
    started = time.time()
    store = ResultStore(out / f"{REPORT}-results.jsonl")
    rows, identities = run_cases(cases, versions, protos, store, loader=loader, seed=seed, max_tokens=max_tokens,
                                 progress=progress)
    sets = list(dict.fromkeys(c.set for c in cases))
    report = fix_summary(rows, [v.name for v in versions], identities, [asdict(p) for p in protos], sets)
    report.update(seconds=round(time.time() - started, 1), seed=seed, max_tokens=max_tokens,
                  command=" ".join(sys.argv))
    report["markdown"] = fix_markdown(report)
    (out / f"{REPORT}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{REPORT}.md").write_text(report["markdown"] + "\n", encoding="utf-8")
    return report


def evaluate(config, versions: Sequence, loader: VersionLoader | None = None) -> dict:
    """`ledex-train eval` for the editor sets among config.benchmarks (fixcases.EDITOR_SETS), with an
    EvalConfig (training/evaluate.py): cases from fixcases.cases_for, protocols config.fix_protocols,
    answers of at most config.fix_max_tokens tokens, seed config.seed, outputs in config.out.
    Raises ValueError when no case is selected."""
    from ledex.training import fixcases

    threads = config.threads or max(1, (os.cpu_count() or 2) // 2)
    loader = loader or default_loader(threads)
    cases = fixcases.cases_for(config, versions, loader)
    if not cases:
        raise ValueError("no case selected (check --benchmarks / --tasks / --limit)")
    return run_report(cases, versions, config.fix_protocols, Path(config.out), loader=loader, seed=config.seed,
                      max_tokens=config.fix_max_tokens, progress=config.progress)
