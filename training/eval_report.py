"""The evaluation's cache and report (used by `ledex-train eval`, see training/evaluate.py).

EvalStore: one append-only JSONL holding generations (keyed by model identity + prompt +
every Sampling field incl. seed and wrong_code) and sandbox verdicts (keyed by task tests + code),
both also keyed by `code_fingerprint()` (the source of ledex.engine and ledex.sandbox and the
llama.cpp version): a cached answer is reused only when nothing that could change it has changed.
A re-run, or an interrupted one, replays what is there and only computes the rest.

summarize/write_outputs: metrics per version x mode x benchmark (plus pooled "all"), a
markdown table, report.json, refinements.jsonl and curves.png (pass@1 and successful-
refinement rate per round).

    python -m ledex.training.eval_report .ledex/eval/report.json    # re-render report.md + plots
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ledex.engine.backends import Sampling
from ledex.engine.problems import CodingProblem, render_test_module
from ledex.training.passk import mean_pass_at_k, reportable_ks

CACHE_SCHEMA = 2  # 2: keys carry code_fingerprint()
# The code between a prompt and an answer or a verdict: generation (backends, llamabatch, format's
# grammar), the fix loop (fixer, patching, failures) and the sandbox. Their source is in every key.
ANSWER_PACKAGES = ("ledex.engine", "ledex.sandbox")


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def source_files(packages: tuple[str, ...] = ANSWER_PACKAGES) -> list[Path]:
    """The .py files of `packages` (imported to find them), sorted: what `code_fingerprint` reads."""
    files = []
    for name in packages:
        root = Path(importlib.import_module(name).__file__).parent
        files += sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def files_digest(files: list[Path]) -> str:
    """sha256 (16 hex digits) of the files' names and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """What produced an answer besides the model and the prompt: a digest of the source of
    ANSWER_PACKAGES and the llama-cpp-python version ("<digest>/llama-cpp-python==<v>"). In every
    cache key of evaluation, so a change to generation (e.g. Sampling.wrong_code's rewinds), to the
    fix loop or to the sandbox makes earlier cached answers and verdicts unreachable, never reused."""
    try:
        llama = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        llama = "none"
    return f"{files_digest(source_files())}/llama-cpp-python=={llama}"


def append_line(path: Path, line: str) -> None:
    """Append `line` + newline with one write() on an O_APPEND descriptor: two processes appending
    to the same file (two `ledex-train eval` runs sharing --out) never interleave inside a line."""
    import os

    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a regular file takes it whole; a short write only on a full disk
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


class EvalStore:
    """Generation + verdict cache in one JSONL; thread-safe; a torn last line is ignored."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._entries[row["key"]] = row["value"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash: that item is simply recomputed

    @staticmethod
    def generation_key(model_id: str, messages: list[dict], sampling: Sampling) -> str:
        """Cache key of one generation: model identity, messages, every Sampling field (seed,
        grammar, wrong_code...: asdict, so a field added later is in the key too) and the code."""
        return "gen:" + _digest(CACHE_SCHEMA, model_id, messages, asdict(sampling), code_fingerprint())

    @staticmethod
    def verdict_key(problem: CodingProblem, code: str) -> str:
        """Cache key of one verdict: problem id, the rendered test module, the code and the sandbox's code."""
        return "verdict:" + _digest(CACHE_SCHEMA, problem.id, render_test_module(problem), code, code_fingerprint())

    def _get(self, key: str) -> dict | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def _put(self, key: str, value: dict) -> None:
        with self._lock:
            self._entries[key] = value
            append_line(self.path, json.dumps({"key": key, "value": value}))

    generation = verdict = _get
    put_generation = put_verdict = _put


# --- metrics -------------------------------------------------------------------------------------


def _group_tasks(problems: Sequence[CodingProblem]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for problem in problems:
        groups.setdefault(problem.id.split("/", 1)[0], []).append(problem.id)
    if len(groups) > 1:
        groups["all"] = [p.id for p in problems]
    return groups


def _row(config, tasks: list[str], attempts, chains, rounds: int) -> dict:
    """Metrics for one version x mode over a set of tasks."""
    n = {t: 0 for t in tasks}
    correct = dict(n)
    for a in attempts:
        if a.task in n:
            n[a.task] += 1
            correct[a.task] += a.passed
    wrong = sum(n.values()) - sum(correct.values())
    samples = min(n.values()) if n else 0
    fixed_by = [{t: 0 for t in tasks} for _ in range(rounds + 1)]
    answers = usable = explained = 0
    for chain in chains:
        if chain.task not in n:
            continue
        for step in chain.steps:
            answers += 1
            usable += step["usable"]
            explained += bool(step["usable"] and step.get("explanation", "").strip())
        if chain.fixed_round is not None:
            for r in range(chain.fixed_round, rounds + 1):
                fixed_by[r][chain.task] += 1
    curve = []
    for r in range(rounds + 1):
        counts = [(n[t], correct[t] + fixed_by[r][t]) for t in tasks if n[t]]
        point = {"round": r, "fixed": sum(fixed_by[r].values())}
        point["refine_rate"] = point["fixed"] / wrong if wrong else None
        for k in reportable_ks(samples):
            point[f"pass@{k}"] = mean_pass_at_k(counts, k)
        curve.append(point)
    return {"tasks": len(tasks), "samples_per_task": samples, "initial_correct": sum(correct.values()),
            "wrong": wrong, "answers": answers, "usable_rate": usable / answers if answers else None,
            "explained_rate": explained / answers if answers else None, "curve": curve}


def summarize(config, versions, problems, attempts, chains, identities) -> dict:
    """The report dict: config, versions, per-(version, mode, benchmark) rows, markdown."""
    rows = []
    for version in versions:
        for mode in config.modes:
            mine = [c for c in chains if c.version == version.name and c.mode == mode]
            for bench, tasks in _group_tasks(problems).items():
                row = _row(config, tasks, attempts, mine, config.rounds)
                rows.append({"version": version.name, "model": identities.get(version.name, ""),
                             "mode": mode, "benchmark": bench, **row})
    report = {"config": asdict(config), "versions": [asdict(v) | {"identity": identities.get(v.name)} for v in versions],
              "initial_model": attempts[0].model if attempts else "", "rows": rows}
    report["markdown"] = render_markdown(report)
    return report


# --- rendering --------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def render_markdown(report: dict) -> str:
    """The report as Markdown: per version x mode x benchmark, pass@1/pass@10 (%) before
    and after each round, refine rate and usable-answer rate, then the notes.
    """
    config, rows = report["config"], report["rows"]
    last = config["rounds"]
    lines = [f"Initial solutions: {config['samples']} per task at T={config['temperature']} by "
             f"`{report['initial_model']}`; refinements up to {last} round(s), same wrong solutions and seeds "
             "for every version. pass@k in %, unbiased estimator.", "",
             "| version | benchmark | mode | tasks | pass@1 before | pass@1 after | pass@10 after | "
             "fixed / wrong | refine rate % | usable answers % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        before, after = row["curve"][0], row["curve"][last]
        lines.append(f"| {row['version']} | {row['benchmark']} | {row['mode']} | {row['tasks']} | "
                     f"{_pct(before.get('pass@1'))} | {_pct(after.get('pass@1'))} | {_pct(after.get('pass@10'))} | "
                     f"{after['fixed']} / {row['wrong']} | {_pct(after['refine_rate'])} | {_pct(row['usable_rate'])} |")
    lines += ["", "Per round (pooled over benchmarks): successful-refinement rate % / pass@1 %", "",
              "| version | mode | " + " | ".join(f"round {r}" for r in range(last + 1)) + " |",
              "|---|---|" + "---|" * (last + 1)]
    for row in _pooled(rows):
        cells = [f"{_pct(p['refine_rate'])} / {_pct(p.get('pass@1'))}" for p in row["curve"]]
        lines.append(f"| {row['version']} | {row['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pooled(rows: list[dict]) -> list[dict]:
    """One row per version x mode: the 'all' row when there are several benchmarks."""
    benches = {r["benchmark"] for r in rows}
    want = "all" if "all" in benches else next(iter(benches), None)
    return [r for r in rows if r["benchmark"] == want]


def plot_curves(report: dict, path: Path) -> bool:
    """curves.png: pass@1 and refine rate per round, one line per version x mode. False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for row in _pooled(report["rows"]):
        rounds = [p["round"] for p in row["curve"]]
        label = f"{row['version']} / {row['mode']}"
        left.plot(rounds, [100 * (p.get("pass@1") or 0) for p in row["curve"]], marker="o", label=label)
        right.plot(rounds, [100 * (p["refine_rate"] or 0) for p in row["curve"]], marker="o", label=label)
    for axis, title in ((left, "pass@1 after refinement (%)"), (right, "successful-refinement rate (%)")):
        axis.set_title(title)
        axis.set_xlabel("refinement round (0 = initial solutions)")
        axis.set_xticks(range(report["config"]["rounds"] + 1))
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(out: Path, report: dict, chains: Sequence) -> None:
    """Write refinements.jsonl (one chain a line), curves.png (when matplotlib is there),
    report.json and report.md into `out` (made if missing); sets report['plot'].
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "refinements.jsonl", "w", encoding="utf-8") as handle:
        for chain in chains:
            handle.write(json.dumps(asdict(chain)) + "\n")
    report["plot"] = "curves.png" if plot_curves(report, out / "curves.png") else None
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report["markdown"] + "\n", encoding="utf-8")


# --- editor benchmarks (training/fixeval.py) --------------------------------------------------------

# OctoPack (Muennighoff et al. 2023, Table 2): pass@1 on HumanEvalFix-Python, the model shown the
# buggy function and told to fix it, with no execution feedback (../shared/data/README.md).
OCTOPACK_PASS1 = {"StarCoder-15B": 8.7, "OctoCoder-15B": 30.2, "GPT-4": 47.0}
BUG_TYPE_ORDER = ("value misuse", "missing logic", "excess logic", "operator misuse", "variable misuse",
                  "function misuse")
SET_TITLES = {"humanevalfix": "HumanEvalFix-Python (human-written bugs)",
              "mbpp-mutants": "MBPP test: mutants of the reference (engine/operators.py)",
              "mbpp-sampled": "MBPP test: wrong solutions sampled from the base model",
              "inventory": "examples/inventory: one case per failure group",
              "gate": "promotion gate: MBPP validation (mutants + base-sampled wrong code)"}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (tasks only A fixed, only B fixed):
    a binomial test of min(only_a, only_b) against Binomial(only_a + only_b, 1/2), doubled, at most 1.

    >>> mcnemar_exact(0, 0), mcnemar_exact(0, 1)
    (1.0, 1.0)
    >>> round(mcnemar_exact(0, 6), 5), round(mcnemar_exact(1, 9), 5)   # 2/64, 2*11/1024
    (0.03125, 0.02148)
    """
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    from math import comb

    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def _rate(fixed: int, tasks: int) -> float | None:
    return fixed / tasks if tasks else None


def fix_result(rows: list[dict]) -> dict:
    """fixed / cases overall and per category (bug type, operator or origin) of one set x version x protocol."""
    counted = [r for r in rows if not r.get("skipped")]
    by_category: dict[str, dict] = {}
    for row in counted:
        cell = by_category.setdefault(row["category"], {"tasks": 0, "fixed": 0})
        cell["tasks"] += 1
        cell["fixed"] += bool(row["fixed"])
    for cell in by_category.values():
        cell["rate"] = _rate(cell["fixed"], cell["tasks"])
    fixed, answers = sum(bool(r["fixed"]) for r in counted), sum(r.get("answers", 0) for r in counted)
    return {"tasks": len(counted), "fixed": fixed, "rate": _rate(fixed, len(counted)), "answers": answers,
            "usable_rate": _rate(sum(r.get("usable", 0) for r in counted), answers),
            "skipped": len(rows) - len(counted), "by_category": dict(sorted(by_category.items()))}


def paired(rows: list[dict], a: str, b: str) -> dict:
    """McNemar's exact test of version b against version a on the cases both ran (skipped ones left out):
    tasks, both, only_a, only_b, neither, p."""
    outcome = {v: {r["case"]: bool(r["fixed"]) for r in rows if r["version"] == v and not r.get("skipped")}
               for v in (a, b)}
    both = [t for t in outcome[a] if t in outcome[b]]
    x, y = outcome[a], outcome[b]
    only_a, only_b = sum(x[t] and not y[t] for t in both), sum(y[t] and not x[t] for t in both)
    return {"a": a, "b": b, "tasks": len(both), "both": sum(x[t] and y[t] for t in both), "only_a": only_a,
            "only_b": only_b, "neither": sum(not x[t] and not y[t] for t in both), "p": mcnemar_exact(only_a, only_b)}


def fix_summary(rows: list[dict], versions: list[str], identities: dict, protocols: list[dict],
                sets: list[str]) -> dict:
    """The editor-benchmark report dict: per set x version x protocol the fixed share overall and per
    category, and McNemar's exact test of every later version against the first, per set x protocol."""
    results, mcnemar = [], []
    for name in sets:
        for proto in protocols:
            mine = [r for r in rows if r["set"] == name and r["protocol"] == proto["name"]]
            for version in versions:
                results.append({"set": name, "version": version, "protocol": proto["name"],
                                **fix_result([r for r in mine if r["version"] == version])})
            mcnemar += [{"set": name, "protocol": proto["name"], **paired(mine, versions[0], other)}
                        for other in versions[1:]]
    return {"sets": sets, "protocols": protocols,
            "versions": [{"name": v, "identity": identities.get(v, "")} for v in versions],
            "results": results, "mcnemar": mcnemar, "octopack_pass1_no_feedback": OCTOPACK_PASS1, "rows": rows}


def _describe(proto: dict) -> str:
    if proto["samples"] == 1 and proto["rounds"] == 1 and proto["temperature"] == 0:
        return f"{proto['name']}: greedy, 1 answer, 1 explain+refine round, top suspect"
    return (f"{proto['name']}: K={proto['samples']} answers at T={proto['temperature']}, "
            f"R={proto['rounds']} rounds, up to {proto['suspects']} suspects, verified")


def _categories(report: dict, name: str) -> list[str]:
    seen = sorted({c for r in report["results"] if r["set"] == name for c in r["by_category"]})
    return list(BUG_TYPE_ORDER) if name == "humanevalfix" else seen


def fix_markdown(report: dict) -> str:
    """The editor-benchmark report as Markdown: the main table (with OctoPack's numbers and why they
    differ when HumanEvalFix ran), per category, McNemar per set, skipped cases."""
    protos = {p["name"]: p for p in report["protocols"]}
    lines = ["Each case is an editor project (the module with the bug, its pytest tests); the prompt is what "
             f"`ledex fix` sends. Answers of at most {report.get('max_tokens', '?')} tokens, seed "
             f"{report.get('seed', '?')}; every version meets the same failures with the same seeds.", "",
             "| set | version | protocol | fixed / cases | % | usable answers % |", "|---|---|---|---|---|---|"]
    for res in report["results"]:
        lines.append(f"| {res['set']} | {res['version']} | {_describe(protos[res['protocol']])} | "
                     f"{res['fixed']} / {res['tasks']} | {_pct(res['rate'])} | {_pct(res['usable_rate'])} |")
    if "humanevalfix" in report["sets"]:
        octo = ", ".join(f"{k} {v}" for k, v in report["octopack_pass1_no_feedback"].items())
        lines += ["", f"OctoPack's pass@1 on HumanEvalFix-Python ({octo}) had **no execution feedback**: the model "
                  "saw only the buggy function and its docstring. Here the model also sees the failing test and its "
                  "error (what the editor has), so the numbers are not like for like."]
    for name in report["sets"]:
        cats = _categories(report, name)
        lines += ["", f"{SET_TITLES.get(name, name)}, fixed / cases per category:", "",
                  "| version | protocol | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
        for res in (r for r in report["results"] if r["set"] == name):
            cells = [f"{c['fixed']} / {c['tasks']}" if (c := res["by_category"].get(t)) else "—" for t in cats]
            lines.append(f"| {res['version']} | {res['protocol']} | " + " | ".join(cells) + " |")
    if report["mcnemar"]:
        lines += ["", "McNemar's exact test (paired by case):", "",
                  "| set | protocol | A | B | both fixed | only A | only B | neither | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in report["mcnemar"]:
            lines.append(f"| {m['set']} | {m['protocol']} | {m['a']} | {m['b']} | {m['both']} | {m['only_a']} | "
                         f"{m['only_b']} | {m['neither']} | {m['p']:.3g} |")
    skipped = {(r["set"], r["protocol"]): r["skipped"] for r in report["results"] if r["skipped"]}
    if skipped:
        lines += [""] + [f"{name} ({proto}): {n} case(s) left out: no test fails (the bug survives the tests)"
                         for (name, proto), n in skipped.items()]
    return "\n".join(lines)

if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1] if len(sys.argv) > 1 else ".ledex/eval/report.json")
    data = json.loads(source.read_text(encoding="utf-8"))
    data["markdown"] = render_markdown(data)
    (source.parent / "report.md").write_text(data["markdown"] + "\n", encoding="utf-8")
    plot_curves(data, source.parent / "curves.png")
    print(data["markdown"])
