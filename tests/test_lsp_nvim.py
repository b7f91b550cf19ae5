"""A real editor: headless Neovim's built-in LSP client runs tests/nvim/fix_flow.lua against
`python -m ledex.server` on the example project: diagnostic, code actions, apply the fix,
save; then the file is fixed, the tests pass and the log says accepted.

The fix comes from a recorded answer (model `replay:`) so the flow is deterministic; the
real model runs end to end in test_lsp.py. Skipped when `nvim` is not installed
(`.ci/run` installs Debian's neovim).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_helpers import FIXED_IS_LOW_STOCK, stock_project

SCRIPT = Path(__file__).parent / "nvim" / "fix_flow.lua"
NVIM = shutil.which("nvim")


@pytest.mark.skipif(NVIM is None, reason="nvim is not installed (apt-get install -y neovim)")
def test_neovim_applies_a_fix_and_the_tests_pass(tmp_path):
    root = stock_project(tmp_path)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([FIXED_IS_LOW_STOCK]))
    stock = root / "inventory" / "stock.py"
    report = tmp_path / "result.json"
    env = {**os.environ, "LEDEX_ROOT": str(root), "LEDEX_FILE": str(stock), "LEDEX_PYTHON": sys.executable,
           "LEDEX_RESULT": str(report), "LEDEX_HOME": str(tmp_path / "home"),
           "LEDEX_OPTIONS": json.dumps({"model": f"replay:{replay}", "samples": 1, "rounds": 1})}
    done = subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {SCRIPT}"], env=env,
                          cwd=root, capture_output=True, text=True, timeout=900)
    result = json.loads(report.read_text()) if report.exists() else {}
    assert done.returncode == 0 and result.get("ok"), (done.returncode, result, done.stderr[-2000:])
    assert result["steps"] == ["opened", "diagnostic", "actions", "applied", "saved", "cleared"]
    assert result["actions"][0].startswith("Fix: ") and "Explain this failure" in result["actions"]
    assert "return quantity <= threshold" in stock.read_text()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root,
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-2000:]
    db = sqlite3.connect(root / ".ledex" / "episodes.sqlite3")
    assert db.execute("SELECT outcome, chosen_candidate FROM episodes").fetchall() == [("accepted", 0)]
