"""Search-based candidates (engine/search.py) on the real sandbox, and the one ranking rule
(engine/ranking.py), with the real model where it scores.

    .venv/bin/python -m pytest -q tests/test_search.py
"""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest
from helpers import tree_digest, write_tree

from ledex.engine.backends import ReplayBackend
from ledex.engine.failures import discover, group_by_suspect
from ledex.engine.outcomes import is_hung
from ledex.engine.fixer import FixConfig, FixEngine
from ledex.engine.ranking import rank
from ledex.engine.search import SearchConfig
from ledex.sandbox.models import Limits

SEEDED = {
    "seq.py": (
        "def last(xs, k):\n"
        "    \"\"\"The last k items.\"\"\"\n"
        "    return xs[len(xs) - k - 1:]\n\n\n"
        "def count_below(xs, limit):\n"
        "    n = 0\n"
        "    for x in xs:\n"
        "        if x > limit:\n"
        "            n += 1\n"
        "    return n\n"),
    "tests/test_seq.py": (
        "from seq import count_below, last\n\n\n"
        "def test_last_two():\n    assert last([1, 2, 3, 4], 2) == [3, 4]\n\n\n"
        "def test_last_none():\n    assert last([1, 2], 0) == [] or True\n\n\n"
        "def test_count_below():\n    assert count_below([1, 2, 3, 4], 3) == 2\n    assert count_below([5, 6], 3) == 0\n\n\n"
        "def test_count_empty():\n    assert count_below([], 3) == 0\n"),
}
EXPLAINS = "The slice starts one item too early: `len(xs) - k - 1` counts one more than k."


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Discovered once for the module: no test changes the workspace (one asserts it)."""
    workspace = write_tree(tmp_path_factory.mktemp("seeded") / "ws", SEEDED)
    failures = {f.test.split("::")[-1]: f for f in discover(workspace).failures}
    assert set(failures) == {"test_last_two", "test_count_below"}
    return workspace, failures


def _fix(workspace, failure, search=SearchConfig(max_fixes=1), cancel=None):
    engine = FixEngine(ReplayBackend([EXPLAINS]), workspace, FixConfig(samples=1, rounds=1, search=search,
                                                                        likelihood=False))
    return engine.fix(failure, cancel=cancel)


def test_a_seeded_off_by_one_and_a_swapped_comparison_are_found_and_verified(seeded):
    workspace, failures = seeded
    before = tree_digest(workspace)
    off = _fix(workspace, failures["test_last_two"])
    assert off.best is not None and off.best.source == "search" and off.best.source_label == "found by search"
    assert "return xs[len(xs) - k:]" in off.best.patch.new_text
    assert off.best.explanation.startswith("Line 3: ") and off.best.explanation.endswith(EXPLAINS)
    assert off.search.screened >= 1 and off.search.processes >= 1 and off.search.verified == 1
    swapped = _fix(workspace, failures["test_count_below"])
    assert swapped.best is not None and "if x < limit:" in swapped.best.patch.new_text
    assert swapped.best.to_dict()["source"] == "search"
    assert tree_digest(workspace) == before  # verification never touches the user's files


def test_a_verified_search_fix_is_offered_before_the_model_explains_it(seeded):
    """The editor offers the fix as soon as it is verified (issue 15: the model's explanation of
    a search fix took 20.9 s of the 44.4 s wait); the same candidate comes again, explained."""
    workspace, failures = seeded
    seen = []
    engine = FixEngine(ReplayBackend([EXPLAINS]), workspace, FixConfig(samples=1, rounds=1, likelihood=False,
                                                                        search=SearchConfig(max_fixes=1)))
    result = engine.fix(failures["test_last_two"], on_candidate=lambda c: seen.append((c, c.verified, c.explanation)))
    (first, verified, before), (again, _, after) = [s for s in seen if s[1]]
    assert first is again is result.best and verified
    assert before.startswith("Line 3: ") and after == f"{before} {EXPLAINS}"


def test_a_number_the_model_invented_is_not_shown_next_to_a_verified_fix(seeded):
    """roman 5.2 (fresh-user run X3): "expected to return 196, but it returned 198" explained a
    verified fix; no such value was in anything the model saw. Such sentences are dropped."""
    workspace, failures = seeded
    engine = FixEngine(ReplayBackend([f"It returned 198 items instead of 196. {EXPLAINS}"]), workspace,
                       FixConfig(samples=1, rounds=1, likelihood=False, search=SearchConfig(max_fixes=1)))
    best = engine.fix(failures["test_last_two"]).best
    assert best.explanation.endswith(f"`. {EXPLAINS}") and "198" not in best.explanation


@pytest.mark.parametrize("babble", [
    "It returns the items that should be kept. However, it returns the items that should be kept.",  # X4, inflection
    "The test file is set to test the test file.",  # names nothing the edit changed (X4)
    "The slice `len(xs) - k - 1` drops the `user_data` items first.",  # code the project has not (X11 F8)
    "The slice `len(xs) - k - 1` starts one item early, and the",  # cut off mid-sentence (X11 F8)
])
def test_babble_is_not_shown_next_to_a_verified_fix(seeded, babble):
    """A model explanation of a search fix that repeats itself or names nothing on the edited
    lines is dropped; the edit in words stays (every fresh-user run saw such text)."""
    workspace, failures = seeded
    engine = FixEngine(ReplayBackend([babble]), workspace,
                       FixConfig(samples=1, rounds=1, likelihood=False, search=SearchConfig(max_fixes=1)))
    best = engine.fix(failures["test_last_two"]).best
    assert best.explanation.startswith("Line 3: ") and best.explanation.endswith("`.")


def test_every_edit_of_the_fixed_line_is_verified_before_the_search_stops(tmp_path):
    """pyjwt 2.10.1 (fresh-user run X12 F8): after the first fix the search went on for after_fix_s,
    so under load `(4 - rem)` came alone or with the wrong `(3 + rem)` and the "tests cannot tell"
    warning. The other edits of the fixed line are verified first, whatever the time."""
    workspace = write_tree(tmp_path / "ws", {
        "names.py": "def first_name(full):\n    return full.split(' ')[-1]\n",
        "tests/test_names.py": "from names import first_name\n\n\ndef test_first():\n    assert first_name('ada lovelace') == 'ada'\n"})
    (failure,) = group_by_suspect(discover(workspace).failures)
    result = _fix(workspace, failure, SearchConfig(max_fixes=5, after_fix_s=0.0))
    verified = [c for c in result.candidates if c.verified]
    assert {c.edit_after for c in verified} >= {"0", "-2"}, [(c.edit_after, c.reason) for c in result.candidates]
    assert all(c.alternatives == len(verified) - 1 for c in verified)


def test_the_search_ends_soon_after_its_first_complete_fix(tmp_path):
    """Validators' btc check (fresh-user run X9 F13): the exact inverse of the slip was verified at
    6 s, and the search went on for its whole 60 s for a second fix. After the first fix that
    makes every related failing test pass, it goes on for after_fix_s at most. A fix at risk of
    fitting the tests (`n > -1`, a changed constant) does not count as one (X12: `pass` for a
    `raise` ended the search before the exact inverse was tried)."""
    workspace = write_tree(tmp_path / "ws", {
        "sign.py": "def nonneg(n):\n    if n > 0:\n        return True\n    k = n * 2\n    return k > 100\n",
        "tests/test_sign.py": ("from sign import nonneg\n\n\ndef test_zero():\n    assert nonneg(0)\n\n\n"
                               "def test_others():\n    assert nonneg(2) and not nonneg(-1)\n"),
    })
    (failure,) = group_by_suspect(discover(workspace).failures)
    two = _fix(workspace, failure, SearchConfig(max_fixes=2, after_fix_s=60.0, batch=4))  # `n >= 0`, `n > -1`
    assert (two.search.verified, two.search.complete, two.search.stopped) == (2, 1, "exhausted"), two.search
    one = _fix(workspace, failure, SearchConfig(max_fixes=2, after_fix_s=0.0, batch=4))
    # after_fix_s counts from leaving the fix's line (X12 F8): its other edits are verified, the later lines' not
    assert (one.search.verified, one.search.complete, one.search.stopped) == (2, 1, "fixes"), one.search
    assert one.search.screened < two.search.screened and one.best.patch.new_text == two.best.patch.new_text


def test_the_search_respects_its_budget_and_cancellation(seeded):
    workspace, failures = seeded
    tiny = _fix(workspace, failures["test_count_below"], SearchConfig(max_runs=3, batch=2))
    assert tiny.search.screened <= 3 and tiny.search.stopped == "runs"
    # what passed a screen is verified, even when that screen spent the budget (X6: the right fix, variant
    # 575 of 600, passed and was never verified)
    assert tiny.search.verified_runs == tiny.search.screen_passed
    cancel = threading.Event()
    cancel.set()
    cancelled = _fix(workspace, failures["test_count_below"], cancel=cancel)
    assert cancelled.search.stopped == "cancelled" and cancelled.candidates == []


def test_a_variant_that_passed_the_screen_that_spent_the_runs_budget_is_verified(seeded):
    """docopt-ng 0.9.0 (fresh-user run X6): the right flip passed its screen as variant 575 of
    the 600 the runs budget allows, and the search stopped before verifying it. Here the budget
    is exactly the variants up to the right one, screened in one batch."""
    from ledex.engine.localize import read_source
    from ledex.engine.search import repairs_for

    workspace, failures = seeded
    failure = failures["test_count_below"]
    order = [r.patch.new_text for r in repairs_for(read_source(workspace / "seq.py"), failure.suspect, failure)]
    right = next(i for i, text in enumerate(order) if "if x < limit:" in text) + 1
    result = _fix(workspace, failure, SearchConfig(max_fixes=1, max_runs=right, batch=right))
    assert result.search.screened == right and result.search.stopped in ("runs", "fixes")
    assert result.best is not None and "if x < limit:" in result.best.patch.new_text


def test_a_function_with_thousands_of_edits_makes_them_only_while_its_budget_lasts(tmp_path):
    """parse 1.20.2 (fresh-user run X4): Parser._handle_field has 3,839 single-site edits, each a
    patch of the 1,060-line file; the search made them all before its deadline was ever checked
    (12 min of a 60 s budget). They are made as the search goes now: out of time, it stops with
    most of them never made (this function has 31,682; making them all takes minutes)."""
    from ledex.engine.search import Search

    lines = "".join(f"    v{i} = v{i - 1} + {i} * 2 if v{i - 1} > {i} else v{i - 1} - {i}\n" for i in range(1, 100))
    module = f"def big(v0):\n{lines}    return v99\n"
    workspace = write_tree(tmp_path / "ws", {"mod.py": module,
                                             "tests/test_mod.py": "from mod import big\n\n\ndef test_big():\n"
                                                                  "    assert big(0) == -1\n"})
    (failure,) = discover(workspace, coverage=False).failures
    stats = Search(workspace, failure, SearchConfig(max_seconds=4), lambda repair, stop: False,
                   limits=Limits(wall_s=30)).run([failure.suspect])
    assert stats.stopped == "time" and 0 < stats.candidates < 2000, stats


SLOW_WHEN_FIXED = {
    "seq.py": "def last(xs, k):\n    return xs[len(xs) - k - 1:]\n",
    "tests/test_seq.py": (
        "import time\n\nfrom seq import last\n\n\n"
        "def test_last_two():\n    assert last([1, 2, 3, 4], 2) == [3, 4]\n\n\n"
        "def test_slow_once_fixed():\n    if last([1, 2, 3], 1) == [3]:\n        time.sleep(120)\n"),
}


def test_the_time_budget_cuts_a_verification_that_is_already_running(tmp_path):
    # The fix passes the failing test at once (the screen), but its full verification (the rest of
    # the file) sleeps 120 s: the deadline must kill that sandbox run, not wait for it.
    workspace = write_tree(tmp_path / "ws", SLOW_WHEN_FIXED)
    failure = next(f for f in discover(workspace).failures if f.test.endswith("test_last_two"))
    budget = 12.0
    result = _fix(workspace, failure, SearchConfig(max_seconds=budget, max_fixes=1))
    assert result.search.stopped == "time" and result.search.seconds < budget + 8
    assert not any(c.verified for c in result.candidates)


CAPPED = {
    "cap.py": ("def capped_sum(xs, cap):\n    total = 0\n    for x in xs:\n        total += x\n"
               "    if total > cap:\n        total = cap + 1\n    return total\n"),
    "tests/test_cap.py": ("from cap import capped_sum\n\n\n"
                          "def test_below():\n    assert capped_sum([1, 2], 10) == 3\n\n\n"
                          "def test_empty():\n    assert capped_sum([], 10) == 0\n\n\n"
                          "def test_capped():\n    assert capped_sum([5, 6], 10) == 10\n"),
}


def test_a_hung_tests_loop_body_is_searched_before_its_header():
    """roman 5.2 (fresh-user run X3): `index = len(numeral)` for `index += ...` hung the tests;
    without coverage of a hung test the header's many edits (each hanging for the screen's
    timeout) came first and used the whole budget. A loop that never ends updates its state
    wrongly in its body: that comes first, bottom-up."""
    from ledex.engine.failures import Failure
    from ledex.engine.localize import Suspect
    from ledex.engine.search import repairs_for

    text = ("def count(s, step):\n    index, total = 0, 0\n    while index < len(s) and total >= 0:\n"
            "        total += 1\n        index = step\n    return total\n")
    suspect = Suspect("calc.py", "count", 1, 6, text, "stack sampling")
    hung = Failure("t.py::test_count", "t.py", 1, "did not finish within 2 s (the sandbox's per-test timeout)",
                   'Traceback (most recent call last):\n  File "/ws/calc.py", line 3, in count\nTestTimeout: ...',
                   suspect)
    lines = [r.edit.line for r in repairs_for(text, suspect, hung)]
    assert lines[0] == 5 and lines.index(3) > lines.index(4)  # the body (bottom-up), then the header
    assert any(r.edit.operator == "assign" and r.edit.line == 5 for r in repairs_for(text, suspect, hung)[:8])
    failed = Failure(hung.test, hung.file, 1, "assert 1 == 2", hung.details, suspect)  # not hung: traceback first
    assert [r.edit.line for r in repairs_for(text, suspect, failed)][0] == 3


def test_the_most_suspicious_line_is_searched_first(tmp_path):
    from ledex.engine.localize import read_source
    from ledex.engine.search import repairs_for

    workspace = write_tree(tmp_path / "ws", CAPPED)
    (failure,) = discover(workspace).failures
    # Line 6 runs in the failing test only (Ochiai 1.0); the traceback never enters capped_sum.
    assert failure.suspect.qualname == "capped_sum" and failure.suspect.lines[0] == (6, 1.0)
    text = read_source(workspace / "cap.py")
    assert repairs_for(text, failure.suspect, failure)[0].edit.line == 6
    assert repairs_for(text, failure.suspect, failure, by_sbfl=False)[0].edit.line == 7  # bottom-up
    on_six = sum(r.edit.line == 6 for r in repairs_for(text, failure.suspect, failure))
    result = _fix(workspace, failure)
    old, new = CAPPED["cap.py"].splitlines(), result.best.patch.new_text.splitlines()
    assert [n for n, (a, b) in enumerate(zip(old, new), 1) if a != b] == [6] and result.best.verified
    assert 1 <= result.search.first_fix_order <= on_six


def test_without_screening_each_candidate_is_verified_on_its_own(seeded):
    workspace, failures = seeded
    result = _fix(workspace, failures["test_last_two"], SearchConfig(screen=False, max_runs=40, max_fixes=1))
    assert result.best is not None and result.search.processes == 0 and result.search.verified_runs >= 1


def test_ledex_fix_searches_by_default_names_the_source_and_no_search_turns_it_off(seeded, tmp_path, capsys):
    import json

    from ledex.cli import main

    workspace, _ = seeded
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([EXPLAINS]))
    argv = ["fix", str(workspace), "--model", f"replay:{answers}", "--test", "tests/test_seq.py::test_last_two"]
    code = main(argv)  # search is on by default (issue 20), no flag needed
    out = capsys.readouterr().out
    assert code == 0 and "candidate 1 (found by search, round 0) [verified]" in out
    assert EXPLAINS in " ".join(out.split())  # after the edit in words, wrapped at 92 columns
    assert main([*argv, "--json"]) == 0  # the failure's timings hold its search (fresh-user run X10 F2)
    (failure,) = json.loads(capsys.readouterr().out)["failures"]
    assert failure["timings"]["search"] > 0 and set(failure["timings"]) == {"generation", "verification", "search"}
    code = main([*argv, "--samples", "1", "--rounds", "1", "--no-search"])  # the model's (unusable) answer only
    out = capsys.readouterr().out
    assert code == 1 and "found by search" not in out


def _candidate(code, verified=True, **fields):
    values = dict(verified=verified, code=code, pass_rate=1.0 if verified else 0.0, round=0, source="search",
                  operator="compare", loglik=None, edit_size=1)
    return SimpleNamespace(**{**values, **fields})


@pytest.fixture(scope="module")
def model():
    """The embedded model in this process (llama.cpp), loaded once for the module."""
    from ledex.engine.backends import load_backend

    try:
        return load_backend()
    except Exception as exc:  # noqa: BLE001 - no embedded model on this machine
        pytest.skip(f"the embedded model is not available: {exc}")


ADD_CHAT = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}]
LIKELY = "```python\ndef add(a, b):\n    return a + b\n```"
GARBLED = "```python\ndef add(a, b):\n    b a + return\n```"


def test_the_backend_scores_a_likely_answer_above_a_garbled_one_in_process_and_in_the_worker(model, tmp_path):
    import json

    from ledex.engine.backends import LogprobsUnsupported, load_backend
    from ledex.engine.genworker import WorkerBackend
    from ledex.engine.ranking import score_codes

    likely, garbled = model.completion_logprobs(ADD_CHAT, [LIKELY, GARBLED])
    assert garbled < likely < 0
    worker = WorkerBackend()  # the language server's backend: the model in a child process
    try:
        assert worker.completion_logprobs(ADD_CHAT, [LIKELY, GARBLED]) == pytest.approx([likely, garbled], abs=0.05)
    finally:
        worker.close()
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["x"]))
    replay = WorkerBackend(f"replay:{answers}")
    try:
        with pytest.raises(LogprobsUnsupported):
            replay.completion_logprobs(ADD_CHAT, [LIKELY])
        assert score_codes(replay, ADD_CHAT, ["def add(a, b):\n    return a + b"]) == [None]  # ranked by edit size
    finally:
        replay.close()
    endpoint = load_backend("http://127.0.0.1:9/v1")  # never contacted: the chat API cannot score a given answer
    with pytest.raises(LogprobsUnsupported, match="generated tokens only"):
        endpoint.completion_logprobs(ADD_CHAT, [LIKELY])
    assert score_codes(endpoint, ADD_CHAT, ["def add(a, b):\n    return a + b"]) == [None]


def test_a_candidate_passing_only_the_shown_asserts_ranks_below_a_correct_one(model):
    from ledex.engine.format import Mode, Problem, build_messages
    from ledex.engine.ranking import score_codes

    wrong = "def count_below(xs, limit):\n    n = 0\n    for x in xs:\n        if x <= limit:\n            n += 1\n    return n"
    problem = Problem("The function `count_below` must count the items strictly below `limit`.", wrong,
                      "assert count_below([1, 2, 3, 4], 3) == 2\nAssertionError: assert 3 == 2")
    overfit, right = _candidate(wrong.replace("<=", ">=")), _candidate(wrong.replace("<=", "<"))
    for candidate, loglik in zip((overfit, right), score_codes(model, build_messages(problem, Mode.REFINE),
                                                              [overfit.code, right.code])):
        candidate.loglik = loglik
    assert right.loglik is not None and rank([overfit, right]) == [right, overfit]


def test_a_changed_constant_ranks_below_the_models_verified_fix():
    constant = _candidate("def half(n):\n    return n // 3", operator="constant", edit_after="3", loglik=-5.0)
    model = SimpleNamespace(verified=True, pass_rate=1.0, round=1, source="model", loglik=-30.0, edit_size=4)
    unverified = _candidate("x", verified=False)
    assert rank([unverified, constant, model]) == [model, constant, unverified]


def test_another_variable_or_a_deleted_statement_carries_the_same_risk_as_a_changed_constant():
    """webcolors 24.11.1 (fresh-user run): a verified swap of `hex_digits` for `hex_value` was
    applied over the verified exact inverse `== 4` -> `== 3`, which only a changed constant's
    risk had put second. Among risky edits plausibility decides; the model's fix comes first."""
    swap = _candidate("def f(d, v):\n    return len(v) == 4", operator="name", edit_after="v", loglik=-9.0)
    constant = _candidate("def f(d, v):\n    return len(d) == 3", operator="constant", edit_after="3", loglik=-6.0)
    dropped = _candidate("def f(d, v):\n    return True", operator="drop_condition", edit_after="", loglik=-1.0)
    compare = _candidate("def f(d, v):\n    return len(d) != 4", operator="compare", edit_after="!=", loglik=-20.0)
    model = SimpleNamespace(verified=True, pass_rate=1.0, round=1, source="model", loglik=-30.0, edit_size=4)
    assert rank([swap, dropped, model, constant, compare]) == [compare, model, dropped, constant, swap]


