"""ledex-lsp fixes as `ledex fix` does (issue 12 items 6 and 7 in the editor): the failures
that share their top suspect are one problem with one set of candidates, and when the top
suspect gets no verified fix the next suspect gets candidates. A real `python -m ledex.server`
subprocess, the real sandbox, recorded answers (`replay:`) so the path is deterministic;
tests wait for notifications, never sleep."""

from __future__ import annotations

import json

import pytest
from lsprotocol import types as lsp

from helpers import CHUNKS, write_tree
from lsp_helpers import (apply_text_edit, code_actions, episodes, ledex_diagnostics, open_doc, repeated_publishes,
                         session, state_is, wait_for)

pytestmark = pytest.mark.asyncio

# CHUNKS (helpers): suspects [chunked, take].
CHUNKED_HALF = ("Special-case pairs.\n```python\ndef chunked(iterable, n):\n"
                "    return iter([['a', 'b'], ['c', 'd']])\n```")  # passes test_chunked_even only
TAKE_EITHER_ORDER = ("take is called with its arguments swapped, so it accepts both orders.\n```python\n"
                     "def take(n, iterable):\n    if not isinstance(n, int):\n        n, iterable = iterable, n\n"
                     "    return list(islice(iterable, n))\n```")
FAILING = ["tests/test_more.py::test_chunked_even", "tests/test_more.py::test_chunked_odd",
           "tests/test_more.py::test_chunked_empty"]


async def test_failures_of_one_function_get_one_fix_and_the_next_suspect_is_tried(tmp_path):
    root = write_tree(tmp_path / "seq", CHUNKS)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([CHUNKED_HALF, TAKE_EITHER_ORDER]))  # one answer per prompt, in order
    more, tests = root / "seq" / "more.py", root / "tests" / "test_more.py"
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False}
    async with session(root, options, tmp_path / "home") as client:
        def ready() -> bool:  # both documents' diagnostics: each is its own notification
            found = [d for d in ledex_diagnostics(client, tests) + ledex_diagnostics(client, more)]
            return len(found) == 6 and all(d.data["state"] == "ready" for d in found)
        await wait_for(client, ready)
        on_tests = {d.data["test"]: d for d in ledex_diagnostics(client, tests)}
        assert sorted(on_tests) == sorted(FAILING)  # a diagnostic per failing test, each its own message
        assert len({d.data["episode"] for d in on_tests.values()}) == 1  # ... and one fix for the three
        assert all(d.data["verified"] == 1 for d in on_tests.values())
        on_suspect = ledex_diagnostics(client, more)
        assert {d.data["test"] for d in on_suspect} == set(FAILING)
        # the verified fix rewrites take, the second suspect: the diagnostic is on the line it changes there
        # (X5: it stayed on def chunked, line 9, where no fix was)
        assert [d.range.start.line for d in on_suspect] == [5, 5, 5]

        actions = await code_actions(client, tests, on_tests[FAILING[1]])
        fixes = [a for a in actions if a.title.startswith("Fix")]
        assert len(fixes) == 2 and fixes[0].is_preferred and "accepts both orders" in fixes[0].title
        assert fixes[1].title == "Fix (unverified: 1 of 3 failing tests pass with it): Special-case pairs."
        (edit,) = fixes[0].edit.document_changes  # the verified fix patches take, the second suspect
        assert edit.text_document.uri == more.as_uri()
        fixed = apply_text_edit(more.read_text(), edit.edits[0])
        assert "n, iterable = iterable, n" in fixed and fixed.endswith(CHUNKS["seq/more.py"].split("\n\n\n")[-1])
        titles = [r[0].title for r in client.progress_reports.values() if r and r[0].kind == "begin"]
        assert f"ledex: fixing {FAILING[0]} (and 2 more failing tests)" in titles

        sent = len(client.published)
        run = await client.workspace_execute_command_async(lsp.ExecuteCommandParams("ledex.runTests"))
        assert run["failures"] == 3  # the same failures of the same code: they keep their fix, nothing to send
        assert len(client.published) == sent and ledex_diagnostics(client, tests)
        assert repeated_publishes(client) == []  # each document was sent its diagnostics once per change

    (episode,) = episodes(root)  # one problem, not one per failing test
    assert episode["test"] == FAILING[0] and episode["suspect_function"] == "chunked"
    assert [(c["suspect"], c["verified"]) for c in episode["candidates"]] == [
        ("seq/more.py::chunked", 0), ("seq/more.py::take", 1)]  # two answers in all, not two per failure


