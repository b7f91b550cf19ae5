"""Pure parts of the language server: settings parsing, report globs, minimal edits, watchers,
and the capability matrix (what a client with and without each capability is sent)."""

import contextlib
import dataclasses
import threading
from pathlib import Path

import pytest
from lsprotocol import types as lsp

from ledex.engine import registry
from ledex.engine.failures import Failure
from ledex.engine.fixer import CandidateResult
from ledex.engine.localize import Suspect
from ledex.engine.patching import Patch
from ledex.server import actions, diagnostics
from ledex.server.actions import minimal_edit
from ledex.server.capabilities import ClientFeatures, features_of
from ledex.server.jobs import CANCELLED, FAILED, QUEUED, READY, RUNNING, Entry
from ledex.server.settings import DEFAULT_JUNIT_GLOBS, Settings, engine_fields, parse_settings
from ledex.server.watch import Watchers, glob_regex
from lsp_helpers import apply_text_edit, capabilities_of


def test_settings_defaults_and_valid_values():
    settings, problems = parse_settings({"samples": 2, "rounds": 3, "testCommand": "python -m pytest -x",
                                         "junitGlobs": ["out/*.xml"], "runOnSave": False, "search": False})
    assert problems == []
    assert (settings.samples, settings.rounds, settings.runOnSave, settings.search) == (2, 3, False, False)
    assert Settings().search is True  # search candidates on by default, as in `ledex fix`
    budget, problems = parse_settings({"searchSeconds": 240})
    assert budget.searchSeconds == 240.0 and not problems and Settings().searchSeconds == 60.0  # --search-seconds' default
    assert "searchSeconds" in engine_fields()  # a new budget builds a new engine
    _, refused = parse_settings({"searchSeconds": -1})
    assert any("searchSeconds=-1" in p for p in refused)
    assert settings.test_command == ["python", "-m", "pytest", "-x"] and settings.junitGlobs == ("out/*.xml",)
    assert Settings().test_command is None and Settings().junitGlobs == DEFAULT_JUNIT_GLOBS


def test_invalid_values_get_the_default_and_a_message():
    settings, problems = parse_settings({"samples": 0, "rounds": "2", "runOnSave": "yes", "junitGlobs": "x",
                                         "testCommand": "pytest 'unclosed", "nope": 1, "debounceMs": 1.5,
                                         "search": "no"})
    assert settings == Settings()
    assert len(problems) == 8 and any("samples=0" in p and "at least 1" in p for p in problems)
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


# --- the capability matrix: a client with and without each capability gets what it can show ---

OLD = "def is_low_stock(quantity, threshold):\n    return quantity < threshold\n"


def entry(state: str, verified: bool | None = None) -> Entry:
    suspect = Suspect("inventory/stock.py", "is_low_stock", 1, 2, OLD, "traceback")
    failure = Failure("tests/test_stock.py::test_low", "tests/test_stock.py", 3, "assert False", "", suspect)
    e = Entry(failure, OLD, state=state, episode_id="ep1")
    if verified is not None:
        patch = Patch("inventory/stock.py", OLD, OLD.replace("<", "<="), "is_low_stock")
        e.candidates.append(CandidateResult("Use <= so equal counts as low. More.", "", 1, patch, verified,
                                            pass_rate=1.0 if verified else 0.5,
                                            failing_passed=(1, 1) if verified else (1, 2)))
    return e


def all_actions(e: Entry, features: ClientFeatures) -> list[lsp.CodeAction]:
    return actions.actions_for(Path("/w"), e, lambda rel: (OLD, 1), [], features)  # (document text, version)


def test_features_from_real_clients_capabilities():
    vscode, eglot = features_of(capabilities_of("visual-studio-code")), features_of(capabilities_of("eglot-1.9"))
    assert vscode == ClientFeatures(True, True, True, True, True)
    assert eglot == ClientFeatures(pull_configuration=True)
    nvim = features_of(capabilities_of("neovim"))
    assert nvim.work_done_progress and nvim.show_document and not nvim.disabled_actions
    assert features_of(None) == ClientFeatures() and features_of(lsp.ClientCapabilities()) == ClientFeatures()
    plain_first = lsp.ClientCapabilities(text_document=lsp.TextDocumentClientCapabilities(
        hover=lsp.HoverClientCapabilities(content_format=[lsp.MarkupKind.PlainText, lsp.MarkupKind.Markdown])))
    assert not features_of(plain_first).hover_markdown  # the first kind listed is the one preferred


