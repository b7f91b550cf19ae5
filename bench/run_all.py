"""Run every benchmark in bench/ and write one report.

    .venv/bin/python bench/run_all.py            # quick mode (each script gets --quick)
    .venv/bin/python bench/run_all.py --full     # the scripts' full settings
    .venv/bin/python bench/run_all.py --only engine sandbox --docs   # also copy to docs/benchmarks.md

Each `bench/bench_<name>.py` runs in its own process (a crash, a segfault in a native
library or a missing optional dependency cannot take the others down) with a time limit.
A script's `main(argv) -> dict` result is the record (bench/README.md has the convention);
a script whose main returns something else is still accepted if it printed a JSON object.
Missing or failing scripts are recorded in the report with their error, never fatal.
Writes bench/results/report.md and bench/results/report.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_facts  # noqa: E402

BENCH = REPO / "bench"
# The benchmarks the issues define, in report order; any other bench_*.py found is added after.
EXPECTED = ("engine", "sandbox", "lsp", "sft", "rl")
RESULT_MARK = "@@LEDEX-BENCH-RESULT@@"


def discover(only: list[str] | None) -> list[str]:
    found = sorted(p.stem[len("bench_"):] for p in BENCH.glob("bench_*.py"))
    names = list(EXPECTED) + [n for n in found if n not in EXPECTED]
    return [n for n in names if not only or n in only]


def _follows_convention(main) -> bool:  # noqa: ANN001
    """main(argv) -> dict: a plain function taking one positional argument."""
    if main is None or inspect.iscoroutinefunction(main):
        return False
    params = [p for p in inspect.signature(main).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params) >= 1


def child(name: str, argv: list[str]) -> int:
    """In the child process: call bench_<name>.main(argv) and print the marked result; a script
    that does not follow the convention (async main, main() without argv) runs as __main__."""
    path = BENCH / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.argv = [str(path), *argv]
    spec.loader.exec_module(module)
    if not _follows_convention(getattr(module, "main", None)):
        runpy.run_path(str(path), run_name="__main__")  # its stdout JSON is parsed by the parent
        return 0
    result = module.main(argv)
    if isinstance(result, dict):
        print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    return 0


def accepts_quick(path: Path) -> bool:
    return "--quick" in path.read_text(encoding="utf-8", errors="replace")


def run_one(name: str, quick: bool, timeout_s: float) -> dict:
    path = BENCH / f"bench_{name}.py"
    if not path.is_file():
        return {"status": "missing", "error": f"{path.relative_to(REPO)} does not exist (yet)"}
    argv = ["--quick"] if quick and accepts_quick(path) else []
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--", *argv]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s", "argv": argv,
                "seconds": round(time.perf_counter() - started, 1), "output_tail": _tail(exc.stdout)}
    record = {"argv": argv, "seconds": round(time.perf_counter() - started, 1), "exit_code": done.returncode}
    if quick and not argv:
        record["note"] = "script has no --quick flag: ran with its defaults"
    result = _parse_result(done.stdout)
    if done.returncode != 0 or result is None:
        error = _tail(done.stderr) or _tail(done.stdout) or f"exit code {done.returncode}"
        return {**record, "status": "failed", "error": error, **({"result": result} if result else {})}
    return {**record, "status": "ok", "result": result}


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _parse_result(stdout: str) -> dict | None:
    """The marked dict from main(), else the first JSON object the script printed."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    start = stdout.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(stdout[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = stdout.find("{", start + 1)
    return None


# --- the report -----------------------------------------------------------------------------------


def _flat(prefix: str, value, out: dict) -> None:
    """Numbers and short strings of a free-form result, as dotted keys (for scripts without "metrics")."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, (int, float, str, bool)) and len(str(value)) < 80:
        out[prefix] = value


def render(report: dict) -> str:
    facts, lines = report["machine"], ["# ledex benchmarks", ""]
    lines += [f"Command: `{report['command']}` ({'quick' if report['quick'] else 'full'} mode, "
              f"{report['seconds']} s, {report['date']})", "",
              "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), ""]
    lines += ["## Ratios against their goals", "", "| benchmark | ratio | value | goal | met |", "|---|---|---|---|---|"]
    for name, entry in report["benchmarks"].items():
        for label, r in ((entry.get("result") or {}).get("ratios") or {}).items():
            lines.append(f"| {name} | {label} | {r.get('value')} | {r.get('goal', '')} | "
                         f"{'yes' if r.get('ok') else 'no'} |")
    lines += ["", "## Status", "", "| benchmark | status | seconds | note |", "|---|---|---|---|"]
    for name, entry in report["benchmarks"].items():
        note = (entry.get("error") or entry.get("note") or "").splitlines()
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', '')} | {note[-1][:160] if note else ''} |")
    for name, entry in report["benchmarks"].items():
        lines += _section(name, entry)
    return "\n".join(lines) + "\n"


def _section(name: str, entry: dict) -> list[str]:
    result = entry.get("result") or {}
    lines = ["", f"## {name}" + (f": {result['title']}" if result.get("title") else ""), ""]
    if entry["status"] != "ok":
        lines += [f"**{entry['status']}**", "", "```", entry.get("error", ""), "```"]
        if not result:
            return lines
    metrics = result.get("metrics")
    if metrics is None:
        metrics = {}
        _flat("", {k: v for k, v in result.items() if k not in ("ratios", "notes")}, metrics)
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()]
    lines += [f"- {note}" for note in result.get("notes") or []]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run the scripts without --quick")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks (engine, sandbox, ...)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark (default: %(default)s)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="report folder (default: bench/results)")
    parser.add_argument("--docs", action="store_true", help="also copy the report to docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        return child(args.child, [a for a in rest if a != "--"])
    started, quick = time.time(), not args.full
    report = {"command": "python " + " ".join(shlex.quote(a) for a in ["bench/run_all.py", *(argv or sys.argv[1:])]),
              "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_facts(), "benchmarks": {}}
    for name in discover(args.only):
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        report["benchmarks"][name] = entry = run_one(name, quick, args.timeout)
        print(f"[run_all] {name}: {entry['status']} ({entry.get('seconds', 0)} s)", file=sys.stderr, flush=True)
    report["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = render(report)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    if args.docs:
        (REPO / "docs" / "benchmarks.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