def test_the_episode_log_keeps_each_candidates_source(tmp_path):
    from ledex.engine.episodes import EpisodeLog

    log = EpisodeLog(tmp_path / "episodes.sqlite3")
    episode = log.start(workspace="/w", test="t", test_file="f", suspect_path="seq.py", suspect_function="last",
                        task="", wrong_code="", feedback="", model="m")
    for idx, source in enumerate(("search", "model")):
        log.add_candidate(episode, idx, explanation="", code="", diff="", verified=True, pass_rate=1.0, reason="",
                          round=0, suspect="seq.py::last", source=source)
    assert [c.source for c in log.get(episode).candidates] == ["search", "model"]


def test_future_annotations_with_type_checking_imports_and_a_slice_bound_are_searched(tmp_path):
    """A module with `from __future__ import annotations` whose annotations name an import made
    only for type checking (humanize's lists.py): every variant failed to install in the screen
    (the annotation was evaluated), so search found nothing. The slice off-by-one found there is a
    "bound" edit, not a changed magic constant, so it carries no test-overfitting risk."""
    workspace = write_tree(tmp_path / "ws", {
        "lists.py": ("from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
                     "if TYPE_CHECKING:\n    from collections.abc import Sequence\n\n\n"
                     "def all_but_last(items: Sequence[str]) -> list[str]:\n    return list(items[:-2])\n"),
        "tests/test_lists.py": ("from lists import all_but_last\n\n\n"
                                "def test_all_but_last():\n    assert all_but_last(['a', 'b', 'c']) == ['a', 'b']\n"),
    })
    failure = discover(workspace).failures[0]
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and fixed.best.source == "search", fixed.search
    assert "items[:-1]" in fixed.best.patch.new_text and fixed.best.operator == "bound"


