"""engine/operators.py: the one set of single-site edits (bugs for training, repairs for search).

    .venv/bin/python -m pytest -q tests/test_operators.py
"""

from __future__ import annotations

import ast

import pytest

from ledex.engine.operators import NO_INVERSE, OPERATORS, SAME_LINES, single_site_edits
from ledex.training.mutate import mutants

# (module text, function) covering every operator: HumanEvalFix-style small functions, a method.
TABLE = [
    ("def count_pos(xs, limit):\n    n = 0\n    for i in range(len(xs)):\n"
     "        if xs[i] > 0 and not xs[i] == 7:\n            n += 1\n    return max(n - limit, 0)\n", "count_pos"),
    ("def middle(xs):\n    s = sorted(xs)  # keep xs\n    k = len(s) // 2\n"
     "    return (s[k - 1] + s[k]) / 2 if len(s) % 2 == 0 else s[k]\n", "middle"),
    ("import math\n\n\nclass Words:\n    def shout(self, text, sep=' '):\n        out = []\n"
     "        for w in text.split(sep):\n            if w.startswith('#') or not w:\n                continue\n"
     "            out.append(w.upper())\n        return sep.join(out)\n", "Words.shout"),
    ("def total(items):\n    acc = 0\n    for item in items:\n        acc += item\n    acc = acc * 2\n", "total"),
    ("def power(base, exp):\n    if exp is None or exp < 0:\n        return pow(base, 0)\n"
     "    return base ** exp - base % 3\n", "power"),
    ("def find(xs, x):\n    lo, hi = 0, len(xs)\n    while lo < hi:\n        mid = (lo + hi) // 2\n"
     "        if xs[mid] < x:\n            lo = mid + 1\n        else:\n            hi = mid\n"
     "    return lo if lo != len(xs) and xs[lo] == x else -1\n", "find"),
]


def _dump(code: str) -> str:
    return ast.dump(ast.parse(code))


@pytest.mark.parametrize("code,function", TABLE, ids=[f for _, f in TABLE])
def test_every_edit_parses_and_has_an_inverse(code, function):
    original = _dump(code)
    edits = list(single_site_edits(code, function))
    assert len({e.code for e in edits}) == len(edits) and code not in {e.code for e in edits}
    for edit in edits:
        assert edit.code == code[:edit.start] + edit.after + code[edit.end:]  # one span changed, the rest kept
        if edit.operator in NO_INVERSE:
            continue
        back = {_dump(e.code) for e in single_site_edits(edit.code, function)}
        assert original in back, f"no inverse for {edit.operator} {edit.description}"


def test_the_table_exercises_every_operator():
    seen = {e.operator for code, function in TABLE for e in single_site_edits(code, function)}
    assert seen == set(OPERATORS)


