"""LSP handlers, in the jedi-language-server style: one per method, named after it, each a
few lines: find the document, folder or problem, call a pure function (diagnostics.py,
actions.py) or a server/folder method that owns the state it changes, convert to lsprotocol.
What the client can show comes from `ls.features` (capabilities.py), parsed once.

`build()` returns a ready server; main.py starts it on stdio or TCP (`python -m ledex.server`).
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp

from ledex.server import actions
from ledex.server.server import LedexServer


def register(ls: LedexServer) -> None:
    @ls.feature(lsp.INITIALIZE)
    def initialize(ls: LedexServer, params: lsp.InitializeParams):
        ls.setup(params)

    @ls.feature(lsp.INITIALIZED)
    async def initialized(ls: LedexServer, params: lsp.InitializedParams):
        await ls.started()

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def workspace_did_change_configuration(ls: LedexServer, params: lsp.DidChangeConfigurationParams):
        await ls.configure(params.settings)

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def workspace_did_change_workspace_folders(ls: LedexServer, params: lsp.DidChangeWorkspaceFoldersParams):
        await ls.change_folders(params.event)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def text_document_did_open(ls: LedexServer, params: lsp.DidOpenTextDocumentParams):
        folder = ls.folder_of(params.text_document.uri)
        if folder is not None and len(params.text_document.text) > folder.settings.maxFileBytes:
            ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, "ledex: file too large, not analysed: "
                                                       f"{params.text_document.uri}"))

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def text_document_did_change(ls: LedexServer, params: lsp.DidChangeTextDocumentParams):
        ls.document_changed(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_SAVE, lsp.SaveOptions(include_text=False))
    def text_document_did_save(ls: LedexServer, params: lsp.DidSaveTextDocumentParams):
        ls.document_saved(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix], resolve_provider=False))
    def text_document_code_action(ls: LedexServer, params: lsp.CodeActionParams):
        found = ls.problems_at(params.text_document.uri, params.range, params.context.diagnostics)
        return [action for folder, entry, here in found
                for action in actions.actions_for(folder.root, entry, ls.text_and_version(folder), here, ls.features)]

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    def text_document_hover(ls: LedexServer, params: lsp.HoverParams):
        found = ls.problems_at(params.text_document.uri, lsp.Range(params.position, params.position), [])
        if not found:
            return None
        text = actions.hover_markup([entry for _, entry, _ in found], ls.features.hover_markdown)
        return lsp.Hover(lsp.MarkupContent(ls.features.hover_kind, text))

    @ls.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def window_work_done_progress_cancel(ls: LedexServer, params: lsp.WorkDoneProgressCancelParams):
        ls.cancel_progress(params.token)

    @ls.feature(lsp.SHUTDOWN)
    def shutdown(ls: LedexServer, params):
        ls.shutdown()

    _register_commands(ls)


def _register_commands(ls: LedexServer) -> None:
    """workspace/executeCommand: the commands ledex's code actions and editor integrations send."""

    @ls.command(actions.RUN_TESTS)
    async def run_tests(ls: LedexServer, *args):
        """Every folder's tests (or only the folder that args[0] names: a folder or file URI)."""
        return await ls.run_tests(_optional(args, 0))

    @ls.command(actions.APPLY)
    def apply_fix(ls: LedexServer, episode_id: str, idx: int):
        folder, entry = ls.find_entry(episode_id)
        return {"accepted": folder is not None and folder.accept(entry, idx)}

    @ls.command(actions.DISMISS)
    def dismiss(ls: LedexServer, test: str, *args):  # args: [folder URI] when test ids repeat across folders
        folder, entry = ls.find_entry(test, _optional(args, 0))
        return {"dismissed": False} if entry is None else {"dismissed": True, "rejected": folder.dismiss(entry)}

    @ls.command(actions.EXPLAIN)
    async def explain(ls: LedexServer, test: str, *args):  # args: [folder URI] as for dismiss
        folder, entry = ls.find_entry(test, _optional(args, 0))
        return {"uri": None} if entry is None else await ls.explain(folder, entry)

    @ls.command(actions.STATUS)
    def status(ls: LedexServer, *args):
        return ls.status()


def _optional(args: tuple, i: int) -> str | None:
    return args[i] if len(args) > i and isinstance(args[i], str) else None


def build(home: Path | None = None) -> LedexServer:
    server = LedexServer(home)
    register(server)
    return server
