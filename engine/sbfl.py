"""Spectrum-based fault localisation: Ochiai suspiciousness over per-test line coverage.

For a line executed by `ef` failing and `ep` passing tests, with `F` failing tests in all,

    ochiai = ef / sqrt(F * (ef + ep))

(Abreu, Zoeteweij, van Gemund, "On the Accuracy of Spectrum-based Fault Localization", 2007).
The spectrum is one test file's tests as measured in the sandbox (`run_tests(...,
coverage=True)`): the failing tests of the file against its passing tests. A function's
score is the highest score of the lines the failing test executed in it (the usual
method-level aggregation). Equal scores are ordered by Ochiai of this failing test alone
(F = 1, so 1/sqrt(1 + ep)), then by the evidence order of localize.py, then by path and line
(never by the order coverage.py listed its files). On the injected
regressions of bench/bench_localize.py this ranks the broken function first for 53 of 61
failures (toolz and cachetools: 41 of 49, where the mean of the two values gets 39 and the
failing test alone 35; docs/benchmarks.md).
Known limit: two bugs whose failing tests share a test file and some code (a constructor)
can blame that shared code; scoring each failure alone avoids this but ranks worse on one bug
at a time, the common case (the bench's figures).

Try it:  python -m ledex.engine.sbfl   (prints the Ochiai value of a few spectra)
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ledex.engine.localize import Suspect, _parse, first_line, iter_functions, make_suspect, raise_lines, read_source

Coverage = Mapping[str, Mapping[str, Sequence[int]]]  # nodeid -> relpath -> executed lines
MAX_SUSPECTS = 10  # suspects kept per failure: candidates are generated for the first few only


def ochiai(ef: int, ep: int, failed_total: int) -> float:
    """Ochiai suspiciousness of a line (0 when no failing test executed it).

    >>> ochiai(2, 0, 2), round(ochiai(1, 3, 1), 3), ochiai(0, 5, 3)
    (1.0, 0.5, 0.0)
    """
    if ef == 0 or failed_total == 0:
        return 0.0
    return ef / math.sqrt(failed_total * (ef + ep))


@dataclass
class Spectrum:
    """Which lines each test of one test file executed, and which of those tests failed."""

    coverage: Coverage
    failing: frozenset[str]
    passing: frozenset[str]
    blend: str = "file"  # "file" (F = the file's failing tests: ledex), "failure" (F = 1) or "mean" (bench only)
    _ef: Counter = field(default_factory=Counter, repr=False)
    _ep: Counter = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        counters = ((self.failing, self._ef),) + (((self.passing, self._ep),) if not self._ep else ())
        for tests, counter in counters:
            for nodeid in tests:
                for rel, lines in self.coverage.get(nodeid, {}).items():
                    counter.update((rel, line) for line in lines)

    def for_failure(self, nodeid: str) -> "Spectrum":
        """This spectrum with `nodeid` among its failing tests (it may have passed in the coverage run)."""
        if nodeid in self.failing:
            return self
        return Spectrum(self.coverage, self.failing | {nodeid}, self.passing - {nodeid}, self.blend)

    def alone(self, rel: str, line: int) -> float:
        """Ochiai with this failing test as the only one (the tie-breaker)."""
        return ochiai(1, self._ep[(rel, line)], 1)

    def score(self, rel: str, line: int) -> float:
        """Suspiciousness in [0, 1] of a line the failing test executed (module docstring)."""
        ef, ep = self._ef[(rel, line)], self._ep[(rel, line)]
        file, alone = ochiai(ef, ep, len(self.failing)), ochiai(1, ep, 1)
        return file if self.blend == "file" else alone if self.blend == "failure" else (file + alone) / 2

    def lines(self, nodeid: str) -> Mapping[str, Sequence[int]]:
        """{workspace file: 1-based lines} that test `nodeid` executed ({} when not measured), in
        path order: functions with equal scores rank in that order, never in the order coverage.py
        listed its files (a set of the sandbox's temporary paths: the top suspect changed from one
        identical run to the next, fresh-user run X5, jmespath)."""
        return dict(sorted(self.coverage.get(nodeid, {}).items()))


def spectra(coverage: Coverage, outcomes: Mapping[str, str], blend: str = "file") -> dict[str, Spectrum]:
    """One Spectrum per test file from a coverage run's {nodeid: outcome}."""
    by_file: dict[str, tuple[set, set]] = {}
    for nodeid, outcome in outcomes.items():
        if "::" not in nodeid or outcome not in ("passed", "failed", "error"):
            continue
        failing, passing = by_file.setdefault(nodeid.split("::")[0], (set(), set()))
        (passing if outcome == "passed" else failing).add(nodeid)
    return {file: Spectrum(coverage, frozenset(f), frozenset(p), blend) for file, (f, p) in by_file.items()}


def _spans(source: str) -> list[tuple[int, int, str, ast.AST]]:
    tree = _parse(source)
    spans = [(first_line(n), n.end_lineno, q, n) for q, n in iter_functions(tree) if "<locals>" not in q] if tree else []
    return sorted(spans, key=lambda s: s[0])