def test_still_looking_action_only_for_clients_that_show_disabled_actions():
    for state in (QUEUED, RUNNING):
        with_support = all_actions(entry(state), ClientFeatures(disabled_actions=True))
        assert [a.title for a in with_support][0] == "ledex is still looking for a fix…"
        assert with_support[0].disabled.reason.startswith("ledex is ")
        without = all_actions(entry(state), ClientFeatures())
        assert [a.title for a in without] == ["Explain this failure", "Dismiss ledex suggestion"]
        assert all(a.command is not None or a.edit is not None for a in without)  # nothing dead
        assert without[0].command.arguments == ["tests/test_stock.py::test_low", "file:///w"]  # test id, folder
    ready = all_actions(entry(READY, verified=True), ClientFeatures(disabled_actions=True))
    assert [a.title for a in ready][0].startswith("Fix: ") and all(a.disabled is None for a in ready)


def test_work_states_in_the_diagnostic_message_only_without_progress_its_end_always():
    line_text = lambda rel, line: "    assert is_low_stock(5, 5)"  # noqa: E731
    def message(e, every_state):
        return diagnostics.diagnostics_for(Path("/w"), e, line_text, every_state)[0][1].message
    assert message(entry(RUNNING), every_state=False) == "assert is_low_stock(5, 5): assert False"
    assert message(entry(RUNNING), every_state=True).endswith("(ledex: looking for a fix…)")
    assert message(entry(QUEUED), every_state=True).endswith("(ledex: waiting to look for a fix…)")
    failed = entry(FAILED)
    failed.error = "the model could not be loaded"
    for every_state in (False, True):  # how the work ended is worth saying to every client (X10: not without a fix)
        assert message(failed, every_state).endswith("(ledex: no fix: the model could not be loaded)")
        assert message(entry(READY, verified=True), every_state).endswith("(ledex: 1 verified fix)")
        assert message(entry(READY, verified=False), every_state).endswith("unverified ones are in the code actions)")
        useless = entry(READY, verified=False)
        useless.candidates[0].failing_passed, useless.candidates[0].broke = (1, 2), 3  # a partial fix breaking 3 tests
        assert message(useless, every_state).endswith("(ledex: no fix found)")
    assert [a.title for a in all_actions(useless, ClientFeatures())] == ["Explain this failure", "Dismiss ledex suggestion"]
    partial = all_actions(entry(READY, verified=False), ClientFeatures())[0]
    assert partial.title == "Fix (unverified: 1 of 2 failing tests pass with it): Use <= so equal counts as low."


def test_fixes_the_tests_cannot_tell_apart_are_named_so_and_none_is_preferred():
    """hyperlink 21.0.0 (fresh-user run X11 F7): two verified search edits of one line behave
    differently; the editor's one-key "preferred" fix would pick one as --apply did."""
    e = entry(READY, verified=True)
    e.candidates[0].source, e.candidates[0].alternatives = "search", 1
    other = dataclasses.replace(e.candidates[0], patch=Patch("inventory/stock.py", OLD, OLD.replace("<", "!="), "is_low_stock"))
    e.candidates.append(other)
    fixes = [a for a in all_actions(e, ClientFeatures()) if a.title.startswith("Fix")]
    assert len(fixes) == 2 and not any(a.is_preferred for a in fixes)
    assert all("the tests pass with 1 other edit(s) of this line too" in a.title for a in fixes)
    plain = entry(READY, verified=True)
    assert [a.is_preferred for a in all_actions(plain, ClientFeatures()) if a.title.startswith("Fix")] == [True]


def test_the_wait_for_the_model_says_whether_the_search_verified_a_fix_at_risk():
    """pyjwt 2.10.1 (fresh-user run X12 F4): "searched, no verified fix: waiting for the model" while
    the search had verified `3 - rem` -> `4 - rem` (a changed constant: the model is asked too)."""
    from ledex.server.fixwork import waiting_text

    e = entry(READY, verified=True)
    e.candidates[0].source, e.candidates[0].operator = "search", "constant"
    assert waiting_text(e) == ("search verified a fix, but a changed constant may fit the tests rather than the bug: "
                               "waiting to ask the model too")
    assert waiting_text(entry(READY, verified=False)) == "searched, no verified fix: waiting for the model"


def test_a_fix_marked_as_an_overfitting_risk_says_so_and_is_not_preferred():
    """marshmallow 3.23.1 (fresh-user run X12 F2): a dropped statement verified; --apply wrote it and
    the editor's one-key fix would have too. Now neither does without the user reading why."""
    e = entry(READY, verified=True)
    e.candidates[0].source, e.candidates[0].operator = "search", "drop_statement"
    (fix,) = [a for a in all_actions(e, ClientFeatures()) if a.title.startswith("Fix")]
    assert "a dropped statement may fit the tests rather than the bug" in fix.title and not fix.is_preferred
    e.candidates[0].operator = "compare"  # an operator swap is no such risk
    (fix,) = [a for a in all_actions(e, ClientFeatures()) if a.title.startswith("Fix")]
    assert fix.is_preferred and fix.title.startswith("Fix (found by search): ")


