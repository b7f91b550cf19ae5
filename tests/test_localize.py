"""Localisation over real pytest tracebacks and real sandbox runs (pytest and coverage run for real
on small workspaces shaped after the bugs of issue 12)."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_tree

from ledex.engine.failures import DiscoveryError, coverage_selection, discover, group_by_suspect, read_junit
from ledex.engine.judging import judge
from ledex.engine.localize import TestFiles, frames, is_test_file, localize
from ledex.engine.project import Harness
from ledex.sandbox import Limits, run_tests, verify

FILES = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "from shop.money import cents\n\n\n"
        "class Cart:\n"
        "    def __init__(self):\n        self.items = []\n\n"
        "    def add(self, price):\n        self.items.append(cents(price))\n\n"
        "    def total(self):\n        return sum(self.items)\n"
    ),
    "shop/money.py": "def cents(price):\n    return int(price * 100) // 0\n",
    "shop/names.py": "def title(name):\n    return name.upper()\n",
    "tests/helpers.py": "def check(value, expected):\n    assert value == expected\n",
    "tests/test_shop.py": (
        "from shop.cart import Cart\nfrom shop.names import title\nfrom tests.helpers import check\n\n\n"
        "def test_cart_total():\n    cart = Cart()\n    cart.add(1.5)\n    assert cart.total() == 150\n\n\n"
        "def test_title():\n    check(title('ann lee'), 'Ann Lee')\n"
    ),
    "tests/__init__.py": "",
}


def run_pytest(workspace: Path):
    write_tree(workspace, FILES)
    report = workspace / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "--tb=native", "-p", "no:cacheprovider",
                    "-o", "junit_family=xunit1", f"--junitxml={report}"], cwd=workspace, capture_output=True)
    return {o.nodeid: o for o in read_junit(report, workspace)}


def test_deepest_workspace_frame_outside_tests_wins(tmp_path):
    outcome = run_pytest(tmp_path)["tests/test_shop.py::test_cart_total"]
    assert outcome.outcome == "failed" and "ZeroDivisionError" in outcome.details
    assert [f[2] for f in frames(outcome.details)][-3:] == ["test_cart_total", "add", "cents"]
    suspect = localize(tmp_path, outcome.details, "tests/test_shop.py", "test_cart_total")
    assert (suspect.path, suspect.qualname, suspect.reason) == ("shop/money.py", "cents", "traceback")
    assert suspect.source == FILES["shop/money.py"].rstrip()
    assert (suspect.start_line, suspect.end_line) == (1, 2)


def test_assertion_in_test_code_falls_back_to_the_called_function(tmp_path):
    outcome = run_pytest(tmp_path)["tests/test_shop.py::test_title"]
    assert outcome.outcome == "failed"
    # every frame is test code (the test and tests/helpers.py): nothing to fix there
    in_workspace = [Path(f[0]) for f in frames(outcome.details) if Path(f[0]).is_relative_to(tmp_path)]
    assert in_workspace and all(is_test_file(p.relative_to(tmp_path)) for p in in_workspace)
    suspect = localize(tmp_path, outcome.details, "tests/test_shop.py", "test_title")
    assert (suspect.path, suspect.qualname, suspect.reason) == ("shop/names.py", "title", "called by the test")


def test_methods_are_found_with_their_class(tmp_path):
    run_pytest(tmp_path)
    details = f'  File "{tmp_path}/shop/cart.py", line 12, in total\n    return sum(self.items)\n'
    suspect = localize(tmp_path, details, None, None)
    assert suspect.qualname == "Cart.total" and suspect.start_line == 11


def test_frames_outside_the_workspace_are_ignored(tmp_path):
    run_pytest(tmp_path)
    details = '  File "/usr/lib/python3/site-packages/x.py", line 3, in f\n'
    assert localize(tmp_path, details, None, None) is None


def test_non_utf8_source_is_never_a_suspect(tmp_path):
    run_pytest(tmp_path)
    (tmp_path / "shop" / "money.py").write_bytes(b"# caf\xe9\ndef cents(price):\n    return 1 // 0\n")
    details = f'  File "{tmp_path}/shop/money.py", line 3, in cents\n'
    assert localize(tmp_path, details, None, None) is None


# --- ranked suspects through the real sandbox (issue 12 items 4-6, issue 13: test code is never a suspect) ---

FIELD = {
    "pytest.ini": "[pytest]\naddopts = --doctest-modules\npython_files = test_*.py tests.py\n",
    "billing/__init__.py": "",
    "billing/docs.py": (
        "def total(values):\n    return sum(values) * 100\n\n\n"
        "class Receipt:\n"
        "    def __init__(self, lines, tip=0):\n        self.lines = list(lines)\n        self.tip = tip\n\n"
        "    def total(self):\n        return sum(self.lines)\n\n"
        "    async def settle(self, paid):\n        return self.total() - paid\n"
    ),
    "billing/ops.py": (
        "def add(a, b):\n    \"\"\"Add two numbers.\n\n    >>> add(1, 2)\n    3\n    >>> add(2, 2)\n    4\n    \"\"\"\n"
        "    return a + b + (a == 2)\n\n\n"
        "class Box:\n    def size(self):\n        \"\"\"\n        >>> Box().size()\n        2\n        \"\"\"\n"
        "        return 1 // 0\n"
    ),
    "tests/__init__.py": "",
    "tests/test_docs.py": (
        "from billing.docs import Receipt\n\n\n"
        "def test_total_includes_tip():\n    assert Receipt([1, 2], tip=5).total() == 8\n\n\n"
        "def test_total_without_tip():\n    assert Receipt([1, 2]).total() == 3\n"
    ),
    # a second bug gets a test file of its own: Ochiai over one file's failing tests would blame the
    # code both failing tests run (Receipt.__init__) for two bugs failing in one file
    "tests/test_settle.py": (
        "import asyncio\n\nfrom billing.docs import Receipt\n\n\n"
        "def test_total_of_lines():\n    assert sum(Receipt([1, 2]).lines) == 3\n\n\n"
        "def test_settle_returns_change():\n    assert asyncio.run(Receipt([1, 2]).settle(10)) == 7\n"
    ),
    # more-itertools' real bug shape: chunked calls take with swapped arguments; take raises
    "seq/__init__.py": "",
    "seq/more.py": (
        "from functools import partial\nfrom itertools import islice\n\n\n"
        "def take(n, iterable):\n    return list(islice(iterable, n))\n\n\n"
        "def first_two(iterable):\n    return take(2, iterable)\n\n\n"
        "def chunked(iterable, n):\n    return iter(partial(take, iter(iterable), n), [])\n"
    ),
    "tests/test_more.py": (
        "import seq.more as mi\n\n\n"
        "def test_take():\n    assert mi.take(2, 'abc') == ['a', 'b']\n\n\n"
        "def test_first_two():\n    assert mi.first_two([3, 4, 5]) == [3, 4]\n\n\n"
        "def test_chunked_even():\n    assert list(mi.chunked('abcd', 2)) == [['a', 'b'], ['c', 'd']]\n\n\n"
        "def test_chunked_odd():\n    assert list(mi.chunked('abc', 2)) == [['a', 'b'], ['c']]\n"
    ),
    # cachetools' shape: the code under test is reached through a mixin's self.decorator(...)
    # and through a class attribute (Cache = LRU); the assertion fails in test code
    "memo/__init__.py": "",
    "memo/deco.py": (
        "def cached(cache):\n    def decorator(func):\n        def wrapper(*args):\n"
        "            if args in cache:\n                return cache[args]\n"
        "            return func(*args)\n        return wrapper\n    return decorator\n\n\n"
        "class LRU:\n    def __init__(self):\n        self.data = {}\n\n"
        "    def put(self, key, value):\n        self.data[key] = value\n\n"
        "    def size(self):\n        return len(self.data) - 1\n"
    ),
    "tests/test_memo.py": (
        "from memo import deco\n\n\n"
        "class DecoratorMixin:\n    Cache = None\n\n    def decorator(self, cache):\n        return deco.cached(cache)\n\n"
        "    def test_caches(self):\n        calls = []\n        f = self.decorator({})(lambda x: calls.append(x) or x)\n"
        "        f(1)\n        f(1)\n        assert calls == [1]\n\n"
        "    def test_put(self):\n        cache = self.Cache()\n        cache.put(1, 2)\n        assert cache.data == {1: 2}\n\n"
        "    def test_size(self):\n        cache = self.Cache()\n        cache.put(1, 2)\n        assert cache.size() == 1\n\n\n"
        "class TestLRU(DecoratorMixin):\n    Cache = deco.LRU\n"
    ),
    # pytest's report of a failing assert calls Money.__repr__ (only in the failing test)
    "shop/__init__.py": "",
    "shop/money.py": (
        "class Money:\n    def __init__(self, cents):\n        self.cents = cents\n\n"
        "    def __repr__(self):\n        return f'Money({self.cents})'\n\n"
        "    def __eq__(self, other):\n        return isinstance(other, Money) and self.cents == other.cents\n\n\n"
        "def with_tax(price):\n    return Money(price.cents * 110 // 100 + 1)\n\n\n"
        "def total(prices):\n    return Money(sum(p.cents for p in prices))\n"
    ),
    "tests/test_money.py": (
        "from shop.money import Money, total, with_tax\n\n\n"
        "def test_with_tax():\n    assert with_tax(Money(100)) == Money(110)\n\n\n"
        "def test_total():\n    assert total([Money(1), Money(2)]) == Money(3)\n"
    ),
    # Django's layout: python_files = tests.py; its helper raises inside the test file
    "app/__init__.py": "",
    "app/text.py": "def slug(title):\n    return title.replace(' ', '-')\n",
    "app/tests.py": (
        "from app.text import slug\n\n\n"
        "def check(value, expected):\n    assert value == expected, value\n\n\n"
        "def test_slug_lowercases():\n    check(slug('A B'), 'a-b')\n"
    ),
}


@pytest.fixture(scope="module")
def field_run(tmp_path_factory):
    """One discovery (plain run + coverage run of the failing files) over FIELD."""
    workspace = write_tree(tmp_path_factory.mktemp("field"), FIELD)
    found = discover(workspace)
    return workspace, {f.test: f for f in found.failures}, found


def ranked(failure) -> list[str]:
    return [f"{s.path}::{s.qualname}" for s in failure.suspects]


def test_a_method_is_the_suspect_when_the_test_fails_on_its_own_assert(field_run):
    _, failures, _ = field_run
    tip = failures["tests/test_docs.py::test_total_includes_tip"]
    assert ranked(tip)[0] == "billing/docs.py::Receipt.total"  # not the module-level total()
    assert "billing/docs.py::total" not in ranked(tip)
    settle = failures["tests/test_settle.py::test_settle_returns_change"]  # an async method
    assert ranked(settle)[0] == "billing/docs.py::Receipt.settle"
    assert settle.suspect.source.startswith("    async def settle(self, paid):")


def test_a_failing_doctest_blames_the_docstrings_owner_with_expected_and_got(field_run):
    _, failures, _ = field_run
    add = failures["billing/ops.py::billing.ops.add"]
    assert (add.suspect.path, add.suspect.qualname, add.suspect.reason) == ("billing/ops.py", "add", "doctest")
    assert add.message == "add(2, 2): expected 4, got 5"
    size = failures["billing/ops.py::billing.ops.Box.size"]
    assert size.suspect.qualname == "Box.size" and "ZeroDivisionError" in size.message
    assert size.test_source is None  # the doctest's file is the code under test, not a test
    workspace = field_run[0]  # a candidate's verdict says the same (it said "014 Add two numbers.")
    verdict = run_tests(workspace, [add.test])
    assert judge(verdict, add) == (False, f"{add.test} still failed: add(2, 2): expected 4, got 5")


def test_spectrum_blames_the_caller_with_the_wrong_call_not_the_callee_that_raised(field_run, tmp_path):
    _, failures, _ = field_run
    for test in ("tests/test_more.py::test_chunked_even", "tests/test_more.py::test_chunked_odd"):
        failure = failures[test]
        assert "islice()" in failure.details and ", in chunked" not in failure.details  # only take is on the stack
        assert ranked(failure)[:2] == ["seq/more.py::chunked", "seq/more.py::take"]
        assert failure.suspects[0].score == 1.0 > failure.suspects[1].score  # take also runs in passing tests
    # without coverage the traceback alone blames the callee
    plain = discover(write_tree(tmp_path, FIELD), tests=["tests/test_more.py"], coverage=False)
    assert ranked(plain.failures[0])[0] == "seq/more.py::take"


RAISES_ON_PURPOSE = {
    "nums.py": ("def parse(text):\n    if not text.isdigit():\n        raise ValueError(f'not a number: {text!r}')\n"
                "    return int(text)\n\n\n"
                "def parse_list(text):\n    return [parse(part) for part in text.split(';')]\n"),
    "tests/test_parse.py": ("import pytest\n\nfrom nums import parse\n\n\ndef test_parse():\n    assert parse('12') == 12\n\n\n"
                            "def test_rejects():\n    with pytest.raises(ValueError):\n        parse('x')\n"),
    "tests/test_lists.py": ("from nums import parse_list\n\n\ndef test_one():\n    assert parse_list('7') == [7]\n\n\n"
                            "def test_two():\n    assert parse_list('1,2') == [1, 2]\n"),
}


@pytest.mark.parametrize("coverage", [True, False])
def test_a_function_raising_on_purpose_ranks_after_the_caller_that_gave_it_bad_input(tmp_path, coverage):
    """semver 3.1.2: Version.match passed a mis-sliced string to Version.parse, which raised
    ValueError on purpose. Its raise line ran in the failing test only (the tests of invalid input
    are in a file not re-run for coverage): Ochiai 1.0 put parse first, and so did the traceback's
    deepest frame without coverage."""
    (failure,) = discover(write_tree(tmp_path, RAISES_ON_PURPOSE), coverage=coverage).failures
    assert ranked(failure)[:2] == ["nums.py::parse_list", "nums.py::parse"]


def test_without_coverage_a_failure_reaching_code_through_an_operator_says_why_it_has_no_suspect(tmp_path):
    """isodate 0.7.2: `assert date + timedelta == date + Duration(...)` reaches the bug through
    `+` (Duration.__radd__), which neither the traceback nor the test's named calls show; the
    note blamed 'the test itself' though coverage, which would have found it, was not measured."""
    ws = write_tree(tmp_path, {
        "money.py": "class Cents:\n    def __init__(self, n):\n        self.n = n\n\n"
                    "    def __radd__(self, other):\n        return other + self.n + 1\n\n\nTHREE = Cents(3)\n",
        "tests/test_money.py": "from money import THREE\n\n\ndef test_add():\n    assert 2 + THREE == 5\n"})
    plain = discover(ws, coverage=False)
    assert plain.failures[0].suspect is None
    assert any("without line coverage" in note and "tests/test_money.py::test_add" in note for note in plain.notes)
    measured = discover(ws)  # coverage.py runs here: the operator's method is found
    assert ranked(measured.failures[0])[0] == "money.py::Cents.__radd__"


def test_a_project_measuring_its_own_coverage_with_pytest_cov_still_gets_line_coverage(tmp_path):
    """wcwidth 0.2.13 (fresh-user run X7): `addopts = --cov=...` made pytest-cov start a second
    tracer over ledex's, "No data was collected", and the buggy helper one call below the
    function the test calls was never a suspect. The coverage run turns pytest-cov off."""
    ws = write_tree(tmp_path, {
        "pyproject.toml": '[tool.pytest.ini_options]\naddopts = "--cov=calc --cov-report="\n',
        "calc.py": "def _scale(x):\n    return x * 3\n\n\ndef double_plus_one(x):\n    return _scale(x) + 1\n",
        "tests/test_calc.py": "from calc import double_plus_one\n\n\ndef test_double_plus_one():\n"
                              "    assert double_plus_one(2) == 5\n"})
    (failure,) = discover(ws).failures
    scale = next((s for s in failure.suspects if s.qualname == "_scale"), None)  # no traceback frame, no call
    assert scale is not None and scale.reason == "coverage" and scale.score, ranked(failure)


def test_each_test_is_measured_with_the_workspaces_caches_empty(tmp_path):
    """wcwidth 0.2.13 (fresh-user run X7): `@lru_cache wcwidth()` answered the later tests from its
    cache, so under coverage only the first test to meet a character ran the buggy `_bisearch`,
    and for the others it was no suspect at all."""
    ws = write_tree(tmp_path, {
        "width.py": ("import functools\n\nLIMIT = 10\n\n\ndef _above(x, limit):\n    return x > limit\n\n\n"
                     "@functools.lru_cache(maxsize=None)\ndef is_wide(x):\n    return _above(x, LIMIT)\n"),
        "tests/test_width.py": ("from width import is_wide\n\n\ndef test_ten():\n    assert is_wide(10)\n\n\n"
                                "def test_ten_again():\n    assert is_wide(10) is True\n")})
    failures = {f.test.split("::")[-1]: f for f in discover(ws).failures}
    assert set(failures) == {"test_ten", "test_ten_again"}
    for failure in failures.values():  # the second test's answer came from the cache
        assert "width.py::_above" in ranked(failure), (failure.test, ranked(failure))


def test_the_function_a_hung_test_was_stuck_in_stays_first_when_coverage_measured_it(tmp_path):
    """webcolors 24.11.1: a test command naming the module re-ran a hung doctest under coverage,
    and Ochiai put a function the loop called (run by no passing test) before the loop."""
    from ledex.engine.localize import function_named, make_suspect
    from ledex.engine.sbfl import rank_by_spectrum, spectra

    source = "def helper(n):\n    return n + 3\n\n\ndef loop(n):\n    while n != 0:\n        n = helper(n)\n    return n\n"
    write_tree(tmp_path, {"calc.py": source})
    stuck = make_suspect("calc.py", "loop", function_named(source, "loop"), source, "stack sampling")
    hung, other = "tests/test_c.py::test_hangs", "tests/test_c.py::test_loop_patched"
    # the passing test ran the loop with the helper patched out (test doubles do that)
    spectrum = spectra({hung: {"calc.py": [2, 6, 7]}, other: {"calc.py": [6, 7, 8]}},
                       {hung: "failed", other: "passed"})["tests/test_c.py"]
    ranked = rank_by_spectrum(tmp_path, [stuck], spectrum, hung, lambda rel: rel.startswith("tests/"))
    assert [(s.qualname, s.reason) for s in ranked] == [("loop", "stack sampling"), ("helper", "coverage")]
    assert ranked[1].score == 1.0 > ranked[0].score  # Ochiai alone would have put helper first


def test_functions_with_equal_scores_rank_the_same_whatever_order_coverage_listed_them(tmp_path):
    """jmespath 1.0.1 (fresh-user run X5): nine functions ran only in the failing tests (Ochiai 1.0
    each) and ranked in the order coverage.py listed its files, a set of the sandbox's temporary
    paths, so the top suspect, and whether the fix was found, changed between identical runs."""
    from ledex.engine.sbfl import rank_by_spectrum, spectra

    write_tree(tmp_path, {"a.py": "def parse(s):\n    return s\n", "b.py": "def run(s):\n    return s[1]\n"})
    failing = "tests/test_x.py::test_index"
    orders = [{"a.py": [2], "b.py": [2]}, {"b.py": [2], "a.py": [2]}]
    rankings = [[s.qualname for s in rank_by_spectrum(tmp_path, [], spectra({failing: files}, {failing: "failed"})[
        "tests/test_x.py"], failing, lambda rel: rel.startswith("tests/"))] for files in orders]
    assert rankings == [["parse", "run"], ["parse", "run"]]


def test_a_repr_that_only_pytests_failure_report_ran_is_the_last_suspect(field_run):
    _, failures, _ = field_run
    tax = failures["tests/test_money.py::test_with_tax"]
    assert ranked(tax)[0] == "shop/money.py::with_tax"
    # __repr__ ran only in the failing test (Ochiai 1.0, like with_tax), but only for the report
    assert ranked(tax)[-1] == "shop/money.py::Money.__repr__" and tax.suspects[-1].score == 1.0
    assert ranked(tax).index("shop/money.py::Money.__eq__") < len(tax.suspects) - 1


def test_a_truth_test_that_only_the_failing_assert_ran_is_the_last_suspect(tmp_path):
    """validators 0.22.0 (fresh-user run X9 F5): `assert iban(x)` tests the truth of the returned
    ValidationError, so its one-line `__bool__` ran only in the failing tests (Ochiai 1.0) and was
    the top suspect of every failure; the function with the bug ran in passing tests too and was
    not among the three suspects tried. Found by coverage alone, a truth-test method goes last."""
    from ledex.engine.fixer import suspects_to_try

    workspace = write_tree(tmp_path, {
        "checks.py": ("class Invalid:\n    def __init__(self, value):\n        self.value = value\n\n"
                      "    def __bool__(self):\n        return False\n\n\n"
                      "def _digit_sum(value):\n    return sum(int(c) for c in value[1:])\n\n\n"
                      "def _checksum_ok(value):\n    return _digit_sum(value) % 10 == 0\n\n\n"
                      "def valid(value):\n    return True if _checksum_ok(value) else Invalid(value)\n"),
        "tests/test_checks.py": ("from checks import valid\n\n\ndef test_accepts():\n    assert valid('19')\n\n\n"
                                 "def test_rejects():\n    assert valid('12') is not True\n\n\n"
                                 "def test_zero():\n    assert valid('0') is True\n"),
    })
    (failure,) = group_by_suspect(discover(workspace).failures)
    assert ranked(failure)[-1] == "checks.py::Invalid.__bool__" and failure.suspects[-1].score == 1.0
    assert "_digit_sum" in [s.qualname for s in suspects_to_try(failure, 3)], ranked(failure)


def test_code_reached_through_self_and_class_attributes_is_suspected(field_run):
    _, failures, _ = field_run
    assert ranked(failures["tests/test_memo.py::TestLRU::test_caches"])[0] == "memo/deco.py::cached"
    size = ranked(failures["tests/test_memo.py::TestLRU::test_size"])
    assert size[0] == "memo/deco.py::LRU.size"  # put also runs in the passing test_put
    assert "memo/deco.py::LRU.put" in size


def test_test_code_is_never_a_suspect_even_with_django_style_test_files(field_run):
    workspace, failures, found = field_run
    slug = failures["app/tests.py::test_slug_lowercases"]
    assert ", in check" in slug.details  # the helper that raised lives in the test file
    assert ranked(slug)[0] == "app/text.py::slug"
    every = [s for f in found.failures for s in f.suspects]
    assert every and not any(s.path.startswith("tests/") or s.path == "app/tests.py" for s in every)
    is_test = TestFiles(workspace, {"app/tests.py"})
    assert is_test("app/tests.py") and is_test("tests/test_docs.py") and not is_test("app/text.py")
    assert TestFiles(workspace)("app/tests.py")  # from python_files alone


def test_a_coverage_run_returns_the_lines_each_test_executed(tmp_path):
    from ledex.sandbox import run_tests

    workspace = write_tree(tmp_path, {k: v for k, v in FIELD.items() if k.startswith(("seq/", "tests/test_more"))})
    verdict = run_tests(workspace, ["tests/test_more.py"], coverage=True)
    lines = verdict.coverage["tests/test_more.py::test_first_two"]
    assert lines == {"seq/more.py": [6, 10]}  # take's and first_two's bodies; no test code, no imports
    assert set(verdict.coverage) == {o.nodeid for o in verdict.outcomes}
    assert run_tests(workspace, ["tests/test_more.py::test_take"]).coverage is None  # only when asked


def test_without_coverage_suspects_keep_evidence_order_and_a_bare_interpreter_gets_ledexs(tmp_path):
    import shutil

    python = shutil.which("python3")
    probe = python and subprocess.run([python, "-c", "import pytest, sys; import coverage"], capture_output=True)
    if probe is None or b"No module named 'coverage'" not in probe.stderr:
        pytest.skip("needs a python3 with pytest and without coverage")
    workspace = write_tree(tmp_path, {k: v for k, v in FIELD.items() if k.startswith(("seq/", "tests/test_more"))})
    plain = discover(workspace, harness=Harness(python=python), coverage=False)
    chunked = next(f for f in plain.failures if f.test.endswith("test_chunked_even"))
    assert ranked(chunked)[0] == "seq/more.py::take" and chunked.suspect.score is None
    # that interpreter has no coverage.py: the coverage run uses a copy of ledex's own (fresh-user run X5)
    found = discover(workspace, harness=Harness(python=python))
    assert not any("no coverage" in note for note in found.notes), found.notes
    chunked = next(f for f in found.failures if f.test.endswith("test_chunked_even"))
    assert chunked.suspect.score is not None


STACK = {
    "calc.py": ("class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                "    def push(self, x):\n        self.items.append(x)\n\n"
                "    @property\n    def size(self):\n        return len(self.items) + 1\n\n"
                "    def peek(self):\n        return self.items[-1]\n"),
    "tests/test_calc.py": ("from calc import Stack\n\n\ndef test_size():\n    s = Stack()\n    s.push(1)\n"
                           "    assert s.peek() == 1\n    assert s.size == 1\n"),
}


def test_a_property_read_on_the_failing_assert_is_the_first_suspect(tmp_path):
    """A property runs code when read, so it is a suspect; what the failing line of the test
    uses comes before what the test set up (a new user's Stack.size was blamed on __init__)."""
    write_tree(tmp_path, STACK)
    (failure,) = discover(tmp_path).failures
    ranked = [s.qualname for s in failure.suspects]
    assert ranked[0] == "Stack.size"
    assert set(ranked) == {"Stack.size", "Stack.__init__", "Stack.push", "Stack.peek"}


def test_a_fixture_that_raises_suspects_nothing_the_test_calls_and_is_one_problem(tmp_path):
    """A test that errored in its set-up never ran its body: the functions it calls are not
    suspects (a broken conftest fixture had ledex 'fix' six.py for each of 200 tests), and the
    tests stopped by the same error are one problem with one note."""
    write_tree(tmp_path, {
        "calc.py": "def double(x):\n    return x * 2\n",
        "conftest.py": "import pytest\n\n\n@pytest.fixture\ndef db():\n    raise RuntimeError('no database')\n",
        "test_calc.py": "from calc import double\n\n\ndef test_a(db):\n    assert double(1) == 2\n\n\n"
                        "def test_b(db):\n    assert double(2) == 4\n\n\ndef test_c():\n    assert double(3) == 7\n"})
    found = discover(tmp_path)
    failures = {f.test: f for f in found.failures}
    assert failures["test_calc.py::test_a"].suspect is None and failures["test_calc.py::test_b"].suspect is None
    assert failures["test_calc.py::test_c"].suspect.qualname == "double"  # its body ran: the call is suspected
    (note,) = [n for n in found.notes if "no function" in n]
    assert note.startswith("2 tests (test_calc.py::test_a, ...)") and "no database" in note
    groups = [(g.test, g.also) for g in group_by_suspect(found.failures)]
    assert groups == [("test_calc.py::test_a", ("test_calc.py::test_b",)), ("test_calc.py::test_c", ())]


def test_the_passes_of_a_run_the_sandbox_does_not_trust_are_not_failures_to_fix(tmp_path):
    """The sandbox turns every pass of a run it does not trust into an error "not trusted: ...":
    python-slugify 9.2.0's tests (a unittest skipTest inside subTest) had ledex 'fix' and
    --apply a change to special.py's add_uppercase_char, whose tests passed. Only the tests
    that failed are failures; the run's problem is a note. The coverage run's untrusted passes
    count as passes for the ranking (as failures they put test_release.py's 37 passes on the
    failing side and slugify's ranking lost _modern_truncate)."""
    write_tree(tmp_path, {
        "calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return add(a, b)\n",
        "tests/conftest.py": ("def pytest_collection_modifyitems(items):\n    for item in items:\n"
                              "        if item.name == 'test_elsewhere':\n            item.runtest = lambda: None\n"),
        "tests/test_calc.py": ("from calc import add, sub\n\n\ndef test_add():\n    assert add(1, 2) == 3\n\n\n"
                               "def test_sub():\n    assert sub(3, 2) == 1\n\n\n"
                               "def test_elsewhere():\n    assert add(2, 2) == 4\n")})
    found = discover(tmp_path)
    assert found.verdict.error_kind == "tampering", found.verdict.error
    # and in the coverage run they count as passes: `add`, run by test_add too, ranks below `sub`
    assert [(f.test, f.suspect.qualname) for f in found.failures] == [("tests/test_calc.py::test_sub", "sub")]
    assert any(n.startswith("2 tests (tests/test_calc.py::test_add, ...) passed in a run the sandbox does not trust")
               for n in found.notes), found.notes


def test_a_test_file_without_passing_tests_is_ranked_with_the_other_measured_files(tmp_path):
    """A failing test whose file has no passing test gives Ochiai nothing to tell functions apart
    (every line 1.0), so the function it calls came first, though the failing tests of another
    file, measured beside it, point at the fault (seen analysing python-slugify 9.2.0, whose
    one-class word-boundary file ranked slugify() above _modern_truncate's `<=` -> `<`)."""
    write_tree(tmp_path, {
        "calc.py": ("def parse(text):\n    return [int(x) for x in text.split(',')]\n\n\n"
                    "def total(values):\n    if len(values) > 2:\n        return sum(values[1:])\n    return sum(values)\n\n\n"
                    "def report(text):\n    return total(parse(text))\n"),
        "tests/test_report.py": "from calc import report\n\n\ndef test_long():\n    assert report('1,2,3') == 6\n",
        "tests/test_calc.py": ("from calc import parse, total\n\n\ndef test_parse():\n    assert parse('1,2') == [1, 2]\n\n\n"
                               "def test_short():\n    assert total([1, 2]) == 3\n\n\n"
                               "def test_long_total():\n    assert total([1, 2, 3]) == 6\n")})
    failures = {f.test: f for f in discover(tmp_path).failures}
    assert ranked(failures["tests/test_report.py::test_long"])[0] == "calc.py::total"
    assert ranked(failures["tests/test_calc.py::test_long_total"])[0] == "calc.py::total"


def test_a_test_that_hung_is_not_re_run_for_coverage_and_its_stack_still_names_the_suspect(tmp_path):
    """The coverage run re-ran a test that had hung (three times its timeout again: 90 s on six's
    suite with one hanging test); a loop in the code under test is still found from the stack."""
    write_tree(tmp_path, {
        "calc.py": "def double(x):\n    return x * 3\n\n\ndef countdown(n):\n    while n > 0:\n        n + 1\n    return n\n",
        "test_calc.py": "from calc import countdown, double\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
                        "def test_countdown():\n    assert countdown(1) == 0\n\n\ndef test_ok():\n    assert True\n"})
    found = discover(tmp_path, limits=Limits(wall_s=60.0, cpu_s=60, test_timeout_s=2.0))
    failures = {f.test: f for f in found.failures}
    assert "did not finish within 2 s" in failures["test_calc.py::test_countdown"].message
    assert failures["test_calc.py::test_countdown"].suspect.qualname == "countdown"  # from the stack at the timeout
    assert coverage_selection(found.verdict) == ["test_calc.py::test_double", "test_calc.py::test_ok"]
    assert failures["test_calc.py::test_double"].suspect.score is not None  # the coverage run did happen


def test_a_module_in_a_declared_encoding_is_a_suspect_and_written_back_in_it(tmp_path):
    """A `# -*- coding: latin-1 -*-` module holding the bug was left out of the suspects, silently
    (fresh-user run X9 F12, validators): read and rewritten in the encoding it declares now, its
    other bytes as they were (Python's own rule, so a module the tests can import is one ledex reads)."""
    from ledex.engine.apply import apply_patch
    from ledex.engine.patching import make_patch

    ws = tmp_path / "ws"
    write_tree(ws, {"pkg/__init__.py": "", "tests/test_price.py": (
        "from pkg.price import AUTHOR, net\n\n\ndef test_net():\n    assert net(10) == 9\n\n\n"
        "def test_author():\n    assert AUTHOR == 'René'\n")})
    latin = "# -*- coding: latin-1 -*-\nAUTHOR = 'René'\n\n\ndef net(x):\n    return x - x // 5\n"
    (ws / "pkg" / "price.py").write_bytes(latin.encode("latin-1"))
    found = discover(ws)
    (failure,) = found.failures
    assert failure.suspect.path == "pkg/price.py" and failure.suspect.qualname == "net" and not found.notes
    patch = make_patch(latin, failure.suspect, "def net(x):\n    return x - x // 10\n")
    tests = ("tests/test_price.py::test_net", "tests/test_price.py::test_author")
    assert verify(ws, {patch.path: patch.new_text}, tests).passed  # the sandbox writes it in latin-1 too
    euro = verify(ws, {patch.path: patch.new_text.replace("x // 10", "x // 10  # €")}, tests)
    assert not euro.passed and "cannot be written in the encoding it declares" in euro.error
    apply_patch(ws, patch)
    assert (ws / "pkg" / "price.py").read_bytes() == latin.replace("// 5", "// 10").encode("latin-1")
    assert not discover(ws).failures  # 'René' still reads as the test expects
    (ws / "pkg" / "price.py").write_bytes(b"# caf\xe9\nAUTHOR = 'Ren\xe9'\n\n\ndef net(x):\n    return x - x // 5\n")
    with pytest.raises(DiscoveryError, match=r"test_price.py: SyntaxError: .*utf-8.*/pkg/price.py, line 2"):
        discover(ws)  # no coding line, not UTF-8: Python itself cannot import it, and says where


def test_the_doctests_of_a_suspects_module_are_re_run_with_its_fix(tmp_path):
    """ordered-set 4.1.0 (fresh-user run X10 F7, `--doctest-modules` in its pytest.ini): the 22
    docstring examples of the module a fix rewrites were not in the re-run set, so a fix breaking
    one of them would verify. The module's passing doctests are re-run now."""
    ws = write_tree(tmp_path / "ws", {
        "pytest.ini": "[pytest]\naddopts = --doctest-modules\n",
        "calc.py": ('def double(x):\n    """\n    >>> double(2)\n    4\n    """\n    return _times(x, 2)\n\n\n'
                    "def _times(x, k):\n    return x * k\n\n\ndef third(x):\n    return x // 2\n"),
        "tests/test_calc.py": "from calc import third\n\n\ndef test_third():\n    assert third(9) == 3\n",
    })
    (failure,) = discover(ws).failures
    assert failure.suspect.qualname == "third" and "calc.py::calc.double" in failure.reruns, failure.reruns


WEEK = {
    "week.py": "class Week:\n    def __init__(self, first):\n        self.first = first\n\n"
               + "".join(f"    def day{i}(self):\n        return self.first + {i}\n\n" for i in range(9))
               + "    def contains(self, day):\n        return self.first < day < self.first + 7\n",
    "tests/test_week.py": "import unittest\n\nfrom week import Week\n\n\nclass TestWeek(unittest.TestCase):\n"
                          "    def test_days(self):\n        w = Week(10)\n        self.assertFalse(w.contains(9))\n"
                          + "".join(f"        self.assertEqual(w.day{i}(), {10 + i})\n" for i in range(9))
                          + "        self.assertTrue(w.contains(10))\n",
}


def test_the_function_called_on_the_failing_line_is_the_first_suspect_though_called_before(tmp_path):
    """isoweek 1.3.3 (fresh-user run X11 F9): `w.contains` was called on the failing line and once
    before it; its one entry kept the earlier line, seven day getters came first and the cap on
    called functions left it out: the three suspects tried were getters whose asserts passed."""
    found = discover(write_tree(tmp_path / "ws", WEEK))
    (failure,) = found.failures
    assert failure.suspect.qualname == "Week.contains", [s.qualname for s in failure.suspects]


OVERLOADED = {
    "arrays.py": ("import typing as t\n\n\n@t.overload\ndef union(a: t.List[int], b: t.List[int]) -> t.List[int]: ...\n\n\n"
                  "@t.overload\ndef union(a: t.List[str], b: t.List[str]) -> t.List[str]: ...\n\n\n"
                  "def union(a, b):\n    return [x for x in b + a if x is not None]\n"),
    "tests/test_arrays.py": "from arrays import union\n\n\ndef test_union():\n    assert union([1], [2]) == [1, 2]\n",
}


def test_an_overloaded_function_is_suspected_by_the_code_that_runs_not_its_stub(tmp_path):
    """pydash 8.1.0 (collect): `union_with`'s two `@t.overload` stubs came first among the functions
    the test calls, so the suspect, the prompt's code and the fix's target were a stub; a right fix
    replaced the stub and left the running code wrong (pydash: 63% of planted bugs' right answers verified)."""
    found = discover(write_tree(tmp_path / "ws", OVERLOADED))
    (failure,) = found.failures
    assert failure.suspect.qualname == "union" and "return [x for x in b + a" in failure.suspect.source
    assert "@t.overload" not in failure.suspect.source