def test_failing_tests_sharing_a_session_fixture_are_screened_as_pytest_runs_them(tmp_path):
    """semver's rst doctests read `Version` from the session-scoped doctest_namespace that an
    autouse fixture of its tests fills: the screen tore session fixtures down after every test
    (nextitem=None), so the last test of the group failed under every variant and search found
    nothing for `match_expr[2:]` -> `match_expr[1:]` (semver 3.1.2, Version.match)."""
    workspace = write_tree(tmp_path / "ws", {
        "parity.py": "def is_even(n):\n    return n % 2 != 0\n",
        "tests/conftest.py": ("import pytest\n\n\n@pytest.fixture(scope='session')\n"
                              "def namespace():\n    return {}\n"),
        "tests/test_parity.py": ("from parity import is_even\n\n\n"
                                 "def test_fills(namespace):\n    namespace['n'] = 4\n    assert is_even(4)\n\n\n"
                                 "def test_reads(namespace):\n    assert is_even(namespace['n'])\n"),
    })
    failure, = group_by_suspect(discover(workspace).failures)
    assert failure.also, "both tests share the suspect: one group, screened together"
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and fixed.best.source == "search", fixed.search
    assert "n % 2 == 0" in fixed.best.patch.new_text


def test_a_function_under_a_memoised_caller_is_screened_with_fresh_caches(tmp_path):
    """wcwidth 0.2.13 (fresh-user run X7): `@lru_cache def wcwidth()` calls the buggy `_bisearch`;
    the screen switched `_bisearch`'s code but the caller's cache kept the first run's answers, so
    every variant failed its screen and the search found nothing. Every workspace cache is
    cleared between variants."""
    workspace = write_tree(tmp_path / "ws", {
        "width.py": ("import functools\n\nLIMIT = 10\n\n\ndef _above(x, limit):\n    return x > limit\n\n\n"
                     "@functools.lru_cache(maxsize=None)\ndef is_wide(x):\n    return _above(x, LIMIT)\n"),
        "tests/test_width.py": ("from width import is_wide\n\n\ndef test_ten_is_wide():\n    assert is_wide(10)\n\n\n"
                                "def test_nine_is_narrow():\n    assert not is_wide(9)\n"),
    })
    (failure,) = group_by_suspect(discover(workspace).failures)
    assert [s.qualname for s in failure.suspects][:2] == ["is_wide", "_above"]  # the cached caller first
    # comparisons only: the caller's own `_above(x + 1, LIMIT)` (+-1 on an argument) verifies too, and
    # this is about the callee's variant, screened under the caller's cache
    fixed = _fix(workspace, failure, SearchConfig(max_fixes=1, operators=("compare",)))
    assert fixed.best is not None and fixed.best.source == "search", fixed.search
    assert "return x >= limit" in fixed.best.patch.new_text and fixed.search.processes >= 1


