"""LEDEX reward functions for RL (TRL's GRPOTrainer/RLOOTrainer call them once per batch).

Each reward function is a plain typed function `(completions, **columns) -> list[float | None]`;
the columns come from the RL dataset (see `rl.build_dataset`):

    reference_codes         correct refinements of the same wrong code      (S_cb references)
    reference_explanations  explanations that were followed by a correct fix (S_ex references)
    tests, setup, entry_point  the problem's unit tests                       (S_ut, in the sandbox)

The rewards, as in the paper (../shared/ledex-method.md):

    refinement   R(r) = 5 * (S_cb + S_ut) - 5          S_cb: mean CodeBLEU, S_ut: sandbox pass rate
    explanation  R(e) = (50 * S_ex - 35) / 3, clipped   S_ex: mean cosine similarity of embeddings
    format       0 for a usable answer, -5 otherwise

Malformed answers (no explanation, no code, several code blocks, unparsable code) and anything
that games verification (exits early, skips, edits tests, patches pytest, an always-equal object;
judged by the sandbox's static gate rules, `gaming_reason`, then by the sandbox's verdict kinds)
get the minimum (-5) from *every* function, so their weighted sum is the minimum too.

CodeBLEU is the `codebleu` package (0.7.0, tree-sitter-python grammar; all four components:
n-gram, weighted n-gram, syntax-tree match, data-flow match), per reference then averaged, as
"mean CodeBLEU against the correct refinements" reads. When a wrong solution has no correct
refinement at all, there is no reference: S_cb falls back to S_ut (R(r) = 10*S_ut - 5, the same
scale) and R(e) is None (TRL skips a None reward in the weighted sum).

The registry `REWARDS` (name -> function -> default weight) is what `rl` trains on, in order.

Try it:  python -m ledex.training.rewards     # scores a few known answers
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ledex.engine.format import Candidate, Mode, parse_response
from ledex.sandbox import gate

R_MIN, R_MAX = -5.0, 5.0


def clip(value: float, low: float = R_MIN, high: float = R_MAX) -> float:
    """
    >>> clip(7.0), clip(-9.0), clip(1.5)
    (5.0, -5.0, 1.5)
    """
    return max(low, min(high, value))


def refinement_score(s_cb: float, s_ut: float) -> float:
    """R(r) = 5 * (S_cb + S_ut) - 5, in [-5, 5].

    >>> refinement_score(1.0, 1.0), refinement_score(0.0, 0.0), refinement_score(0.5, 0.5)
    (5.0, -5.0, 0.0)
    """
    return clip(5.0 * (s_cb + s_ut) - 5.0)


def explanation_score(s_ex: float) -> float:
    """R(e) = (50 * S_ex - 35) / 3: cosine 0.4 -> -5, 0.7 -> 0, 1.0 -> 5, clipped outside.

    >>> explanation_score(1.0), explanation_score(0.7), explanation_score(0.4), explanation_score(0.1)
    (5.0, 0.0, -5.0, -5.0)
    """
    return clip((50.0 * s_ex - 35.0) / 3.0)


# --- CodeBLEU -----------------------------------------------------------------------------


def codebleu(code: str, reference: str) -> float:
    """CodeBLEU of `code` against one reference (equal weights of the four components).

    >>> codebleu("def f(x):\\n    return x + 1", "def f(x):\\n    return x + 1")
    1.0
    """
    from codebleu import calc_codebleu

    if not code.strip() or not reference.strip():
        return 0.0
    return float(calc_codebleu([reference], [code], lang="python")["codebleu"])


def mean_codebleu(code: str, references: Sequence[str]) -> float | None:
    """S_cb: mean CodeBLEU against each reference; None without references.

    >>> round(mean_codebleu("def f(x):\\n    return x + 1", ["def f(x):\\n    return x + 1"]), 3)
    1.0
    >>> mean_codebleu("def f(x):\\n    return x", []) is None
    True
    """
    if not references:
        return None
    return sum(codebleu(code, ref) for ref in references) / len(references)


# --- gaming verification ------------------------------------------------------------------

def gaming_reason(code: str) -> str | None:
    """Why this code looks built to fool the tests rather than to pass them; None if clean.

    The rules are the sandbox's static gate (``ledex.sandbox.gate.SOLUTION_RULES``: the
    editor's ``RULES`` plus ending the program), applied to the whole solution - one definition
    for the editor's "not verified: uses X" and the RL rewards. The first use found, with the
    gate's reason; unparsable code is a format problem, judged elsewhere (None).

    >>> gaming_reason("import os\\ndef f(x):\\n    os._exit(0)")
    'uses os._exit (process control: can end or fork the run around the test runner), line 3'
    >>> gaming_reason("import sys\\ndef f(x):\\n    sys.exit(0)")
    "uses sys.exit (ends the program: a solution never needs to, and it skips the tests' checks), line 3"
    >>> gaming_reason("import pytest\\ndef f(x):\\n    return x")
    "uses pytest (the test runner's internals: can rewrite how tests run or what they report), line 1"
    >>> gaming_reason("class A:\\n    def __eq__(self, other):\\n        return True")
    "uses A.__eq__ (a result that compares equal to anything: games the test's assertion), line 2"
    >>> gaming_reason("def f(xs):\\n    return sorted(xs)") is None
    True
    """
    found = gate.scan(code, rules=gate.SOLUTION_RULES)
    if not found:
        return None
    first = min(found, key=lambda f: f.line)
    return f"uses {first.detail} ({first.rule.reason}), line {first.line}"


# --- judging code in the sandbox -----------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What the sandbox said about one candidate: S_ut, and a reason if it gamed verification."""

    pass_rate: float
    gaming: str | None = None