def test_the_suspect_diagnostic_moves_to_the_line_a_fix_of_another_function_changes():
    """Search verified a fix in the second suspect, but the diagnostic stayed on the top suspect
    (fresh-user run X5): once a verified fix rewrites another function, the source diagnostic is
    on the line it changes there, and names that function."""
    source = OLD + "\n\ndef threshold_of(item):\n    return item.low + 1\n"
    e = entry(READY)
    fixed = source.replace("item.low + 1", "item.low")
    e.candidates.append(CandidateResult("Line 6: drop the + 1.", "", 0, Patch(
        "inventory/stock.py", source, fixed, "threshold_of", "def threshold_of(item):\n    return item.low + 1\n",
        "def threshold_of(item):\n    return item.low\n", line=5), True, pass_rate=1.0, source="search"))
    pairs = diagnostics.diagnostics_for(Path("/w"), e, lambda rel, line: source.splitlines()[line - 1], False)
    (suspect,) = [d for _, d in pairs if d.code == diagnostics.ROLE_SUSPECT]
    assert suspect.range.start.line == 5  # 0-based: line 6, `return item.low + 1`
    test = next(d for _, d in pairs if d.code == diagnostics.ROLE_TEST)
    assert test.related_information[0].message == "fixed here: threshold_of (the verified fix's function)"
    unmoved = diagnostics.diagnostics_for(Path("/w"), entry(READY, verified=True), lambda rel, line: "x", False)
    assert [d.range.start.line for _, d in unmoved if d.code == diagnostics.ROLE_SUSPECT] == [0]


def test_hover_honours_the_content_format():
    markdown = actions.hover_text(entry(RUNNING), markdown=True)
    plain = actions.hover_text(entry(RUNNING), markdown=False)
    assert markdown.startswith("**ledex** — `tests/test_stock.py::test_low`") and "_Looking for a fix…_" in markdown
    assert plain == "ledex — tests/test_stock.py::test_low: assert False\n\nLooking for a fix…"
    ready = actions.hover_text(entry(READY, verified=True), markdown=False)
    assert "*" not in ready and "`" not in ready and "Verified fix: Use <= so equal" in ready
    assert ClientFeatures().hover_kind == lsp.MarkupKind.PlainText
    assert ClientFeatures(hover_markdown=True).hover_kind == lsp.MarkupKind.Markdown


def test_explanation_as_plain_text_for_clients_without_show_document():
    text = actions.explanation_text(entry(READY, verified=True), "/w/.ledex/explanations/ep1.md")
    assert text.splitlines() == [
        "Why tests/test_stock.py::test_low fails: assert False",
        "Suspect: is_low_stock in inventory/stock.py (lines 1-2: a workspace frame of the traceback)",
        "Verified fix: Use <= so equal counts as low. More.",
        "Every candidate with its diff: /w/.ledex/explanations/ep1.md"]
    assert "ledex is looking for a fix…" in actions.explanation_text(entry(RUNNING), None)
    assert "_No explanation yet: ledex is looking for a fix…_" in actions.explanation_markdown(entry(RUNNING))
    neighbour = entry(READY, verified=True)  # the fix is in another function than the suspect (X9)
    neighbour.candidates[0].suspect = "inventory/stock.py::restock"
    assert "Verified fix (it rewrites inventory/stock.py::restock): Use <=" in actions.explanation_text(neighbour, None)
    assert "_verified: the failing test passes and nothing else breaks (it rewrites inventory/stock.py::restock)_" \
        in actions.explanation_markdown(neighbour)
    same = entry(READY, verified=True)
    same.candidates[0].suspect = "inventory/stock.py::is_low_stock"
    assert "Verified fix: Use <=" in actions.explanation_text(same, None)


# --- one place each: a problem's fix lifecycle, model-setting kinds, setting problems -----------

def test_a_fix_moves_through_its_states_only_by_its_own_methods():
    e = entry(QUEUED)
    assert e.active and e.tests == ("tests/test_stock.py::test_low",) and e.members == (e.failure,)
    e.begin()
    candidate = CandidateResult("Use <=.", "", 1)
    assert (e.state, e.add(candidate), e.add(candidate)) == (RUNNING, 0, None)  # the same candidate once
    e.finish()
    assert e.state == READY and not e.active and str(e.state) == "ready"  # what diagnostics' data says
    e.withdraw()
    assert e.state == READY and e.cancel.is_set()  # an offered fix stays offered when its work is stopped
    running = entry(RUNNING)
    running.withdraw()
    running.finish()  # the job's end arrives after the withdrawal: it stays withdrawn
    assert running.state == CANCELLED
    crashed = entry(RUNNING)
    crashed.settle(RuntimeError("worker died"))
    assert (crashed.state, crashed.error) == (FAILED, "worker died")