def test_a_function_under_a_functools_wraps_decorator_is_screened(tmp_path):
    """validators 0.22.0 (fresh-user run X9): every public function is wrapped by `@validator`
    (functools.wraps); the screen swapped the wrapper's code, not the function's, so no variant
    passed its screen and `<=` for `<` in `between` was never found. Screened now, and found."""
    workspace = write_tree(tmp_path / "ws", {
        "checks.py": ("import functools\n\n\ndef validator(func):\n    @functools.wraps(func)\n"
                      "    def wrapper(*args):\n        return bool(func(*args))\n    return wrapper\n\n\n"
                      "@validator\ndef between(value, low, high):\n    return low < value <= high\n"),
        "tests/test_checks.py": ("from checks import between\n\n\ndef test_low_end():\n    assert between(1, 1, 5)\n\n\n"
                                 "def test_outside():\n    assert not between(0, 1, 5)\n"),
    })
    (failure,) = group_by_suspect(discover(workspace).failures)
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and fixed.best.source == "search", fixed.search
    assert "return low <= value <= high" in fixed.best.patch.new_text
    assert fixed.search.screen_passed >= 1 and fixed.search.processes >= 1


def test_module_state_one_screened_run_leaves_does_not_decide_the_next(tmp_path):
    """shortuuid 1.0.13 (fresh-user run X9 F4): the screen ran every variant in one process, so a
    run that failed after changing module state (shortuuid's set_alphabet) failed every later run,
    the right variant's too, and the exact inverse of the slip was never found for the group. Here
    the buggy run registers the name: in one process every later variant met "already registered".
    Each run now starts from the state the tests' collection left."""
    workspace = write_tree(tmp_path / "ws", {
        "registry.py": ("NAMES = {}\n\n\ndef register(name, value):\n    if name in NAMES:\n"
                        "        raise KeyError(f'{name} is already registered')\n"
                        "    NAMES[name] = value - 1\n    return NAMES[name]\n"),
        "tests/test_registry.py": ("from registry import register\n\n\n"
                                   "def test_register():\n    assert register('a', 2) == 2\n\n\n"
                                   "def test_register_other():\n    assert register('b', 5) == 5\n"),
    })
    failure = group_by_suspect(discover(workspace).failures)[0]
    assert failure.suspect.qualname == "register" and len(failure.also) == 1
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and fixed.best.source == "search", fixed.search
    assert "NAMES[name] = value\n" in fixed.best.patch.new_text
    assert fixed.search.processes == 1 and fixed.search.screen_passed >= 1


