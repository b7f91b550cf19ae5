"""Telling the user that ledex is working: server-initiated work-done progress for clients
declaring `window.workDoneProgress` (VS Code, Neovim), and for the others (eglot 1.9 declares
none) a `window/logMessage` when the work starts and when it ends. Fixes additionally say
their state in the diagnostic's message and, when they end, in a `window/showMessage`
(fixwork.py). Test runs (folder.py) and fixes both report through it.

The server owns one `Progress` (`server.work_progress`); loop thread only. A token is returned
either way; `report`/`end` on it do the right thing.
"""

from __future__ import annotations

import enum
import uuid

from lsprotocol import types as lsp


class _Shown(enum.Enum):
    """Where one token stands with the client."""

    CREATING = "creating"  # window/workDoneProgress/create sent, not answered yet
    BEGUN = "begun"
    ENDED = "ended"  # ended before the client answered create: begin and end once it does
    LOGGED = "logged"  # a client without progress: the start was a log line


class Progress:
    """Work-done progress for one server (a pygls LanguageServer with `features`)."""

    def __init__(self, server) -> None:
        self.server = server
        self._state: dict[str, _Shown] = {}
        self._early: dict[str, tuple[str, int | None]] = {}  # reported before the client created the token
        self._title: dict[str, str] = {}

    def begin(self, title: str, message: str = "", cancellable: bool = False) -> str:
        """Start a progress (or log `title: message` where the client has no progress UI)."""
        token = f"ledex-{uuid.uuid4().hex[:12]}"
        self._title[token] = title
        if not self.server.features.work_done_progress:
            self._state[token] = _Shown.LOGGED
            self._log(f"{title}: {message or 'started'}")
            return token
        self._state[token] = _Shown.CREATING
        self.server.work_done_progress.create(token, callback=lambda *_: self._created(token, message, cancellable))
        return token

    def _created(self, token: str, message: str, cancellable: bool) -> None:
        latest, pct = self._early.pop(token, (message, 0))
        title, progress = self._title.get(token, "ledex"), self.server.work_done_progress
        if self._state.get(token) is _Shown.ENDED:
            progress.begin(token, lsp.WorkDoneProgressBegin(title, message=latest))
            progress.end(token, lsp.WorkDoneProgressEnd())
            self._forget(token)
            return
        self._state[token] = _Shown.BEGUN
        progress.begin(token, lsp.WorkDoneProgressBegin(title, cancellable=cancellable, message=latest,
                                                        percentage=pct or 0))

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None:
        """Report `message` (percentage 0-100) on a begun token; kept for begin if the client has
        not created it yet. Ignored for unknown and logged tokens."""
        state = self._state.get(token) if token else None
        if state is _Shown.BEGUN:
            self.server.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=message,
                                                                                     percentage=percentage))
        elif state in (_Shown.CREATING, _Shown.ENDED):
            self._early[token] = (message, percentage)  # shown by begin once the client created it

    def end(self, token: str | None, message: str = "") -> None:
        """End the progress on `token` (logged tokens get a log line); ends right after begin if
        the client has not answered the create request yet."""
        state = self._state.get(token) if token else None
        if state is _Shown.LOGGED:
            self._log(f"{self._title.get(token, 'ledex')}: {message or 'done'}")
            self._forget(token)
        elif state is _Shown.BEGUN:
            self.server.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message or None))
            self._forget(token)
        elif state is not None:
            self._state[token] = _Shown.ENDED  # the client has not answered create yet: end right after begin

    def _log(self, text: str) -> None:
        self.server.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info, text))

    def _forget(self, token: str) -> None:
        self._state.pop(token, None)
        self._title.pop(token, None)
