"""Pure parts of the language server: settings parsing, report globs, minimal edits, watchers."""

import contextlib
import threading

from ledex.engine import registry
from ledex.server.actions import minimal_edit
from ledex.server.settings import DEFAULT_JUNIT_GLOBS, Settings, parse_settings
from ledex.server.watch import Watchers, glob_regex
from lsp_helpers import apply_text_edit


def test_settings_defaults_and_valid_values():
    settings, problems = parse_settings({"samples": 2, "rounds": 3, "testCommand": "python -m pytest -x",
                                         "junitGlobs": ["out/*.xml"], "runOnSave": False})
    assert problems == []
    assert (settings.samples, settings.rounds, settings.runOnSave) == (2, 3, False)
    assert settings.test_command == ["python", "-m", "pytest", "-x"] and settings.junitGlobs == ("out/*.xml",)
    assert Settings().test_command is None and Settings().junitGlobs == DEFAULT_JUNIT_GLOBS


def test_invalid_values_get_the_default_and_a_message():
    settings, problems = parse_settings({"samples": 0, "rounds": "2", "runOnSave": "yes", "junitGlobs": "x",
                                         "testCommand": "pytest 'unclosed", "nope": 1, "debounceMs": 1.5})
    assert settings == Settings()
    assert len(problems) == 7 and any("samples=0" in p and "at least 1" in p for p in problems)
    assert any("'nope'" in p for p in problems)


def test_did_change_configuration_section_and_base():
    base, _ = parse_settings({"samples": 3})
    settings, problems = parse_settings({"ledex": {"rounds": 5}}, base)
    assert (settings.samples, settings.rounds, problems) == (3, 5, [])
    assert parse_settings([1, 2])[1] and parse_settings(None) == (Settings(), [])


def test_glob_regex():
    assert glob_regex("**/junit*.xml").match("junit.xml") and glob_regex("**/junit*.xml").match("a/b/junit-x.xml")
    assert not glob_regex("*.xml").match("a/b.xml")
    assert glob_regex("**/test-results/**/*.xml").match("build/test-results/test/TEST-a.xml")


def test_minimal_edit_replaces_only_changed_lines():
    old = "a\nb\nc\nd\n"
    rng, text = minimal_edit(old, "a\nB\nB2\nc\nd\n")
    assert (rng.start.line, rng.end.line, text) == (1, 2, "B\nB2\n")
    from lsprotocol.types import TextEdit
    assert apply_text_edit(old, TextEdit(rng, text)) == "a\nB\nB2\nc\nd\n"


def test_minimal_edit_last_line_without_newline():
    old, new = "x = 1\ndef f():\n    return 1", "x = 1\ndef f():\n    return 2"
    rng, text = minimal_edit(old, new)
    assert (rng.start.line, rng.end.line, rng.end.character, text) == (2, 2, 12, "    return 2")


def test_registry_promotion_fires_the_watcher(tmp_path):
    promoted = threading.Event()
    watchers = Watchers()
    watchers.start(tmp_path, ["**/junit*.xml"], lambda p: None, registry.current_file(tmp_path / "home"), promoted.set)
    try:
        registry.set_current({"adapter": "/x.gguf", "version": 2}, tmp_path / "home")
        assert promoted.wait(30)
    finally:
        watchers.stop()


def test_junit_report_fires_once_written(tmp_path):
    seen = []
    got = threading.Event()
    watchers = Watchers()
    watchers.start(tmp_path, ["**/junit*.xml"], lambda p: (seen.append(p), got.set()),
                   registry.current_file(tmp_path / "home"), lambda: None)
    try:
        (tmp_path / "other.xml").write_text("<x/>")
        (tmp_path / "reports").mkdir()
        (tmp_path / "reports" / "junit.xml").write_text("<testsuite/>")
        assert got.wait(30)
        assert seen == [tmp_path / "reports" / "junit.xml"]
    finally:
        watchers.stop()


def test_model_swap_waits_for_the_fix_that_still_uses_the_old_model(tmp_path):
    """Hot reload: a running fix keeps its model process until it gives it back; the next
    fix gets the new model; no worker process is left behind."""
    import json

    from ledex.engine.backends import Sampling
    from ledex.server.modelhost import ModelHost

    for name in ("old", "new"):
        (tmp_path / f"{name}.json").write_text(json.dumps([f"{name} answer"]))
    host = ModelHost(f"replay:{tmp_path / 'old.json'}", home=tmp_path / "home")
    running, version = host.lease()
    host.configure(f"replay:{tmp_path / 'new.json'}", "")  # promotion/settings change mid-fix
    assert running.pid is not None and running.generate([], Sampling()).text == "old answer"
    following, _ = host.lease()
    assert following.generate([], Sampling()).text == "new answer" and version == "replay"
    old_pid = running.pid
    host.release(running)
    assert running.pid is None and old_pid != following.pid
    host.release(following)
    assert following.pid is not None  # still the current model: kept warm for the next fix
    host.close()
    assert following.pid is None


def test_a_model_that_keeps_crashing_is_benched_until_the_user_retries(tmp_path):
    """Every worker this host starts hangs (frozen right after loading): each request fails
    on its own, and after three in a row the host refuses to restart it on every save."""
    import json
    import os
    import signal

    import pytest

    from ledex.engine.backends import Sampling
    from ledex.engine.models import ModelError
    from ledex.server.modelhost import MAX_CRASHES_IN_A_ROW, ModelHost

    (tmp_path / "answers.json").write_text(json.dumps(["an answer"]))
    frozen, broken = [], [True]

    def freeze(backend):
        if not broken[0]:
            return
        backend.stall_timeout_s = 1
        frozen.append(backend.pid)
        os.kill(backend.pid, signal.SIGSTOP)

    host = ModelHost(f"replay:{tmp_path / 'answers.json'}", home=tmp_path / "home", on_start=freeze)
    try:
        for _ in range(MAX_CRASHES_IN_A_ROW):
            backend, _ = host.lease()
            with pytest.raises(ModelError, match="no word for 1 s"):
                backend.generate([], Sampling())
            host.release(backend)
        with pytest.raises(ModelError, match="died on 3 requests in a row"):
            host.lease()
        broken[0] = False  # the user fixed whatever it was
        host.retry()
        backend, _ = host.lease()
        assert backend.generate([], Sampling()).text == "an answer" and len(frozen) == MAX_CRASHES_IN_A_ROW
        host.release(backend)
    finally:
        host.close()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