def test_a_verified_fix_leaving_related_failures_failing_does_not_end_the_search(tmp_path):
    """wcwidth 0.2.13 (fresh-user run X7): `ubound = mid - 1` -> `ubound = mid` passed its own
    problem's tests, stopped the search, and was offered (and --apply would write it) while one of
    the other failures sharing the bug still failed; the exact inverse of the slip came later in
    the search's order. Other problems' failing tests that suspect the same code are re-run with
    each candidate: a fix that leaves some failing does not stop the search and ranks below one
    that fixes them all."""
    workspace = write_tree(tmp_path / "ws", {
        "limits.py": ("def _below(x, limit):\n    return x < limit - 1\n\n\n"
                      "def small(x):\n    return _below(x, 10)\n\n\ndef tiny(x):\n    return _below(x, 3)\n"),
        "tests/test_small.py": ("from limits import _below, small\n\n\ndef test_small():\n    assert small(9)\n"
                                "    assert not small(10)\n\n\ndef test_below():\n    assert _below(0, 5) and not _below(7, 5)\n"),
        "tests/test_tiny.py": ("from limits import _below, tiny\n\n\ndef test_tiny():\n    assert tiny(2)\n"
                               "    assert not tiny(3)\n\n\ndef test_below_far():\n    assert _below(1, 9) and not _below(9, 1)\n"),
    })  # the passing tests of _below make each caller its failing test's top suspect: two problems
    groups = {g.test.split("::")[-1]: g for g in group_by_suspect(discover(workspace).failures)}
    small = groups["test_small"]
    assert small.suspect.qualname == "small" and small.related == ("tests/test_tiny.py::test_tiny",)
    fixed = _fix(workspace, small, search=SearchConfig(max_fixes=1))  # the editor's: stop at the first
    assert fixed.best.complete and fixed.best.also_fixes == (1, 1), fixed.search
    assert fixed.best.suspect == "limits.py::_below"  # `x <= limit - 1` or `x < limit`: the slip undone
    partial = [c for c in fixed.candidates if c.verified and not c.complete]  # small's `_below(x, 11)`
    assert partial and partial[0].also_fixes == (0, 1) and "_below(x, 11)" in partial[0].patch.new_text


def test_a_failing_subtest_is_seen_by_the_screen(tmp_path):
    """unittest's subTest (and pytest's `subtests`) report a failure as a report of its own that
    runtestprotocol does not return, and pytest prints a 'u' per subtest with no newline before
    the screen's own lines: the screen's baseline read as 'passed' (or not at all), so
    python-slugify 9.2.0's word-boundary failure was never screened (one sandbox run per
    candidate, 140 s for 5)."""
    workspace = write_tree(tmp_path / "ws", {
        "parity.py": "def is_even(n):\n    return n % 2 != 0\n",
        "tests/test_parity.py": ("import unittest\n\nfrom parity import is_even\n\n\n"
                                 "class T(unittest.TestCase):\n    def test_even(self):\n        for n in (2, 4):\n"
                                 "            with self.subTest(n=n):\n                self.assertTrue(is_even(n))\n"),
    })
    failure, = discover(workspace).failures
    fixed = _fix(workspace, failure)
    assert fixed.search.processes >= 1 and not fixed.search.notes, fixed.search
    assert fixed.best is not None and "n % 2 == 0" in fixed.best.patch.new_text


HANGS_IN_A_DOCTEST = {
    "halving.py": ('def steps_to_one(n):\n    """Halvings from n down to 1.\n\n'
                   '    >>> steps_to_one(8)\n    3\n    >>> steps_to_one(1)\n    0\n    """\n'
                   "    steps = 0\n    while n > 1:\n        n //= 1\n        steps += 1\n    return steps\n"),
    "pytest.ini": "[pytest]\naddopts = --doctest-modules\n",
}


