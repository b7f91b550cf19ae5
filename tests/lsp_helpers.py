"""Shared helpers for the language-server tests: a fresh copy of the example project, a
client connected to a real `python -m ledex.server` subprocess, and waits on notifications
(never sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "inventory"
FIXED_IS_LOW_STOCK = ("The comparison excludes the threshold itself. It should use <= so a quantity equal to the "
                      "threshold counts as low.\n\n```python\ndef is_low_stock(quantity, threshold):\n"
                      '    """True when the quantity is at or below the reorder threshold."""\n'
                      "    return quantity <= threshold\n```")


def stock_project(tmp: Path) -> Path:
    """The example project with one seeded bug left (stock.py's `<`), so runs stay short."""
    root = tmp / "inventory"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", ".ledex", ".pytest_cache"))
    for name in ("test_pricing.py", "test_text.py"):
        (root / "tests" / name).unlink()
    return root


# What eglot 1.9 declares (eglot-client-capabilities, Emacs without markdown-mode): no window
# section at all (no progress, no showDocument), no disabled code actions, plaintext hovers.
EGLOT_1_9 = {"workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}, "configuration": True,
                           "workspaceFolders": True, "executeCommand": {"dynamicRegistration": False}},
             "textDocument": {"synchronization": {"didSave": True, "willSave": True},
                              "hover": {"contentFormat": ["plaintext"]},
                              "codeAction": {"codeActionLiteralSupport": {"codeActionKind": {"valueSet": ["quickfix"]}},
                                             "isPreferredSupport": True},
                              "publishDiagnostics": {"relatedInformation": False}}}


def run_editor_script(tmp: Path, argv: list[str], **env: str) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """Run a real editor's scripted fix flow (tests/nvim, tests/emacs) on the stock project with
    the fix as a recorded answer: (the editor's process, the JSON result it wrote, the project)."""
    root = stock_project(tmp)
    replay = tmp / "answers.json"
    replay.write_text(json.dumps([FIXED_IS_LOW_STOCK]))
    report = tmp / "result.json"
    env = {**os.environ, "LEDEX_ROOT": str(root), "LEDEX_FILE": str(root / "inventory" / "stock.py"),
           "LEDEX_PYTHON": sys.executable, "LEDEX_RESULT": str(report), "LEDEX_HOME": str(tmp / "home"),
           "LEDEX_OPTIONS": json.dumps({"model": f"replay:{replay}", "samples": 1, "rounds": 1, "search": False}),
           # the editor's own logs (Neovim's lsp.log: the server's stderr) stay here, for editor_log()
           "XDG_CACHE_HOME": str(tmp / "xdg-cache"), "XDG_STATE_HOME": str(tmp / "xdg-state"), **env}
    done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=420)
    return done, json.loads(report.read_text()) if report.exists() else {}, root


def editor_log(tmp: Path, chars: int = 4000) -> str:
    """The end of the logs a run_editor_script editor wrote (Neovim's lsp.log holds the server's
    stderr), for a failed test's message."""
    logs = sorted((tmp / "xdg-cache").rglob("*.log")) + sorted((tmp / "xdg-state").rglob("*.log"))
    return "\n".join(f"{p}:\n{p.read_text(errors='replace')[-chars:]}" for p in logs)


def episodes(root: Path) -> list[dict]:
    """The folder's episode log as rows (oldest first), each with its candidates."""
    db = sqlite3.connect(root / ".ledex" / "episodes.sqlite3")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM episodes ORDER BY created")]
    for row in rows:
        row["candidates"] = [dict(c) for c in db.execute(
            "SELECT * FROM candidates WHERE episode_id = ? ORDER BY idx", (row["id"],))]
    db.close()
    return rows


def capabilities_of(client: str) -> lsp.ClientCapabilities:
    """A pytest-lsp client's capabilities by name ("visual-studio-code", "neovim"), or "eglot-1.9"."""
    if client == "eglot-1.9":
        from lsprotocol.converters import get_converter
        return get_converter().structure(EGLOT_1_9, lsp.ClientCapabilities)
    return client_capabilities(client)


