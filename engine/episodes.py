"""The feedback log: one episode per failure the editor saw, with every candidate the model
proposed and what the user did with them (accepted, rejected, ignored, reverted).

`ledex-lsp` writes it; `ledex-train collect` reads it (training never imports the server,
so the log lives here). One SQLite file in WAL mode, by default `<workspace>/.ledex/episodes.sqlite3`:
readers never block the writer, and a busy timeout lets two editor windows on one
workspace (two server processes) write to the same file. Every write is its own short
transaction, so a process killed mid-write loses at most the write in flight, never a
committed episode.

Schema version lives in `PRAGMA user_version` (SCHEMA_VERSION below).

Try it:  python -m ledex.engine.episodes [PATH]      # prints the episodes as JSON lines
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

SCHEMA_VERSION = 3  # 2: candidates.suspect ("path::qualname" of the function the candidate rewrites)
# 3: candidates.source ("model": written by the model, "search": found by search, engine/search.py)
OUTCOMES = ("pending", "accepted", "rejected", "ignored", "reverted")
# Which outcome may follow which: a decision is final, except that an accepted fix can be undone.
TRANSITIONS = {"pending": {"accepted", "rejected", "ignored"}, "accepted": {"reverted"}}
# Two windows write at human pace; 10 s of waiting for the other's lock is far more than any
# single short transaction takes, and still fails loudly on a wedged file.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY, created REAL, workspace TEXT, test TEXT, test_file TEXT,
    suspect_path TEXT, suspect_function TEXT, task TEXT, wrong_code TEXT, feedback TEXT,
    model TEXT, model_version TEXT, outcome TEXT, outcome_at REAL, chosen_candidate INTEGER
);
CREATE TABLE IF NOT EXISTS candidates (
    episode_id TEXT, idx INTEGER, explanation TEXT, code TEXT, diff TEXT, verified INTEGER,
    pass_rate REAL, reason TEXT, round INTEGER, suspect TEXT, source TEXT, PRIMARY KEY (episode_id, idx)
);
CREATE INDEX IF NOT EXISTS episodes_outcome ON episodes(outcome);
"""


class EpisodeLogError(RuntimeError):
    """The log cannot be opened or written; the message says why."""


@dataclass
class CandidateRecord:
    """One candidate of an episode as stored in the episode log."""
    idx: int
    explanation: str
    code: str
    diff: str
    verified: bool
    pass_rate: float
    reason: str
    round: int
    suspect: str = ""  # "path::qualname" of the function it rewrites ("" when the answer was unusable)
    source: str = "model"  # "model" | "search" (rows written before schema 3 read as "model")


