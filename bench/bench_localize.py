"""Fault localisation on real packages with regressions injected by hand (issue 12 item 6).

For each sdist (more-itertools 11.2.1, toolz 1.2.0, cachetools 8.0.2, with their own test
suites) and each regression below (swapped arguments, off-by-one, wrong operator, wrong end
of a container; functions and methods), on a fresh copy of the package:
  - bare pytest on the broken tree (the reference time), then ledex's discovery run in the
    sandbox and its coverage run of the failing test files (each timed);
  - the failures found, and for each failure the rank of the broken function among its
    suspects, with coverage (Ochiai, what ledex does) and without (traceback + calls only).
Figures: failures found, broken function in top-1 / top-3 (per failure and per bug), and
ledex's test runs vs bare pytest.

The packages are evaluation data only (never training data). Nothing is downloaded here:

    pip download --no-binary :all: --no-deps more-itertools==11.2.1 toolz==1.2.0 cachetools==8.0.2 -d DIR
    .venv/bin/python bench/bench_localize.py --sdists DIR [--quick]

Without the sdists (--sdists or $LEDEX_BENCH_SDISTS) the benchmark is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from ledex.engine.failures import FAILED, coverage_spectra, failures_from_outcomes  # noqa: E402
from ledex.engine.project import Harness  # noqa: E402
from ledex.sandbox import Limits, run_tests  # noqa: E402


@dataclass(frozen=True)
class Bug:
    package: str  # sdist name prefix
    file: str  # relative to the unpacked sdist
    qualname: str  # the function the regression breaks
    kind: str
    old: str  # must occur exactly once in the file
    new: str


BUGS = [
    Bug("more_itertools", "more_itertools/more.py", "chunked", "swapped arguments",
        "iterator = iter(partial(take, n, iter(iterable)), [])", "iterator = iter(partial(take, iter(iterable), n), [])"),
    Bug("more_itertools", "more_itertools/recipes.py", "nth", "off-by-one",
        "return next(islice(iterable, n, None), default)", "return next(islice(iterable, n + 1, None), default)"),
    Bug("more_itertools", "more_itertools/more.py", "peekable.peek", "wrong end of a container (method)",
        "        return self._cache[0]\n", "        return self._cache[-1]\n"),
    Bug("more_itertools", "more_itertools/more.py", "padded", "wrong operator",
        "    elif n < 1:\n        raise ValueError('n must be at least 1')",
        "    elif n <= 1:\n        raise ValueError('n must be at least 1')"),
    Bug("toolz", "toolz/itertoolz.py", "take", "off-by-one",
        "    return itertools.islice(seq, n)\n", "    return itertools.islice(seq, n - 1)\n"),
    Bug("toolz", "toolz/itertoolz.py", "frequencies", "wrong operator", "d[item] += 1", "d[item] = 1"),
    Bug("toolz", "toolz/dicttoolz.py", "valmap", "swapped arguments",
        "rv.update(zip(d.keys(), map(func, d.values())))", "rv.update(zip(map(func, d.values()), d.keys()))"),
    Bug("toolz", "toolz/functoolz.py", "Compose.__call__", "wrong order (method)",
        "        for f in self.funcs:\n            ret = f(ret)", "        for f in reversed(self.funcs):\n            ret = f(ret)"),
    Bug("cachetools", "src/cachetools/__init__.py", "Cache.__setitem__", "wrong operator (method)",
        "            if itemsize > maxsize:", "            if itemsize >= maxsize:"),
    Bug("cachetools", "src/cachetools/__init__.py", "LRUCache.popitem", "wrong end of a container (method)",
        "least recently used.\"\"\"\n        try:\n            key = next(iter(self.__order))",
        "least recently used.\"\"\"\n        try:\n            key = next(reversed(self.__order))"),
    Bug("cachetools", "src/cachetools/__init__.py", "TTLCache.expire", "wrong operator (method)",
        "if curr is root or time < curr.expires:", "if curr is root or time <= curr.expires:"),
    Bug("cachetools", "src/cachetools/keys.py", "hashkey", "swapped arguments",
        "    if kwargs:\n        return args + _kwmark + tuple(sorted(kwargs.items()))\n    else:\n        return args\n\n\ndef methodkey",
        "    if kwargs:\n        return tuple(sorted(kwargs.items())) + _kwmark + args\n    else:\n        return args\n\n\ndef methodkey"),
]
QUICK = {"chunked", "take", "LRUCache.popitem"}  # one bug per package
# pytest options a package needs to run from its unpacked sdist (src layout: put src/ on sys.path)
# pytest-asyncio (in ledex's venv, not theirs) warns at start-up, which toolz's filterwarnings=error makes fatal
PYTEST_OPTIONS = {"cachetools": ["-p", "no:asyncio", "-o", "pythonpath=src"], "toolz": ["-p", "no:asyncio"],
                  "more_itertools": ["-p", "no:asyncio"]}
BLENDS = ("file", "mean", "failure")  # sbfl.Spectrum.blend: ledex's score, then two alternatives


def find_sdist(directory: Path, package: str) -> Path | None:
    names = {package, package.replace("_", "-")}
    return next((p for p in sorted(directory.glob("*.tar.gz")) if p.name.rsplit("-", 1)[0] in names), None)


def unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in into.iterdir() if p.is_dir())


def inject(tree: Path, bug: Bug) -> None:
    path = tree / bug.file
    text = path.read_text("utf-8")
    if text.count(bug.old) != 1:
        raise ValueError(f"{bug.file}: the regression's anchor occurs {text.count(bug.old)} times (another version?)")
    path.write_text(text.replace(bug.old, bug.new), "utf-8")


BARE_TIMEOUT_S = 600  # a regression can make a test loop forever; bare pytest has no per-test timeout


def bare_pytest(tree: Path, options: list[str]) -> float | None:
    """Seconds bare pytest took on the tree, None when it was still running after BARE_TIMEOUT_S."""
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options], cwd=tree,
                       capture_output=True, timeout=BARE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def command_for(options: list[str]) -> list[str] | None:
    if not options:
        return None
    return ["{python}", "-m", "pytest", "-q", *options, "--junitxml={junit}", "{tests}"]


def rank_of(failure, bug: Bug) -> int | None:  # noqa: ANN001
    """1-based position of the broken function among the failure's suspects, None if absent."""
    keys = [(s.path, s.qualname) for s in failure.suspects]
    return keys.index((bug.file, bug.qualname)) + 1 if (bug.file, bug.qualname) in keys else None


