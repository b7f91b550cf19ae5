"""A real editor: headless Neovim's built-in LSP client runs tests/nvim/fix_flow.lua against
`python -m ledex.server` on the example project: diagnostic, code actions, apply the fix,
save; then the file is fixed, the tests pass and the log says accepted.

The fix comes from a recorded answer (model `replay:`) so the flow is deterministic; the
real model runs end to end in test_lsp.py. Skipped when `nvim` is not installed
(`.ci/run` installs Debian's neovim).
"""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_helpers import editor_log, run_editor_script

SCRIPT = Path(__file__).parent / "nvim" / "fix_flow.lua"
NVIM = shutil.which("nvim")


@pytest.mark.skipif(NVIM is None, reason="nvim is not installed (apt-get install -y neovim)")
def test_neovim_applies_a_fix_and_the_tests_pass(tmp_path):
    argv = [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {SCRIPT}"]
    done, result, root = run_editor_script(tmp_path, argv)
    stock = root / "inventory" / "stock.py"
    assert done.returncode == 0 and result.get("ok"), (done.returncode, result, done.stderr[-2000:], editor_log(tmp_path))
    assert result["steps"] == ["opened", "diagnostic", "actions", "applied", "saved", "cleared"]
    assert result["actions"][0].startswith("Fix: ") and "Explain this failure" in result["actions"]
    assert "return quantity <= threshold" in stock.read_text()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root,
                           capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout[-2000:]
    db = sqlite3.connect(root / ".ledex" / "episodes.sqlite3")
    assert db.execute("SELECT outcome, chosen_candidate FROM episodes").fetchall() == [("accepted", 0)]
