"""Re-running tests named by an earlier run when their parametrized ids do not survive the process.

pytest names a parametrized case by its values, and an object value by its argument name and
index (``test_format[4-1985-W15-expected0-%Y-W%W]``). When the cases come from something whose
order differs from process to process (a set of tuples holding ``None``, whose hash is its
address before Python 3.12; a shuffled list), discovery's ids are "not found" in the next run
and pytest runs nothing (isodate 0.7.2's tests/test_date.py, found by a fresh-user run: the right
fix was rejected as "requested tests did not run"; pinning PYTHONHASHSEED is not enough).

The remedy here: request such tests by their function (``file::Class::test_f``, every case), and
judge an id that did not run by every case of its function, which must all pass: stricter than
the ids themselves, never looser.

    >>> function_of("tests/t.py::T::test_f[a-obj0]"), function_of("tests/t.py::test_g")
    ('tests/t.py::T::test_f', None)
    >>> by_function(["t.py::test_f[obj0]", "t.py::test_f[obj1]", "t.py::test_g"])
    ('t.py::test_f', 't.py::test_g')
    >>> widen(["t.py::test_f[obj0]", "t.py::test_g"], "ERROR: not found: /ws/t.py::test_f\\n(no match in ...)")
    ('t.py::test_f', 't.py::test_g')
    >>> widen(["t.py::test_f[obj0]", "t.py::test_g"], "ERROR: not found: /ws/t.py::test_g")  # gone, not renamed
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["by_function", "cases_of", "fewer_cases", "function_of", "printed", "widen"]


def function_of(nodeid: str) -> str | None:
    """The node id of a parametrized case's function (the id without its ``[...]``), None when
    `nodeid` is not a parametrized case."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    return nodeid[:nodeid.index("[")]


def by_function(nodeids: Iterable[str]) -> tuple[str, ...]:
    """`nodeids` with every parametrized case replaced by its function, in order, once each."""
    return tuple(dict.fromkeys(function_of(n) or n for n in nodeids))


def cases_of(nodeid: str, outcomes: Mapping[str, object]) -> Sequence[object]:
    """The outcome of `nodeid` in `outcomes` (node id -> outcome) as a one-item list; when it did
    not run but its function's cases did, every one of those; for a module or folder (".": the
    workspace) that did not fail to collect this time, every test in it; else []."""
    if nodeid in outcomes:
        return [outcomes[nodeid]]
    if "::" not in nodeid:  # a module or folder that failed to collect (engine/collection.py): all its tests
        prefix = "" if nodeid == "." else nodeid + ("::" if nodeid.endswith(".py") else "/")
        return [o for n, o in outcomes.items() if n.startswith(prefix)]
    function = function_of(nodeid)
    if function is None:
        return []
    return [o for n, o in outcomes.items() if function_of(n) == function]


def printed(verdict) -> str:  # noqa: ANN001 - a sandbox Verdict (this module imports nothing of ours)
    """What a run said that the sandbox kept (its error, stderr, then stdout): where pytest's
    "ERROR: not found:" lines are, for `widen`."""
    return f"{verdict.error or ''}\n{verdict.stderr_tail}\n{verdict.stdout_tail}"


def widen(requested: Sequence[str], printed: str) -> tuple[str, ...] | None:
    """`requested` by function when every id pytest reported "not found" in `printed` (its
    output: ``ERROR: not found: <path>::<id or its function>``, one line per missing argument, pytest's
    Session.perform_collect) is a parametrized case; None when one is not (a doctest or test that
    is gone: running by function would not bring it back) or none is named."""
    named = [line.split("ERROR: not found: ", 1)[1].strip() for line in printed.splitlines()
             if "ERROR: not found: " in line]
    def names(arg: str, nodeid: str | None) -> bool:
        return nodeid is not None and (arg == nodeid or arg.endswith("/" + nodeid))

    # pytest 8 names a missing case by its function (the part before "[")
    missing = [t for t in requested if any(names(arg, t) or names(arg, function_of(t)) for arg in named)]
    if not missing or not all(function_of(t) for t in missing):
        return None
    return by_function(requested)


def fewer_cases(requested: Sequence[str], outcomes: Mapping[str, object]) -> str:
    """'<function>: N ran, M were asked for' for the first parametrized function of `requested`
    whose cases in `outcomes` are fewer than its requested ids; "" when none. Run by function,
    every case runs: fewer means the code under test changed the test's parameters.

    >>> fewer_cases(["t.py::f[a]", "t.py::f[b]"], {"t.py::f[c]": None})
    't.py::f: 1 ran, 2 were asked for'
    """
    wanted = Counter(function_of(t) for t in requested if function_of(t))
    ran = Counter(function_of(n) for n in outcomes if function_of(n))
    short = next((f for f, n in wanted.items() if ran[f] < n), None)
    return f"{short}: {ran[short]} ran, {wanted[short]} were asked for" if short else ""
