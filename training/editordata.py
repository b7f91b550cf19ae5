"""`ledex-train collect --sources ...`: editor-shaped LEDEX trajectories at scale (issue 16).

Every unit of work is one function of one project (training/sources.py): bugs are planted in it (training/plant.py)
with engine/operators.py, the project's tests run in the sandbox through the serving code path
(engine.failures.discover), the prompt is engine.fixer.problem_for's, the answer is the correct
function with an explanation grounded in the failure (training/explain.py), verified as the fix
engine verifies a candidate. Units run in parallel (--workers, one sandbox run each at a time),
each finished unit is cached under <output>.cache/ (a killed collect resumes where it stopped,
without duplicates), and at the end the dataset, a manifest and the yield tables are written:

    <output>                 JSONL trajectories (records.Trajectory)
    <output>.manifest.json   sources (packages with version, sha256, licence), seeds, settings,
                             counts, yield per source and per operator, what happened to each
                             planted bug, token-length histogram, throughput and its profile

Records whose prompt + answer do not fit the served context (--context-tokens, under the served
chat template) are left out and counted.

    ledex-train collect --sources mbpp:../shared/data/mbpp.jsonl pypi:inflection==0.5.1 \\
        --output /tmp/ledex-data/editor.jsonl --mutations 3 --workers 2
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from ledex.training import records
from ledex.training.core import write_json
from ledex.training.plant import PlantOptions, baseline, plant
from ledex.training.sources import Project, SourceError, load_projects


def _unit_key(project: Project, rel: str, qualname: str, config) -> str:
    settings = [project.id, rel, qualname, config.seed, config.mutations, config.coverage]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


# Package functions taken per MBPP task while both last: a planted bug in a package is kept less
# often (more survive its tests, or sit outside the suspects), and issue 16 asks >= 30% from packages.
PACKAGE_WEIGHT = 2


def units_of(projects: list[Project], seed: int) -> list[tuple[Project, str, str]]:
    """Every (project, file, function), sources interleaved (seeded; PACKAGE_WEIGHT package
    functions per MBPP task) so that a partial run holds a mix."""
    by_source: dict[str, list] = {}
    for project in projects:
        for rel, names in project.targets.items():
            by_source.setdefault(project.source if project.source == "mbpp" else "packages", []).extend(
                (project, rel, name) for name in names)
    rng = random.Random(seed)
    for units in by_source.values():
        rng.shuffle(units)
    queues = [(by_source[k], PACKAGE_WEIGHT if k == "packages" else 1) for k in sorted(by_source)]
    out = []
    while any(queue for queue, _ in queues):
        for queue, weight in queues:
            out += [queue.pop() for _ in range(min(weight, len(queue)))]
    return out


class _Slots:
    """Working-copy folders work/w<k>, one per worker thread (a project copy is reused)."""

    def __init__(self, root: Path, n: int):
        self.free = [root / f"w{k}" for k in range(n)]
        self.lock = threading.Lock()

    def take(self) -> Path:
        with self.lock:
            return self.free.pop()

    def give(self, slot: Path) -> None:
        with self.lock:
            self.free.append(slot)


class _StopOnTerm:
    """While in use, SIGTERM stops new units instead of killing the collect: the units under way
    finish and the dataset and manifest are written (a collect run in the background, where
    Ctrl-C cannot reach it, ended with its cache and no dataset). Main thread only; elsewhere inert."""

    def __init__(self):
        self.asked, self.previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._asked)
        return self

    def _asked(self, signum, frame):  # noqa: ANN001
        self.asked = True
        print("collect: stopping (SIGTERM): finishing the units under way, then writing the dataset",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class EditorRun:
    """One collect over --sources: units, their cache, the pool, the final files."""

    def __init__(self, config, progress: bool):
        from ledex.training.collect import CollectError

        self.config, self.progress = config, progress
        self.output = Path(config.output)
        self.cache = Path(config.cache_dir or f"{self.output}.cache")
        self.work = Path(config.work_dir or f"{self.output}.work")
        self.cache.mkdir(parents=True, exist_ok=True)
        fetch = Path(config.fetch_cache or Path.home() / ".cache" / "ledex" / "fetch")
        try:
            self.projects = load_projects(config.sources, self.work / "projects", fetch)
        except SourceError as exc:
            raise CollectError(str(exc)) from exc
        self.units = units_of(self.projects, config.seed)[: config.limit or None]
        self.options = PlantOptions(mutants=config.mutations or 1, coverage=config.coverage)
        self.baselines, self.locks = {}, {p.id: threading.Lock() for p in self.projects}

    def _baseline(self, project: Project):
        with self.locks[project.id]:
            if project.id not in self.baselines:
                self.baselines[project.id] = baseline(project)
            return self.baselines[project.id]

    def _path(self, unit) -> Path:
        return self.cache / f"{_unit_key(*unit, self.config)}.json"

    def unit(self, unit, slots: _Slots) -> dict:
        """Plant bugs in one function (or read its cached result); returns {records, stats}."""
        path = self._path(unit)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")) | {"cached": True}
        project, rel, qualname = unit
        stats: dict = {}
        slot = slots.take()
        try:
            base = self._baseline(project)
            seed = self.config.seed + int(_unit_key(*unit, self.config)[:8], 16)
            found = plant(project, rel, qualname, base, slot, self.options, seed, stats)
        finally:
            slots.give(slot)
        result = {"unit": [project.id, rel, qualname], "records": [json.loads(r.to_json()) for r in found],
                  "stats": stats}
        write_json(path, result)  # atomic: a killed run redoes only the units it had not finished
        return result

    def run(self) -> dict:
        from tqdm import tqdm

        started, meter = time.time(), CpuMeter()
        deadline = started + 60 * self.config.max_minutes if self.config.max_minutes else None
        workers = self.config.workers or 2
        slots, results, todo = _Slots(self.work, workers), {}, list(enumerate(self.units))
        bar = tqdm(total=len(self.units), desc="collect", unit="function", disable=not self.progress)
        kept, stop = 0, _StopOnTerm()
        with ThreadPoolExecutor(workers) as pool, stop:
            running = set()
            while todo or running:
                while todo and len(running) < workers and (deadline is None or time.time() < deadline) and not stop.asked:
                    index, unit = todo.pop(0)
                    future = pool.submit(self.unit, unit, slots)
                    future.index = index
                    running.add(future)
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[future.index] = future.result()
                    kept += len(results[future.index]["records"])
                    bar.update(1)
                    bar.set_postfix(trajectories=kept)
        bar.close()
        for index, unit in todo:  # not reached this time (--max-minutes, SIGTERM): what an earlier run finished
            if self._path(unit).is_file():
                results[index] = self.unit(unit, slots)
        return self.finish([results[i] for i in sorted(results)], time.time() - started, meter.seconds())

    def finish(self, results: list[dict], wall_s: float, cpu_s: float) -> dict:
        rows = [records.from_dict(r, "cache") for result in results for r in result["records"]]
        rows = list({row.id: row for row in rows}.values())  # each record once, as written (records.write)
        fitting, too_long, lengths = _fit(rows, self.config.context_tokens)
        written = records.write(self.output, fitting)
        stats: dict = {}
        by_source: dict = {}
        source_of = {p.id: p.source for p in self.projects}
        for result in results:
            mine = by_source.setdefault(source_of.get(result["unit"][0], "?"), {"functions": 0})
            mine["functions"] += 1
            for key, value in result["stats"].items():
                stats[key] = stats.get(key, 0) + value
                mine[key] = round(mine.get(key, 0) + value, 1)
        fresh = len({records.from_dict(r, "cache").id for result in results if not result.get("cached")
                     for r in result["records"] if r["correct"]})
        manifest = self.manifest(fitting, too_long, lengths, stats, len(results), wall_s, cpu_s)
        manifest["throughput"]["verified_this_run"] = fresh  # units read from the cache cost nothing now
        manifest["throughput"]["verified_per_cpu_hour"] = round(fresh / (cpu_s / 3600), 1) if cpu_s > 60 else None
        manifest["throughput"]["verified_per_wall_hour"] = round(fresh / (wall_s / 3600), 1) if wall_s > 60 else None
        manifest["records_written"], manifest["planted_by_source"] = written, dict(sorted(by_source.items()))
        write_json(self.output.with_name(self.output.name + ".manifest.json"), manifest)
        return manifest

    def manifest(self, rows, too_long, lengths, stats, done, wall_s, cpu_s) -> dict:
        from ledex.engine.operators import OPERATORS

        verified = [r for r in rows if r.correct]
        packages = [p.package for p in self.projects if p.package]
        return {
            "command": "ledex-train collect " + " ".join(_argv(self.config)),
            "sources": self.config.sources, "packages": packages, "seed": self.config.seed,
            "mutations_per_function": self.options.mutants, "coverage": self.config.coverage,
            "operators": list(OPERATORS), "context_tokens": self.config.context_tokens,
            "units": len(self.units), "units_done": done, "trajectories": len(rows), "verified": len(verified),
            "skipped_too_long": too_long,
            "verified_by_kind": _share(verified, lambda r: "mbpp" if r.extra.get("source") == "mbpp" else "packages"),
            "yield_by_source": records.yield_by(rows, lambda r: r.extra.get("source", "")),
            "yield_by_operator": records.yield_by(rows, lambda r: r.operator),
            "planted": dict(sorted((k, round(v, 1)) for k, v in stats.items())),
            "token_histogram": records.histogram(lengths),
            "throughput": {"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
                           "workers": self.config.workers or 2},
        }


def _share(rows, key) -> dict:
    counts: dict = {}
    for row in rows:
        counts[key(row)] = counts.get(key(row), 0) + 1
    return {k: {"count": v, "share": round(v / len(rows), 3)} for k, v in sorted(counts.items())}


class CpuMeter:
    """CPU seconds of this process and every process below it (the sandbox runs, which the
    kernel does not charge to us: bubblewrap reparents them), sampled from /proc every
    `interval` s; a process is counted at its last sighting, so short ones are undercounted."""

    def __init__(self, interval: float = 0.5):
        self.seen: dict[tuple[int, str], float] = {}
        self.stop, self.interval = threading.Event(), interval
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                stats[int(entry)] = (int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / self.tick)
            except (OSError, ValueError, IndexError):
                continue
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            kids = [pid for pid, (ppid, _, _) in stats.items() if ppid == parent and pid not in mine]
            mine.update(kids)
            frontier += kids
        for pid in mine - {os.getpid()}:
            self.seen[(pid, stats[pid][1])] = stats[pid][2]

    def seconds(self) -> float:
        self.stop.set()
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime + sum(self.seen.values())


def _fit(rows, context: int):
    """(records that fit, how many do not, their total token lengths) under the served template."""
    from ledex.engine.backends import Sampling

    tokens = records.ServedTokens()
    fitting, too_long, lengths = [], 0, []
    for row in rows:
        prompt, answer = tokens.lengths(row)
        if prompt + answer > context or answer > Sampling.max_tokens:
            too_long += 1
            continue
        fitting.append(row)
        lengths.append(prompt + answer)
    return fitting, too_long, lengths


def _argv(config) -> list[str]:
    argv = ["--sources", *config.sources, "--output", config.output, "--seed", str(config.seed),
            "--mutations", str(config.mutations), "--coverage", str(config.coverage).lower(),
            "--context-tokens", str(config.context_tokens)]
    return argv + (["--limit", str(config.limit)] if config.limit else [])


def run_editor(config, *, progress: bool = True) -> dict:
    """Collect from --sources; returns the manifest (see the module docstring)."""
    return EditorRun(config, progress).run()
