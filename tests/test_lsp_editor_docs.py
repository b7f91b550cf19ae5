"""docs/editors.md's snippets run as written (only the placeholder path of ledex-lsp is
replaced by this venv's): the Neovim Lua in headless Neovim, the Emacs Lisp in Emacs + eglot
(batch), the Helix config parsed as TOML. Each editor snippet must start the real server and
reach `ledex.runTests` the way the docs say. Editors that are not installed are skipped;
the Neovim 0.8+ snippet needs Neovim 0.8 (Debian 12 ships 0.7: then only the 0.7 one runs).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parent.parent / "docs" / "editors.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC, re.S)
LEDEX_LSP = str(Path(sys.executable).parent / "ledex-lsp")
NVIM, EMACS = shutil.which("nvim"), shutil.which("emacs")


def block(lang: str, marker: str) -> str:
    (found,) = [text for kind, text in BLOCKS if kind == lang and marker in text]
    return found.replace("/path/to/project/.venv/bin/ledex-lsp", LEDEX_LSP).replace('"ledex-lsp"', f'"{LEDEX_LSP}"')


@pytest.fixture
def project(tmp_path):
    """A project with nothing failing: the server starts, runs the (empty) suite, loads no model."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\nversion = '0'\n")
    (root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)  # what project.el finds a root by
    return root


def test_helix_config_is_valid_toml():
    config = tomllib.loads(block("toml", "[language-server.ledex]"))
    assert config["language-server"]["ledex"] == {"command": LEDEX_LSP, "config": {"samples": 4, "rounds": 2}}
    assert config["language"] == [{"name": "python", "language-servers": ["pylsp", "ledex"]}]


def nvim_version() -> tuple[int, int]:
    out = subprocess.run([NVIM, "--version"], capture_output=True, text=True).stdout
    major, minor = re.search(r"NVIM v(\d+)\.(\d+)", out).groups()
    return int(major), int(minor)


NVIM_CHECK = """
vim.cmd("edit calc.py")
local function ledex() for _, c in pairs(vim.lsp.get_active_clients()) do if c.name == "ledex" then return c end end end
local ok = vim.wait(120000, function() local c = ledex(); return c ~= nil and c.initialized end, 50)
local reply = ok and ledex().request_sync("workspace/executeCommand", { command = "ledex.runTests", arguments = {} },
                                          120000, 0)
local handle = io.open(os.getenv("LEDEX_RESULT"), "w")
handle:write(vim.fn.json_encode({ attached = #vim.lsp.buf_get_clients(0), result = reply and reply.result }))
handle:close()
vim.cmd("qall!")
"""


@pytest.mark.skipif(NVIM is None, reason="nvim is not installed (apt-get install -y neovim)")
@pytest.mark.parametrize("variant", ["vim.lsp.start(", "vim.lsp.start_client("])
def test_neovim_snippet_starts_ledex(project, tmp_path, variant):
    if variant == "vim.lsp.start(" and nvim_version() < (0, 8):
        pytest.skip(f"the Neovim 0.8+ snippet needs Neovim 0.8; this is {nvim_version()}")
    init, check, result = tmp_path / "init.lua", tmp_path / "check.lua", tmp_path / "result.json"
    init.write_text(block("lua", variant))  # as the user's init.lua: Neovim turns filetype detection on after it
    check.write_text(NVIM_CHECK)
    done = subprocess.run([NVIM, "--headless", "-u", str(init), "-i", "NONE", "-c", f"luafile {check}"],
                          cwd=project, env={**os.environ, "LEDEX_RESULT": str(result)},
                          capture_output=True, text=True, timeout=300)
    assert result.exists(), done.stderr[-2000:]
    report = json.loads(result.read_text())
    assert report["attached"] == 1 and report["result"]["failures"] == 0, report


EMACS_CHECK = """
(defvar shown nil)
(advice-add 'message :filter-return (lambda (text) (setq shown text)))
(find-file (expand-file-name "calc.py" default-directory))
(run-hooks 'post-command-hook)                 ; eglot-ensure connects after the opening command
(let ((deadline (+ (float-time) 120)))
  (while (and (not (eglot-current-server)) (< (float-time) deadline)) (accept-process-output nil 0.1)))
(ledex-run-tests)
(let ((report (list (cons 'message shown) (cons 'config eglot-workspace-configuration))))
  (with-temp-file (getenv "LEDEX_RESULT") (insert (json-encode report))))
"""
EMACS_CHOOSER = """
(defun chosen () (format "%S" (funcall (cdr (assq 'python-mode eglot-server-programs)) nil)))
(let ((elsewhere (chosen)))
  (make-directory (expand-file-name ".ledex" default-directory) t)
  (with-temp-file (getenv "LEDEX_RESULT")
    (insert (json-encode (list (cons 'elsewhere elsewhere) (cons 'ledex (chosen)))))))
"""


def run_emacs(project: Path, tmp_path: Path, *parts: str) -> dict:
    script, result = tmp_path / "init.el", tmp_path / "result.json"
    result.unlink(missing_ok=True)
    script.write_text("(require 'json)\n(require 'eglot)\n" + "\n".join(parts))
    done = subprocess.run([EMACS, "--batch", "-q", "-l", str(script)], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "LEDEX_RESULT": str(result), "HOME": str(tmp_path)}, timeout=300)
    assert result.exists(), done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.skipif(EMACS is None, reason="emacs is not installed (apt-get install -y emacs-nox elpa-eglot)")
def test_emacs_snippets_start_ledex_and_run_the_tests(project, tmp_path):
    (project / ".dir-locals.el").write_text(block("elisp", "eglot-workspace-configuration"))
    report = run_emacs(project, tmp_path, block("elisp", "add-hook 'python-mode-hook"),
                       block("elisp", "defun ledex-run-tests"), EMACS_CHECK)
    assert report["message"] == "ledex: 0 failing test(s)", report
    assert report["config"] == {"ledex": {"samples": 2, "runOnSave": False}}  # the .dir-locals.el was applied

    (project / ".dir-locals.el").unlink()
    shutil.rmtree(project / ".ledex")
    chooser = run_emacs(project, tmp_path, block("elisp", "defun my-python-server"), EMACS_CHOOSER)
    assert chooser == {"elsewhere": '("pylsp")',
                       "ledex": f'("{LEDEX_LSP}" :initializationOptions (:samples 4 :rounds 2))'}
