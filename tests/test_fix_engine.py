"""The fix loop's logic with recorded answers and the real sandbox: verification, ranking,
iterative refinement, hostile answers. (The real model runs end to end in test_cli.py.)
Search candidates are off here (search=None): test_search.py covers them."""

from pathlib import Path

from helpers import CHUNKS, outcomes_of, tree_digest

from ledex.engine.apply import apply_patch
from ledex.engine.backends import ReplayBackend
from ledex.engine.failures import discover
from ledex.engine.fixer import FixConfig, FixEngine

STOCK_TEST = "tests/test_stock.py::test_low_stock_at_threshold"
RIGHT = "The comparison excludes the threshold itself.\n```python\ndef is_low_stock(quantity, threshold):\n    return quantity <= threshold\n```"
BREAKS_SIBLING = "Always low.\n```python\ndef is_low_stock(quantity, threshold):\n    return True\n```"
STILL_WRONG = "Use the limit.\n```python\ndef is_low_stock(quantity, threshold):\n    return quantity <= limit\n```"
GARBAGE = "I am not sure what to do here."
REWRITES_TEST = ("Change the test.\n```python\ndef test_low_stock_at_threshold():\n    assert True\n```")


def stock_failure(workspace: Path):
    found = discover(workspace, tests=["tests/test_stock.py"])
    return next(f for f in found.failures if f.test == STOCK_TEST)


def test_discovery_finds_the_seeded_bugs_and_their_functions(example):
    found = discover(example)
    suspects = {f.test: (f.suspect.path, f.suspect.qualname) for f in found.failures}
    assert suspects == {
        STOCK_TEST: ("inventory/stock.py", "is_low_stock"),
        "tests/test_pricing.py::test_discount_takes_percent_off": ("inventory/pricing.py", "apply_discount"),
        "tests/test_text.py::test_slugify_lowercases_and_joins": ("inventory/text.py", "slugify"),
    }
    stock = next(f for f in found.failures if f.test == STOCK_TEST)
    assert "tests/test_stock.py::test_not_low_when_plenty" in stock.passing_siblings
    assert "assert is_low_stock(5, 5)" in stock.test_source


def test_the_prompt_does_not_depend_on_where_the_project_lives(example, tmp_path):
    """The traceback in the prompt names workspace files relative to it: a dry run goes on in a
    scratch copy under /tmp (ledex fix without --apply), a collect builds projects in its own
    folders, users keep projects anywhere; the same failure must give the model the same prompt."""
    import shutil

    from ledex.engine.fixer import problem_for

    moved = tmp_path / "somewhere" / "else" / "inventory"
    shutil.copytree(example, moved)
    here, there = stock_failure(example), stock_failure(moved)
    assert str(example) in here.details and str(moved) in there.details  # what the user sees: real paths
    assert problem_for(here) == problem_for(there)
    assert 'File "tests/test_stock.py", line' in problem_for(here).feedback


def test_only_a_fix_that_passes_without_breaking_siblings_is_verified(example):
    before = tree_digest(example)
    backend = ReplayBackend([GARBAGE, BREAKS_SIBLING, REWRITES_TEST, RIGHT])
    result = FixEngine(backend, example, FixConfig(samples=4, rounds=1, search=None)).fix(stock_failure(example))
    assert tree_digest(example) == before  # verification never touches the workspace
    reasons = {c.raw: c.reason for c in result.candidates}
    assert "no code block" in reasons[GARBAGE]
    assert "breaks tests/test_stock.py::test_not_low_when_plenty" in reasons[BREAKS_SIBLING]
    assert "does not define is_low_stock" in reasons[REWRITES_TEST]
    best = result.best
    assert best is not None and best.raw == RIGHT and best.verified and best.round == 1
    assert result.ranked[0] is best
    # independent check: apply the verified patch and run the tests ourselves
    apply_patch(example, best.patch)
    outcomes = outcomes_of(example, "tests/test_stock.py")
    assert outcomes and set(outcomes.values()) == {"passed"}


def test_second_round_refines_the_first_rounds_answer_with_new_feedback(example):
    backend = ReplayBackend([STILL_WRONG, RIGHT])
    result = FixEngine(backend, example, FixConfig(samples=1, rounds=3, search=None)).fix(stock_failure(example))
    assert [(c.round, c.verified) for c in result.candidates] == [(1, False), (2, True)]
    round_two = backend.prompts[1]
    assert "quantity <= limit" in round_two[2]["content"]  # the previous refinement is the new wrong code
    assert round_two[1] == backend.prompts[0][1]  # same task
    assert "NameError" in round_two[3]["content"] and "NameError" not in backend.prompts[0][3]["content"]
    assert len(backend.prompts) == 2  # stopped once a fix was verified


