"""A stand-in for `ledex-lsp`, used only by the extension's end-to-end test (`run.mjs --stub`).

It speaks the same contract as the real server (initializationOptions, ledex.* commands,
$/progress, quick fixes as code actions) but instead of a model it knows one fix for the demo
project: `is_low_stock` in examples/inventory uses `<` where `<=` is meant. Tests are really run
(pytest); the diagnostic only appears while tests/test_stock.py::test_low_stock_at_threshold fails.
It tests the VS Code side (client, diagnostics, quick-fix menu, apply, status bar), not the model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from lsprotocol import types as t
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

FAILING_TEST = "tests/test_stock.py::test_low_stock_at_threshold"
FIX_FILE = "inventory/stock.py"
FIX_OLD, FIX_NEW = "quantity < threshold", "quantity <= threshold"

server = LanguageServer("ledex-stub", "0.0.1")
state = {"root": None, "options": {}, "busy": False, "dismissed": False, "log": []}
lock = threading.Lock()


def log(msg: str) -> None:
    print(f"[ledex-stub] {msg}", file=sys.stderr, flush=True)
    if os.environ.get("LEDEX_STUB_LOG"):  # read back by run.mjs
        with open(os.environ["LEDEX_STUB_LOG"], "a") as f:
            f.write(msg + "\n")


def root() -> Path:
    return Path(state["root"] or os.getcwd())


def run_tests_and_publish() -> None:
    if not lock.acquire(blocking=False):
        return
    token = str(uuid.uuid4())
    try:
        state["busy"] = True
        server.work_done_progress.create(token).result(timeout=10)
        server.work_done_progress.begin(token, t.WorkDoneProgressBegin(title="Running tests", percentage=0))
        cmd = state["options"].get("testCommand") or f"{sys.executable} -m pytest"
        res = subprocess.run(cmd + " -q -p no:cacheprovider", shell=True, cwd=root(), capture_output=True, text=True)
        log(f"tests: {cmd} -> {res.returncode}")
        server.work_done_progress.report(token, t.WorkDoneProgressReport(message="verifying fix", percentage=60))
        failing = FAILING_TEST in res.stdout and "FAILED " + FAILING_TEST in res.stdout
        path = root() / FIX_FILE
        diags = []
        if failing and not state["dismissed"] and path.exists():
            for i, line in enumerate(path.read_text().splitlines()):
                col = line.find(FIX_OLD)
                if col >= 0:
                    diags.append(
                        t.Diagnostic(
                            range=t.Range(t.Position(i, col), t.Position(i, col + len(FIX_OLD))),
                            message=f"{FAILING_TEST} fails: is_low_stock(5, 5) is False. Verified fix available.",
                            severity=t.DiagnosticSeverity.Error,
                            source="ledex",
                            code=FAILING_TEST,
                            data={"failureId": FAILING_TEST, "file": FIX_FILE},
                        )
                    )
        server.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=from_fs_path(str(path)), diagnostics=diags))
        server.work_done_progress.end(token, t.WorkDoneProgressEnd(message="done"))
    finally:
        state["busy"] = False
        lock.release()


@server.feature(t.INITIALIZE)
def initialize(ls: LanguageServer, params: t.InitializeParams) -> None:
    state["options"] = params.initialization_options or {}
    folders = params.workspace_folders or []
    state["root"] = to_fs_path(folders[0].uri) if folders else params.root_path
    log(f"initializationOptions={json.dumps(state['options'], sort_keys=True)}")


@server.feature(t.INITIALIZED)
def initialized(ls: LanguageServer, params) -> None:
    threading.Thread(target=run_tests_and_publish, daemon=True).start()


@server.feature(t.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: LanguageServer, params: t.DidChangeConfigurationParams) -> None:
    settings = (params.settings or {}).get("ledex") or {}
    state["options"].update(settings)
    log(f"didChangeConfiguration ledex={json.dumps(settings, sort_keys=True)}")


@server.feature(t.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: LanguageServer, params: t.DidSaveTextDocumentParams) -> None:
    if state["options"].get("runOnSave", True):
        threading.Thread(target=run_tests_and_publish, daemon=True).start()


@server.feature(t.TEXT_DOCUMENT_CODE_ACTION, t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.QuickFix]))
def code_action(ls: LanguageServer, params: t.CodeActionParams):
    actions = []
    for d in params.context.diagnostics:
        if d.source != "ledex":
            continue
        edit = t.WorkspaceEdit(changes={params.text_document.uri: [t.TextEdit(range=d.range, new_text=FIX_NEW)]})
        actions.append(
            t.CodeAction(
                title="ledex: use <= in is_low_stock (verified: 1 test fixed, 0 broken)",
                kind=t.CodeActionKind.QuickFix,
                diagnostics=[d],
                is_preferred=True,
                edit=edit,
            )
        )
        actions.append(
            t.CodeAction(
                title="ledex: dismiss this suggestion",
                kind=t.CodeActionKind.QuickFix,
                diagnostics=[d],
                command=t.Command(title="Dismiss", command="ledex.dismiss", arguments=[d.data]),
            )
        )
    return actions


@server.command("ledex.runTests")
def cmd_run_tests(ls: LanguageServer, *args):
    threading.Thread(target=run_tests_and_publish, daemon=True).start()
    return None


@server.command("ledex.status")
def cmd_status(ls: LanguageServer, *args):
    return {"model": state["options"].get("model") or "SmolLM2-135M", "busy": state["busy"], "lastTraining": None}


@server.command("ledex.dismiss")
def cmd_dismiss(ls: LanguageServer, *args):
    state["dismissed"] = True
    path = root() / FIX_FILE
    ls.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=from_fs_path(str(path)), diagnostics=[]))
    return None


@server.command("ledex.explain")
def cmd_explain(ls: LanguageServer, *args):
    out = Path(tempfile.gettempdir()) / "ledex-stub-explain.md"
    out.write_text(f"# Why `{FAILING_TEST}` fails\n\n`is_low_stock` compares with `<`; the docstring says *at or below*.\n")
    ls.window_show_document(t.ShowDocumentParams(uri=from_fs_path(str(out)), take_focus=True))
    return None


if __name__ == "__main__":
    server.start_io()
