"""What the connected editor can show, parsed once from `initialize`'s ClientCapabilities
into a flat, typed record; handlers ask it instead of walking optional protocol fields.

Each field names the capability it comes from (LSP 3.17 specification, "Client
Capabilities"). A client that omits a capability does not have it: eglot 1.9 declares no
`window` section at all, so it gets no work-done progress and no showDocument.

Try it:  python -m ledex.server.capabilities neovim   (any pytest-lsp client name)
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types as lsp


@dataclass(frozen=True)
class ClientFeatures:
    """The editor's abilities ledex adapts to (all False = the barest LSP client)."""

    disabled_actions: bool = False  # textDocument.codeAction.disabledSupport
    show_document: bool = False  # window.showDocument.support
    work_done_progress: bool = False  # window.workDoneProgress
    hover_markdown: bool = False  # textDocument.hover.contentFormat prefers (lists first) markdown
    pull_configuration: bool = False  # workspace.configuration (per-folder settings)

    @property
    def hover_kind(self) -> lsp.MarkupKind:
        """Markdown if the client renders it in hovers, else plain text."""
        return lsp.MarkupKind.Markdown if self.hover_markdown else lsp.MarkupKind.PlainText


def features_of(caps: lsp.ClientCapabilities | None) -> ClientFeatures:
    """ClientFeatures from the `initialize` request's capabilities (None = nothing declared)."""
    if caps is None:
        return ClientFeatures()
    text, window, workspace = caps.text_document, caps.window, caps.workspace
    action = text.code_action if text else None
    hover = text.hover if text else None
    return ClientFeatures(
        disabled_actions=bool(action and action.disabled_support),
        show_document=bool(window and window.show_document and window.show_document.support),
        work_done_progress=bool(window and window.work_done_progress),
        hover_markdown=bool(hover and hover.content_format and hover.content_format[0] == lsp.MarkupKind.Markdown),
        pull_configuration=bool(workspace and workspace.configuration))


if __name__ == "__main__":
    import sys

    from pytest_lsp import client_capabilities

    print(features_of(client_capabilities(sys.argv[1] if len(sys.argv) > 1 else "neovim")))
