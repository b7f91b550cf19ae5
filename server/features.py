"""LSP handlers, one per method, each a few lines: find the document or failure, call a pure
function (diagnostics.py, actions.py) or queue work (server.py, fixwork.py), convert.

`build()` returns a ready server; main.py starts it on stdio or TCP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lsprotocol import types as lsp

from ledex.engine.apply import atomic_write_text
from ledex.server import actions, diagnostics, fixwork
from ledex.server.server import LedexServer


def _entries_at(ls: LedexServer, uri: str, rng: lsp.Range, given: list[lsp.Diagnostic]):
    """Failures with a ledex diagnostic on this document that overlaps `rng` (or was sent with the request)."""
    named = {d.data.get("test") for d in given if d.source == diagnostics.SOURCE and isinstance(d.data, dict)}
    found = []
    for entry in ls.visible():
        mine = [d for u, d in diagnostics.diagnostics_for(ls.root, entry, ls.line_text) if u == uri]
        hit = [d for d in mine if d.range.start.line <= rng.end.line and rng.start.line <= d.range.end.line]
        if hit or (mine and entry.failure.test in named):
            found.append((entry, hit or mine))
    return found


def _version_of(ls: LedexServer):
    def version_of(rel: str) -> tuple[str | None, int | None]:
        """The document's text (the editor's buffer, else the file) and version (None on disk)."""
        doc = ls.workspace.text_documents.get(diagnostics.uri_for(ls.root, rel))
        if doc is not None:
            return doc.source, doc.version
        return ls.disk_text(rel), None
    return version_of


def register(ls: LedexServer) -> None:
    @ls.feature(lsp.INITIALIZE)
    def initialize(ls: LedexServer, params: lsp.InitializeParams):
        ls.setup(params)

    @ls.feature(lsp.INITIALIZED)
    def initialized(ls: LedexServer, params: lsp.InitializedParams):
        ls.started()

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: LedexServer, params: lsp.DidChangeConfigurationParams):
        ls.configure(params.settings)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: LedexServer, params: lsp.DidOpenTextDocumentParams):
        if len(params.text_document.text) > ls.settings.maxFileBytes:
            ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, "ledex: file too large, not analysed: "
                                                       f"{params.text_document.uri}"))

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: LedexServer, params: lsp.DidChangeTextDocumentParams):
        ls.document_changed(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_SAVE, lsp.SaveOptions(include_text=False))
    def did_save(ls: LedexServer, params: lsp.DidSaveTextDocumentParams):
        ls.document_saved(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix], resolve_provider=False))
    def code_action(ls: LedexServer, params: lsp.CodeActionParams):
        found = _entries_at(ls, params.text_document.uri, params.range, params.context.diagnostics)
        return [a for entry, diags in found for a in actions.actions_for(ls.root, entry, _version_of(ls), diags)]

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: LedexServer, params: lsp.HoverParams):
        point = lsp.Range(params.position, params.position)
        found = _entries_at(ls, params.text_document.uri, point, [])
        if not found:
            return None
        text = "\n\n---\n\n".join(actions.hover_markdown(entry) for entry, _ in found)
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text))

    @ls.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancel(ls: LedexServer, params: lsp.WorkDoneProgressCancelParams):
        for entry in ls.entries.values():
            if entry.progress_token == params.token:
                entry.cancel.set()

    @ls.feature(lsp.SHUTDOWN)
    def shutdown(ls: LedexServer, params):
        for entry in ls.entries.values():
            entry.cancel.set()
        ls.watchers.stop()
        ls.jobs.shutdown()
        ls.models.close()

    _register_commands(ls)


def _register_commands(ls: LedexServer) -> None:
    @ls.command(actions.RUN_TESTS)
    async def run_tests(ls: LedexServer, *args):
        ls.models.retry()
        found = await asyncio.wrap_future(ls.run_tests_now(None))
        return {"failures": len(found.failures), "error": found.verdict.error if found.verdict else None,
                "notes": found.notes}

    @ls.command(actions.APPLY)
    def apply_fix(ls: LedexServer, episode_id: str, idx: int):
        entry = ls.entry_by_test_or_episode(episode_id)
        patch = entry.candidates[idx].patch if entry and 0 <= idx < len(entry.candidates) else None
        accepted = fixwork.log_outcome(ls, episode_id, "accepted", idx)
        if patch is not None:
            ls.accepted[episode_id] = patch
        return {"accepted": accepted}

    @ls.command(actions.DISMISS)
    def dismiss(ls: LedexServer, test: str):
        entry = ls.entry_by_test_or_episode(test)
        if entry is None:
            return {"dismissed": False}
        ls.dismissed.add(entry.key)
        entry.cancel.set()
        rejected = bool(entry.episode_id) and fixwork.log_outcome(ls, entry.episode_id, "rejected")
        ls.publish()
        return {"dismissed": True, "rejected": rejected}

    @ls.command(actions.EXPLAIN)
    async def explain(ls: LedexServer, test: str):
        entry = ls.entry_by_test_or_episode(test)
        if entry is None:
            return {"uri": None}
        uri = write_explanation(ls, entry)
        if _supports_show_document(ls):
            await ls.window_show_document_async(lsp.ShowDocumentParams(uri, take_focus=True))
        return {"uri": uri}

    @ls.command(actions.STATUS)
    def status(ls: LedexServer, *args):
        return ls.status()


def write_explanation(ls: LedexServer, entry) -> str:
    name = entry.episode_id or fixwork_name(entry.failure.test)
    path = ls.root / ".ledex" / "explanations" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, actions.explanation_markdown(entry))
    return Path(path).as_uri()


def fixwork_name(test: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in test)[:120]


def _supports_show_document(ls: LedexServer) -> bool:
    window = ls.client_capabilities.window if ls.client_capabilities else None
    return bool(window and window.show_document and window.show_document.support)


def build(home: Path | None = None) -> LedexServer:
    server = LedexServer(home)
    register(server)
    return server