@contextlib.asynccontextmanager
async def session(root: Path, options: dict, home: Path, capabilities: str = "visual-studio-code",
                  folders: list[Path] | None = None):
    """A client talking to a fresh server subprocess, initialized on `root` (or on the
    workspace `folders`, the first being the root)."""
    env = {**os.environ, "LEDEX_HOME": str(home)}
    config = ClientServerConfig([sys.executable, "-m", "ledex.server"], server_env=env)
    client: LanguageClient = await config.start()
    client.published = record_publishes(client)
    client.progress_order = record(client, lsp.PROGRESS)  # every problem's $/progress, in arrival order
    await client.initialize_session(lsp.InitializeParams(
        capabilities=capabilities_of(capabilities), root_uri=root.as_uri(),
        workspace_folders=[lsp.WorkspaceFolder(f.as_uri(), f.name) for f in folders or [root]],
        initialization_options=options))
    try:
        yield client
    finally:
        await end_session(client)


async def end_session(client: LanguageClient, grace_s: float = 30) -> None:
    """Shut the server down the LSP way, or kill it after `grace_s` seconds: a test that failed
    because the server stopped answering must not hang in its teardown too (CI at 1dbd772 hung
    after one failure until its 90 min ran out)."""
    try:
        async with asyncio.timeout(grace_s):
            await client.shutdown_session()
    except (TimeoutError, OSError):
        if client._server is not None and client._server.returncode is None:
            client._server.kill()
    async with asyncio.timeout(grace_s):
        await client.stop()


def record_publishes(client: LanguageClient) -> list[lsp.PublishDiagnosticsParams]:
    """Every textDocument/publishDiagnostics the client receives, in order (pytest-lsp keeps
    only the latest per document)."""
    return record(client, lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)


def record(client: LanguageClient, method: str) -> list:
    """The params of every `method` notification the client receives from now on, in order
    (pytest-lsp keeps $/progress per token, so the order between tokens is only here)."""
    seen: list = []
    handle = client.protocol._handle_notification

    def recording(name: str, params):
        if name == method:
            seen.append(params)
        return handle(name, params)
    client.protocol._handle_notification = recording
    return seen


def repeated_publishes(client: LanguageClient) -> list[str]:
    """Documents sent the same diagnostics twice in a row: a notification that changed nothing."""
    last: dict[str, list[lsp.Diagnostic]] = {}
    repeats = []
    for params in client.published:
        if params.uri in last and last[params.uri] == params.diagnostics:
            repeats.append(params.uri)
        last[params.uri] = params.diagnostics
    return repeats


async def wait_for(client: LanguageClient, predicate, method: str = lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS,
                   timeout: float = 420):
    """Wait until predicate() holds, re-checking after each `method` notification; TimeoutError
    after `timeout` s, before pytest-timeout's 600 s, so the test fails with its session closed."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await client.wait_for_notification(method)


def ledex_diagnostics(client: LanguageClient, path: Path) -> list[lsp.Diagnostic]:
    return [d for d in client.diagnostics.get(path.as_uri(), []) if d.source == "ledex"]


def state_is(client: LanguageClient, path: Path, *states: str):
    return lambda: any(d.data.get("state") in states for d in ledex_diagnostics(client, path))


def open_doc(client: LanguageClient, path: Path, version: int = 1) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(path.as_uri(), "python", version, path.read_text())))


def apply_text_edit(text: str, edit: lsp.TextEdit) -> str:
    """Apply one line-based TextEdit (what an editor does)."""
    lines = text.splitlines(keepends=True)
    start, end = edit.range.start, edit.range.end
    head = "".join(lines[:start.line]) + lines[start.line][:start.character] if start.line < len(lines) else text
    tail_line = lines[end.line] if end.line < len(lines) else ""
    tail = tail_line[end.character:] + "".join(lines[end.line + 1:])
    return head + edit.new_text + tail


async def code_actions(client: LanguageClient, path: Path, diagnostic: lsp.Diagnostic) -> list[lsp.CodeAction]:
    """textDocument/codeAction, structured as CodeActions.

    pygls' client structures the `(Command | CodeAction)[]` result union as Commands and
    drops the edits, so the raw JSON is taken and structured here."""
    import uuid

    params = lsp.CodeActionParams(lsp.TextDocumentIdentifier(path.as_uri()), diagnostic.range,
                                  lsp.CodeActionContext([diagnostic]))
    msg_id = uuid.uuid4().hex
    future = client.protocol.send_request(lsp.TEXT_DOCUMENT_CODE_ACTION, params, msg_id=msg_id)
    client.protocol._result_types.pop(msg_id, None)  # keep the raw JSON (see above)
    raw = await asyncio.wrap_future(future)
    return [client.protocol._converter.structure(item, lsp.CodeAction) for item in raw or []]