def unrelated(pristine: Path, failing: list[str], limits: Limits, command) -> set[str]:  # noqa: ANN001
    """The failing tests that fail on the unbroken tree too (flaky, slow under load): not the bug's."""
    if not failing:
        return set()
    verdict = run_tests(pristine, failing, limits=limits, command=command)
    return {o.nodeid for o in verdict.outcomes if o.outcome != "passed"}


def measure(tree: Path, pristine: Path, bug: Bug) -> dict:
    options = PYTEST_OPTIONS.get(bug.package, [])
    limits, command = Limits(wall_s=900.0, cpu_s=900), command_for(options)
    bare_s = bare_pytest(tree, options)
    start = time.perf_counter()
    verdict = run_tests(tree, limits=limits, command=command)
    run_s = time.perf_counter() - start
    spectra, notes = coverage_spectra(tree, verdict, limits=limits, harness=Harness(command=command))
    coverage_s = time.perf_counter() - start - run_s
    if not verdict.outcomes or verdict.error:
        return {"bug": f"{bug.package}: {bug.qualname}", "error": f"the tests did not run: {verdict.error}"}
    failing = [o.nodeid for o in verdict.outcomes if o.outcome in FAILED and "::" in o.nodeid]
    excluded = unrelated(pristine, failing, limits, command)
    with_cov = [f for f in failures_from_outcomes(tree, verdict.outcomes, spectra_by_file=spectra)[0]
                if f.test not in excluded]
    without = [f for f in failures_from_outcomes(tree, verdict.outcomes)[0] if f.test not in excluded]
    ranks = [rank_of(f, bug) for f in with_cov]
    plain = [rank_of(f, bug) for f in without]
    blends = {}
    for blend in BLENDS[1:]:
        other = {file: replace(spectrum, blend=blend) for file, spectrum in spectra.items()}
        found = failures_from_outcomes(tree, verdict.outcomes, spectra_by_file=other)[0]
        blends[blend] = [rank_of(f, bug) for f in found if f.test not in excluded]
    return {"bug": f"{bug.package}: {bug.qualname} ({bug.kind})", "failures": len(with_cov),
            "failing on the unbroken tree too (left out)": sorted(excluded),
            "detail": [{"test": f.test, "rank": r, "top3": [s.qualname for s in f.suspects[:3]]}
                       for f, r in zip(with_cov, ranks)],
            "errors": sum(1 for o in verdict.outcomes if o.outcome in FAILED and "::" not in o.nodeid),
            "ranks": ranks, "ranks_without_coverage": plain, "top1": sum(r == 1 for r in ranks),
            "top3": sum(r is not None and r <= 3 for r in ranks),
            "top1_without_coverage": sum(r == 1 for r in plain),
            **{f"top1_{b}_only": sum(r == 1 for r in ranks) for b, ranks in blends.items()},
            **{f"top3_{b}_only": sum(r is not None and r <= 3 for r in ranks) for b, ranks in blends.items()},
            "top3_without_coverage": sum(r is not None and r <= 3 for r in plain),
            "bare_pytest_s": round(bare_s, 2) if bare_s is not None else f"> {BARE_TIMEOUT_S} (hung)",
            "ledex_run_s": round(run_s, 2),
            "coverage_run_s": round(coverage_s, 2), "notes": notes,
            "top_suspects": sorted({f.suspect.qualname for f in with_cov if f.suspect})[:5]}