def test_a_problem_is_stale_when_its_code_or_its_tests_change():
    e = entry(RUNNING)
    assert e.codes == {"inventory/stock.py": OLD}
    assert not e.touches("inventory/stock.py", OLD) and e.touches("inventory/stock.py", OLD + "# edit\n")
    assert e.touches("tests/test_stock.py", "anything") and not e.touches("inventory/other.py", "x")
    moved = Entry(e.failure, OLD, codes={"inventory/helpers.py": "def h():\n    return 1\n"})
    assert moved.key != e.key  # a further suspect's file is part of what the fix was computed against


def test_model_setting_kinds_are_parsed_in_one_place():
    from ledex.engine.models import ModelKind, model_kind

    kinds = {spec: model_kind(spec) for spec in ("", "default", "/m/x.gguf", "hf://o/r/x.gguf",
                                                 "http://127.0.0.1:8080/v1#qwen", "https://h/v1", "replay:a.json")}
    assert list(kinds.values()) == [ModelKind.DEFAULT, ModelKind.DEFAULT, ModelKind.GGUF, ModelKind.HUB,
                                    ModelKind.ENDPOINT, ModelKind.ENDPOINT, ModelKind.REPLAY]
    assert [k for k in ModelKind if k.takes_adapter] == [ModelKind.DEFAULT, ModelKind.GGUF, ModelKind.HUB]


def test_unknown_settings_are_told_apart_by_kind_not_text():
    _, problems = parse_settings({"editor.fontSize": 12, "samples": 0})
    assert [p.unknown for p in problems] == [True, False] and all(isinstance(p, str) for p in problems)


def test_discovery_notes_carry_a_kind_the_server_picks_the_severity_by(tmp_path):
    from ledex.engine.failures import failures_from_outcomes
    from ledex.engine.notes import NoteKind, note_kind
    from ledex.sandbox import TestOutcome
    from ledex.server.folder import nothing_ran

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_a():\n    assert 1 == 2\n")
    outcomes = [TestOutcome("tests/test_broken.py", "error", "problem: SyntaxError", "", None, None, 0.0),
                TestOutcome("tests/test_a.py::test_a", "failed", "assert 1 == 2", "", "tests/test_a.py", 1, 0.0)]
    _, notes = failures_from_outcomes(tmp_path, outcomes)
    assert [note_kind(n) for n in notes] == [NoteKind.COLLECTION, NoteKind.NO_SUSPECT]
    assert not any(note_kind(n).is_problem for n in notes)  # "problem" in the text no longer makes a warning

    class Stopped:  # the sandbox verdict of a run killed before any test ran
        error, error_kind, killed_reason, ran = "timed out after 2s", "timeout", "timeout", 0
    found = nothing_ran(type("DiscoveryError", (Exception,), {"verdict": Stopped()})("0 ran"))
    assert [note_kind(n) for n in found.notes] == [NoteKind.STOPPED, NoteKind.RUN_PROBLEM]
    assert all(note_kind(n).is_problem for n in found.notes)


def test_a_search_turn_overtakes_the_queued_model_turns():
    """The fix thread runs queued work lowest rank first (search 0, model 1), in order within a
    rank: a failure found while model turns wait is searched before them (X8). Cancel works
    until the work starts; after shutdown the queue is cancelled and new work refused."""
    from ledex.server.jobs import RankedWorker

    worker, started, ran = RankedWorker("test-ranked"), threading.Event(), []
    release = threading.Event()

    def under_way():
        started.set()
        release.wait(10)
        return "first"

    first = worker.submit(under_way, rank=1)
    assert started.wait(10)  # the turn under way is not pre-empted
    futures = [worker.submit(lambda n=n: ran.append(n), rank=r) for n, r in
               (("model A", 1), ("model B", 1), ("search C", 0), ("search D", 0))]
    dropped = worker.submit(lambda: ran.append("cancelled"), rank=0)
    assert dropped.cancel()
    release.set()
    for future in futures:
        future.result(10)
    assert first.result() == "first" and ran == ["search C", "search D", "model A", "model B"]
    failing = worker.submit(lambda: 1 / 0)
    with contextlib.suppress(ZeroDivisionError):
        failing.result(10)
    assert isinstance(failing.exception(), ZeroDivisionError)
    blocked = threading.Event()
    worker.submit(lambda: blocked.wait(10))
    waiting = worker.submit(lambda: ran.append("never"))
    worker.shutdown()
    blocked.set()
    assert waiting.cancelled() and "never" not in ran
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(lambda: None)
