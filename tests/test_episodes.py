"""The SQLite feedback log: schema, outcomes, two writers at once, a writer killed mid-write."""

import sqlite3
import subprocess
import sys
import threading

import pytest

from ledex.engine.episodes import SCHEMA_VERSION, EpisodeLog, EpisodeLogError, default_path

FIELDS = dict(workspace="/w", test="tests/test_a.py::test_x", test_file="tests/test_a.py", suspect_path="a.py",
              suspect_function="f", task="make test_x pass", wrong_code="def f():\n    return 1",
              feedback="assert 1 == 2", model="smol@abc", model_version="3")


def _candidate(log, episode_id, idx, verified=False):
    log.add_candidate(episode_id, idx, explanation=f"because {idx}", code="def f():\n    return 2",
                      diff="--- a/a.py\n+++ b/a.py\n", verified=verified, pass_rate=1.0 if verified else 0.5,
                      reason="" if verified else "still fails", round=1)


def test_schema_version_wal_and_default_path(tmp_path):
    log = EpisodeLog(default_path(tmp_path))
    assert log.path == tmp_path / ".ledex" / "episodes.sqlite3"
    db = sqlite3.connect(log.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [row[1] for row in db.execute("PRAGMA table_info(candidates)")]
    assert columns == ["episode_id", "idx", "explanation", "code", "diff", "verified", "pass_rate", "reason", "round",
                       "suspect", "source"]


def test_a_version_1_log_gains_the_candidates_suspect_and_keeps_its_rows(tmp_path):
    """A log written before candidates recorded their suspect (schema 1) is migrated in place."""
    path = tmp_path / "log.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE episodes (id TEXT PRIMARY KEY, created REAL, workspace TEXT, test TEXT, test_file TEXT,
            suspect_path TEXT, suspect_function TEXT, task TEXT, wrong_code TEXT, feedback TEXT, model TEXT,
            model_version TEXT, outcome TEXT, outcome_at REAL, chosen_candidate INTEGER);
        CREATE TABLE candidates (episode_id TEXT, idx INTEGER, explanation TEXT, code TEXT, diff TEXT,
            verified INTEGER, pass_rate REAL, reason TEXT, round INTEGER, PRIMARY KEY (episode_id, idx));
        INSERT INTO episodes VALUES ('old', 1.0, '/w', 't', 'f', 'a.py', 'f', '', '', '', 'm', NULL, 'pending', NULL, NULL);
        INSERT INTO candidates VALUES ('old', 0, 'because', 'code', 'diff', 1, 1.0, '', 1);
        PRAGMA user_version = 1;""")
    db.close()
    log = EpisodeLog(path)
    (old,) = log.episodes()
    assert old.candidates[0].explanation == "because" and old.candidates[0].suspect == ""
    log.add_candidate("old", 1, explanation="", code="", diff="", verified=False, pass_rate=0.0, reason="x",
                      round=1, suspect="a.py::g")
    assert [c.suspect for c in log.get("old").candidates] == ["", "a.py::g"]


def test_episode_round_trip_with_candidates(tmp_path):
    log = EpisodeLog(tmp_path / "log.sqlite3")
    episode_id = log.start(**FIELDS)
    _candidate(log, episode_id, 0)
    _candidate(log, episode_id, 1, verified=True)
    (episode,) = log.episodes()
    assert episode.id == episode_id and episode.outcome == "pending" and episode.model_version == "3"
    assert [c.verified for c in episode.candidates] == [False, True]
    assert episode.candidates[0].reason == "still fails"
    assert log.get(episode_id).wrong_code == FIELDS["wrong_code"]


def test_outcome_transitions(tmp_path):
    log = EpisodeLog(tmp_path / "log.sqlite3")
    episode_id = log.start(**FIELDS)
    assert log.set_outcome(episode_id, "accepted", chosen=1)
    assert not log.set_outcome(episode_id, "rejected")  # decided: a later dismiss does not rewrite history
    assert log.set_outcome(episode_id, "reverted")
    episode = log.get(episode_id)
    assert (episode.outcome, episode.chosen_candidate) == ("reverted", 1)
    assert log.episodes("accepted") == [] and len(log.episodes("reverted")) == 1
    with pytest.raises(ValueError):
        log.set_outcome(episode_id, "maybe")
    assert not log.set_outcome("no-such-id", "accepted")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "log.sqlite3"
    EpisodeLog(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(EpisodeLogError, match="upgrade ledex"):
        EpisodeLog(path)


def test_two_writers_at_once_lose_nothing(tmp_path):
    """Two handles (two editor windows) writing from threads at the same time."""
    path = tmp_path / "log.sqlite3"
    logs = [EpisodeLog(path), EpisodeLog(path)]
    barrier = threading.Barrier(2)
    written: list[list[str]] = [[], []]

    def writer(n):
        barrier.wait()
        for _ in range(40):
            episode_id = logs[n].start(**FIELDS)
            _candidate(logs[n], episode_id, 0)
            logs[n].set_outcome(episode_id, "accepted", chosen=0)
            written[n].append(episode_id)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = {e.id: e for e in EpisodeLog(path).episodes("accepted")}
    assert set(found) == set(written[0]) | set(written[1]) and len(found) == 80
    assert all(len(e.candidates) == 1 for e in found.values())


WRITER = """
import sys
from ledex.engine.episodes import EpisodeLog
log = EpisodeLog(sys.argv[1])
while True:
    episode_id = log.start(workspace="/w", test="t", test_file=None, suspect_path=None, suspect_function=None,
                           task="t" * 5000, wrong_code="c" * 5000, feedback="f", model="m")
    log.add_candidate(episode_id, 0, explanation="e" * 5000, code="c", diff="d", verified=False, pass_rate=0.0,
                      reason="r", round=1)
    print(episode_id, flush=True)
"""


def test_process_killed_mid_write_loses_no_committed_episode(tmp_path):
    path = tmp_path / "log.sqlite3"
    EpisodeLog(path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    committed = [proc.stdout.readline().strip() for _ in range(30)]
    proc.kill()  # SIGKILL while it is writing the next episodes
    proc.wait()
    log = EpisodeLog(path)
    found = {e.id for e in log.episodes()}
    assert set(committed) <= found
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ledex_folder_stays_out_of_the_users_git_status(tmp_path):
    """`?? .ledex/` showed in git status after an editor session (fresh-user run X9): the log's
    folder holds a .gitignore of `*`; one the user wrote is kept."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    log = EpisodeLog(default_path(tmp_path))
    log.start(workspace=str(tmp_path), test="t::x", test_file=None, suspect_path=None, suspect_function=None,
              task="t", wrong_code="def f(): pass\n", feedback="boom", model="m")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert status == "" and (tmp_path / ".ledex" / "episodes.sqlite3").exists()
    mine = tmp_path / "other" / ".ledex"
    mine.mkdir(parents=True)
    (mine / ".gitignore").write_text("episodes.sqlite3\n")
    EpisodeLog(mine / "episodes.sqlite3")
    assert (mine / ".gitignore").read_text() == "episodes.sqlite3\n"
