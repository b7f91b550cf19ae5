"""A third real editor, and the barest one: Emacs 28 + eglot 1.9 in batch mode run
tests/emacs/fix_flow.el against `python -m ledex.server` on the example project. eglot 1.9
declares no work-done progress, no showDocument, no disabled code actions and plaintext
hovers (without markdown-mode), so this is the capability-fallback path end to end:
diagnostic, code actions while the model is still generating (the model process is frozen
with SIGSTOP: deterministic), explain as a message, a plaintext hover, then the fix from
eglot's own menu, save, diagnostic cleared, episode accepted.

The fix comes from a recorded answer (model `replay:`). Skipped when emacs or eglot is not
installed (scripts/setup.sh installs Debian's emacs-nox and elpa-eglot).
"""

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from lsp_helpers import run_editor_script

SCRIPT = Path(__file__).parent / "emacs" / "fix_flow.el"
EMACS = shutil.which("emacs")


def eglot_installed() -> bool:
    if EMACS is None:
        return False
    probe = subprocess.run([EMACS, "--batch", "-q", "--eval", "(require 'eglot)"], capture_output=True, timeout=120)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not eglot_installed(),
                                reason="emacs with eglot is not installed (apt-get install -y emacs-nox elpa-eglot)")


def test_emacs_eglot_fixes_with_the_fallbacks_of_a_bare_client(tmp_path):
    done, result, root = run_editor_script(tmp_path, [EMACS, "--batch", "-q", "-l", str(SCRIPT)], HOME=str(tmp_path))
    stock = root / "inventory" / "stock.py"
    assert done.returncode == 0 and result.get("ok") is True, (done.returncode, result, done.stderr[-3000:])
    assert result["steps"] == ["opened", "diagnostic", "pending", "actions", "applied", "saved", "cleared"]

    # While the model generates: the state is in the diagnostic, no dead action, explain and hover work.
    assert "(ledex: " in result["pending_message"] and "looking for a fix" in result["pending_message"]
    assert result["pending_actions"] == ["Explain this failure", "Dismiss ledex suggestion"]
    assert result["dead_actions"] == 0
    assert result["explain_shown"] == "message" and "Why tests/test_stock.py::" in result["explain_message"]
    assert result["hover_kind"] == "plaintext" and "**" not in result["hover"] and "ooking for a fix" in result["hover"]

    # Then the fix, from eglot's own menu; the end of the fix was said in a message.
    assert "1 verified fix" in result["ready_message"]
    assert result["actions"][0].startswith("Fix: ") and result["applied"] == result["actions"][0]
    assert any("verified fix" in m and "code actions" in m for m in result["shown"])
    assert "return quantity <= threshold" in stock.read_text()
    db = sqlite3.connect(root / ".ledex" / "episodes.sqlite3")
    assert db.execute("SELECT outcome, chosen_candidate FROM episodes").fetchall() == [("accepted", 0)]
