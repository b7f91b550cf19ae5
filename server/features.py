"""LSP handlers, one per method, each a few lines: find the folder, document or failure, call
a pure function (diagnostics.py, actions.py) or queue work (server.py, folder.py, fixwork.py),
convert. What the client can show comes from `ls.features` (capabilities.py), parsed once.

`build()` returns a ready server; main.py starts it on stdio or TCP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lsprotocol import types as lsp
from pygls.uris import to_fs_path

from ledex.engine.apply import atomic_write_text
from ledex.server import actions, diagnostics, fixwork
from ledex.server.folder import Folder
from ledex.server.server import LedexServer


def _entries_at(ls: LedexServer, uri: str, rng: lsp.Range, given: list[lsp.Diagnostic]):
    """(folder, failure, diagnostics) for each failure with a ledex diagnostic on this document
    that overlaps `rng` (or was sent with the request). Failures of every folder can point here."""
    named = {d.data.get("test") for d in given if d.source == diagnostics.SOURCE and isinstance(d.data, dict)}
    found = []
    for folder in ls.folders.values():
        for entry in folder.visible():
            mine = [d for u, d in folder.diagnostics_of(entry) if u == uri]
            hit = [d for d in mine if d.range.start.line <= rng.end.line and rng.start.line <= d.range.end.line]
            if hit or (mine and entry.failure.test in named):
                found.append((folder, entry, hit or mine))
    return found


def _version_of(ls: LedexServer, folder: Folder):
    def version_of(rel: str) -> tuple[str | None, int | None]:
        """The document's text (the editor's buffer, else the file) and version (None on disk)."""
        doc = ls.workspace.text_documents.get(diagnostics.uri_for(folder.root, rel))
        if doc is not None:
            return doc.source, doc.version
        return folder.disk_text(rel), None
    return version_of


def register(ls: LedexServer) -> None:
    @ls.feature(lsp.INITIALIZE)
    def initialize(ls: LedexServer, params: lsp.InitializeParams):
        ls.setup(params)

    @ls.feature(lsp.INITIALIZED)
    async def initialized(ls: LedexServer, params: lsp.InitializedParams):
        await ls.started()

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: LedexServer, params: lsp.DidChangeConfigurationParams):
        await ls.configure(params.settings)

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def did_change_workspace_folders(ls: LedexServer, params: lsp.DidChangeWorkspaceFoldersParams):
        await ls.change_folders(params.event)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: LedexServer, params: lsp.DidOpenTextDocumentParams):
        folder = ls.folder_of(params.text_document.uri)
        if folder is not None and len(params.text_document.text) > folder.settings.maxFileBytes:
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
        return [a for folder, entry, diags in found
                for a in actions.actions_for(folder.root, entry, _version_of(ls, folder), diags, ls.features)]

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: LedexServer, params: lsp.HoverParams):
        point = lsp.Range(params.position, params.position)
        found = _entries_at(ls, params.text_document.uri, point, [])
        if not found:
            return None
        markdown = ls.features.hover_markdown
        text = ("\n\n---\n\n" if markdown else "\n\n").join(actions.hover_text(e, markdown) for _, e, _ in found)
        return lsp.Hover(lsp.MarkupContent(ls.features.hover_kind, text))

    @ls.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancel(ls: LedexServer, params: lsp.WorkDoneProgressCancelParams):
        for _, entry in ls.all_entries():
            if entry.progress_token == params.token:
                entry.cancel.set()

    @ls.feature(lsp.SHUTDOWN)
    def shutdown(ls: LedexServer, params):
        ls.shutdown()

    _register_commands(ls)


def _register_commands(ls: LedexServer) -> None:
    @ls.command(actions.RUN_TESTS)
    async def run_tests(ls: LedexServer, *args):
        """Every folder's tests (or only the folder that args[0] names: a folder or file URI)."""
        ls.pool.retry()
        runs = [folder.run_tests_now(None) for folder in ls.folder_by_uri(_optional(args, 0))]
        found = [await asyncio.wrap_future(run) for run in runs]
        errors = [f.verdict.error for f in found if f.verdict and f.verdict.error]
        return {"failures": sum(len(f.failures) for f in found), "error": "; ".join(errors) or None,
                "notes": [note for f in found for note in f.notes]}

    @ls.command(actions.APPLY)
    def apply_fix(ls: LedexServer, episode_id: str, idx: int):
        folder, entry = ls.find_entry(episode_id)
        if folder is None:
            return {"accepted": False}
        patch = entry.candidates[idx].patch if 0 <= idx < len(entry.candidates) else None
        accepted = fixwork.log_outcome(folder, episode_id, "accepted", idx)
        if patch is not None:
            folder.accepted[episode_id] = patch
        return {"accepted": accepted}

    @ls.command(actions.DISMISS)
    def dismiss(ls: LedexServer, test: str, *args):  # args: [folder URI] when test ids repeat across folders
        folder, entry = ls.find_entry(test, _optional(args, 0))
        if entry is None:
            return {"dismissed": False}
        folder.dismissed.add(entry.key)
        entry.cancel.set()
        rejected = bool(entry.episode_id) and fixwork.log_outcome(folder, entry.episode_id, "rejected")
        folder.publish()
        return {"dismissed": True, "rejected": rejected}

    @ls.command(actions.EXPLAIN)
    async def explain(ls: LedexServer, test: str, *args):  # args: [folder URI] as for dismiss
        folder, entry = ls.find_entry(test, _optional(args, 0))
        if entry is None:
            return {"uri": None}
        uri = write_explanation(folder, entry)
        if ls.features.show_document:
            shown = await ls.window_show_document_async(lsp.ShowDocumentParams(uri, take_focus=True))
            if shown is not None and shown.success:
                return {"uri": uri, "shown": "document"}
        text = actions.explanation_text(entry, to_fs_path(uri))  # a client that cannot open it: a message
        ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, text))
        return {"uri": uri, "shown": "message", "text": text}

    @ls.command(actions.STATUS)
    def status(ls: LedexServer, *args):
        return ls.status()


def _optional(args: tuple, i: int) -> str | None:
    return args[i] if len(args) > i and isinstance(args[i], str) else None


def write_explanation(folder: Folder, entry) -> str:
    name = entry.episode_id or fixwork_name(entry.failure.test)
    path = folder.root / ".ledex" / "explanations" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, actions.explanation_markdown(entry))
    return Path(path).as_uri()


def fixwork_name(test: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in test)[:120]


def build(home: Path | None = None) -> LedexServer:
    server = LedexServer(home)
    register(server)
    return server
