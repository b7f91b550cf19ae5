"""File watchers (watchdog): JUnit XML reports in a workspace folder (one Watchers per
folder), and the model registry's current.json (one for the server: a promotion by
`ledex-train` means: load the new adapter).

Watchdog calls back on its own thread; callbacks here only hand the path to the server,
which posts the work onto its event loop. Used by server.py and folder.py.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable, Sequence

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

# Never reports: our own files, version control and installed packages (they can hold
# thousands of XML files and change during installs).
IGNORED_PARTS = {".ledex", ".git", ".venv", "venv", "node_modules", "site-packages", "__pycache__"}
# A runner writes a report in several chunks; wait until it has been quiet this long.
SETTLE_S = 0.2


def glob_regex(pattern: str) -> re.Pattern:
    """A glob over '/'-separated relative paths: `**` spans folders, `*` and `?` do not.

    >>> bool(glob_regex("**/junit*.xml").match("junit.xml")), bool(glob_regex("**/junit*.xml").match("a/b/junit-1.xml"))
    (True, True)
    >>> bool(glob_regex("**/test-results/**/*.xml").match("build/test-results/x.xml"))
    True
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            char = pattern[i]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            i += 1
    return re.compile("".join(out) + r"\Z")


class _Handler(FileSystemEventHandler):
    def __init__(self, on_path: Callable[[Path], None]):
        self.on_path = on_path

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Pass created/modified/moved/closed file paths (destination for moves) to on_path."""
        if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.on_path(Path(path.decode() if isinstance(path, bytes) else path))


class _Debouncer:
    """Calls `fire(path)` once a path has been quiet for SETTLE_S."""

    def __init__(self, fire: Callable[[Path], None]):
        self.fire, self._timers, self._lock = fire, {}, threading.Lock()

    def __call__(self, path: Path) -> None:
        with self._lock:
            if path in self._timers:
                self._timers[path].cancel()
            timer = threading.Timer(SETTLE_S, self._done, args=(path,))
            timer.daemon = True
            self._timers[path] = timer
            timer.start()

    def _done(self, path: Path) -> None:
        with self._lock:
            self._timers.pop(path, None)
        self.fire(path)


class Watchers:
    """Starts and stops the two watchers; safe to restart when settings change."""

    def __init__(self) -> None:
        self._observer: Observer | None = None

    def start(self, root: Path | None, globs: Sequence[str], on_report: Callable[[Path], None],
              registry_file: Path | None = None, on_registry: Callable[[], None] | None = None) -> list[str]:
        """Watch `root` for reports and/or `registry_file` (None = not that one); returns
        problems a person should read (a folder that cannot be watched...)."""
        self.stop()
        observer, problems = Observer(), []
        observer.daemon = True
        patterns = [glob_regex(g) for g in globs]
        report = _Debouncer(lambda p: self._maybe_report(root, patterns, p, on_report))
        try:
            if root is not None:
                observer.schedule(_Handler(report), str(root), recursive=True)
        except OSError as exc:
            problems.append(f"cannot watch {root} for JUnit reports: {exc}")
        if registry_file is not None:
            problems += self._watch_registry(observer, registry_file, on_registry)
        observer.start()
        self._observer = observer
        return problems

    @staticmethod
    def _watch_registry(observer: Observer, registry_file: Path, on_registry: Callable[[], None]) -> list[str]:
        def changed(path: Path) -> None:
            """Call on_registry when the registry file itself changed."""
            if path.name == registry_file.name:
                on_registry()
        try:
            registry_file.parent.mkdir(parents=True, exist_ok=True)
            observer.schedule(_Handler(_Debouncer(changed)), str(registry_file.parent), recursive=False)
        except OSError as exc:
            return [f"cannot watch {registry_file} for new adapters (no hot reload): {exc}"]
        return []

    @staticmethod
    def _maybe_report(root: Path, patterns: list[re.Pattern], path: Path, on_report: Callable[[Path], None]) -> None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            return
        if IGNORED_PARTS & set(rel.parts) or not path.is_file():
            return
        if any(p.match(rel.as_posix()) for p in patterns):
            on_report(path)

    def stop(self) -> None:
        """Stop the watchdog observer, if started."""
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