def test_the_bug_taxonomy_templates():
    code = TABLE[0][0]
    found = {e.description for e in single_site_edits(code, "count_pos")}
    assert "`for i in range(len(xs)):` -> `for i in range(len(xs) - 1):`" in found  # range bound
    assert "`if xs[i] > 0 and not xs[i] == 7:` -> `if xs[i] >= 0 and not xs[i] == 7:`" in found
    assert "`n += 1` -> `n = 1`" in found  # = vs +=
    assert "`return max(n - limit, 0)` -> `return min(n - limit, 0)`" in found  # another function
    assert "`return max(n - limit, 0)` -> `return max(limit - n, 0)`" in found  # swapped operands
    # concatenated sequences in the wrong order (validators 0.22.0's IBAN check, fresh-user run X9 F5);
    # `+` of two names may be numbers, where the swap changes nothing: not made
    joined = {(e.operator, e.description) for e in single_site_edits(
        "def rotate(value, n):\n    return value[n:] + value[:n] + 'x' + f'{n}'\n", "rotate")}
    assert ("swap", "`return value[n:] + value[:n] + 'x' + f'{n}'` -> `return value[:n] + value[n:] + 'x' + f'{n}'`") in joined
    assert ("swap", "`return value[n:] + value[:n] + 'x' + f'{n}'` -> `return f'{n}' + (value[n:] + value[:n] + 'x')`") in joined
    assert not [e for e in single_site_edits("def add(a, b):\n    return a + b\n", "add") if e.operator == "swap"]
    # an edit that leaves the assignment's target as it was drops the statement (overfit risk, as one):
    # pathspec's `norm_file = norm_file[1:]` -> `[0:]` was a verified fix of equal standing (fresh-user run X10)
    noop = {(e.operator, e.description) for e in single_site_edits(
        "def strip(name):\n    name = name[1:]\n    name += '/'\n    return name\n", "strip")}
    assert ("drop_statement", "`name = name[1:]` -> `name = name[0:]` (the statement then does nothing)") in noop
    assert ("bound", "`name = name[1:]` -> `name = name[2:]`") in noop
    # a `not` dropped from an assigned or returned truth value (pathspec 0.12.1, fresh-user run X10 F4)
    flips = {e.description for e in single_site_edits(
        "def flip(include, found):\n    include = include\n    done = found > 0\n    return found\n", "flip")}
    assert {"`include = include` -> `include = not include`", "`done = found > 0` -> `done = not found > 0`",
            "`return found` -> `return not found`"} <= flips
    middle = {e.description for e in single_site_edits(TABLE[1][0], "middle")}
    assert "`k = len(s) // 2` -> `k = len(s) / 2`" in middle  # / vs //
    weeks = {(e.operator, e.description) for e in single_site_edits(
        "def weeks(days, xs):\n    return int(days % 7) + len(xs[:-2])\n", "weeks")}
    assert ("binop", "`return int(days % 7) + len(xs[:-2])` -> `return int(days / 7) + len(xs[:-2])`") in weeks
    assert ("bound", "`return int(days % 7) + len(xs[:-2])` -> `return int(days % 7) + len(xs[:-1])`") in weeks
    assert "`s = sorted(xs) # keep xs` -> `s = reversed(xs) # keep xs`" in middle  # the comment is kept
    words = {e.description for e in single_site_edits(TABLE[2][0], "Words.shout")}
    assert "`out.append(w.upper())` -> `out.append(w.lower())`" in words  # another method
    counters = {e.description for e in single_site_edits(
        "def skip(s, i, j):\n    while j < len(s) and s[j] != ']':\n        i += 1\n    return j\n", "skip")}
    assert "`i += 1` -> `j += 1`" in counters  # the loop's counter (pathspec 0.12.1, fresh-user run X10 F5)
    # a lookup that empties its registry (pathspec 0.12.1, fresh-user run X10 F9)
    lookups = {e.description for e in single_site_edits("def lookup(name):\n    return REGISTRY.pop(name)\n", "lookup")}
    assert "`return REGISTRY.pop(name)` -> `return REGISTRY.get(name)`" in lookups
    # a match's start for its end (parse 1.22.4's ResultIterator.__next__ looped forever on m.start())
    spans = {e.description for e in single_site_edits("def after(m):\n    return m.start()\n", "after")}
    assert "`return m.start()` -> `return m.end()`" in spans
    missing = [e for e in single_site_edits(TABLE[3][0], "total") if e.operator == "add_return"]
    assert missing and missing[0].code.endswith("    acc = acc * 2\n    return acc\n")


def test_a_term_is_dropped_plainly_and_no_identity_is_written():
    """jsonpointer 3.12 (fresh-user run X3): for `int(part) + 1` the verified fixes were `* 1`
    and `+ 0`, and `* 1` was written into the user's file; the plain inverse was missing."""
    found = {(e.operator, e.code.splitlines()[1].strip()) for e in single_site_edits(
        "def get_part(part):\n    return int(part) + 1\n", "get_part")}
    assert ("drop_term", "return int(part)") in found
    assert not {c for _, c in found if c.endswith(("* 1", "+ 0", "/ 1", "// 1", "** 1", "- 0"))}


