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
    """Register ledex's LSP handlers and workspace/executeCommand commands on `ls`."""
    @ls.feature(lsp.INITIALIZE)
    def initialize(ls: LedexServer, params: lsp.InitializeParams):
        """LSP `initialize`: read client capabilities, settings and workspace folders."""
        ls.setup(params)

    @ls.feature(lsp.INITIALIZED)
    async def initialized(ls: LedexServer, params: lsp.InitializedParams):
        """LSP `initialized`: start watchers, fetch folder settings, maybe run the suite."""
        await ls.started()

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def workspace_did_change_configuration(ls: LedexServer, params: lsp.DidChangeConfigurationParams):
        """LSP `workspace/didChangeConfiguration`: re-read the ledex settings."""
        await ls.configure(params.settings)

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def workspace_did_change_workspace_folders(ls: LedexServer, params: lsp.DidChangeWorkspaceFoldersParams):
        """LSP `workspace/didChangeWorkspaceFolders`: drop removed folders, set up added ones."""
        await ls.change_folders(params.event)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def text_document_did_open(ls: LedexServer, params: lsp.DidOpenTextDocumentParams):
        """LSP `textDocument/didOpen`: log that a document over maxFileBytes is not analysed."""
        folder = ls.folder_of(params.text_document.uri)
        if folder is not None and len(params.text_document.text) > folder.settings.maxFileBytes:
            ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, "ledex: file too large, not analysed: "
                                                       f"{params.text_document.uri}"))

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def text_document_did_change(ls: LedexServer, params: lsp.DidChangeTextDocumentParams):
        """LSP `textDocument/didChange`: withdraw fixes of code being edited, note reverted fixes."""
        ls.document_changed(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_SAVE, lsp.SaveOptions(include_text=False))
    def text_document_did_save(ls: LedexServer, params: lsp.DidSaveTextDocumentParams):
        """LSP `textDocument/didSave`: rerun the tests for the saved file if runOnSave."""
        ls.document_saved(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix], resolve_provider=False))
    def text_document_code_action(ls: LedexServer, params: lsp.CodeActionParams):
        """LSP `textDocument/codeAction`: quick fixes and commands for the problems in the range."""
        found = ls.problems_at(params.text_document.uri, params.range, params.context.diagnostics)
        return [action for folder, entry, here in found
                for action in actions.actions_for(folder.root, entry, ls.text_and_version(folder), here, ls.features,
                                                  folder.covering(entry))]

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    def text_document_hover(ls: LedexServer, params: lsp.HoverParams):
        """LSP `textDocument/hover`: what ledex knows about the problems at the position, or None."""
        found = ls.problems_at(params.text_document.uri, lsp.Range(params.position, params.position), [])
        if not found:
            return None
        text = actions.hover_markup([entry for _, entry, _ in found], ls.features.hover_markdown)
        return lsp.Hover(lsp.MarkupContent(ls.features.hover_kind, text))

    @ls.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def window_work_done_progress_cancel(ls: LedexServer, params: lsp.WorkDoneProgressCancelParams):
        """LSP `window/workDoneProgress/cancel`: cancel the work behind the progress token."""
        ls.cancel_progress(params.token)

    @ls.feature(lsp.SHUTDOWN)
    def shutdown(ls: LedexServer, params):
        """LSP `shutdown`: withdraw fixes, stop watchers, worker pools and model processes."""
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
        """Command ledex.applyFix [episode id, candidate idx]: record the fix as accepted.
        Returns {"accepted": bool}."""
        folder, entry = ls.find_entry(episode_id)
        return {"accepted": folder is not None and folder.accept(entry, idx)}

    @ls.command(actions.DISMISS)
    def dismiss(ls: LedexServer, test: str, *args):  # args: [folder URI] when test ids repeat across folders
        """Command ledex.dismiss [test or episode id, folder URI?]: hide the suggestion.
        Returns {"dismissed": bool, "rejected": ...}."""
        folder, entry = ls.find_entry(test, _optional(args, 0))
        return {"dismissed": False} if entry is None else {"dismissed": True, "rejected": folder.dismiss(entry)}

    @ls.command(actions.EXPLAIN)
    async def explain(ls: LedexServer, test: str, *args):  # args: [folder URI] as for dismiss
        """Command ledex.explain [test or episode id, folder URI?]: an explanation document.
        Returns {"uri": ...}, None if no such problem."""
        folder, entry = ls.find_entry(test, _optional(args, 0))
        return {"uri": None} if entry is None else await ls.explain(folder, entry)

    @ls.command(actions.STATUS)
    def status(ls: LedexServer, *args):
        """Command ledex.status: model, model process id, busy flag, last training, folders."""
        return ls.status()


def _optional(args: tuple, i: int) -> str | None:
    return args[i] if len(args) > i and isinstance(args[i], str) else None


def build(home: Path | None = None) -> LedexServer:
    """A LedexServer with every handler registered (`home`: model registry home, None = default)."""
    server = LedexServer(home)
    register(server)
    return server
