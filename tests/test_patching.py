"""Minimal function patches: AST positions, indentation, imports, hostile answers, atomic apply."""

import ast
import os
import re

import pytest

from ledex.engine.apply import ApplyError, apply_patch
from ledex.engine.localize import function_at, function_named, iter_functions, make_suspect
from ledex.engine.patching import PatchError, Patcher, make_patch, rebase

SOURCE = '''"""Module."""
import math


def keep():
    return 1


class Shop:
    @staticmethod
    def price(x):
        return x * 2

    def other(self):
        return 3


def area(r):
    return r * r
'''


def suspect(qualname, text=SOURCE):
    return make_suspect("shop.py", qualname, function_named(text, qualname), text, "test")


def test_replaces_only_the_function():
    patch = make_patch(SOURCE, suspect("area"), "def area(r):\n    return math.pi * r * r\n")
    assert "math.pi * r * r" in patch.new_text
    assert patch.new_text.replace("return math.pi * r * r", "return r * r") == SOURCE
    assert patch.diff.startswith("--- a/shop.py\n+++ b/shop.py\n")
    assert patch.diff.count("\n-") == 1 and patch.diff.count("\n+") == 2  # header + one changed line


def test_method_keeps_indentation_and_decorator():
    answer = "class Shop:\n    @staticmethod\n    def price(x):\n        return x * 3\n"
    new = make_patch(SOURCE, suspect("Shop.price"), answer).new_text
    assert "    @staticmethod\n    def price(x):\n        return x * 3\n\n    def other" in new


def test_unindented_method_answer_is_reindented():
    new = make_patch(SOURCE, suspect("Shop.price"), "@staticmethod\ndef price(x):\n    return x + 2").new_text
    assert "    def price(x):\n        return x + 2" in new


def test_new_imports_are_added_once_after_existing_imports():
    answer = "import math\nimport functools\n\ndef area(r):\n    return functools.reduce(lambda a, b: a * b, [r, r])"
    new = make_patch(SOURCE, suspect("area"), answer).new_text
    assert new.count("import math") == 1
    assert new.index("import functools") < new.index("def keep")


def test_extra_code_in_the_answer_is_dropped():
    answer = "def area(r):\n    return 3 * r * r\n\ndef test_area():\n    assert True\n\nprint('hi')\n"
    new = make_patch(SOURCE, suspect("area"), answer).new_text
    assert "test_area" not in new and "print" not in new


@pytest.mark.parametrize("answer, message", [
    ("def volume(r):\n    return r", "does not define area"),
    ("def area(r):\n    return r * r\n", "same code"),
    ("def area(r:\n", "does not parse"),
])
def test_unusable_answers_raise_patch_error(answer, message):
    with pytest.raises(PatchError, match=message):
        make_patch(SOURCE, suspect("area"), answer)


def test_one_patcher_for_many_answers_makes_what_make_patch_makes():
    """The search patches thousands of variants of one function with one Patcher (the file read
    once): each patch, and each refusal, is make_patch's for the same answer."""
    answers = ["class Shop:\n    @staticmethod\n    def price(x):\n        return x * 3\n",
               "@staticmethod\ndef price(x):\n    return x + 2",
               "import functools\n\n@staticmethod\ndef price(x):\n    return functools.reduce(max, [x, 2])\n",
               "@classmethod\ndef price(cls, x):\n    return x\n",
               "def volume(r):\n    return r", "@staticmethod\ndef price(x):\n    return x * 2\n", "def price(x:\n"]
    patcher = Patcher(SOURCE, suspect("Shop.price"))
    for answer in answers:
        try:
            expected = make_patch(SOURCE, suspect("Shop.price"), answer)
        except PatchError as exc:
            with pytest.raises(PatchError, match=re.escape(str(exc))):
                patcher.patch(answer)
        else:
            assert patcher.patch(answer) == expected
    changed = SOURCE.replace("return x * 2", "return x * 4")
    with pytest.raises(PatchError, match="was changed since the failure was found"):
        Patcher(changed, suspect("Shop.price"))


def test_crlf_files_keep_their_line_endings():
    text = SOURCE.replace("\n", "\r\n")
    new = make_patch(text, suspect("area", text), "def area(r):\n    return r ** 2").new_text
    assert "\r\n" in new and "\n" not in new.replace("\r\n", "")


def test_apply_writes_atomically_and_refuses_stale_files(tmp_path):
    target = tmp_path / "shop.py"
    target.write_text(SOURCE)
    os.chmod(target, 0o640)
    patch = make_patch(SOURCE, suspect("area"), "def area(r):\n    return r ** 2")
    apply_patch(tmp_path, patch)
    assert target.read_text() == patch.new_text
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["shop.py"]  # no temp file left behind
    with pytest.raises(ApplyError, match="changed since"):
        apply_patch(tmp_path, patch)  # the file is no longer what the patch was computed on


# --- fidelity: every byte outside the function is kept; the new function takes the file's style ---

def suspect_in(text, qualname, path="mod.py"):
    """A suspect as localisation makes it (a BOM is not part of the code); of same-named
    functions (a property's getter and setter) the last one, the one Python binds."""
    code = text.removeprefix("\ufeff")
    node = [n for name, n in iter_functions(ast.parse(code)) if name == qualname][-1]
    return make_suspect(path, qualname, node, code, "test")