@dataclass
class Episode:
    """One fix attempt as stored in the episode log: the failure, the prompt parts, the model
    and the outcome, with its candidates."""
    id: str
    created: float
    workspace: str
    test: str
    test_file: str | None
    suspect_path: str | None
    suspect_function: str | None
    task: str
    wrong_code: str
    feedback: str
    model: str
    model_version: str | None
    outcome: str
    outcome_at: float | None
    chosen_candidate: int | None
    candidates: list[CandidateRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        """All fields, candidates included, as plain dicts (dataclasses.asdict)."""
        return asdict(self)


def default_path(workspace: str | Path) -> Path:
    """<workspace>/.ledex/episodes.sqlite3, the episode log's default location."""
    return Path(workspace) / ".ledex" / "episodes.sqlite3"


def keep_out_of_vcs(folder: Path) -> None:
    """A `.gitignore` of `*` in ledex's own folder of a workspace (`.ledex/`), unless one is there:
    the episode log and explanations are not the project's (fresh-user run X9: `?? .ledex/` in git
    status after an editor session). Best effort: a folder that cannot be written stays as it is."""
    marker = Path(folder) / ".gitignore"
    try:
        if not marker.exists():
            marker.write_text("# ledex's own files (episode log, explanations): not part of the project\n*\n")
    except OSError:
        pass


class EpisodeLog:
    """A handle on one log file; safe to use from several threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.parent.name == ".ledex":
                keep_out_of_vcs(self.path.parent)
            with self._connect() as db:
                self._migrate(db)
        except sqlite3.Error as exc:
            raise EpisodeLogError(f"cannot open the episode log {self.path}: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per operation: no connection is ever shared between threads."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: committed data survives a process kill
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlock between windows
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _migrate(self, db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise EpisodeLogError(f"{self.path}: the file system does not support SQLite's WAL mode")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EpisodeLogError(f"{self.path} has schema version {version}; this ledex reads up to "
                                  f"{SCHEMA_VERSION}: upgrade ledex")
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")  # two windows starting at once: one creates, the other waits
            version = db.execute("PRAGMA user_version").fetchone()[0]  # the other may have migrated meanwhile
            if version == 1:
                db.execute("ALTER TABLE candidates ADD COLUMN suspect TEXT")
            if version in (1, 2):
                db.execute("ALTER TABLE candidates ADD COLUMN source TEXT")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")

    def start(self, *, workspace: str, test: str, test_file: str | None, suspect_path: str | None,
              suspect_function: str | None, task: str, wrong_code: str, feedback: str, model: str,
              model_version: str | None = None, episode_id: str | None = None) -> str:
        """Record a new pending episode; returns its id."""
        episode_id = episode_id or uuid.uuid4().hex
        row = (episode_id, time.time(), workspace, test, test_file, suspect_path, suspect_function, task,
               wrong_code, feedback, model, model_version, "pending", None, None)
        with self._write() as db:
            db.execute(f"INSERT INTO episodes VALUES ({','.join('?' * len(row))})", row)
        return episode_id

    def add_candidate(self, episode_id: str, idx: int, *, explanation: str, code: str, diff: str, verified: bool,
                      pass_rate: float, reason: str, round: int, suspect: str = "", source: str = "model") -> None:
        """`suspect`: "path::qualname" of the function the candidate rewrites (CandidateResult.suspect);
        `source`: "model" or "search" (CandidateResult.source)."""
        row = (episode_id, idx, explanation, code, diff, int(verified), pass_rate, reason, round, suspect, source)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO candidates (episode_id, idx, explanation, code, diff, verified, "
                       "pass_rate, reason, round, suspect, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)

    def set_outcome(self, episode_id: str, outcome: str, chosen: int | None = None) -> bool:
        """Move an episode to `outcome`; False when that transition is not allowed (already decided)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        with self._write() as db:
            found = db.execute("SELECT outcome FROM episodes WHERE id = ?", (episode_id,)).fetchone()
            if found is None or outcome not in TRANSITIONS.get(found[0], ()):
                return False
            db.execute("UPDATE episodes SET outcome = ?, outcome_at = ?, chosen_candidate = COALESCE(?, "
                       "chosen_candidate) WHERE id = ?", (outcome, time.time(), chosen, episode_id))
        return True

    def episodes(self, outcome: str | None = None) -> list[Episode]:
        """All episodes (oldest first), or those with one outcome, each with its candidates."""
        where, args = ("WHERE outcome = ?", (outcome,)) if outcome else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM episodes {where} ORDER BY created, id", args).fetchall()
            found = [Episode(*row) for row in rows]
            for episode in found:
                episode.candidates = self._candidates(db, episode.id)
        return found

    def get(self, episode_id: str) -> Episode | None:
        """The episode `episode_id` with its candidates, None if not logged."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM episodes WHERE id = ?", (episode_id,)).fetchone()
            if row is None:
                return None
            episode = Episode(*row)
            episode.candidates = self._candidates(db, episode_id)
        return episode

    @staticmethod
    def _candidates(db: sqlite3.Connection, episode_id: str) -> list[CandidateRecord]:
        rows = db.execute("SELECT idx, explanation, code, diff, verified, pass_rate, reason, round, suspect, source "
                          "FROM candidates WHERE episode_id = ? ORDER BY idx", (episode_id,)).fetchall()
        return [CandidateRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8] or "", r[9] or "model")
                for r in rows]


if __name__ == "__main__":
    import json
    import sys

    log = EpisodeLog(sys.argv[1] if len(sys.argv) > 1 else default_path("."))
    for item in log.episodes():
        print(json.dumps(item.to_dict()))