def run_bug(sdist: Path, bug: Bug) -> dict:
    with tempfile.TemporaryDirectory(prefix="ledex-bench-loc-") as tmp:
        tree = unpack(sdist, Path(tmp) / "broken")
        pristine = unpack(sdist, Path(tmp) / "pristine")
        try:
            inject(tree, bug)
        except ValueError as exc:
            return {"bug": f"{bug.package}: {bug.qualname}", "error": str(exc)}
        return measure(tree, pristine, bug)


def summarise(rows: list[dict]) -> dict:
    done = [r for r in rows if "error" not in r and r["failures"]]
    failures = sum(r["failures"] for r in done)

    def share(key: str) -> float:
        return round(sum(r[key] for r in done) / failures, 3) if failures else 0.0

    timed = [r for r in done if isinstance(r["bare_pytest_s"], float)]  # a hung bare run has no time to compare
    bare, ledex = sum(r["bare_pytest_s"] for r in timed), sum(r["ledex_run_s"] for r in timed)
    cov = sum(r["coverage_run_s"] for r in timed)
    return {
        "bugs injected": len(rows), "bugs detected (>= 1 failing test)": len(done), "failures found": failures,
        "top-1 (per failure)": share("top1"), "top-3 (per failure)": share("top3"),
        "top-1 without coverage (per failure)": share("top1_without_coverage"),
        "top-1, mean of Ochiai over the file and of the test alone (per failure)": share("top1_mean_only"),
        "top-1, Ochiai of the failing test alone (per failure)": share("top1_failure_only"),
        "top-3, mean of Ochiai over the file and of the test alone (per failure)": share("top3_mean_only"),
        "top-3, Ochiai of the failing test alone (per failure)": share("top3_failure_only"),
        "top-3 without coverage (per failure)": share("top3_without_coverage"),
        "bugs whose first failure has it top-1": sum(1 for r in done if r["ranks"] and r["ranks"][0] == 1),
        "bugs whose first failure has it in top-3": sum(1 for r in done if r["ranks"] and (r["ranks"][0] or 99) <= 3),
        "bare pytest s (sum)": round(bare, 1), "ledex discovery run s (sum)": round(ledex, 1),
        "ledex coverage run s (sum)": round(cov, 1),
        "ledex run / bare pytest": round(ledex / bare, 3) if bare else 0.0,
        "ledex run + coverage run / bare pytest": round((ledex + cov) / bare, 3) if bare else 0.0,
    }


def main(argv: list[str] | None = None) -> dict:
    global BARE_TIMEOUT_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdists", type=Path, default=Path(os.environ.get("LEDEX_BENCH_SDISTS", "")) or None,
                        help="folder holding the three .tar.gz sdists (default: $LEDEX_BENCH_SDISTS)")
    parser.add_argument("--quick", action="store_true", help="one regression per package")
    parser.add_argument("--only", nargs="*", default=None, help="only these broken functions (qualnames)")
    parser.add_argument("--bare-timeout", type=float, default=BARE_TIMEOUT_S,
                        help="seconds before bare pytest counts as hung (default %(default)s)")
    args = parser.parse_args(argv)
    BARE_TIMEOUT_S = args.bare_timeout
    title = "fault localisation on real packages with injected regressions (issue 12)"
    if not args.sdists or not args.sdists.is_dir():
        return emit({"title": title, "metrics": {}, "notes": [
            f"skipped: no sdist folder ({args.sdists}); see the module docstring for the pip download command"]})
    rows, notes = [], []
    for bug in BUGS:
        if (args.quick and bug.qualname not in QUICK) or (args.only and bug.qualname not in args.only):
            continue
        sdist = find_sdist(args.sdists, bug.package)
        if sdist is None:
            notes.append(f"skipped {bug.package}: no sdist in {args.sdists}")
            continue
        rows.append(dict(run_bug(sdist, bug), sdist=sdist.name))
        print(rows[-1], file=sys.stderr, flush=True)
    return emit({"title": title, "metrics": summarise(rows), "bugs": rows, "notes": notes + [
        "per failure: share of all failing tests whose suspects rank the broken function first / in the first 3",
        "ledex run: the sandboxed discovery run of the whole suite; coverage run: the failing test files again, "
        "with per-test coverage (only when something failed)"]})


if __name__ == "__main__":
    main()