# Two problems found together: the first needs the model (no single-site edit makes area right),
# the second is a flipped comparison the search fixes.
TWO_PROBLEMS = {
    "calc/__init__.py": "",
    "calc/shapes.py": 'def area(w, h):\n    """Area of a w x h rectangle."""\n    return 0\n',
    "calc/people.py": 'def is_adult(age):\n    """True from 18 years on."""\n    return age > 18\n',
    "tests/test_area.py": "from calc.shapes import area\n\n\ndef test_area():\n"
                          "    assert area(2, 3) == 6\n    assert area(4, 5) == 20\n",
    "tests/test_people.py": "from calc.people import is_adult\n\n\ndef test_is_adult():\n"
                            "    assert is_adult(18)\n    assert not is_adult(17)\n",
}
AREA = "area multiplies its sides.\n```python\ndef area(w, h):\n    return w * h\n```"


async def test_every_problem_is_searched_before_any_gets_model_rounds(tmp_path):
    """As `ledex fix` (fresh-user run X5): the second problem's search fix does not wait for the
    first problem's model rounds; both end fixed, each in one episode."""
    root = write_tree(tmp_path / "calc", TWO_PROBLEMS)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([AREA]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False}
    area_test, adult_test = "tests/test_area.py::test_area", "tests/test_people.py::test_is_adult"
    async with session(root, options, tmp_path / "home") as client:
        files = [root / "tests" / "test_area.py", root / "tests" / "test_people.py"]
        await wait_for(client, lambda: all(
            (found := ledex_diagnostics(client, f)) and found[0].data["state"] == "ready" for f in files))
        assert [ledex_diagnostics(client, f)[0].data["verified"] for f in files] == [1, 1]
        values = [(p.token, p.value) for p in client.progress_order]  # $/progress values arrive as plain dicts
        titles = {token: v["title"] for token, v in values if v["kind"] == "begin"}
        said = [(titles.get(token, ""), v.get("message", "")) for token, v in values if v["kind"] == "report"]
    area_said = [m for t, m in said if t.endswith(area_test)]
    assert area_said[:3] == ["search: single-site edits 0/1", "search: done 1/1",
                             "searched, no verified fix: waiting for the model"], area_said
    assert "round 1: generating 0/1" in area_said  # the model fixed area, in its own turn
    order = [(t.endswith(adult_test), m) for t, m in said]
    adult_searching = order.index((True, "search: single-site edits 0/1"))
    area_modelling = order.index((False, "round 1: generating 0/1"))
    assert adult_searching < area_modelling, order  # without the two turns: after area's model rounds
    by_test = {e["test"]: e for e in episodes(root)}
    assert sorted(by_test) == [area_test, adult_test]  # one episode per problem, over both turns
    assert [(c["source"], c["verified"]) for c in by_test[area_test]["candidates"]] == [("model", 1)]
    assert [(c["source"], c["verified"]) for c in by_test[adult_test]["candidates"]] == [("search", 1)]


