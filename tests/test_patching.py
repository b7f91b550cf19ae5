"""Minimal function patches: AST positions, indentation, imports, hostile answers, atomic apply."""

import os

import pytest

from ledex.engine.apply import ApplyError, apply_patch
from ledex.engine.localize import function_named, make_suspect
from ledex.engine.patching import PatchError, make_patch

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
