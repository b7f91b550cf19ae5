"""The ledex language server's state and orchestration: failures in, diagnostics out, fixes
computed in the background, every decision logged as an episode.

Threads: LSP handlers run on the event loop and only read state or queue work; test runs
and fixes run on `Jobs` threads; watchdog calls back on its own thread. Anything off the
loop that touches LSP or the failure table goes through `post()` (call_soon_threadsafe).

Handlers live in features.py; run with `python -m ledex.server` (see main.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ledex import __version__
from ledex.engine import registry
from ledex.engine.episodes import EpisodeLog, default_path
from ledex.engine.failures import Discovery, Failure, discover, failures_from_outcomes, read_junit
from ledex.engine.impact import ImportGraph, is_test_module
from ledex.engine.patching import Patch
from ledex.sandbox import Limits
from ledex.server import diagnostics, fixwork
from ledex.server.jobs import CANCELLED, FAILED, QUEUED, RUNNING, Entry, Jobs
from ledex.server.modelhost import ModelHost
from ledex.server.settings import Settings, parse_settings
from ledex.server.watch import Watchers

log = logging.getLogger("ledex.server")
PASSED = ("passed", "skipped")


class LedexServer(LanguageServer):
    def __init__(self, home: Path | None = None) -> None:
        super().__init__("ledex-lsp", __version__)
        self.settings = Settings()
        self.root = Path.cwd()
        self.home = home  # model registry home (None = $LEDEX_HOME / XDG default)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.entries: dict[str, Entry] = {}  # test node id -> its current failure
        self.dismissed: set[tuple[str, ...]] = set()  # entry keys the user dismissed
        self.accepted: dict[str, Patch] = {}  # episode id -> applied patch (to notice a revert)
        self.episodes: EpisodeLog | None = None
        self.jobs = Jobs()
        self.models = ModelHost(home=home, on_start=self.model_started)
        self.watchers = Watchers()
        self._published: set[str] = set()
        self._pending_changed: set[str] | None = set()
        self._debounce: asyncio.TimerHandle | None = None
        self.test_runs = 0
        self.imports = ImportGraph(self.root)  # which tests a save can affect (used on the test thread)

    # --- plumbing -----------------------------------------------------------------------

    def post(self, fn, *args) -> None:
        """Run fn(*args) on the event loop (from any thread)."""
        def guarded():
            try:
                fn(*args)
            except Exception:  # a bug in one callback must not take the server down
                log.exception("ledex callback %s failed", getattr(fn, "__name__", fn))
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(guarded)

    def tell(self, message: str, level: lsp.MessageType = lsp.MessageType.Warning) -> None:
        """window/showMessage (loop thread only) and the log."""
        log.warning(message) if level <= lsp.MessageType.Warning else log.info(message)
        self.window_show_message(lsp.ShowMessageParams(type=level, message=f"ledex: {message}"))

    def rel(self, uri: str) -> str | None:
        """Workspace-relative path of a document URI, or None outside the workspace."""
        path = to_fs_path(uri)
        if not path:
            return None
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError):
            return None

    def text_of(self, rel: str) -> str | None:
        """The open buffer's text, else the file's (None if unreadable, non-UTF-8 or too big)."""
        uri = diagnostics.uri_for(self.root, rel)
        doc = self.workspace.text_documents.get(uri)
        if doc is not None:
            return doc.source
        path = self.root / rel
        try:
            if path.stat().st_size > self.settings.maxFileBytes:
                return None
            return path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def line_text(self, rel: str, line: int) -> str:
        lines = (self.text_of(rel) or "").splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    # --- setup --------------------------------------------------------------------------

    def setup(self, params: lsp.InitializeParams) -> None:
        self.loop = asyncio.get_running_loop()
        folders = params.workspace_folders or []
        root = params.root_uri or (folders[0].uri if folders else None)
        path = to_fs_path(root) if root else params.root_path
        self.root = Path(path or Path.cwd()).resolve()
        self.imports = ImportGraph(self.root)
        self.settings, self._setup_problems = parse_settings(params.initialization_options)

    def started(self) -> None:
        for problem in self._setup_problems:
            self.tell(problem)
        self.apply_settings(self.settings)
        if self.settings.runOnStart:
            self.request_tests(None, delay=0)

    def configure(self, raw) -> None:
        settings, problems = parse_settings(raw, self.settings)
        for problem in problems:
            self.tell(problem)
        self.apply_settings(settings)

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.models.configure(settings.model, settings.adapter)
        path = Path(settings.logPath).expanduser() if settings.logPath else default_path(self.root)
        if self.episodes is None or self.episodes.path != path:
            try:
                self.episodes = EpisodeLog(path)
            except Exception as exc:  # a broken log disables logging, never the server
                self.episodes = None
                self.tell(f"episodes will not be logged: {exc}", lsp.MessageType.Error)
        for problem in self.watchers.start(self.root, settings.junitGlobs, self.on_report,
                                           registry.current_file(self.home), self.on_promotion):
            self.tell(problem)

    def model_started(self, backend) -> None:  # fix thread: a model worker (re)started
        message = f"ledex: model process {backend.pid} serves {backend.identity.id}"
        self.post(self.window_log_message, lsp.LogMessageParams(lsp.MessageType.Info, message))

    def on_promotion(self) -> None:  # watchdog thread
        self.models.invalidate()
        self.post(self.tell, "a new adapter was promoted; the next fix uses it", lsp.MessageType.Info)

    # --- failure sources ----------------------------------------------------------------

    def request_tests(self, changed: list[str] | None, delay: float | None = None) -> None:
        """Debounced test run for the files saved (None = everything); saves close together merge."""
        if changed is None or self._pending_changed is None:
            self._pending_changed = None
        else:
            self._pending_changed |= set(changed)
        if self._debounce is not None:
            self._debounce.cancel()
        wait = self.settings.debounceMs / 1000 if delay is None else delay
        self._debounce = self.loop.call_later(wait, self._fire_tests)

    def _fire_tests(self) -> None:
        changed, self._pending_changed, self._debounce = self._pending_changed, set(), None
        self.run_tests_now(sorted(changed) if changed else None)

    def run_tests_now(self, changed: list[str] | None):
        """Queue one sandboxed test run of what `changed` can affect (None = all); returns its
        concurrent Future (result: Discovery). The scope is worked out on the test thread."""
        self.test_runs += 1
        what = f"after saving {', '.join(changed)}" if changed else "all"
        token = fixwork.progress_begin(self, "ledex: running the tests", what)
        settings, known = self.settings, self.failing_tests_of(changed or [])

        def work() -> Discovery:
            scope = self.scope_for(changed, known)
            self.post(fixwork.progress_report, self, token, f"{len(scope)} test file(s): {', '.join(scope)}"
                      if scope else "all tests")
            return discover(self.root, limits=Limits(wall_s=settings.testTimeoutS), python=settings.python or None,
                            command=settings.test_command, tests=tuple(scope or ()))

        future = self.jobs.run_tests(work)
        future.add_done_callback(lambda f: self.post(self._tests_done, f, token))
        return future

    def _tests_done(self, future, token) -> None:
        fixwork.progress_end(self, token)
        if self.test_runs == 1:  # parse the workspace's imports now, not on the first save (seconds on big repos)
            self.jobs.run_tests(self.imports.refresh)
        if future.cancelled():
            return
        if future.exception() is not None:
            self.tell(f"the test run failed: {future.exception()}", lsp.MessageType.Error)
            return
        found: Discovery = future.result()
        for note in found.notes:
            self.tell(note, lsp.MessageType.Warning if "problem" in note or "stopped" in note else lsp.MessageType.Info)
        self.apply_outcomes(found.verdict.outcomes if found.verdict else (), found.failures)

    def on_report(self, path: Path) -> None:  # watchdog thread
        try:
            outcomes = read_junit(path, self.root)
            failures, notes = failures_from_outcomes(self.root, outcomes)
        except Exception as exc:
            self.post(self.tell, f"cannot use the JUnit report {path}: {exc}")
            return
        self.post(self.apply_outcomes, outcomes, failures)

    def apply_outcomes(self, outcomes, failures: list[Failure]) -> None:
        """Passing tests clear their failure; failing ones are added or updated. Then publish."""
        failed = {f.test: f for f in failures}
        for outcome in outcomes:
            if outcome.outcome in PASSED and outcome.nodeid in self.entries:
                self.retire(self.entries.pop(outcome.nodeid), "ignored")
        for failure in failed.values():
            self.upsert(failure)
        self.publish()

    def upsert(self, failure: Failure) -> None:
        code = self.disk_text(failure.suspect.path) if failure.suspect else None
        entry = Entry(failure, code)
        old = self.entries.get(failure.test)
        if old is not None and old.key == entry.key and old.state not in (CANCELLED, FAILED):
            return  # same failure of the same code: keep its fixes (the cache by (code, failure))
        if old is not None:
            self.retire(old, "ignored")
        self.entries[failure.test] = entry
        fixwork.start(self, entry)

    def disk_text(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def retire(self, entry: Entry, outcome: str) -> None:
        """The failure went away (or changed): stop its work; a pending episode gets `outcome`."""
        entry.cancel.set()
        if entry.episode_id:
            fixwork.log_outcome(self, entry.episode_id, outcome)

    # --- editor events ------------------------------------------------------------------

    def document_changed(self, uri: str) -> None:
        rel = self.rel(uri)
        if rel is None:
            return
        text = self.workspace.get_text_document(uri).source
        self.check_reverts(rel, text)
        for entry in self.entries.values():
            touched = entry.failure.suspect and entry.failure.suspect.path == rel and text != entry.code
            if (touched or entry.failure.file == rel) and entry.state in (QUEUED, RUNNING):
                entry.cancel.set()  # the code it is fixing is being edited: the result would be stale
                entry.state = CANCELLED

    def check_reverts(self, rel: str, text: str) -> None:
        for episode_id, patch in list(self.accepted.items()):
            if patch.path == rel and text == patch.old_text:
                del self.accepted[episode_id]
                fixwork.log_outcome(self, episode_id, "reverted")

    def document_saved(self, uri: str) -> None:
        rel = self.rel(uri)
        if rel is None:
            return
        self.check_reverts(rel, self.workspace.get_text_document(uri).source)
        if self.settings.runOnSave and rel.endswith(".py"):
            self.request_tests([rel])

    def failing_tests_of(self, changed: list[str]) -> set[str]:
        """Test files whose failures point into `changed` (loop thread: reads the failure table)."""
        return {e.failure.file for e in self.entries.values()
                if e.failure.file and e.failure.suspect and e.failure.suspect.path in changed}

    def scope_for(self, changed: list[str] | None, known: set[str]) -> list[str] | None:
        """Test files to run after `changed` were saved; None = all (test thread: parses imports)."""
        if changed is None:
            return None
        scope = set(known)
        for rel in changed:
            affected = [rel] if is_test_module(rel) else self.imports.affected_tests(rel)
            if affected is None:
                return None
            scope.update(affected)
        return sorted(scope) or None

    # --- output -------------------------------------------------------------------------

    def visible(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.key not in self.dismissed]

    def publish(self) -> None:
        grouped = diagnostics.by_uri(self.root, self.visible(), self.line_text)
        for uri in self._published | set(grouped):
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, grouped.get(uri, [])))
        self._published = set(grouped)

    def entry_by_test_or_episode(self, key: str) -> Entry | None:
        return self.entries.get(key) or next((e for e in self.entries.values() if e.episode_id == key), None)

    def status(self) -> dict:
        from ledex.server.modelhost import last_training
        return {"model": self.models.description, "modelProcess": self.models.pid, "busy": self.jobs.busy,
                "lastTraining": last_training(self.home)}

    def new_token(self) -> str:
        return f"ledex-{uuid.uuid4().hex[:12]}"
