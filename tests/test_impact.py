"""Which tests a save can affect (ledex.engine.impact), checked against what really breaks:
every module is broken in turn and the whole suite run with pytest; the tests that fail
must all be in the narrowed set."""

from __future__ import annotations

import pytest

from helpers import outcomes_of, write_tree
from ledex.engine.impact import ImportGraph

WORKSPACE = {
    "pkg/__init__.py": "from .core import total\n",
    "pkg/core.py": "from .util import clamp\n\n\ndef total(xs):\n    return clamp(sum(xs))\n",
    "pkg/util.py": "def clamp(x):\n    return max(0, x)\n",
    "pkg/other.py": "def other():\n    return 1\n",
    "pkg/plugins/loaded.py": "def hook():\n    return 2\n",
    "tests/helpers.py": "from pkg.other import other\n\n\ndef helper():\n    return other()\n",
    "tests/test_total.py": "from pkg import total\n\n\ndef test_total():\n    assert total([1, 2]) == 3\n",
    "tests/test_other.py": "from helpers import helper\n\n\ndef test_other():\n    assert helper() == 1\n",
    "tests/test_dynamic.py": ("import importlib\n\n\ndef test_hook():\n"
                              "    assert importlib.import_module('pkg.plugins.loaded').hook() == 2\n"),
    "tests/sub/conftest.py": ("import pytest\n\nfrom pkg.util import clamp\n\n\n@pytest.fixture\n"
                              "def zero():\n    return clamp(-5)\n"),
    "tests/sub/test_fixture.py": "def test_zero(zero):\n    assert zero == 0\n",
    "tools/report.py": "print('a script no test imports')\n",
}
ALL_TESTS = ["tests/sub/test_fixture.py", "tests/test_dynamic.py", "tests/test_other.py", "tests/test_total.py"]
EXPECTED = {
    # via core and the package __init__ (which every `pkg.*` import runs), and via a conftest
    "pkg/util.py": ALL_TESTS,
    "pkg/core.py": ALL_TESTS,
    "pkg/other.py": ["tests/test_other.py"],  # through a helper module
    "pkg/plugins/loaded.py": ["tests/test_dynamic.py"],  # importlib.import_module with a literal name
    "tools/report.py": None,  # imported by no test: nothing narrower is known, run all
    "tests/sub/conftest.py": None,
    "tests/helpers.py": ["tests/test_other.py"],
}


@pytest.fixture
def workspace(tmp_path):
    return write_tree(tmp_path / "ws", WORKSPACE)


def test_the_workspace_passes_as_written(workspace):
    assert list(outcomes_of(workspace).values()) == ["passed"] * 4


@pytest.mark.parametrize("changed", sorted(EXPECTED))
def test_narrowed_set_holds_every_test_the_change_breaks(workspace, changed):
    affected = ImportGraph(workspace).affected_tests(changed)
    assert affected == EXPECTED[changed]
    with open(workspace / changed, "a") as module:
        module.write("\nraise RuntimeError('broken on purpose')\n")
    broken = {nodeid.split("::")[0] for nodeid, outcome in outcomes_of(workspace).items() if outcome != "passed"}
    # a broken conftest fails the collection of its whole folder ("ERROR tests/sub")
    covered = {b for b in broken if any(a == b or a.startswith(b + "/") for a in affected or ())}
    assert affected is None or (broken and covered == broken)


def test_graph_follows_edits_and_deletions(workspace):
    graph = ImportGraph(workspace)
    assert graph.affected_tests("pkg/other.py") == ["tests/test_other.py"]
    (workspace / "tests" / "test_total.py").write_text("from pkg.other import other\n\n\ndef test_o():\n"
                                                       "    assert other() == 1\n")
    assert graph.affected_tests("pkg/other.py") == ["tests/test_other.py", "tests/test_total.py"]
    (workspace / "tests" / "helpers.py").unlink()
    assert graph.affected_tests("pkg/other.py") == ["tests/test_total.py"]
    (workspace / "tests" / "test_total.py").write_text("this is not python (\n")
    assert graph.affected_tests("pkg/other.py") is None