def function_scores(workspace: Path, spectrum: Spectrum, nodeid: str,
                    is_test: Callable[[str], bool]) -> dict[tuple[str, str], tuple[float, float, Suspect]]:
    """{(path, qualname): (score, tie-breaker, suspect)} for every workspace function the test
    executed: its best line's (score, Ochiai alone), `raise` statements left out when it ran
    other lines (a raise the failing test reached is where the function rejected its input:
    the failure detected, not caused; semver's Version.parse scored 1.0 there for a bug in its
    caller); each suspect's `lines` holds its executed lines' scores (line_scores)."""
    suspects: dict[tuple[str, str], Suspect] = {}
    per_line: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    raising: dict[tuple[str, str], frozenset[int]] = {}
    for rel, lines in spectrum.lines(nodeid).items():
        source = None if is_test(rel) or not rel.endswith(".py") else read_source(Path(workspace) / rel)
        spans = _spans(source) if source is not None else []
        for line in lines:
            inner = [s for s in spans if s[0] <= line <= s[1]]
            if not inner:
                continue  # module-level code: not a function we can rewrite
            start, _, qualname, node = inner[-1]
            per_line.setdefault((rel, qualname), {})[line] = (spectrum.score(rel, line), spectrum.alone(rel, line))
            if (rel, qualname) not in suspects:
                suspects[(rel, qualname)] = make_suspect(rel, qualname, node, source, "coverage")
                raising[(rel, qualname)] = raise_lines(source)
    scores = {}
    for key, scored in per_line.items():
        counted = [score for line, score in scored.items() if line not in raising[key]] or list(scored.values())
        scores[key] = (*max(counted), replace(suspects[key], lines=line_scores(scored)))
    return scores


def line_scores(scored: Mapping[int, tuple[float, float]]) -> tuple[tuple[int, float], ...]:
    """((line, Ochiai), ...) most suspicious first: Ochiai, then Ochiai of the failing test alone,
    then the later line first (a wrong value shows where it is used, after where it is made).

    >>> line_scores({2: (0.5, 0.5), 3: (1.0, 1.0), 4: (0.5, 0.7), 5: (0.5, 0.5)})
    ((3, 1.0), (4, 0.5), (5, 0.5), (2, 0.5))
    """
    order = sorted(scored, key=lambda line: (-round(scored[line][0], 9), -round(scored[line][1], 9), -line))
    return tuple((line, round(scored[line][0], 6)) for line in order)


# Methods the failing assert itself runs: pytest's failure report shows the repr() of each value
# in a failing assert (docs.pytest.org, "Assertion introspection details") and probing attributes
# (hasattr) runs a module's or class's __getattr__ (toolz: curry.__repr__ and the package's
# __getattr__ for a bug in take); `assert result` tests the result's truth, which calls its
# __bool__, or __len__ without one (Python's "Truth Value Testing"): validators 0.22.0 returns a
# falsy ValidationError whose one-line __bool__ ran only when an assert failed (fresh-user run X9
# F5). Line coverage counts them as run by the failing test only, so Ochiai ranks them first.
# Found by coverage alone, they rank after every other suspect.
ASSERT_HOOKS = frozenset({"__repr__", "__str__", "__format__", "__getattr__", "__getattribute__", "__dir__",
                          "__bool__", "__len__"})


def _assert_hook(suspect: Suspect) -> bool:
    return suspect.reason == "coverage" and suspect.qualname.rsplit(".", 1)[-1] in ASSERT_HOOKS


def rank_by_spectrum(workspace: Path, found: list[Suspect], spectrum: Spectrum, nodeid: str,
                     is_test: Callable[[str], bool]) -> list[Suspect]:
    """`found` (traceback and call suspects, in evidence order) plus every function the test
    executed, ordered by Ochiai score, then Ochiai of the failing test alone, then evidence
    order; the function a hung test was stuck in (reason "stack sampling") stays first: seen in
    every stack sample, it is the loop (webcolors 24.11.1: a test command naming the module
    re-ran the hung doctest under coverage, and Ochiai put a function it called first); a
    method the failing assert itself runs (repr, truth test), found by coverage alone, comes
    last (ASSERT_HOOKS). Without coverage for this test, `found` unchanged."""
    if not spectrum.lines(nodeid):
        return found
    spectrum = spectrum.for_failure(nodeid)
    scores = function_scores(workspace, spectrum, nodeid, is_test)
    ranked = [replace(s, score=scores[(s.path, s.qualname)][0], lines=scores[(s.path, s.qualname)][2].lines)
              if (s.path, s.qualname) in scores else replace(s, score=0.0) for s in found]
    known = {(s.path, s.qualname) for s in found}
    ranked += [replace(suspect, score=score) for key, (score, _, suspect) in scores.items() if key not in known]
    order = {id(s): i for i, s in enumerate(ranked)}
    tie = {id(s): scores.get((s.path, s.qualname), (0.0, 0.0))[1] for s in ranked}
    ranked.sort(key=lambda s: (s.reason != "stack sampling", _assert_hook(s), -round(s.score, 9),
                               -round(tie[id(s)], 9), order[id(s)]))
    return ranked[:MAX_SUSPECTS]


if __name__ == "__main__":
    for ef, ep, total in ((1, 0, 1), (1, 9, 1), (3, 1, 4)):
        print(f"ef={ef} ep={ep} F={total}: ochiai={ochiai(ef, ep, total):.3f}")
