"""The ledex language server: workspace folders in, diagnostics out, fixes computed in the
background, every decision logged as an episode (per folder: see folder.py).

Threads: LSP handlers run on the event loop and only read state or queue work; test runs
and fixes run on `Jobs` threads; watchdog calls back on its own thread. Anything off the
loop that touches LSP or the failure tables goes through `post()` (call_soon_threadsafe).

Settings: `initializationOptions`, then `workspace/didChangeConfiguration` pushes, make the
base; a client declaring `workspace.configuration` is asked for each folder's `ledex`
section (scopeUri = the folder), which overrides the base for that folder only.

Handlers live in features.py; run with `python -m ledex.server` (see main.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ledex import __version__
from ledex.engine import registry
from ledex.server import actions, diagnostics
from ledex.server.capabilities import ClientFeatures, features_of
from ledex.server.folder import Folder
from ledex.server.jobs import Entry, Jobs
from ledex.server.modelhost import ModelHost, ModelPool, last_training
from ledex.server.progress import Progress
from ledex.server.settings import SettingProblem, Settings, parse_settings
from ledex.server.watch import Watchers

log = logging.getLogger("ledex.server")
CONFIG_TIMEOUT_S = 10.0  # a client that never answers workspace/configuration gets the base settings


class LedexServer(LanguageServer):
    """ledex's pygls LanguageServer: workspace folders, shared job pools, model pool and watchers."""
    def __init__(self, home: Path | None = None) -> None:
        super().__init__("ledex-lsp", __version__)
        self.home = home  # model registry home (None = $LEDEX_HOME / XDG default)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.features = ClientFeatures()
        self.base_settings = Settings()
        self.folders: dict[Path, Folder] = {}  # resolved root -> folder
        self.jobs = Jobs()
        self.pool = ModelPool(home, on_start=self.model_started)
        self.registry_watch = Watchers()
        self.work_progress = Progress(self)  # work-done progress (or log lines) for test runs and fixes
        # (not `progress`: pygls's own method of that name sends $/progress)
        self._setup_problems: list[SettingProblem] = []

    # --- plumbing -----------------------------------------------------------------------

    def post(self, fn, *args) -> None:
        """Run fn(*args) on the event loop (from any thread)."""
        def guarded():
            """Call fn(*args), logging instead of raising if it fails."""
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

    # --- workspace folders --------------------------------------------------------------

    def add_folder(self, uri: str, name: str = "") -> Folder | None:
        """The Folder for the URI's resolved root, created if new; None if the URI is not a file path."""
        path = to_fs_path(uri)
        if not path:
            return None
        root = Path(path).resolve()
        if root not in self.folders:
            self.folders[root] = Folder(self, root, name)
        return self.folders[root]

    def remove_folder(self, uri: str) -> None:
        """Close the folder of `uri` and let go of models no remaining folder uses."""
        path = to_fs_path(uri)
        folder = self.folders.pop(Path(path).resolve(), None) if path else None
        if folder is not None:
            folder.close()
            self.pool.keep_only(self.models_in_use())

    def folder_of(self, uri: str) -> Folder | None:
        """The folder holding this document: the deepest root containing it (None = outside all)."""
        inside = [f for f in self.folders.values() if f.rel(uri) is not None]
        return max(inside, key=lambda f: len(f.root.parts), default=None)

    def folder_by_uri(self, uri: str | None) -> list[Folder]:
        """The folder a folder/file URI names (all folders for None or an unknown URI)."""
        named = self.folder_of(uri) if uri else None
        return [named] if named else list(self.folders.values())

    def models_in_use(self) -> set[tuple[str, str]]:
        """(model, adapter) settings of all folders."""
        return {(f.settings.model, f.settings.adapter) for f in self.folders.values()}

    @property
    def models(self) -> ModelHost:
        """The first folder's model host (what ledex.status describes)."""
        first = next(iter(self.folders.values()), None)
        return first.models if first else self.pool.host(self.base_settings.model, self.base_settings.adapter)

    # --- setup --------------------------------------------------------------------------

    def setup(self, params: lsp.InitializeParams) -> None:
        """Handle initialize: client features, initializationOptions settings, workspace folders
        (else rootUri / rootPath / cwd)."""
        self.loop = asyncio.get_running_loop()
        self.features = features_of(params.capabilities)
        self.base_settings, self._setup_problems = parse_settings(params.initialization_options)
        for folder in params.workspace_folders or []:
            self.add_folder(folder.uri, folder.name)
        if not self.folders:
            root = params.root_uri or (Path(params.root_path or Path.cwd()).resolve().as_uri())
            self.add_folder(root)

    async def started(self) -> None:
        """Handle initialized: tell setup problems, watch the registry, configure every folder."""
        for problem in self._setup_problems:
            self.tell(problem)
        for problem in self.registry_watch.start(None, (), lambda p: None, registry.current_file(self.home),
                                                 self.on_promotion):
            self.tell(problem)
        for folder in list(self.folders.values()):  # watch and log at once, refine once the client answers
            folder.apply_settings(self.base_settings)
        for folder in list(self.folders.values()):
            await self.configure_folder(folder, first=True)

    async def configure_folder(self, folder: Folder, first: bool = False) -> None:
        """(Re)read the folder's settings and apply them; on `first`, run its tests if asked."""
        settings = await self.folder_settings(folder)
        if first or settings != folder.settings:
            folder.apply_settings(settings)
        self.pool.keep_only(self.models_in_use())
        if first and folder.settings.runOnStart:
            folder.request_tests(None, delay=0)

    async def folder_settings(self, folder: Folder) -> Settings:
        """The base settings, overridden by the client's `ledex` section for this folder."""
        if not self.features.pull_configuration:
            return self.base_settings
        item = lsp.ConfigurationItem(scope_uri=folder.uri, section="ledex")
        try:
            (raw,) = await asyncio.wait_for(self.workspace_configuration_async(lsp.ConfigurationParams([item])),
                                            CONFIG_TIMEOUT_S)
        except Exception as exc:  # not answered, or answered with an error: the base is what we have
            log.info("workspace/configuration for %s: %s", folder.root, exc)
            return self.base_settings
        settings, problems = parse_settings(raw, self.base_settings)
        for problem in problems:  # clients answer with their whole section (VS Code: its own keys too)
            if problem.unknown:
                self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Log, f"ledex: {problem}"))
            else:
                folder.tell(problem)
        return settings

    async def configure(self, raw) -> None:
        """workspace/didChangeConfiguration: a new base, then every folder's own scope again."""
        self.base_settings, problems = parse_settings(raw, self.base_settings)
        for problem in problems:
            self.tell(problem)
        for folder in list(self.folders.values()):  # at once: requests after the push see it
            folder.apply_settings(parse_settings(raw, folder.settings)[0])
        for folder in list(self.folders.values()):
            await self.configure_folder(folder)

    async def change_folders(self, event: lsp.WorkspaceFoldersChangeEvent) -> None:
        """Remove and add workspace folders; added ones get settings and are configured."""
        for gone in event.removed:
            self.remove_folder(gone.uri)
        for new in event.added:
            if (folder := self.add_folder(new.uri, new.name)) is not None and folder.episodes is None:
                folder.apply_settings(self.base_settings)
                await self.configure_folder(folder, first=True)

    def model_started(self, backend) -> None:  # fix thread: a model worker (re)started
        """A model worker (re)started (fix thread): log its pid and identity to the client."""
        message = f"ledex: model process {backend.pid} serves {backend.identity.id}"
        self.post(self.window_log_message, lsp.LogMessageParams(lsp.MessageType.Info, message))

    def on_promotion(self) -> None:  # watchdog thread
        """The registry promoted a new adapter (watchdog thread): reload models on the next fix."""
        self.pool.invalidate()
        self.post(self.tell, "a new adapter was promoted; the next fix uses it", lsp.MessageType.Info)

    # --- routing editor events to folders ------------------------------------------------

    def document_changed(self, uri: str) -> None:
        """Pass the document's new text to its folder, if it is in one."""
        folder = self.folder_of(uri)
        if folder is not None:
            folder.document_changed(folder.rel(uri), self.workspace.get_text_document(uri).source)

    def document_saved(self, uri: str) -> None:
        """Pass the saved document's text to its folder, if it is in one."""
        folder = self.folder_of(uri)
        if folder is not None:
            folder.document_saved(folder.rel(uri), self.workspace.get_text_document(uri).source)

    def all_entries(self) -> list[tuple[Folder, Entry]]:
        """(folder, entry) for every current problem of every folder."""
        return [(f, e) for f in self.folders.values() for e in f.fixes()]

    def problems_at(self, uri: str, rng: lsp.Range, given: list[lsp.Diagnostic]) -> list[tuple[Folder, Entry, list]]:
        """(folder, problem, its diagnostics here) for each problem with a ledex diagnostic on this
        document that overlaps `rng` (or was sent with the request). Any folder's can point here."""
        named = {d.data.get("test") for d in given if d.source == diagnostics.SOURCE and isinstance(d.data, dict)}
        found = []
        for folder in self.folders.values():
            for entry in folder.visible():
                mine = [d for u, d in folder.diagnostics_of(entry) if u == uri]
                hit = [d for d in mine if d.range.start.line <= rng.end.line and rng.start.line <= d.range.end.line]
                if hit or (mine and named & set(entry.tests)):
                    found.append((folder, entry, hit or mine))
        return found

    def text_and_version(self, folder: Folder):
        """`version_of(rel)` for code actions: the document's text (the editor's buffer, else the
        file) and version (None on disk)."""
        def version_of(rel: str) -> tuple[str | None, int | None]:
            """(text, version) of `rel`: the open buffer's, else disk text with version None."""
            doc = self.workspace.text_documents.get(diagnostics.uri_for(folder.root, rel))
            return (doc.source, doc.version) if doc is not None else (folder.disk_text(rel), None)
        return version_of

    def cancel_progress(self, token: str) -> None:
        """The user pressed cancel on a fix's progress: withdraw that fix."""
        for _, entry in self.all_entries():
            if entry.progress_token == token:
                entry.withdraw()

    async def run_tests(self, folder_uri: str | None) -> dict:
        """Every folder's tests now (or the one `folder_uri` names); a model benched after
        crashes gets another chance. {"failures": n, "error": text or None, "notes": [...]}"""
        self.pool.retry()
        runs = [folder.run_tests_now(None) for folder in self.folder_by_uri(folder_uri)]
        found = [await asyncio.wrap_future(run) for run in runs]
        errors = [f.verdict.error for f in found if f.verdict and f.verdict.error]
        return {"failures": sum(len(f.failures) for f in found), "error": "; ".join(errors) or None,
                "notes": [str(note) for f in found for note in f.notes]}

    async def explain(self, folder: Folder, entry: Entry) -> dict:
        """Write the explanation and show it: as a document where the client can open one, else
        as a message. {"uri": file URI, "shown": "document" | "message", "text": the message}"""
        uri = folder.write_explanation(entry)
        if self.features.show_document:
            shown = await self.window_show_document_async(lsp.ShowDocumentParams(uri, take_focus=True))
            if shown is not None and shown.success:
                return {"uri": uri, "shown": "document"}
        text = actions.explanation_text(entry, to_fs_path(uri))
        self.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, text))
        return {"uri": uri, "shown": "message", "text": text}

    def find_entry(self, key: str, folder_uri: str | None = None) -> tuple[Folder | None, Entry | None]:
        """The failure with this test id or episode id (in `folder_uri`'s folder when given)."""
        for folder in self.folder_by_uri(folder_uri):
            if (entry := folder.entry_by_test_or_episode(key)) is not None:
                return folder, entry
        return None, None

    def status(self) -> dict:
        """What ledex.status returns: model, modelProcess, busy (a test run or fix running, or a
        problem between its search and model turns), lastTraining, folders."""
        between_turns = any(entry.turns is not None for _, entry in self.all_entries())
        return {"model": self.models.description, "modelProcess": self.models.pid,
                "busy": self.jobs.busy or between_turns,
                "lastTraining": last_training(self.home), "folders": [str(f.root) for f in self.folders.values()]}

    def shutdown(self) -> None:
        """Withdraw every fix, stop watchers and job pools, close the model pool."""
        for _, entry in self.all_entries():
            entry.withdraw()
        for folder in self.folders.values():
            folder.watchers.stop()
        self.registry_watch.stop()
        self.jobs.shutdown()
        self.pool.close()