def test_a_doctest_that_hangs_is_screened_in_one_process(tmp_path):
    """doctest runs each example under a bare `except:`, which swallowed the screen's per-variant
    timeout, so the next example hung until the process was killed, and the project's
    `--doctest-modules` (in addopts) was dropped by the screen: parse 1.22.4's hanging README
    doctest fell back to one sandbox run per candidate."""
    workspace = write_tree(tmp_path / "ws", HANGS_IN_A_DOCTEST)
    found = discover(workspace, limits=Limits(wall_s=60, test_timeout_s=2))
    failure, = found.failures
    assert failure.test.endswith("halving.steps_to_one") and failure.suspect.qualname == "steps_to_one"
    assert is_hung(found.verdict.outcomes[0])  # not re-run under coverage: it would only hang again
    fixed = _fix(workspace, failure, SearchConfig(max_fixes=1, variant_timeout_s=0.5))
    assert fixed.search.processes >= 1 and not fixed.search.notes, fixed.search
    assert fixed.best is not None and "n //= 2" in fixed.best.patch.new_text


WEEKS = {
    "weeks.py": ("class Week:\n    def __init__(self, n):\n        self.n = n\n\n    def __add__(self, k):\n"
                 "        return Week(self.n + k)\n\n    @classmethod\n    def weeks_until(cls, last):\n"
                 "        w = cls(1)\n        while w.n <= last:\n            yield w\n            w + 1\n"),
    "tests/test_weeks.py": ("from weeks import Week\n\n\ndef test_three():\n"
                            "    assert [w.n for w in Week.weeks_until(3)] == [1, 2, 3]\n"),
}


def test_a_statement_whose_value_is_dropped_is_made_the_assignment_it_was_meant_to_be(tmp_path):
    """isoweek 1.3.3 (fresh-user run X11 F3): `w += 1` written `w + 1` in a @classmethod generator
    hung its test at the line ledex named, and no edit turned the statement back into `w += 1`."""
    workspace = write_tree(tmp_path / "ws", WEEKS)
    found = discover(workspace, limits=Limits(wall_s=60, test_timeout_s=2))
    failure, = found.failures
    assert failure.hung and failure.suspect.qualname == "Week.weeks_until"
    fixed = _fix(workspace, failure, SearchConfig(max_fixes=1, variant_timeout_s=0.5))
    assert fixed.best is not None and "            w += 1\n" in fixed.best.patch.new_text, fixed.candidates


WEEK_START = {
    "weeks.py": ("from datetime import date, timedelta\n\n\nclass Week:\n    def __init__(self, year, week):\n"
                 "        self.year, self.week = year, week\n\n    def monday(self):\n        first = date(self.year, 1, 3)\n"
                 "        return first + timedelta(weeks=self.week, days=0)\n"),
    "tests/test_weeks.py": ("from datetime import date\n\nfrom weeks import Week\n\n\ndef test_first():\n"
                            "    assert Week(2011, 1).monday() == date(2011, 1, 3)\n\n\n"
                            "def test_tenth():\n    assert Week(2011, 10).monday() == date(2011, 3, 7)\n"),
}


def test_an_off_by_one_in_a_calls_argument_is_searched(tmp_path):
    """isoweek 1.3.3 (fresh-user run X11 F10): `timedelta(weeks=self.week - 1, ...)` written
    `weeks=self.week`; +-1 was tried on slice, index and range() bounds only."""
    workspace = write_tree(tmp_path / "ws", WEEK_START)
    found = discover(workspace)
    failure = group_by_suspect(found.failures)[0]
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and "timedelta(weeks=self.week - 1, days=0)" in fixed.best.patch.new_text, fixed.candidates
    assert fixed.best.operator == "bound" and fixed.best.complete  # an off-by-one, not a changed magic value


SHUFFLED = {
    "cal.py": "def leap(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 1)\n",
    "tests/test_cal.py": (
        "import random\n\nimport pytest\n\nfrom cal import leap\n\n"
        "CASES = [(2000, (True,)), (1900, (False,)), (2024, (True,)), (2023, (False,)), (2400, (True,)),\n"
        "         (2100, (False,)), (1996, (True,)), (1800, (False,))]\n"
        "random.shuffle(CASES)  # ids name `want` by index: they differ from run to run\n\n\n"
        "@pytest.mark.parametrize('year,want', CASES)\n"
        "def test_leap(year, want):\n    assert leap(year) == want[0]\n\n\n"
        "def test_century():\n    assert not leap(1900)\n"),
}


def test_a_fix_is_verified_when_the_parametrized_ids_change_from_run_to_run(tmp_path):
    """isodate 0.7.2 (fresh-user run): discovery's ids were "not found" in verification, so the
    exact right fix was rejected as "requested tests did not run". Such tests are re-run by
    function, and every case of it must pass (engine/rerun.py)."""
    workspace = write_tree(tmp_path / "ws", SHUFFLED)
    failures = discover(workspace).failures
    assert {f.test.split("[")[0] for f in failures} == {"tests/test_cal.py::test_leap"} and len(failures) == 2
    failure = group_by_suspect(failures)[0]
    result = _fix(workspace, failure)
    assert result.best is not None and "year % 400 == 0" in result.best.patch.new_text
    assert not [c.reason for c in result.candidates if "did not run" in c.reason]
    assert result.search.screened >= 1 and not [n for n in result.search.notes if "no screening" in n]


def test_a_case_whose_id_changed_is_judged_by_every_case_of_its_function():
    """engine/judging.judge: stricter than the ids (any failing case of the function fails the
    candidate, named), never looser; an id that did not run, parametrized or not, still fails."""
    from dataclasses import replace

    from ledex.engine.failures import Failure
    from ledex.engine.judging import judge
    from ledex.sandbox.models import TestOutcome, Verdict

    def verdict(*outcomes):
        return Verdict(passed=False, outcomes=tuple(TestOutcome(n, o, "", "", "t.py", 1, 0.0) for n, o in outcomes),
                       requested=(), pass_rate=0.0, stdout_tail="", stderr_tail="", duration_s=0.0,
                       killed_reason=None, error=None, isolation="none")

    failure = Failure("t.py::test_f[2000-want0]", "t.py", 1, "", "", None, passing_siblings=("t.py::test_f[1900-want1]",))
    assert judge(verdict(("t.py::test_f[2000-want1]", "passed"), ("t.py::test_f[1900-want0]", "passed")), failure) == (True, "")
    ok, reason = judge(verdict(("t.py::test_f[2000-want1]", "passed"), ("t.py::test_f[1900-want0]", "failed")), failure)
    assert not ok and "t.py::test_f[1900-want0] still failed" in reason
    ok, reason = judge(verdict(("t.py::test_f[2000-want0]", "passed"), ("t.py::test_g", "passed")),
                       replace(failure, passing_siblings=("t.py::test_h",)))
    assert not ok and reason == "the fix breaks t.py::test_h"


