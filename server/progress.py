"""Telling the user that ledex is working: server-initiated work-done progress for clients
declaring `window.workDoneProgress` (VS Code, Neovim), and for the others (eglot 1.9 declares
none) a `window/logMessage` when the work starts and when it ends. Fixes additionally say
their state in the diagnostic's message and, when they end, in a `window/showMessage`
(fixwork.py).

Loop thread only. A token is returned either way; `report`/`end` on it do the right thing.
"""

from __future__ import annotations

from lsprotocol import types as lsp

_LOGGED = "logged"  # state of a fallback token: began as a log line


def _state(server) -> dict:
    """token -> "creating" | "begun" | "ended" | "logged" (LedexServer owns these tables)."""
    return server._progress_state


def begin(server, title: str, message: str = "", cancellable: bool = False) -> str:
    """Start a progress (or log `title: message` where the client has no progress UI)."""
    state, token = _state(server), server.new_token()
    server._progress_title[token] = title
    if not server.features.work_done_progress:
        state[token] = _LOGGED
        server.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, f"{title}: {message or 'started'}"))
        return token
    state[token] = "creating"

    def created(*_):
        latest, pct = server._progress_early.pop(token, (message, 0))  # reported before the client answered
        if state.get(token) == "ended":
            server.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title, message=latest))
            server.work_done_progress.end(token, lsp.WorkDoneProgressEnd())
            _forget(server, token)
            return
        state[token] = "begun"
        server.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title, cancellable=cancellable,
                                                                          message=latest, percentage=pct or 0))
    server.work_done_progress.create(token, callback=created)
    return token


def report(server, token: str | None, message: str, percentage: int | None = None) -> None:
    state = _state(server).get(token) if token else None
    if state == "begun":
        server.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=message, percentage=percentage))
    elif state in ("creating", "ended"):
        server._progress_early[token] = (message, percentage)  # shown by begin once the client created it


def end(server, token: str | None, message: str = "") -> None:
    state = _state(server)
    if not token or token not in state:
        return
    if state[token] == _LOGGED:
        title = server._progress_title.get(token, "ledex")
        server.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, f"{title}: {message or 'done'}"))
        _forget(server, token)
    elif state[token] == "begun":
        server.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message or None))
        _forget(server, token)
    else:
        state[token] = "ended"  # the client has not answered create yet: end right after begin


def _forget(server, token: str) -> None:
    server._progress_state.pop(token, None)
    server._progress_title.pop(token, None)