FIDELITY = {  # name: (file text, qualname, answer, expected file text)
    "crlf": ("import os\r\n\r\n\r\ndef f(x):\r\n    return x\r\n\r\n\r\ndef g():\r\n    return 2\r\n",
             "f", "def f(x):\n    if x:\n        return x + 1\n    return 0\n",
             "import os\r\n\r\n\r\ndef f(x):\r\n    if x:\r\n        return x + 1\r\n    return 0\r\n\r\n\r\n"
             "def g():\r\n    return 2\r\n"),
    "tabs, method answered at column 0": (
        "class A:\n\tdef m(self):\n\t\treturn 1\n\n\tdef n(self):\n\t\treturn 0\n", "A.m",
        "def m(self):\n    if self:\n        return 2\n    return 3\n",
        "class A:\n\tdef m(self):\n\t\tif self:\n\t\t\treturn 2\n\t\treturn 3\n\n\tdef n(self):\n\t\treturn 0\n"),
    "two-space indent": ("def f(x):\n  if x:\n    return 1\n  return 0\n\n\ndef g():\n  return 2\n", "f",
                         "def f(x):\n    if x:\n        return 2\n    return 0\n",
                         "def f(x):\n  if x:\n    return 2\n  return 0\n\n\ndef g():\n  return 2\n"),
    "nested class method": ("class A:\n    class B:\n        def m(self):\n            return 1\n    x = 1\n", "A.B.m",
                            "def m(self):\n    return 2\n",
                            "class A:\n    class B:\n        def m(self):\n            return 2\n    x = 1\n"),
    "form feed, U+2028 and trailing spaces around it": (
        "# page one \u2028 still a comment\n\x0c\ndef f():  \n    return 1\n\x0c\n\ndef g():\t\n    return 2   \n",
        "f", "def f():\n    return 3\n",
        "# page one \u2028 still a comment\n\x0c\ndef f():  \n    return 3\n\x0c\n\ndef g():\t\n    return 2   \n"),  # its `def` line as it was
    "no final newline": ("def g():\n    return 2\n\n\ndef f():\n    return 1", "f", "def f():\n    return 9\n",
                         "def g():\n    return 2\n\n\ndef f():\n    return 9"),
    "BOM, function on line 1": ("\ufeffdef f():\n    return 1\n", "f", "def f():\n    return 2",
                                "\ufeffdef f():\n    return 2\n"),
    "decorators and comments kept when the answer has none": (
        "import functools\n\n\n# memoised: called a lot\n@functools.lru_cache(maxsize=None)\n# between\ndef fib(n):\n"
        "    return fib(n - 1) + fib(n - 2)  # wrong base\n# after\n",
        "fib", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "import functools\n\n\n# memoised: called a lot\n@functools.lru_cache(maxsize=None)\n# between\ndef fib(n):\n"
        "    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n# after\n"),
    "a decorator the answer changes on purpose": (
        "import functools\n\n\n@functools.lru_cache(maxsize=2)\ndef f(n):\n    return n\n", "f",
        "import functools\n\n@functools.lru_cache(maxsize=None)\ndef f(n):\n    return n + 1\n",
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef f(n):\n    return n + 1\n"),
    "multi-line string data kept, docstring follows the code": (
        "class Q:\n    def sql(self):\n        return 1\n", "Q.sql",
        'def sql(self):\n    """Text.\n\n    More.\n    """\n    return """select\n  *\nfrom t"""\n',
        'class Q:\n    def sql(self):\n        """Text.\n\n        More.\n        """\n        return """select\n  *\nfrom t"""\n'),
    "answer wraps the method in its class, in another indent style": (
        "class A:\n    async def m(self):\n        return 1\n\n    def n(self):\n        return 0\n", "A.m",
        "class A:\n  async def m(self):\n    if self:\n      return 2\n    return 3\n",
        "class A:\n    async def m(self):\n        if self:\n            return 2\n        return 3\n\n"
        "    def n(self):\n        return 0\n"),
    "old Mac line endings": ("def f():\r    return 1\r\rdef g():\r    return 2\r", "f", "def f():\n    return 3",
                             "def f():\r    return 3\r\rdef g():\r    return 2\r"),
    "property setter: the right one of two same-named methods": (
        "class P:\n    @property\n    def v(self):\n        return self._v\n\n    @v.setter\n    def v(self, x):\n"
        "        self._v = x * 2\n", "P.v", "def v(self, x):\n    self._v = x\n",
        "class P:\n    @property\n    def v(self):\n        return self._v\n\n    @v.setter\n    def v(self, x):\n"
        "        self._v = x\n"),
}


@pytest.mark.parametrize("name", list(FIDELITY))
def test_only_the_function_changes_and_it_takes_the_files_style(name):
    text, qualname, answer, expected = FIDELITY[name]
    assert make_patch(text, suspect_in(text, qualname), answer).new_text == expected


def test_a_file_with_a_bom_is_localised_and_patched_keeping_it():
    text = "\ufeffdef f():\n    return 1\n\n\ndef g():\n    return 2\n"
    qualname, node = function_at(text, 2)  # as localisation finds it (the BOM stays in the text)
    new = make_patch(text, make_suspect("mod.py", qualname, node, text, "traceback"), "def f():\n    return 3").new_text
    assert new == text.replace("return 1", "return 3")


def test_the_issue_decorator_case_keeps_lru_cache():
    text = "import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n    return fib(n - 1) + fib(n - 2)\n"
    new = make_patch(text, suspect_in(text, "fib"), "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)").new_text
    assert new.count("@functools.lru_cache(maxsize=None)\ndef fib(n):") == 1


# --- patches found again in the file as it is now ---------------------------------------

OPS = '''"""Calculator operations."""


def double(x):
    # Double a number.
    # (An old note.)
    # (Another.)
    # (One more.)
    return x + x + 1


def triple(x):
    return x * 2


def clamp(x, lo, hi):
    return max(lo, min(x, hi))
'''
CLAMP = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"


def test_a_patch_computed_before_another_fix_is_moved_not_spliced_at_old_lines(tmp_path):
    first = make_patch(OPS, suspect_in(OPS, "double"), "def double(x): return x + x")
    second = make_patch(OPS, suspect_in(OPS, "triple"), "def triple(x): return x * 3")
    (tmp_path / "ops.py").write_text(OPS)
    for patch in (first, second):
        patch = type(patch)(**{**patch.__dict__, "path": "ops.py"})
        apply_patch(tmp_path, patch)
    written = (tmp_path / "ops.py").read_text()
    assert "def double(x): return x + x\n" in written and "def triple(x): return x * 3\n" in written
    assert written.endswith("\n\n\n" + CLAMP)  # clamp byte for byte, and what stands before it


def test_stale_suspect_lines_do_not_matter_the_function_is_found_by_name():
    stale = suspect_in(OPS, "triple")
    after_first = make_patch(OPS, suspect_in(OPS, "double"), "def double(x): return x + x").new_text
    new = make_patch(after_first, stale, "def triple(x): return x * 3").new_text
    assert new.endswith("def triple(x): return x * 3\n\n\n" + CLAMP)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("return x * 2", "return x * 2  # the user's edit"), "`triple` was changed since"),
    (lambda t: t.replace("def triple(x):\n    return x * 2\n", ""), "`triple` is no longer in the file"),
])
def test_a_function_changed_or_gone_since_is_refused_and_nothing_written(tmp_path, edit, message):
    patch = make_patch(OPS, suspect_in(OPS, "triple", "ops.py"), "def triple(x): return x * 3")
    (tmp_path / "ops.py").write_text(edit(OPS))
    before = (tmp_path / "ops.py").read_bytes()
    with pytest.raises(ApplyError, match=message):
        apply_patch(tmp_path, patch)
    assert (tmp_path / "ops.py").read_bytes() == before
    with pytest.raises(PatchError, match=message):  # the same when computing a fix on a changed file
        make_patch(edit(OPS), suspect_in(OPS, "triple", "ops.py"), "def triple(x): return x * 3")


