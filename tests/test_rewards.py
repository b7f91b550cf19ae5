"""LEDEX reward functions on known cases: the real sandbox, the real CodeBLEU, the packaged embedder."""

from __future__ import annotations

import doctest

import pytest

from ledex.training import rewards
from ledex.training.rewards import Check, explanation_reward, format_reward, refinement_reward

TESTS = ["assert total(3) == 6", "assert total(0) == 0", "assert total(1) == 1"]
REFERENCE = "def total(n):\n    return sum(range(n + 1))"
REFERENCE_EXPLANATIONS = ["range(n) stops before n, so the last number n is never added to the sum.",
                          "The loop is off by one: range(n) excludes n itself; it should be range(n + 1)."]


def answer(explanation: str, code: str) -> str:
    return f"{explanation}\n\n```python\n{code}\n```" if explanation else f"```python\n{code}\n```"


GOOD = answer("The function misses n: range(n) stops before n, so range(n + 1) is needed.",
              "def total(n):\n    return sum(range(n + 1))")
WRONG = answer("The function misses n: range(n) stops before n.", "def total(n):\n    return sum(range(n))")
UNEXPLAINED = answer("Fixed.", "def total(n):\n    return sum(range(n + 1))")
HACKS = {
    "sys.exit": "import sys\ndef total(n):\n    sys.exit(0)",
    "os._exit": "import os\ndef total(n):\n    os._exit(0)",
    "pytest.skip": "import pytest\ndef total(n):\n    pytest.skip('later')",
    "always-equal": "class Any:\n    def __eq__(self, other):\n        return True\ndef total(n):\n    return Any()",
    "edits tests": "def total(n):\n    open('test_solution.py', 'w').write('')\n    return 0",
    "monkeypatch": "import _pytest.python\ndef total(n):\n    return n",
}


def columns(n: int) -> dict:
    return {"tests": [TESTS] * n, "setup": [""] * n, "entry_point": ["total"] * n,
            "reference_codes": [[REFERENCE]] * n, "reference_explanations": [REFERENCE_EXPLANATIONS] * n}


def test_doctests():
    assert doctest.testmod(rewards).failed == 0


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return rewards.SandboxJudge(tmp_path_factory.mktemp("judge"))


def test_correct_fix_beats_wrong_fix(judge):
    good, wrong = refinement_reward([GOOD, WRONG], judge=judge, **columns(2))
    assert good == pytest.approx(5.0)  # passes every test and matches the reference exactly
    assert wrong < good
    assert judge.runs == 2


def test_hacks_score_the_minimum_everywhere(judge):
    answers = [answer("Return early so nothing fails.", code) for code in HACKS.values()]
    for function in (refinement_reward, explanation_reward, format_reward):
        scores = function(answers, judge=judge, **columns(len(answers)))
        assert scores == [rewards.R_MIN] * len(answers), (function.__name__, dict(zip(HACKS, scores)))


def test_sandbox_catches_what_static_checks_miss(judge):
    """A hack the static check cannot see (os._exit reached through a dict) still scores the minimum:
    the real sandbox's verdict kind says the run was ended early or tampered with."""
    sneaky = "import os\ndef total(n):\n    os.__dict__['_ex' + 'it'](0)"
    assert rewards.gaming_reason(sneaky) is None
    [check] = judge([sneaky], rewards.Tests(tuple(TESTS), "", "total"))
    assert check.gaming and check.pass_rate == 0.0
    assert refinement_reward([answer("Stop.", sneaky)], judge=judge, **columns(1)) == [rewards.R_MIN]


def test_malformed_answers_get_the_minimum(judge):
    malformed = ["no code at all", "```python\ndef total(n):\n    return n\n```",  # no explanation
                 answer("Two blocks.", "x = 1") + "\n```python\ny = 2\n```", "Cut off.\n```python\ndef total(n):"]
    for function in (refinement_reward, explanation_reward, format_reward):
        assert function(malformed, judge=judge, **columns(len(malformed))) == [rewards.R_MIN] * len(malformed)


def test_explained_fix_beats_unexplained_fix(judge):
    good, unexplained = explanation_reward([GOOD, UNEXPLAINED], judge=judge, **columns(2))
    assert -5.0 <= unexplained < good <= 5.0
    assert good > 0  # close to the references (cosine above 0.7)


def test_no_references_fall_back():
    cols = columns(1) | {"reference_codes": [[]], "reference_explanations": [[]]}
    full = lambda codes, t: [Check(1.0) for _ in codes]  # noqa: E731
    assert refinement_reward([GOOD], judge=full, **cols) == [5.0]  # S_cb falls back to S_ut
    assert explanation_reward([GOOD], judge=full, **cols) == [None]  # no signal: TRL skips it


def test_conversational_completions(judge):
    message = [{"role": "assistant", "content": GOOD}]
    assert format_reward([message], judge=judge, **columns(1)) == [0.0]


def test_rl_builds_its_rewards_and_weights_from_the_registry():
    from ledex.training.rl import RLArgs, reward_functions, weights

    args = RLArgs(weight_refinement=2.0)
    names = [f.__name__ for f in reward_functions(args, judge=lambda codes, tests: [Check(1.0) for _ in codes])]
    assert names == [r.function.__name__ for r in rewards.REWARDS.values()]
    assert weights(args, len(names) + 1) == [1.0, 2.0, 1.0, 1.0]  # flag overrides; an extra reward weighs 1
    assert RLArgs().weight_format == rewards.REWARDS["format"].weight
