"""`ledex-train eval --benchmarks humanevalfix`: HumanEvalFix-Python the way `ledex fix` meets a bug.

Each task is an editor project (training/humanevalfix.py: the module with the human-written
bug, HumanEval's check() as pytest tests). Its tests are run in the sandbox once
(failures.discover: the failure, its traceback, the ranked suspects) and every model version then
gets the very same failure through the product's own fix loop (engine.fixer.FixEngine), with
identical seeds. Two protocols:

- pass1: one greedy answer (T=0), one explain+refine round, the failure's top suspect only.
  "Fixed" = the patched module passes every test of check() (the failing ones and the rest).
  This is the number OctoPack reports for HumanEvalFix, except that the model is shown the
  failing test and its error (OctoPack's models were not).
- defaults: the product's defaults (FixConfig: K answers at T=0.8 per round, R rounds, up to 3
  suspects); "fixed" = at least one verified fix, what the editor would offer.

Reported per version x protocol: fixed / tasks, per bug type, usable answers; for every later
version against the first, McNemar's exact test on the paired per-task outcomes. Outputs in
--out: humanevalfix.md, humanevalfix.json and humanevalfix-results.jsonl (one line per version x
protocol x task, keyed by model identity + settings: an interrupted run resumes where it stopped).

    ledex-train eval --benchmarks humanevalfix --limit 164 --fix-protocols pass1 --out runs/hefix
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
from ledex.engine.fixer import FixConfig, FixEngine
from ledex.engine.format import Mode
from ledex.sandbox import Limits
from ledex.training import humanevalfix as hx
from ledex.training.eval_report import hefix_markdown, hefix_summary

PROTOCOL_NAMES = ("pass1", "defaults")


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
    """Per-task outcomes in an append-only JSONL, keyed by version identity + protocol + task + settings."""

    def __init__(self, path: Path):
        self.path, self._lock, self.rows = path, threading.Lock(), {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash: that task is run again

    @staticmethod
    def key(identity: str, proto: Protocol, task: str, seed: int, max_tokens: int) -> str:
        return f"{identity}|{proto}|{task}|seed={seed}|max_tokens={max_tokens}"

    def put(self, row: dict) -> None:
        with self._lock:
            self.rows[row["key"]] = row
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


class Failures:
    """Each task's project and discovered failure, computed once and shared by every version;
    the next task's discovery runs in the background while the model works on this one."""

    def __init__(self, tasks: Sequence[hx.Task], root: Path):
        self.tasks, self.root = list(tasks), root
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ledex-hefix-discover")
        self.futures: dict[str, Future] = {}

    def _discover(self, task: hx.Task):
        project = hx.write_project(task, self.root / str(task.number))
        return project, hx.editor_failure(project)

    def get(self, index: int):
        """(Project, Failure or None) of tasks[index]; starts the discovery of tasks[index + 1]."""
        for i in (index, index + 1):
            if i < len(self.tasks) and self.tasks[i].task_id not in self.futures:
                self.futures[self.tasks[i].task_id] = self.pool.submit(self._discover, self.tasks[i])
        return self.futures[self.tasks[index].task_id].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def fix_task(backend: Backend, project: hx.Project, failure, proto: Protocol, seed: int, max_tokens: int) -> dict:
    """One version x protocol x task: fixed (a verified fix: the module passes all of check()), answers,
    usable answers, the reason of the first failed answer and the verified explanation + diff."""
    if failure is None:
        return {"fixed": False, "answers": 0, "usable": 0, "reason": "no failing test (nothing to fix)"}
    engine = FixEngine(backend, project.path, proto.fix_config(seed, max_tokens))
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


def run_tasks(tasks: Sequence[hx.Task], versions: Sequence, protocols: Sequence[str], out: Path, *,
              loader: VersionLoader, seed: int = 0, max_tokens: int = Sampling.max_tokens,
              progress: bool = True) -> dict:
    """Run every version x protocol x task not already in <out>/humanevalfix-results.jsonl; write the
    report (humanevalfix.md / .json) and return it (see eval_report.hefix_summary for its shape)."""
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "humanevalfix-results.jsonl")
    protos = [protocol(p) for p in protocols]
    started, identities, rows = time.time(), {}, []
    with tempfile.TemporaryDirectory(prefix="ledex-hefix-") as tmp:
        failures = Failures(tasks, Path(tmp))
        try:
            for version in versions:
                backend = loader(version)
                identities[version.name] = backend.identity.id
                for proto in protos:
                    rows += _run_one(backend, version.name, proto, tasks, failures, store, seed, max_tokens, progress)
                del backend  # one model in memory at a time
        finally:
            failures.close()
    report = hefix_summary(rows, [v.name for v in versions], identities, [asdict(p) for p in protos], len(tasks))
    report.update(seconds=round(time.time() - started, 1), seed=seed, max_tokens=max_tokens,
                  command=" ".join(sys.argv))
    report["markdown"] = hefix_markdown(report)
    (out / "humanevalfix.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "humanevalfix.md").write_text(report["markdown"] + "\n", encoding="utf-8")
    return report


def _run_one(backend, name, proto, tasks, failures, store, seed, max_tokens, progress) -> list[dict]:
    rows = []
    for i, task in enumerate(tasks):
        key = store.key(backend.identity.id, proto, task.task_id, seed, max_tokens)
        row = store.rows.get(key)
        if row is None:
            project, failure = failures.get(i)
            row = {"key": key, "version": name, "identity": backend.identity.id, "protocol": proto.name,
                   "task": task.task_id, "bug_type": task.bug_type,
                   **fix_task(backend, project, failure, proto, seed, max_tokens)}
            store.put(row)
        rows.append(row | {"version": name})
        if progress:
            print(f"[{name} {proto.name}] {i + 1}/{len(tasks)} {task.task_id}: "
                  f"{'fixed' if row['fixed'] else 'not fixed'} ({row.get('seconds', 0)} s)", file=sys.stderr, flush=True)
    return rows


def select_tasks(path: str, limit: int, ids: Sequence[str]) -> list[hx.Task]:
    """The first `limit` tasks by number, or exactly those named (humanevalfix/3, Python/3 or 3)."""
    tasks = hx.load_tasks(path)
    if ids:
        wanted = {i.rsplit("/", 1)[-1] for i in ids if i.startswith(("humanevalfix/", "Python/")) or i.isdigit()}
        return [t for t in tasks if str(t.number) in wanted]
    return tasks[:limit]


def evaluate(config, versions: Sequence, loader: VersionLoader | None = None) -> dict:
    """`ledex-train eval --benchmarks humanevalfix` with an EvalConfig (training/evaluate.py):
    tasks from config.humanevalfix_path (--limit / --tasks), protocols config.fix_protocols,
    answers of at most config.fix_max_tokens tokens, seed config.seed, outputs in config.out."""
    threads = config.threads or max(1, (os.cpu_count() or 2) // 2)
    tasks = select_tasks(config.humanevalfix_path, config.limit, config.tasks)
    if not tasks:
        raise ValueError("no HumanEvalFix task selected (check --tasks / --limit)")
    return run_tasks(tasks, versions, config.fix_protocols, Path(config.out), loader=loader or default_loader(threads),
                     seed=config.seed, max_tokens=config.fix_max_tokens, progress=config.progress)