def test_a_bound_plus_one_is_dropped_once_not_also_written_plus_zero():
    code = "def word(s, i, n):\n    return s[i:i + n + 1]\n"
    found = {e.code.splitlines()[1].strip() for e in single_site_edits(code, "word")}
    assert "return s[i:i + n]" in found and "return s[i:i + n + 2]" in found
    assert "return s[i:i + n + 0]" not in found
    assert "return s[i:i + n - 0]" not in {e.code.splitlines()[1].strip() for e in single_site_edits(
        code.replace("n + 1", "n - 1"), "word")}


def test_edits_stay_inside_the_function_and_bad_input_yields_nothing():
    code = "def a(x):\n    return x + 1\n\n\ndef b(y):\n    return y - 1\n"
    assert all(e.line == 6 for e in single_site_edits(code, "b"))
    assert list(single_site_edits("def broken(:\n", None)) == []
    assert list(single_site_edits(code, "missing")) == []
    with pytest.raises(ValueError, match="unknown operators"):
        list(single_site_edits(code, "a", ["nope"]))


def test_training_mutants_use_the_same_operators():
    found = mutants(TABLE[0][0], limit=40, seed=3)
    assert {m.operator for m in found} <= SAME_LINES and len({m.operator for m in found}) >= 8
    for m in found:
        assert sum(a != b for a, b in zip(m.original.splitlines(), m.code.splitlines())) == 1


OVERLOADED = '''import typing as t


class Signer:
    @t.overload
    def unsign(self, value: str, stamp: t.Literal[False] = False) -> str: ...

    @t.overload
    def unsign(self, value: str, stamp: t.Literal[True] = True) -> tuple: ...

    def unsign(self, value, stamp=False):
        if len(value) > 10:
            raise ValueError(value)
        return value

    @property
    def size(self):
        return self._size

    @size.setter
    def size(self, value):
        if value < 0:
            raise ValueError(value)
        self._size = value + 1
'''


def test_a_name_defined_more_than_once_is_edited_where_the_suspect_is():
    """itsdangerous 2.2.0 (fresh-user run X5): two @overload stubs came before the method, and
    every edit landed in a stub; a property's setter shares its getter's name. The
    implementation is edited, or the definition starting at the suspect's line."""
    lines = OVERLOADED.splitlines()
    implementation = lines.index("    def unsign(self, value, stamp=False):") + 1
    setter = lines.index("    @size.setter") + 1
    edits = list(single_site_edits(OVERLOADED, "Signer.unsign"))
    assert edits and all(implementation <= e.line <= implementation + 3 for e in edits), [e.line for e in edits]
    at_setter = list(single_site_edits(OVERLOADED, "Signer.size", line=setter))
    assert at_setter and all(setter < e.line <= setter + 4 for e in at_setter), [e.line for e in at_setter]
    getter = list(single_site_edits(OVERLOADED, "Signer.size"))
    assert getter and all(e.line == setter - 2 for e in getter)  # no line given: the first real definition


def test_no_off_by_one_on_a_flag_or_a_string_passed_to_a_call():
    """dpath 2.2.0 (fresh-user run X11 F13): `yielded = False` slipped for `True`, and the search's
    verified "fix" was `search(obj, glob, yielded + 1, ...)`: +-1 on a call's argument is for numbers."""
    code = ("def values(obj, glob, separator='/', dirs=True, depth=0):\n    yielded = False\n    done = obj is None\n"
            "    return search(obj, glob, yielded, separator, dirs, done, depth)\n")
    changed = {e.after for e in single_site_edits(code, "values") if e.operator == "bound"}
    assert changed == {"obj + 1", "obj - 1", "glob + 1", "glob - 1", "depth + 1", "depth - 1"}, changed


def test_matrix_multiplication_is_no_operator_to_swap_and_no_crash():
    """`@` has no alternative in BINOP_ALTERNATIVES; a statement `a @ b` (whose value is dropped)
    raised KeyError in the operators that turn such a statement into an assignment."""
    code = "def f(a, b):\n    a @ b\n    c = a @ b\n    c @= a\n    return c\n"
    edits = list(single_site_edits(code, "f"))
    assert edits and not any("@" in e.after for e in edits)