# a suite that needs its test command's environment (STYLE) or options (--style): without them every
# test errors in an autouse fixture (fresh-user run X3 seeded the same into roman 5.2's conftest)
NEEDS_STYLE = {**SEEDED, "tests/conftest.py": (
    "import os\n\nimport pytest\n\n\n"
    "def pytest_addoption(parser):\n    parser.addoption('--style')\n\n\n"
    "@pytest.fixture(autouse=True)\ndef style(request):\n"
    "    if (request.config.getoption('style') or os.environ.get('STYLE')) != 'strict':\n"
    "        raise RuntimeError('run the tests with STYLE=strict or --style=strict')\n")}


NEEDS_STYLE_ASSERTED = {**NEEDS_STYLE, "tests/conftest.py": NEEDS_STYLE["tests/conftest.py"].replace(
    "    if (request.config.getoption('style') or os.environ.get('STYLE')) != 'strict':\n"
    "        raise RuntimeError('run the tests with STYLE=strict or --style=strict')\n",
    "    assert request.config.getoption('style') == 'strict', 'run the tests with --style=strict'\n")}


RUNNER = {"runtests.py": "import sys\n\nimport pytest\n\nsys.exit(pytest.main(['--style=strict', *sys.argv[1:]]))\n"}


@pytest.mark.parametrize("needs", ["environment", "option", "runner", "runner, asserted"])
def test_a_custom_test_command_screens_only_where_the_screen_fails_as_the_command_does(needs, tmp_path, capsys):
    """`--test-command 'env STYLE=strict {python} ...'`: the screen starts with the same `env
    STYLE=strict` and screens (it used to run each candidate on its own: X2's isodate used the
    60 s budget); `{python} -m pytest --style=strict`: the screen's pytest gets the option too
    (X5: itsdangerous's `-o pythonpath=src` was left out, so nothing was screened). A runner
    script that adds the option itself: the screen lacks it, its unchanged code fails with
    RuntimeError where the command's run failed with AssertionError, so the search says so and
    verifies each candidate with the command (a screen without the command's setup fails every
    variant: the right fix was never tried, 454c1da, reverted)."""
    import json

    from ledex.cli import main

    files = {**(NEEDS_STYLE_ASSERTED if needs.endswith("asserted") else NEEDS_STYLE), **RUNNER}
    workspace = write_tree(tmp_path / "ws", files)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([EXPLAINS]))
    options = "-q -p no:cacheprovider --junitxml={junit} {tests}"
    command = {"environment": f"env STYLE=strict {{python}} -m pytest {options}",
               "option": f"{{python}} -m pytest --style=strict {options}"}.get(needs, f"{{python}} runtests.py {options}")
    code = main(["fix", str(workspace), "--model", f"replay:{answers}", "--test", "tests/test_seq.py::test_last_two",
                 "--test-command", command, "--json", "--samples", "1", "--rounds", "1"])
    document = json.loads(capsys.readouterr().out)
    (failure,) = document["failures"]
    assert code == 0 and failure["candidates"][0]["verified"] and failure["candidates"][0]["source"] == "search"
    unscreened = [n for n in document["notes"] if "test_last_two: search: no screening" in n]
    if needs in ("environment", "option"):
        assert unscreened == []
    elif needs == "runner":
        assert unscreened and "the screen failed with RuntimeError, the tests' command with AssertionError" in unscreened[0]
    else:  # the fixture's assert is an AssertionError too (fresh-user run X4): the message tells them apart
        assert unscreened and "the screen failed otherwise: 'run the tests with --style=strict" in unscreened[0]


FORGE = {
    "cal.py": ("def cases():\n    return [(2000, True), (1900, False), (2024, True)]\n\n\n"
               "def leap(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 1)\n"),
    "tests/test_cal.py": ("import pytest\n\nfrom cal import cases, leap\n\n\n"
                          "@pytest.mark.parametrize('year,want', cases())\n"
                          "def test_leap(year, want):\n    assert leap(year) == want\n"),
}


def test_a_candidate_that_drops_the_failing_case_is_not_verified(tmp_path):
    """Re-running by function (engine/rerun.py) must not judge a failing case away: a candidate for
    the function that builds the test's parameters drops the failing case, so its id is "not
    found". The unchanged code finds it, so no re-run by function, and the candidate fails."""

    from ledex.engine.localize import function_named, make_suspect, read_source

    workspace = write_tree(tmp_path / "ws", FORGE)
    (failure,) = discover(workspace).failures
    assert failure.test == "tests/test_cal.py::test_leap[2000-True]"
    source = read_source(workspace / "cal.py")
    builder = make_suspect("cal.py", "cases", function_named(source, "cases"), source, "hand-picked")
    forged = "Drop the failing year.\n```python\ndef cases():\n    return [(1900, False), (2024, True)]\n```"
    engine = FixEngine(ReplayBackend([forged]), workspace, FixConfig(samples=1, rounds=1, search=None, likelihood=False))
    (candidate,) = engine.fix(dataclasses.replace(failure, suspect=builder, suspects=(builder,))).candidates
    assert candidate.patch is not None and not candidate.verified and not engine.ids_change_between_runs
    assert "did not run" in candidate.reason


def test_where_ids_change_a_candidate_that_drops_a_case_is_not_verified(tmp_path):
    """The same forge where the ids really change from run to run (so tests are re-run by
    function): every case must still run - fewer cases than asked for fails the candidate."""

    from ledex.engine.localize import function_named, make_suspect, read_source

    workspace = write_tree(tmp_path / "ws", {
        "cal.py": ("import random\n\n\ndef cases():\n    c = [(y, (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0),))"
                   " for y in (2000, 1900, 2024, 2023, 1996, 1800, 2100, 2400)]\n    random.shuffle(c)\n    return c\n\n\n"
                   "def leap(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 1)\n"),
        "tests/test_cal.py": ("import pytest\n\nfrom cal import cases, leap\n\n\n"
                              "@pytest.mark.parametrize('year,want', cases())\n"
                              "def test_leap(year, want):\n    assert leap(year) == want[0]\n")})
    failure = group_by_suspect(discover(workspace).failures)[0]  # 2000 and 2400 fail
    source = read_source(workspace / "cal.py")
    builder = make_suspect("cal.py", "cases", function_named(source, "cases"), source, "hand-picked")
    forged = ("Drop the failing year.\n```python\ndef cases():\n    return [(y, (y % 4 == 0 and y % 100 != 0,))"
              " for y in (1900, 2024, 2023, 1996, 1800, 2100, 2400)]\n```")
    engine = FixEngine(ReplayBackend([forged]), workspace, FixConfig(samples=1, rounds=1, search=None, likelihood=False))
    (candidate,) = engine.fix(dataclasses.replace(failure, suspect=builder, suspects=(builder,))).candidates
    assert engine.ids_change_between_runs and not candidate.verified
    assert candidate.reason == "the fix changes the cases of tests/test_cal.py::test_leap: 7 ran, 8 were asked for"  # 1 in 8! runs: same order


