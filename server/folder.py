"""One workspace folder as the server sees it: its settings scope, failures, test runs, episode
log, JUnit watcher and published diagnostics. A multi-root workspace has one Folder per root
(LSP `workspaceFolders`); documents go to the folder that contains them (the deepest one).

Threads as in server.py: methods run on the event loop unless marked; test runs and fixes
run on the server's shared `Jobs` threads (one test run and one fix at a time, whatever the
folder) and come back through `post()`.

Used by server.py (LedexServer); run the server with `python -m ledex.server`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lsprotocol import types as lsp
from pygls.uris import to_fs_path

from ledex.engine.apply import atomic_write_text
from ledex.engine.episodes import EpisodeLog, default_path, keep_out_of_vcs
from ledex.engine.failures import (Discovery, DiscoveryError, Failure, discover, failures_from_outcomes,
                                   group_by_suspect, read_junit)
from ledex.engine.impact import ImportGraph, is_test_module
from ledex.engine.localize import read_source
from ledex.engine.notes import Note, NoteKind, note_kind
from ledex.engine.patching import Patch
from ledex.engine.project import ProjectConfigError
from ledex.sandbox import Limits
from ledex.server import actions, diagnostics, fixwork
from ledex.server.jobs import CANCELLED, FAILED, Entry
from ledex.server.settings import Settings
from ledex.server.watch import Watchers

log = logging.getLogger("ledex.server")
PASSED = ("passed", "skipped")


def nothing_ran(exc: DiscoveryError) -> Discovery:
    """A run where no test ran is a result with an error (shown, returned by ledex.runTests),
    not a crash of the run: the failures already known stay."""
    verdict = exc.verdict
    stopped = [Note(f"the test run was stopped ({verdict.killed_reason})", NoteKind.STOPPED)] \
        if verdict.killed_reason else []
    return Discovery([], verdict, stopped + [Note(f"test run problem: {exc}", NoteKind.RUN_PROBLEM)])


class Folder:
    """A workspace folder's state; `server` is the LedexServer it belongs to."""

    def __init__(self, server, root: Path, name: str = "") -> None:
        self.server, self.root, self.name = server, root, name or root.name
        self.settings = server.base_settings
        self.models = server.pool.host(self.settings.model, self.settings.adapter)
        self.entries: dict[str, Entry] = {}  # test node id -> its problem (tests sharing a suspect share one)
        self.dismissed: set[tuple[str, ...]] = set()  # entry keys the user dismissed
        self.accepted: dict[str, Patch] = {}  # episode id -> applied patch (to notice a revert)
        self.episodes: EpisodeLog | None = None
        self.watchers = Watchers()
        self._watched: tuple[str, ...] | None = None  # the globs being watched
        self.imports = ImportGraph(root)  # which tests a save can affect (used on the test thread)
        self.test_runs = 0
        self._told: set[str] = set()  # the notes of the last test run, told then
        self._published: dict[str, list[lsp.Diagnostic]] = {}  # uri -> what the client was last sent
        self._pending_changed: set[str] | None = set()
        self._debounce = None

    @property
    def uri(self) -> str:
        """The folder root as a file:// URI."""
        return self.root.as_uri()

    # --- what fixwork needs from "its server": the folder's own state plus the server's ----------

    @property
    def jobs(self):
        """The server's shared Jobs (test and fix pools, fix cache)."""
        return self.server.jobs

    def post(self, fn, *args) -> None:
        """Run fn(*args) on the server's event loop (from any thread)."""
        self.server.post(fn, *args)

    def tell(self, message: str, level: lsp.MessageType = lsp.MessageType.Warning) -> None:
        """Show `message` to the user, prefixed with the folder name when there are several folders."""
        prefix = f"[{self.name}] " if len(self.server.folders) > 1 else ""
        self.server.tell(prefix + message, level)

    # --- documents ------------------------------------------------------------------------

    def rel(self, uri: str) -> str | None:
        """Folder-relative path of a document URI, or None outside this folder."""
        path = to_fs_path(uri)
        if not path:
            return None
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except (ValueError, OSError):
            return None

    def text_of(self, rel: str) -> str | None:
        """The open buffer's text, else the file's (None if unreadable, not in its encoding or too big)."""
        doc = self.server.workspace.text_documents.get(diagnostics.uri_for(self.root, rel))
        if doc is not None:
            return doc.source
        try:
            if (self.root / rel).stat().st_size > self.settings.maxFileBytes:
                return None
        except OSError:
            return None
        return self.disk_text(rel)

    def line_text(self, rel: str, line: int) -> str:
        """Text of 1-based `line` in file `rel` (buffer or disk), "" if out of range or unreadable."""
        lines = (self.text_of(rel) or "").splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def disk_text(self, rel: str) -> str | None:
        """Text of `rel` as saved on disk (in the encoding it declares: localize.read_source), None if
        unreadable or not in that encoding."""
        return read_source(self.root / rel)

    # --- settings -------------------------------------------------------------------------

    def apply_settings(self, settings: Settings) -> None:
        """Use `settings` from now on: model, episode log and JUnit watcher follow them."""
        self.settings = settings
        self.models = self.server.pool.host(settings.model, settings.adapter)
        path = Path(settings.logPath).expanduser() if settings.logPath else default_path(self.root)
        if self.episodes is None or self.episodes.path != path:
            try:
                self.episodes = EpisodeLog(path)
            except Exception as exc:  # a broken log disables logging, never the server
                self.episodes = None
                self.tell(f"episodes will not be logged: {exc}", lsp.MessageType.Error)
        if settings.junitGlobs != self._watched:  # a restart would miss reports written meanwhile
            self._watched = settings.junitGlobs
            for problem in self.watchers.start(self.root, settings.junitGlobs, self.on_report):
                self.tell(problem)

    def close(self) -> None:
        """The folder left the workspace: stop its work and clear its diagnostics."""
        self.watchers.stop()
        self._watched = None
        if self._debounce is not None:
            self._debounce.cancel()
        for entry in self.fixes():
            self.retire(entry, "ignored")
        self.entries.clear()
        self.publish()

    # --- failure sources ------------------------------------------------------------------

    def request_tests(self, changed: list[str] | None, delay: float | None = None) -> None:
        """Debounced test run for the files saved (None = everything); saves close together merge."""
        if changed is None or self._pending_changed is None:
            self._pending_changed = None
        else:
            self._pending_changed |= set(changed)
        if self._debounce is not None:
            self._debounce.cancel()
        wait = self.settings.debounceMs / 1000 if delay is None else delay
        self._debounce = self.server.loop.call_later(wait, self._fire_tests)

    def _fire_tests(self) -> None:
        changed, self._pending_changed, self._debounce = self._pending_changed, set(), None
        self.run_tests_now(sorted(changed) if changed else None)

    def run_tests_now(self, changed: list[str] | None, why: str = ""):
        """Queue one sandboxed test run of what `changed` can affect (None = all); returns its
        concurrent Future (result: Discovery). The scope is worked out on the test thread.
        `why`: the progress message (default: the files saved)."""
        self.test_runs += 1
        number = self.test_runs
        what = why or (f"after saving {', '.join(changed)}" if changed else "all")
        progress = self.server.work_progress
        token = progress.begin(f"ledex: running the tests in {self.name}", what)
        settings, known = self.settings, self.failing_tests_of(changed or [])

        def work() -> Discovery:  # test thread
            """Test-thread job: discover and run the tests in scope (all if none) under testTimeoutS;
            a DiscoveryError becomes an empty result."""
            scope = self.scope_for(changed, known)
            self.post(progress.report, token, f"{len(scope)} test file(s): {', '.join(scope)}"
                      if scope else "all tests")
            try:
                harness = settings.harness(self.root)  # python / testCommand, else [tool.ledex]
            except ProjectConfigError as exc:
                return Discovery([], None, [Note(f"test run problem: {exc}", NoteKind.RUN_PROBLEM)])
            try:
                return discover(self.root, limits=Limits(wall_s=settings.testTimeoutS), harness=harness,
                                tests=tuple(scope or ()),
                                imports=self.imports)  # the folder's graph, kept on this thread
            except DiscoveryError as exc:
                return nothing_ran(exc)

        future = self.jobs.run_tests(work)
        future.add_done_callback(lambda f: self.post(self._tests_done, f, token, number))
        return future

    def _tests_done(self, future, token, number: int) -> None:
        if self.test_runs == 1:  # parse the folder's imports now, not on the first save (seconds on big repos)
            self.jobs.run_tests(self.imports.refresh)
        if future.cancelled():
            self.server.work_progress.end(token, "cancelled")
            self.unconfirmed(number, "ledex's run of its tests was cancelled")
            return
        if future.exception() is not None:
            self.server.work_progress.end(token, "failed")
            self.tell(f"the test run failed: {future.exception()}", lsp.MessageType.Error)
            self.unconfirmed(number, f"ledex's run of its tests failed: {future.exception()}")
            return
        found: Discovery = future.result()
        self.server.work_progress.end(token, f"{len(found.failures)} failing test(s)")
        for note in found.notes:
            if note not in self._told:  # said after the last run already: every save would repeat it (X8)
                self.tell(note, lsp.MessageType.Warning if note_kind(note).is_problem else lsp.MessageType.Info)
        self._told = set(found.notes)
        self.apply_outcomes(found.verdict.outcomes if found.verdict else (), found.failures)
        self.unconfirmed(number, "ledex's own run of its tests did not confirm it"
                         + (f" ({found.verdict.error})" if found.verdict and found.verdict.error else ""))

    def unconfirmed(self, number: int, why: str) -> None:
        """Failures read from a report that ledex's run `number` (or an earlier one) should have
        re-run and did not: no fix is looked for (it could not be verified), and the user is told."""
        waiting = [e for e in self.fixes() if e.awaiting_run is not None and e.awaiting_run <= number]
        for entry in waiting:
            entry.awaiting_run = None
            entry.fail(f"read from a test report; {why}")
        if waiting:
            self.publish()

    def on_report(self, path: Path) -> None:  # watchdog thread
        """A JUnit XML report appeared or changed at `path` (watchdog thread): read it and go on
        on the event loop (report_read); a report that cannot be read is told to the user."""
        try:
            outcomes = read_junit(path, self.root)
            failures, notes = failures_from_outcomes(self.root, outcomes)
        except Exception as exc:
            self.post(self.tell, f"cannot use the JUnit report {path}: {exc}")
            return
        self.post(self.report_read, path, outcomes, failures)

    def report_read(self, path: Path, outcomes, failures: list[Failure]) -> None:
        """Show a report's failures now and re-run them in the sandbox with every test file that
        imports their suspects; their fixes start from that run. A report holds only what its
        runner ran (`pytest tests/test_a.py`): verified against it alone, a fix could break
        passing tests in other files (fresh-user run X8)."""
        scope = {f.test.split("::")[0] for f in failures} | {s.path for f in failures for s in f.suspects[:3]}
        self.apply_outcomes(outcomes, failures, awaiting_run=self.test_runs + 1 if failures else None)
        if failures:
            self.run_tests_now(sorted(scope), why=f"to check the failures in {path.name}")

    def apply_outcomes(self, outcomes, failures: list[Failure], awaiting_run: int | None = None) -> None:
        """Passing tests clear their failure; failing ones are added or updated; the failures
        are grouped into problems again (failures sharing their top suspect are one, as in
        `ledex fix`). Then publish. `awaiting_run`: new problems wait for that run of ledex's
        (Entry.awaiting_run) instead of starting their fix."""
        known = {m.test: m for entry in self.fixes() for m in entry.members}
        for outcome in outcomes:
            if outcome.outcome in PASSED:
                known.pop(outcome.nodeid, None)
        known.update((f.test, f) for f in failures)
        self.regroup(known, awaiting_run)
        self.publish()

    def regroup(self, known: dict[str, Failure], awaiting_run: int | None = None) -> None:
        """The problems for these failures (test id -> failure): a problem whose failures and
        code are unchanged keeps its fix; the others are retired and new ones started (or, with
        `awaiting_run`, left waiting for that run)."""
        old, self.entries = self.fixes(), {}
        for group in group_by_suspect(list(known.values())):
            members = tuple(known[test] for test in (group.test, *group.also))
            entry = self._kept(old, members) or self._new_entry(group, members, old, awaiting_run)
            self.entries.update((test, entry) for test in entry.tests)
        for entry in set(old) - set(self.fixes()):
            self.retire(entry, "ignored")

    @staticmethod
    def _kept(old: list[Entry], members: tuple[Failure, ...]) -> Entry | None:
        """The problem of exactly these failures (none re-reported), whatever its state."""
        return next((e for e in old if len(e.members) == len(members)
                     and all(a is b for a, b in zip(e.members, members))), None)

    def _new_entry(self, group: Failure, members: tuple[Failure, ...], old: list[Entry],
                   awaiting_run: int | None = None) -> Entry:
        codes = {s.path: self.disk_text(s.path) for s in fixwork.suspects_of(group)}
        entry = Entry(group, codes.get(group.suspect.path) if group.suspect else None, members=members, codes=codes)
        same = next((e for e in old if e.key == entry.key and e.state not in (CANCELLED, FAILED)
                     and e.awaiting_run is None), None)
        if same is not None:
            return same  # the same failures of the same code: keep its fixes (the cache by (code, failures))
        if awaiting_run is not None:
            entry.awaiting_run = awaiting_run
        else:
            fixwork.start(self, entry)
        return entry

    def retire(self, entry: Entry, outcome: str) -> None:
        """The failure went away (or changed): stop its work; a pending episode gets `outcome`."""
        entry.withdraw()
        if entry.episode_id:
            fixwork.log_outcome(self, entry.episode_id, outcome)

    # --- what the user decided ------------------------------------------------------------------

    def accept(self, entry: Entry, idx: int) -> bool:
        """The user applied candidate `idx`: log it (True when logged), and keep its patch to
        notice an undo (check_reverts)."""
        patch = entry.candidates[idx].patch if 0 <= idx < len(entry.candidates) else None
        accepted = fixwork.log_outcome(self, entry.episode_id, "accepted", idx)
        if patch is not None:
            self.accepted[entry.episode_id] = patch
        return accepted

    def dismiss(self, entry: Entry) -> bool:
        """The user dismissed the problem: hide it (while its failures and code stay the same),
        stop its fix; True when its episode was logged as rejected."""
        self.dismissed.add(entry.key)
        entry.withdraw()
        rejected = bool(entry.episode_id) and fixwork.log_outcome(self, entry.episode_id, "rejected")
        self.publish()
        return rejected

    def write_explanation(self, entry: Entry) -> str:
        """The explanation as markdown in `.ledex/explanations/<episode or test>.md`; its URI."""
        name = entry.episode_id or "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in entry.failure.test)[:120]
        path = self.root / ".ledex" / "explanations" / f"{name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        keep_out_of_vcs(path.parent.parent)
        atomic_write_text(path, actions.explanation_markdown(entry))
        return path.as_uri()

    # --- editor events --------------------------------------------------------------------

    def document_changed(self, rel: str, text: str) -> None:
        """A buffer changed: forget reverted fixes and withdraw active fixes whose code it edits."""
        self.check_reverts(rel, text)
        for entry in self.fixes():
            if entry.active and entry.touches(rel, text):
                entry.withdraw()  # the code it is fixing is being edited: the result would be stale

    def check_reverts(self, rel: str, text: str) -> None:
        """Forget accepted fixes whose file text is back to the pre-fix text; log them as "reverted"."""
        for episode_id, patch in list(self.accepted.items()):
            if patch.path == rel and text == patch.old_text:
                del self.accepted[episode_id]
                fixwork.log_outcome(self, episode_id, "reverted")

    def document_saved(self, rel: str, text: str) -> None:
        """A file was saved: check reverts, then rerun tests for .py files if runOnSave."""
        self.check_reverts(rel, text)
        if self.settings.runOnSave and rel.endswith(".py"):
            self.request_tests([rel])

    def failing_tests_of(self, changed: list[str]) -> set[str]:
        """Test files whose failures point into `changed` (loop thread: reads the failure table)."""
        return {m.file for e in self.fixes() if any(path in changed for path in e.codes)
                for m in e.members if m.file}

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

    # --- output ---------------------------------------------------------------------------

    def fixes(self) -> list[Entry]:
        """The current problems, each once (several tests can share one), in order."""
        return list({id(e): e for e in self.entries.values()}.values())

    def covering(self, entry: Entry) -> Entry | None:
        """The current problem whose verified fix makes `entry`'s tests pass (Entry.covered_by), if any."""
        return self.entries.get(entry.covered_by) if entry.covered_by else None

    def is_current(self, entry: Entry) -> bool:
        """True while `entry` is still the entry for its failing test."""
        return self.entries.get(entry.failure.test) is entry

    def visible(self) -> list[Entry]:
        """Current problems the user has not dismissed."""
        return [e for e in self.fixes() if e.key not in self.dismissed]

    def diagnostics_of(self, entry: Entry) -> list[tuple[str, lsp.Diagnostic]]:
        """(uri, diagnostic) for one failure; clients without progress read the state in the message."""
        every_state = not self.server.features.work_done_progress
        return diagnostics.diagnostics_for(self.root, entry, self.line_text, every_state)

    def publish(self) -> None:
        """Send each document's diagnostics when they differ from what was last sent for it
        (several events can leave a document as it was: one notification per change)."""
        every_state = not self.server.features.work_done_progress  # the state in the message instead
        grouped = diagnostics.by_uri(self.root, self.visible(), self.line_text, every_state)
        for uri in dict.fromkeys([*self._published, *grouped]):
            now = grouped.get(uri, [])
            if self._published.get(uri, []) != now:
                self.server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, now))
        self._published = grouped

    def entry_by_test_or_episode(self, key: str) -> Entry | None:
        """The entry for test id `key`, else the one whose episode id is `key`, else None."""
        return self.entries.get(key) or next((e for e in self.fixes() if e.episode_id == key), None)
