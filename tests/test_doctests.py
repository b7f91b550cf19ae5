"""The examples in module docstrings are true (rewards has its own doctest test)."""

import doctest
import importlib

import pytest

MODULES = ["ledex.engine.format", "ledex.engine.grammar", "ledex.engine.localize", "ledex.sandbox.verdict", "ledex.training.passk", "ledex.training.kto",
           "ledex.server.watch", "ledex.engine.impact", "ledex.engine.sbfl", "ledex.engine.outcomes", "ledex.engine.notes", "ledex.engine.patching", "ledex.engine.ranking",
           "ledex.engine.rerun", "ledex.engine.explanations", "ledex.engine.screening", "ledex.engine.search",
           "ledex.sandbox.worker", "ledex.sandbox.workspace", "ledex.server.diagnostics", "ledex.cli", "ledex.cli_output", "ledex.training.plant", "ledex.engine.collection"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