async def test_a_candidate_no_test_could_run_with_is_not_offered_as_a_fix(tmp_path):
    """An answer whose import breaks collection ran no test at all: offered as a one-keystroke
    'Fix (unverified, 0% of tests pass)' it broke `import` for the whole project (fresh-user run X8,
    simplejson: `import json.safe`). It stays in the explanation, not in the quick fixes."""
    root = write_tree(tmp_path / "calc", {k: v for k, v in TWO_PROBLEMS.items() if "people" not in k})
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps(["Multiply.\n```python\nimport no_such_module_xyz\n\n\ndef area(w, h):\n"
                                  "    return no_such_module_xyz.mul(w, h)\n```"]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False}
    shapes = root / "calc" / "shapes.py"
    async with session(root, options, tmp_path / "home") as client:
        open_doc(client, shapes)
        await wait_for(client, state_is(client, shapes, "ready"))
        (suspect,) = ledex_diagnostics(client, shapes)
        titles = [a.title for a in await code_actions(client, shapes, suspect)]
    assert titles == ["Explain this failure", "Dismiss ledex suggestion"], titles
    (episode,) = episodes(root)
    (candidate,) = episode["candidates"]  # the episode keeps it, with why
    assert not candidate["verified"] and "no_such_module_xyz" in candidate["reason"], candidate


# One bug seen as two problems: test_total's top suspect is total (only the failing test runs it),
# but the bug is in tax, test_tax's suspect. tax's fix makes test_total pass too.
ONE_BUG_TWO_SUSPECTS = {
    "calc/__init__.py": "",
    "calc/rates.py": 'def tax(amount):\n    """A fifth of amounts from 100 on, else none."""\n'
                     "    return amount // 5 if amount > 100 else 0\n",
    "calc/prices.py": "from calc.rates import tax\n\n\ndef total(amount):\n    return amount + tax(amount)\n",
    "tests/test_a_rates.py": "from calc.rates import tax\n\n\ndef test_tax_at_100():\n    assert tax(100) == 20\n\n\n"
                             "def test_no_tax_below():\n    assert tax(50) == 0\n",
    "tests/test_b_prices.py": "from calc.prices import total\nfrom calc.rates import tax\n\n\n"
                              "def test_total():\n    assert total(100) == 120\n\n\n"
                              "def test_tax_small():\n    assert tax(50) == 0\n",
}
TAX = "The bound excludes 100.\n```python\ndef tax(amount):\n    return amount // 5 if amount >= 100 else 0\n```"


async def test_a_problem_another_verified_fix_repairs_gets_no_model_rounds(tmp_path):
    """Fresh-user run X8: after one problem's verified fix made the other problems' tests pass,
    the server still gave those problems minutes of model rounds (and offered their wrong-suspect
    answers). They now point at that fix instead, and the model is not asked for them."""
    root = write_tree(tmp_path / "shop", ONE_BUG_TWO_SUSPECTS)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([TAX, TAX]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False}
    tax_test, total_test = "tests/test_a_rates.py::test_tax_at_100", "tests/test_b_prices.py::test_total"
    files = [root / "tests" / "test_a_rates.py", root / "tests" / "test_b_prices.py"]
    async with session(root, options, tmp_path / "home") as client:
        await wait_for(client, lambda: all(
            (found := ledex_diagnostics(client, f)) and found[0].data["state"] == "ready" for f in files))
        tax_diag, total_diag = (ledex_diagnostics(client, f)[0] for f in files)
        assert tax_diag.data["verified"] == 1 and total_diag.data["verified"] == 0
        hover = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(files[1].as_uri()), total_diag.range.start))
        assert f"verified fix for {tax_test} makes this test pass too" in hover.contents.value
        (fix, *_) = await code_actions(client, files[1], total_diag)  # that fix is offered here too
        assert fix.title == "Fix: The bound excludes 100." and fix.is_preferred
        assert fix.edit.document_changes[0].text_document.uri == (root / "calc" / "rates.py").as_uri()
        assert (await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
            fix.command.command, arguments=fix.command.arguments))) == {"accepted": True}
    (episode,) = episodes(root)  # the model was asked about tax only; accepting there is logged in its episode
    assert episode["test"] == tax_test and episode["outcome"] == "accepted" and total_test not in episode["test"]