@dataclass(frozen=True)
class Tests:
    """The problem's unit tests as the judge needs them (hashable: it keys the judge's cache)."""

    tests: tuple[str, ...]
    setup: str = ""
    entry_point: str | None = None


Judge = Callable[[Sequence[str], Tests], list[Check]]


# Verdict kinds (sandbox.models.Verdict.error_kind / killed_reason) that mean the candidate
# subverted the run rather than failed it: tampering with the tests or the report, or ending the
# test process itself before pytest finished (startup/report errors without a sandbox kill).
_TAMPERING_KINDS = frozenset({"tampering", "gate"})  # gate: sandbox/gate.py refused what it adds
_EARLY_END_KINDS = frozenset({"startup", "report"})


def check_from_verdict(verdict: Any) -> Check:
    """Sandbox verdict -> Check, decided by the verdict's typed kinds, never its message text.

    Skipped tests, tampering (error_kind "tampering", a static-gate refusal "gate", or kill
    reason "tamper") and a run the candidate ended early itself (error_kind "startup"/"report"
    with no sandbox kill) are gaming (S_ut 0); a timeout or any other kill is just wrong
    (S_ut = the verdict's pass_rate, 0..1).
    """
    kind = verdict.error_kind
    if any(o.outcome == "skipped" for o in verdict.outcomes):
        return Check(0.0, "skipped tests")
    if kind in _TAMPERING_KINDS or verdict.killed_reason == "tamper":
        return Check(0.0, verdict.error or "tampered with the test run")
    if verdict.killed_reason is None and kind in _EARLY_END_KINDS:
        return Check(0.0, f"ended the test run early: {verdict.error}")
    return Check(float(verdict.pass_rate))


class SandboxJudge:
    """Judges candidates with `ledex.engine.problems.judge_solutions`, caching by (code, tests).

    Several reward functions look at the same completions in one step; the cache means each
    completion runs in the sandbox once.
    """

    def __init__(self, root: Path | None = None, workers: int | None = None, cache_size: int = 20_000):
        self.root = Path(root or tempfile.mkdtemp(prefix="ledex-rl-"))
        self.workers, self.cache_size = workers, cache_size
        self._cache: dict[tuple[str, Tests], Check] = {}
        self._lock = threading.Lock()
        self.runs = 0  # sandbox runs actually made (the benchmark reads it)

    def __call__(self, codes: Sequence[str], tests: Tests) -> list[Check]:
        from ledex.engine.problems import CodingProblem, judge_solutions

        todo = list(dict.fromkeys(c for c in codes if (c, tests) not in self._cache))
        if todo:
            digest = hashlib.sha256("\x00".join(tests.tests + (tests.setup,)).encode()).hexdigest()[:12]
            problem = CodingProblem(f"rl/{digest}", "", tests.tests, tests.setup, "", tests.entry_point)
            verdicts = judge_solutions(problem, todo, self.root, workers=self.workers)
            self.runs += len(todo)
            with self._lock:
                if len(self._cache) + len(todo) > self.cache_size:
                    self._cache.clear()
                self._cache.update({(c, tests): check_from_verdict(v) for c, v in zip(todo, verdicts)})
        return [self._cache[(c, tests)] for c in codes]