HUNG = {
    "calc.py": ("def count(s, step):\n    index, total, limit = 0, 0, len(s)\n"
                "    while index < limit and total >= 0 and step > 0:\n        total += 1\n        index = step\n"
                "    return total\n"),
    "tests/test_calc.py": "from calc import count\n\n\ndef test_count():\n    assert count('abcd', 1) == 4\n",
}


def test_a_hung_tests_fix_is_found_in_small_screens(tmp_path):
    """roman 5.2 (fresh-user run X3): most variants of a hung loop hang too (2 s each in the
    screen); one screen of every variant was cut by the deadline and reported nothing, though
    the fix had passed. Small batches report as they go; the loop's body comes first."""
    workspace = write_tree(tmp_path / "ws", HUNG)
    (failure,) = discover(workspace, limits=Limits(wall_s=60, test_timeout_s=2)).failures
    result = _fix(workspace, failure, SearchConfig(max_seconds=40.0, max_fixes=1))
    assert result.best is not None and "index += step" in result.best.patch.new_text
    assert result.search.processes >= 1 and result.search.stopped == "fixes"


HUNG_IN_ITS_HEADER = {
    "digits.py": ("def to_digits(number, base):\n    out = []\n    while number >= 0:\n"
                  "        number, digit = divmod(number, base)\n        out.append(digit)\n    return out[::-1]\n\n\n"
                  "def base_name(base):\n    return {2: 'binary', 16: 'hex'}.get(base, 'other')\n"),
    "tests/test_digits.py": ("from digits import base_name, to_digits\n\n\n"
                             "def test_ten():\n    assert to_digits(10, 2) == [1, 0, 1, 0]\n\n\n"
                             "def test_names():\n    assert base_name(2) == 'binary' and base_name(3) == 'other'\n"),
}


def test_a_loop_header_that_never_ends_is_fixed_in_the_screens_short_timeout(tmp_path):
    """shortuuid 1.0.13 (fresh-user run X9 F6): `while number:` slipped to `while number >= 0:`;
    the loop body's variants come first and most hang too, 2 s each, so the header's `> 0` was not
    reached in the 60 s search. A hung test whose file's passing tests take milliseconds screens
    its variants with hung_pace x that (at least 0.25 s)."""
    from ledex.engine.search import Search

    workspace = write_tree(tmp_path / "ws", HUNG_IN_ITS_HEADER)
    (failure,) = discover(workspace, limits=Limits(wall_s=60, test_timeout_s=2)).failures
    assert failure.hung and 0 < failure.pace_s < 0.1
    config = SearchConfig(max_seconds=40.0, max_fixes=1)
    assert Search(workspace, failure, config, lambda repair, stop: False, limits=Limits()).variant_timeout_s() == 0.25
    slow_sibling = dataclasses.replace(failure, pace_s=1.0)  # a file of slow tests keeps the usual timeout
    assert Search(workspace, slow_sibling, config, lambda repair, stop: False, limits=Limits()).variant_timeout_s() == 2.0
    result = _fix(workspace, failure, config)
    assert result.best is not None and result.search.stopped == "fixes", result.search
    assert "while number > 0:" in result.best.patch.new_text or "while number >= 1:" in result.best.patch.new_text


def test_a_test_that_needs_an_earlier_test_of_its_file_is_verified_in_the_files_order(tmp_path):
    """pathspec 0.12.1 (fresh-user run X10 F3): a test reads a class attribute that an earlier test
    of its class sets. Verification re-ran the failing test first, where it fails with another
    error (AttributeError, not the suite's AssertionError), so no candidate could verify, the
    exact inverse of the slip included; the screen met the same. Re-runs keep the order the tests
    ran in the suite, and a screen that fails otherwise than the suite is not trusted."""
    workspace = write_tree(tmp_path / "ws", {
        "loops.py": ("class Loop(Exception):\n    def __init__(self, first, second):\n"
                     "        super().__init__(first, second)\n\n    @property\n    def second(self):\n"
                     "        return self.args[0]\n"),
        "tests/test_loops.py": ("from loops import Loop\n\n\nclass TestLoop:\n    def test_1_probe(self):\n"
                                "        type(self).ready = True\n\n    def test_2_second(self):\n"
                                "        assert self.ready\n        assert Loop('a', 'b').second == 'b'\n"),
    })
    (failure,) = discover(workspace).failures
    assert failure.message.startswith("AssertionError") and failure.reruns == (
        "tests/test_loops.py::TestLoop::test_1_probe", "tests/test_loops.py::TestLoop::test_2_second")
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and "return self.args[1]" in fixed.best.patch.new_text, fixed.search
    assert any(note.startswith("no screening (the screen failed with AttributeError") for note in fixed.search.notes)


def test_a_failure_whose_whole_file_is_re_run_is_run_by_the_files_path(tmp_path):
    """tinycss2 1.4.0 (fresh-user run X10 F10): a verification listed the file's 8,903 node ids,
    which pytest takes three times as long as the file itself, and no verification fit its
    limit. When every test of a failing test's file is re-run (500 or more), the sandbox is asked for the file."""
    workspace = write_tree(tmp_path / "ws", {
        "nth.py": ("def pair(a, b):\n    return (a, b)\n\n\n"
                   "def parse(word):\n    return pair(1, 2) if word == 'odd' else pair(2, 0) if word == 'even' else (0, 0)\n"),
        "tests/test_nth.py": ("import pytest\n\nfrom nth import parse\n\n\n"
                              "@pytest.mark.parametrize('n', range(600))\ndef test_other(n):\n    assert parse(str(n)) == (0, 0)\n\n\n"
                              "def test_odd():\n    assert parse('odd') == (2, 1)\n\n\ndef test_even():\n    assert parse('even') == (2, 0)\n"),
        "tests/test_more.py": "from nth import parse\n\n\ndef test_blank():\n    assert parse('') == (0, 0)\n",
    })
    (failure,) = discover(workspace).failures
    assert len(failure.reruns) == 603 and failure.rerun_args == ("tests/test_more.py::test_blank", "tests/test_nth.py")
    fixed = _fix(workspace, failure)
    assert fixed.best is not None and "return pair(2, 1) if word == 'odd'" in fixed.best.patch.new_text, fixed.search