def test_identical_patches_are_verified_once(example):
    backend = ReplayBackend([RIGHT])
    engine = FixEngine(backend, example, FixConfig(samples=3, rounds=1, search=None))
    result = engine.fix(stock_failure(example))
    assert [c.verified for c in result.candidates] == [True, True, True]
    assert len(engine._verdicts) == 1


class PacedBackend:
    """Recorded answers delivered at a model's pace (one character per `pace_s`), honouring
    cancel the way the real backends do: the engine's timing logic needs answers that take
    time, and the real 135M model cannot be made to write a correct one on cue."""

    def __init__(self, answers: list[str], pace_s: float = 0.01):
        from ledex.engine.models import ModelIdentity

        self.answers, self.pace_s, self.calls = answers, pace_s, []
        self.identity = ModelIdentity(base="paced", base_hash="0" * 64)

    def generate(self, messages, sampling, *, cancel=None, on_token=None):
        import time

        from ledex.engine.backends import Generation

        text = self.answers[len(self.calls) % len(self.answers)]
        sent = text[:0]
        for char in text:
            if cancel is not None and cancel.is_set():
                self.calls.append("cancelled")
                return Generation(sent, "cancelled")
            sent += char
            time.sleep(self.pace_s if len(self.calls) else 0)  # the first answer comes at once
        self.calls.append("done")
        return Generation(sent, "stop")


def test_a_verified_fix_stops_the_sample_being_generated(example):
    """stop_at_first (the editor's mode): once a fix verifies, the answer in progress is cut
    short and is not recorded as a candidate; without it every sample is generated."""
    slow = "Maybe the other way round.\n```python\ndef is_low_stock(quantity, threshold):\n" + \
           "    return quantity >= threshold  # " + "x" * 400 + "\n```"
    failure = stock_failure(example)
    first = PacedBackend([RIGHT, slow, slow], pace_s=0.1)  # ~45 s unless cut short: room for a slow verify
    result = FixEngine(first, example, FixConfig(samples=3, rounds=1, stop_at_first=True, search=None)).fix(failure)
    assert first.calls == ["done", "cancelled"]
    assert [(c.raw, c.verified) for c in result.candidates] == [(RIGHT, True)]

    every = PacedBackend([RIGHT, slow, slow])
    result = FixEngine(every, example, FixConfig(samples=3, rounds=1, search=None)).fix(failure)
    assert every.calls == ["done", "done", "done"] and [c.verified for c in result.candidates] == [True, False, False]


def test_a_cancelled_fix_records_no_cut_off_answer(example):
    import threading

    cancel = threading.Event()
    backend = PacedBackend([GARBAGE, "slow " * 200])
    engine, failure = FixEngine(backend, example, FixConfig(samples=2, rounds=1, search=None)), stock_failure(example)
    def cancel_during_the_second_answer():  # the user cancels while the second answer is written
        import time

        deadline = time.monotonic() + 60
        while not backend.calls and time.monotonic() < deadline:  # after the problem's baseline run and answer 1
            time.sleep(0.01)
        time.sleep(0.5)
        cancel.set()

    threading.Thread(target=cancel_during_the_second_answer, daemon=True).start()
    result = engine.fix(failure, cancel=cancel)
    assert backend.calls == ["done", "cancelled"] and [c.raw for c in result.candidates] == [GARBAGE]


# --- ranked suspects and grouped failures (issue 12 items 6 and 7) ---

TAKE_WRONG = "Convert n.\n```python\ndef take(n, iterable):\n    return list(islice(iterable, int(n)))\n```"
CHUNKED_HALF = ("Special-case pairs.\n```python\ndef chunked(iterable, n):\n"
                "    return iter([['a', 'b'], ['c', 'd']])\n```")
CHUNKED_RIGHT = ("The arguments of take are swapped.\n```python\ndef chunked(iterable, n):\n"
                 "    return iter(partial(take, n, iter(iterable)), [])\n```")