_DEFAULT_JUDGE: SandboxJudge | None = None


def default_judge() -> SandboxJudge:
    """The process-wide SandboxJudge (made on first use), for reward calls without a judge."""
    global _DEFAULT_JUDGE
    if _DEFAULT_JUDGE is None:
        _DEFAULT_JUDGE = SandboxJudge()
    return _DEFAULT_JUDGE


# --- assessing completions -----------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    """A parsed completion: the candidate (None when unparsable), why it gets the minimum
    (None when usable) and S_ut, its sandbox pass rate (0..1).
    """

    candidate: Candidate | None
    problem: str | None  # why the answer gets the minimum (malformed or gaming); None when usable
    pass_rate: float = 0.0


def completion_text(completion: Any) -> str:
    """TRL passes a string (text prompts) or a list of messages (conversational prompts)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")


def _column(kwargs: dict, name: str, n: int, default: Any) -> list:
    values = kwargs.get(name)
    return list(values) if values is not None else [default] * n


def assess(completions: Sequence[Any], *, judge: Judge | None = None, mode: Mode = Mode.EXPLAIN,
           **kwargs: Any) -> list[Assessment]:
    """Parse every completion, run the usable ones in the sandbox (one batch per problem)."""
    n = len(completions)
    tests = [Tests(tuple(t or ()), s or "", e) for t, s, e in zip(_column(kwargs, "tests", n, ()),
                                                                  _column(kwargs, "setup", n, ""),
                                                                  _column(kwargs, "entry_point", n, None))]
    results: list[Assessment | None] = [None] * n
    pending: dict[Tests, list[int]] = {}
    for i, completion in enumerate(completions):
        parsed = parse_response(completion_text(completion), mode)
        if not isinstance(parsed, Candidate):
            results[i] = Assessment(None, parsed.reason)
        elif mode is Mode.EXPLAIN and not parsed.explanation.strip():
            results[i] = Assessment(None, "no explanation before the code")
        elif reason := gaming_reason(parsed.code):
            results[i] = Assessment(parsed, f"games verification: {reason}")
        elif not tests[i].tests:
            results[i] = Assessment(parsed, None, 0.0)  # nothing to run: S_ut unknown, counted as 0
        else:
            results[i] = Assessment(parsed, None)
            pending.setdefault(tests[i], []).append(i)
    judge = judge or default_judge()
    for group, indices in pending.items():
        for i, check in zip(indices, judge([results[i].candidate.code for i in indices], group)):
            problem = f"games verification: {check.gaming}" if check.gaming else None
            results[i] = Assessment(results[i].candidate, problem, check.pass_rate)
    return results  # type: ignore[return-value]


# --- the reward functions ------------------------------------------------------------------

_FIX = "The bound is off by one: range(n) stops before n.\n```python\ndef f(n):\n    return sum(range(n + 1))\n```"


def refinement_reward(completions: Sequence[Any], *, judge: Judge | None = None,
                      **kwargs: Any) -> list[float | None]:
    """R(r) = 5 * (S_cb + S_ut) - 5; -5 for malformed or gaming answers.

    >>> fake = lambda codes, tests: [Check(1.0) for _ in codes]
    >>> ref = "def f(n):\\n    return sum(range(n + 1))"
    >>> refinement_reward([_FIX, "no code"], judge=fake, reference_codes=[[ref], [ref]], tests=[["assert f(1) == 1"]] * 2)
    [5.0, -5.0]
    """
    references = _column(kwargs, "reference_codes", len(completions), [])
    rewards: list[float | None] = []
    for assessment, refs in zip(assess(completions, judge=judge, **kwargs), references):
        if assessment.problem:
            rewards.append(R_MIN)
            continue
        s_cb = mean_codebleu(assessment.candidate.code, list(refs or []))
        rewards.append(refinement_score(assessment.pass_rate if s_cb is None else s_cb, assessment.pass_rate))
    return rewards


