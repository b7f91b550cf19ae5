"""ledex-lsp's `testCommand` setting runs the suite AND verifies every fix (issue 12 item 13):
a real server subprocess, the real sandbox, a recorded answer. The project's tests need a
command-line option only the test command passes, so a verification run with the default
command would break a passing test and the fix would not be verified."""

from __future__ import annotations

import json
import os
import sys

import pytest

from helpers import write_tree
from lsp_helpers import code_actions, ledex_diagnostics, open_doc, session, state_is, wait_for

pytestmark = pytest.mark.asyncio

PROJECT = {
    "calc.py": "def scale(x):\n    return x * 3 + 1\n",
    "conftest.py": "def pytest_addoption(parser):\n    parser.addoption('--answer', default='0')\n",
    "test_calc.py": "from calc import scale\n\n\ndef test_scale():\n    assert scale(2) == 6\n\n\n"
                    "def test_answer(request):\n    assert request.config.getoption('--answer') == '42'\n",
}
ANSWER = "The +1 is wrong.\n```python\ndef scale(x):\n    return x * 3\n```"


COMMAND = "{python} -m pytest -q --answer=42 --junitxml={junit} {tests}"


@pytest.mark.parametrize("where", ["settings", "pyproject"])
async def test_the_test_command_is_used_to_verify_fixes(tmp_path, where):
    """From the editor's settings or, as `ledex fix` reads them, the folder's [tool.ledex]; a
    relative `python` is relative to the workspace folder in both (fresh-user run X8: the server
    ignored the table, and resolved a relative setting against its own working directory)."""
    root = write_tree(tmp_path / "proj", PROJECT)
    python = os.path.relpath(sys.executable, root)  # relative to the folder ("../..": resolved from it)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([ANSWER]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False}
    if where == "settings":
        options.update(testCommand=COMMAND, python=python)
    else:
        (root / "pyproject.toml").write_text(f"[tool.ledex]\npython = {python!r}\ntest-command = {COMMAND!r}\n")
    calc = root / "calc.py"
    async with session(root, options, tmp_path / "home") as client:
        open_doc(client, calc)
        await wait_for(client, state_is(client, calc, "ready"))
        (suspect,) = ledex_diagnostics(client, calc)
        titles = [a.title for a in await code_actions(client, calc, suspect)]
        failing = {d.data["test"] for d in ledex_diagnostics(client, root / "test_calc.py")}
    assert titles[0] == "Fix: The +1 is wrong."  # verified (an unverified one says so and its pass rate)
    assert failing == {"test_calc.py::test_scale"}  # test_answer passes: the suite ran with --answer=42