def test_the_next_suspect_gets_candidates_when_the_first_gets_no_verified_fix(tmp_path):
    from helpers import write_tree

    workspace = write_tree(tmp_path, CHUNKS)
    found = discover(workspace, coverage=False)  # traceback order: take (the callee that raised) first
    failure = next(f for f in found.failures if f.test.endswith("test_chunked_even"))
    assert [s.qualname for s in failure.suspects][:2] == ["take", "chunked"]
    backend = ReplayBackend([TAKE_WRONG, CHUNKED_RIGHT])
    result = FixEngine(backend, workspace, FixConfig(samples=1, rounds=1, search=None)).fix(failure)
    assert [(c.suspect, c.verified) for c in result.candidates] == [
        ("seq/more.py::take", False), ("seq/more.py::chunked", True)]
    assert "`chunked`" in backend.prompts[1][1]["content"]
    only_first = FixEngine(ReplayBackend([TAKE_WRONG, CHUNKED_RIGHT]), workspace,
                           FixConfig(samples=1, rounds=1, suspects=1, search=None)).fix(failure)
    assert only_first.best is None and len(only_first.candidates) == 1


def test_failures_sharing_a_suspect_are_one_problem_verified_against_all(tmp_path):
    from helpers import write_tree

    from ledex.engine.failures import group_by_suspect

    workspace = write_tree(tmp_path, CHUNKS)
    found = discover(workspace)  # with coverage: chunked is every chunked failure's top suspect
    assert {f.test.split("::")[1]: f.suspect.qualname for f in found.failures} == {
        "test_chunked_even": "chunked", "test_chunked_odd": "chunked", "test_chunked_empty": "chunked"}
    groups = group_by_suspect(found.failures)
    assert len(groups) == 1 and groups[0].also == ("tests/test_more.py::test_chunked_odd",
                                                   "tests/test_more.py::test_chunked_empty")
    assert groups[0].passing_siblings == ("tests/test_more.py::test_take",)
    backend = ReplayBackend([CHUNKED_HALF, CHUNKED_RIGHT])
    result = FixEngine(backend, workspace, FixConfig(samples=2, rounds=1, search=None)).fix(groups[0])
    assert len(backend.prompts) == 2  # one set of candidates for the three failures (not 2 per failure)
    half, right = result.candidates
    assert not half.verified and "test_chunked_odd still failed" in half.reason
    assert right.verified and result.best is right
    assert "test_chunked_odd" in backend.prompts[0][1]["content"]  # the task names the other failing test


def test_the_cli_fixes_failures_of_one_bug_as_one_problem(tmp_path, capsys):
    import json

    from helpers import write_tree

    from ledex.cli import main

    workspace = write_tree(tmp_path / "ws", CHUNKS)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([CHUNKED_HALF, CHUNKED_RIGHT]))
    code = main(["fix", str(workspace), "--model", f"replay:{answers}", "--samples", "2", "--rounds", "1", "--json",
                 "--no-search"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and len(document["failures"]) == 1  # three failing tests, one problem
    group = document["failures"][0]
    assert group["test"].endswith("test_chunked_even") and len(group["also"]) == 2
    assert [(c["verified"], c["suspect"]) for c in group["candidates"]] == [
        (True, "seq/more.py::chunked"), (False, "seq/more.py::chunked")]  # 2 answers in all, not 2 per failure


# --- a fix must not break a passing test in another test file (found by a new user) ---

ELSEWHERE = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "tests/test_other.py": "from calc import add\n\n\ndef test_add_zero():\n    assert add(10, 0) == 10\n",
    "tests/test_unrelated.py": "def test_nothing_imported():\n    assert 1 + 1 == 2\n",
}
OVERFITS = "Special-case the test.\n```python\ndef add(a, b):\n    return a + b if b == 3 else 7\n```"
ADDS = "It subtracts.\n```python\ndef add(a, b):\n    return a + b\n```"


def test_a_fix_that_breaks_a_passing_test_in_another_file_is_not_verified(tmp_path):
    from helpers import write_tree

    workspace = write_tree(tmp_path, ELSEWHERE)
    (failure,) = discover(workspace).failures
    assert "tests/test_other.py::test_add_zero" in failure.passing_siblings  # imports calc
    assert "tests/test_unrelated.py::test_nothing_imported" not in failure.siblings  # does not
    result = FixEngine(ReplayBackend([OVERFITS, ADDS]), workspace, FixConfig(samples=2, rounds=1, search=None)).fix(failure)
    reasons = {c.raw: (c.verified, c.reason) for c in result.candidates}
    assert reasons[OVERFITS] == (False, "the fix breaks tests/test_other.py::test_add_zero")
    assert reasons[ADDS] == (True, "")