def explanation_reward(completions: Sequence[Any], *, judge: Judge | None = None, embedder: Any = None,
                       **kwargs: Any) -> list[float | None]:
    """R(e) = (50 * S_ex - 35) / 3 in [-5, 5]; -5 for malformed or gaming answers, None without references.

    >>> import numpy as np
    >>> class Same:  # every text embeds to the same vector: cosine 1
    ...     def encode(self, texts): return np.ones((len(texts), 2)) / np.sqrt(2)
    >>> fake = lambda codes, tests: [Check(0.0) for _ in codes]
    >>> rewards = explanation_reward([_FIX, _FIX], judge=fake, embedder=Same(), reference_explanations=[["x"], []],
    ...                              tests=[["assert 1"]] * 2)
    >>> [None if r is None else round(r, 6) for r in rewards]
    [5.0, None]
    """
    from ledex.training.embeddings import get_embedder, mean_cosine

    references = _column(kwargs, "reference_explanations", len(completions), [])
    rewards: list[float | None] = []
    for assessment, refs in zip(assess(completions, judge=judge, **kwargs), references):
        if assessment.problem:
            rewards.append(R_MIN)
        elif not refs:
            rewards.append(None)
        else:
            embedder = embedder or get_embedder()
            rewards.append(explanation_score(mean_cosine(embedder, assessment.candidate.explanation, list(refs))))
    return rewards


def format_reward(completions: Sequence[Any], *, judge: Judge | None = None, **kwargs: Any) -> list[float | None]:
    """0 for a usable explanation + one code block; -5 for malformed or gaming answers.

    >>> fake = lambda codes, tests: [Check(0.0) for _ in codes]
    >>> format_reward([_FIX, "```python\\nx = 1\\n```\\n```python\\ny = 2\\n```"], judge=fake, tests=[["assert 1"]] * 2)
    [0.0, -5.0]
    """
    return [R_MIN if a.problem else 0.0 for a in assess(completions, judge=judge, **kwargs)]


@dataclass(frozen=True)
class Reward:
    """One reward in the registry: TRL logs it as rewards/<function.__name__>/mean and sums the
    rewards with their weights (`ledex-train rl --weight-<name>` overrides `weight`)."""

    name: str
    function: Callable[..., list[float | None]]
    weight: float = 1.0


# The registry: `rl` trains on every reward here, in this order. A new reward is one line here
# (plus, if wanted, a `weight_<name>` field in rl.RLArgs for a CLI flag). Weights 1.0: an unweighted
# sum; the paper credits R(e) and R(r) at separate tokens instead (see rl's module docstring).
REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward("explanation", explanation_reward, 1.0),
    Reward("refinement", refinement_reward, 1.0),
    Reward("format", format_reward, 1.0),
)}


def bind(function: Callable, **bound: Any) -> Callable:
    """A reward function with judge/embedder/mode fixed, keeping its name (TRL logs rewards/<name>/mean)."""

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return function(completions, **bound, **kwargs)

    reward.__name__ = reward.__qualname__ = function.__name__
    reward.__doc__ = function.__doc__
    return reward


def bound_rewards(*, judge: Judge, embedder: Any, mode: Mode = Mode.EXPLAIN) -> list[Callable]:
    """Every registered reward, in registry order, bound to `judge` and `mode`, and to `embedder`
    where the function takes one.

    >>> [f.__name__ for f in bound_rewards(judge=None, embedder=None)]
    ['explanation_reward', 'refinement_reward', 'format_reward']
    """
    def resources(function: Callable) -> dict:
        takes_embedder = "embedder" in inspect.signature(function).parameters
        return {"judge": judge, "mode": mode, **({"embedder": embedder} if takes_embedder else {})}

    return [bind(r.function, **resources(r.function)) for r in REWARDS.values()]


def reward_weights(overrides: dict[str, float] | None = None) -> list[float]:
    """The weights of the registered rewards, in registry order; `overrides` maps a name to a weight.

    >>> reward_weights({"format": 0.5})
    [1.0, 1.0, 0.5]
    """
    overrides = overrides or {}
    return [float(overrides.get(name, r.weight)) for name, r in REWARDS.items()]


if __name__ == "__main__":
    tests = {"tests": [["assert f(3) == 6", "assert f(0) == 0"]] * 4, "reference_codes": [["def f(n):\n    return sum(range(n + 1))"]] * 4,
             "reference_explanations": [["range(n) excludes n, so the last number is never added."]] * 4}
    answers = [_FIX, "```python\ndef f(n):\n    return sum(range(n))\n```",
               "Wrong bound.\n```python\ndef f(n):\n    return sum(range(n))\n```",
               "Stop early.\n```python\nimport sys\ndef f(n):\n    sys.exit(0)\n```"]
    for name, reward in REWARDS.items():
        print(name, [None if r is None else round(r, 2) for r in reward.function(answers, **tests)])