def test_rebase_adds_only_imports_the_new_file_lacks():
    patch = make_patch(SOURCE, suspect("area"), "import functools\n\ndef area(r):\n    return functools.reduce(max, [r])")
    now = SOURCE.replace('"""Module."""\n', '"""Module."""\nimport functools\n')
    moved = rebase(patch, now)
    assert moved.new_text.count("import functools") == 1 and "functools.reduce(max, [r])" in moved.new_text


WRAPPED = '''class Range:
    def clamp(
        self,
        value: int,  # the value to bound
        high: int = 10,
    ) -> int:
        """Bound value."""
        if value >= high:
            return high
        return value
'''


def test_a_wrapped_signature_the_answer_writes_on_one_line_is_kept_as_the_file_wrote_it():
    """The answer grammar writes a `def` on one line (grammar.answer_grammar): a fix of a function
    whose signature the file wraps (black's style) rewrote the signature too, its comment lost and
    lines changed that the bug was not on. The same parameters keep the file's lines; other ones
    are the answer's."""
    fixed = make_patch(WRAPPED, suspect("Range.clamp", WRAPPED),
                       'def clamp(self, value: int, high: int = 10) -> int:\n    """Bound value."""\n'
                       "    if value > high:\n        return high\n    return value\n")
    assert fixed.new_text == WRAPPED.replace("value >= high", "value > high")
    assert fixed.diff.count("\n-") == 1 and fixed.diff.count("\n+") == 2  # the header + the one changed line
    widened = make_patch(WRAPPED, suspect("Range.clamp", WRAPPED),
                         "def clamp(self, value: int, high: int = 100) -> int:\n    return min(value, high)\n")
    assert "    def clamp(self, value: int, high: int = 100) -> int:\n        return min(value, high)\n" in widened.new_text
    one_line = "def f(x): return x\n"  # a body on the header's line: the answer's lines, as before
    assert make_patch(one_line, suspect("f", one_line), "def f(x): return x + 1\n").new_text == "def f(x): return x + 1\n"
