"""ledex-lsp end to end: a real `python -m ledex.server` subprocess driven by pytest-lsp on a
copy of the example project, with the real sandbox. Tests wait for notifications, never sleep.

The apply/accept path uses a recorded answer (`model: replay:<file>`): the real 135M model
rarely produces a verified fix, and that path must be deterministic. The real default model
runs end to end in test_real_model_end_to_end (diagnostics, code actions, explain, the episode).
Search candidates (on by default) are off ("search": False) where a test is about the model's
path; test_junit_reports_hover_dismiss_and_hot_reload keeps the default and gets a search fix.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcMethodNotFound

from ledex.engine import registry
from lsp_helpers import (FIXED_IS_LOW_STOCK, apply_text_edit, code_actions, episodes, ledex_diagnostics, open_doc,
                         repeated_publishes, session, state_is, stock_project, wait_for)

pytestmark = pytest.mark.asyncio
TEST_ID = "tests/test_stock.py::test_low_stock_at_threshold"


@pytest.fixture
def project(tmp_path):
    root = stock_project(tmp_path)
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([FIXED_IS_LOW_STOCK]))
    return root, replay, tmp_path / "home"


async def command(client, name: str, *args):
    return await client.workspace_execute_command_async(lsp.ExecuteCommandParams(name, arguments=list(args)))


def change(client, path: Path, version: int, text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=version, uri=path.as_uri()), [lsp.TextDocumentContentChangeWholeDocument(text)]))


async def test_fix_apply_accept_revert(project):
    root, replay, home = project
    stock, test_file = root / "inventory" / "stock.py", root / "tests" / "test_stock.py"
    original = stock.read_text()
    async with session(root, {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "search": False}, home) as client:
        open_doc(client, stock)
        open_doc(client, test_file)
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(test_file.as_uri())))
        await wait_for(client, state_is(client, stock, "queued", "running"))
        change(client, stock, 2, original + "# editing\n")  # the code being fixed changes: the job stops
        await wait_for(client, state_is(client, stock, "cancelled"))
        change(client, stock, 3, original)
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(stock.as_uri())))
        await wait_for(client, state_is(client, stock, "ready"))

        (suspect,) = ledex_diagnostics(client, stock)
        (test_diag,) = ledex_diagnostics(client, test_file)
        assert suspect.range.start.line == 3 and original.splitlines()[3].startswith("def is_low_stock")
        assert test_diag.range.start.line == 10 and test_diag.message.startswith("assert is_low_stock(5, 5): ")
        assert suspect.message.startswith("assert is_low_stock(5, 5): ") and TEST_ID in suspect.message
        assert suspect.related_information[0].location.uri == test_file.as_uri()
        assert test_diag.related_information[0].location.uri == stock.as_uri()

        actions = await code_actions(client, stock, suspect)
        titles = [a.title for a in actions]
        assert titles == ["Fix: The comparison excludes the threshold itself.", "Explain this failure",
                          "Dismiss ledex suggestion"]
        fix = actions[0]
        assert fix.is_preferred and fix.kind == lsp.CodeActionKind.QuickFix
        (doc_edit,) = fix.edit.document_changes
        assert doc_edit.text_document.version == 3  # versioned: only for the buffer it was computed against

        change(client, stock, 4, original + "# again\n")  # an edit elsewhere: the fix is moved onto this buffer
        (moved,) = (await code_actions(client, stock, suspect))[0].edit.document_changes
        assert moved.text_document.version == 4
        assert apply_text_edit(original + "# again\n", moved.edits[0]) == \
            original.replace("quantity < threshold", "quantity <= threshold") + "# again\n"
        mine = original.replace("return quantity < threshold", "return quantity < threshold  # mine")
        change(client, stock, 5, mine)  # the function itself edited: no fix is offered for it
        assert [a.title for a in await code_actions(client, stock, suspect)][0] == "Explain this failure"
        change(client, stock, 6, original)
        fix = (await code_actions(client, stock, suspect))[0]
        fixed = apply_text_edit(original, fix.edit.document_changes[0].edits[0])
        assert "return quantity <= threshold" in fixed
        change(client, stock, 7, fixed)
        assert (await command(client, fix.command.command, *fix.command.arguments)) == {"accepted": True}
        stock.write_text(fixed)
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(stock.as_uri())))
        await wait_for(client, lambda: not ledex_diagnostics(client, stock) and not ledex_diagnostics(client, test_file))

        (*older, episode) = episodes(root)
        assert episode["outcome"] == "accepted" and episode["chosen_candidate"] == 0
        assert episode["model"].startswith("replay@") and episode["test"] == TEST_ID
        assert episode["candidates"][0]["verified"] == 1 and "<= threshold" in episode["candidates"][0]["diff"]
        assert all(e["outcome"] == "ignored" for e in older)  # superseded by the edit, never decided

        change(client, stock, 8, original)  # undo
        await command(client, "ledex.status")  # handled in order: the change has been seen
        assert episodes(root)[-1]["outcome"] == "reverted"
        tokens = [reports for reports in client.progress_reports.values() if reports]
        assert any(r[0].kind == "begin" and r[-1].kind == "end" for r in tokens)
        messages = [getattr(r, "message", None) for reports in tokens for r in reports]
        assert "1 test file(s): tests/test_stock.py" in messages  # a save runs only the tests importing stock.py
        assert repeated_publishes(client) == []  # once per change of a document's diagnostics


def write_report(root: Path) -> None:
    """What any runner does: write a JUnit report into the workspace (here pytest itself)."""
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=native",
                    "-o", "junit_family=xunit1", "--junitxml=reports/junit.xml"], cwd=root, capture_output=True)


async def test_junit_reports_hover_dismiss_and_hot_reload(project):
    root, replay, home = project
    stock = root / "inventory" / "stock.py"
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnStart": False, "runOnSave": False}
    async with session(root, options, home) as client:
        write_report(root)
        await wait_for(client, state_is(client, stock, "ready"))
        (suspect,) = ledex_diagnostics(client, stock)
        hover = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(stock.as_uri()), suspect.range.start))
        assert "Verified fix" in hover.contents.value and "threshold" in hover.contents.value
        # search is on by default (issue 20): the one-token fix is found by search, explained by the model
        fix = (await code_actions(client, stock, suspect))[0]
        edit = "Line 6: `return quantity < threshold` -> `return quantity <= threshold`."
        assert fix.title == f"Fix (found by search): {edit}"  # the edit in words, not the model's prose
        # offered before the model explained it; the log keeps the explanation that came after
        logged = [c for c in episodes(root)[-1]["candidates"] if c["verified"]]
        assert logged[0]["explanation"].startswith(f"{edit} The comparison excludes the threshold itself.")

        explained = await command(client, "ledex.explain", TEST_ID)
        shown = Path(client.shown_documents[-1].uri.removeprefix("file://"))
        assert explained["uri"] == client.shown_documents[-1].uri and shown.parent == root / ".ledex" / "explanations"
        assert TEST_ID in shown.read_text() and "+    return quantity <= threshold" in shown.read_text()

        assert (await command(client, "ledex.dismiss", TEST_ID))["rejected"] is True
        await wait_for(client, lambda: not ledex_diagnostics(client, stock))
        assert episodes(root)[-1]["outcome"] == "rejected"

        registry.set_current({"adapter": str(replay), "version": 7, "promoted_at": "2026-01-02T03:04:05"}, home)
        await wait_for(client, lambda: any("promoted" in m.message for m in client.messages), lsp.WINDOW_SHOW_MESSAGE)
        status = await command(client, "ledex.status")
        assert status["lastTraining"] == "2026-01-02T03:04:05" and status["busy"] is False


async def test_failure_fixed_elsewhere_is_ignored(project):
    root, replay, home = project
    stock = root / "inventory" / "stock.py"
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnStart": False, "runOnSave": False}
    async with session(root, options, home) as client:
        write_report(root)
        await wait_for(client, state_is(client, stock, "ready"))
        stock.write_text(stock.read_text().replace("quantity < threshold", "quantity <= threshold"))
        write_report(root)
        await wait_for(client, lambda: not ledex_diagnostics(client, stock))
        assert [e["outcome"] for e in episodes(root)] == ["ignored"]


async def test_report_of_some_files_is_verified_against_every_importer(project):
    """A report holds only the tests its runner ran: a fix is verified against ledex's own run of
    them and of every test file importing the suspect, so one breaking another file's passing
    test is not verified (fresh-user run X8: a partial report's fix broke other files' tests)."""
    root, replay, home = project
    stock = root / "inventory" / "stock.py"
    (root / "tests" / "test_reorder.py").write_text(
        "from inventory.stock import is_low_stock\n\n\ndef test_big_stock_is_not_low():\n"
        "    assert not is_low_stock(101, 5)\n")
    wrong = FIXED_IS_LOW_STOCK.replace("return quantity <= threshold", "return quantity <= threshold or quantity > 100")
    replay.write_text(json.dumps([wrong]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "search": False,
               "runOnStart": False, "runOnSave": False}
    async with session(root, options, home) as client:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_stock.py",
                        "--junitxml=reports/junit.xml"], cwd=root, capture_output=True)  # the user's run of one file
        await wait_for(client, state_is(client, stock, "ready"))
        (episode,) = episodes(root)
        (candidate,) = episode["candidates"]
        assert "quantity > 100" in candidate["diff"] and candidate["verified"] == 0
        titles = [a.title for a in await code_actions(client, stock, ledex_diagnostics(client, stock)[0])]
        assert titles == ["Explain this failure", "Dismiss ledex suggestion"]  # it breaks a passing test: no quick fix
        messages = [getattr(r, "message", "") for reports in client.progress_reports.values() for r in reports]
        assert "2 test file(s): tests/test_reorder.py, tests/test_stock.py" in messages  # the importer runs too


async def test_report_ledex_cannot_rerun_gets_no_unverifiable_fix(project):
    root, replay, home = project
    stock = root / "inventory" / "stock.py"
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnStart": False, "runOnSave": False,
               "testCommand": "definitely-not-a-command-xyz {tests}"}
    async with session(root, options, home) as client:
        write_report(root)
        await wait_for(client, state_is(client, stock, "failed"))
        (suspect,) = ledex_diagnostics(client, stock)
        assert suspect.data["state"] == "failed" and episodes(root) == []  # no model was asked
        hover = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(stock.as_uri()), suspect.range.start))
        assert "read from a test report; ledex's own run of its tests did not confirm it" in hover.contents.value


async def test_a_note_is_told_once_while_it_stays_the_same(project):
    """A collection error was shown again after every save (fresh-user run X8): a note the last
    run told already is not told again; one that changes is."""
    root, replay, home = project
    broken = root / "tests" / "test_broken.py"
    broken.write_text("def test_x(:\n    pass\n")
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "search": False, "runOnStart": False}
    async with session(root, options, home) as client:
        for _ in range(2):
            await command(client, "ledex.runTests")
        told = [m.message for m in client.messages if "collection error in tests/test_broken.py" in m.message]
        assert len(told) == 1, [m.message for m in client.messages]
        broken.write_text("def test_x():\n    import no_such_module_xyz\n\n\nimport no_such_module_abc\n")
        await command(client, "ledex.runTests")
        told = [m.message for m in client.messages if "collection error in tests/test_broken.py" in m.message]
        assert len(told) == 2 and "no_such_module_abc" in told[1], told


async def test_bad_input_keeps_serving(project, tmp_path):
    root, _, home = project
    (root / "inventory" / "latin.py").write_bytes("# -*- coding: latin-1 -*-\ndef name():\n    return 'caf\xe9'\n"
                                                  .encode("latin-1"))
    (root / "tests" / "test_latin.py").write_text("from inventory.latin import name\n\n\ndef test_name():\n"
                                                  "    assert name() == 'tea'\n")
    options = {"samples": 0, "junitGlobs": "x", "bogus": 1, "testCommand": "definitely-not-a-command-xyz",
               "runOnStart": False, "model": str(tmp_path / "missing.gguf"), "rounds": 1, "search": False}
    async with session(root, options, home) as client:
        await command(client, "ledex.status")
        text = "\n".join(m.message for m in client.messages)
        assert "samples=0" in text and "junitGlobs" in text and "'bogus'" in text

        sent = client.protocol.writer.write(b"Content-Length: 9\r\n\r\n{not json")  # malformed JSON-RPC
        if hasattr(sent, "__await__"):
            await sent
        with pytest.raises(JsonRpcMethodNotFound):
            await client.protocol.send_request_async("ledex/noSuchMethod", {})
        result = await command(client, "ledex.runTests")
        assert result["failures"] == 0 and result["error"]  # the missing command is reported, not fatal
        hang = f"{sys.executable} -c 'import time; time.sleep(600)'"
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"ledex": {"testCommand": hang, "testTimeoutS": 2}}))
        result = await command(client, "ledex.runTests")  # a hanging test command is stopped and reported
        assert "timed out after 2s" in result["error"] and any("stopped (timeout)" in n for n in result["notes"])

        huge = root / "huge.py"
        huge.write_text("x = 1\n" * 600_000)
        open_doc(client, huge)
        assert await code_actions(client, huge, lsp.Diagnostic(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 1)), "x")) == []

        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"ledex": {"testCommand": "", "testTimeoutS": 120}}))
        result = await command(client, "ledex.runTests")
        # the latin-1 module (PEP 263 line) is a suspect like any other: no "no function to fix" note for its test
        assert result["failures"] == 2 and not any("test_latin" in n for n in result["notes"]), result["notes"]
        stock = root / "inventory" / "stock.py"
        await wait_for(client, state_is(client, stock, "failed"))
        assert any("could not be loaded" in m.message for m in client.messages)
        assert (await command(client, "ledex.status"))["busy"] is False


@pytest.mark.slow
async def test_real_model_end_to_end(project):
    """The embedded SmolLM2-135M through the whole server: whatever it proposes is listed
    (verified or not), explained, and logged with the model's identity."""
    root, _, home = project
    stock = root / "inventory" / "stock.py"
    async with session(root, {"samples": 2, "rounds": 1, "search": False}, home) as client:
        open_doc(client, stock)
        await wait_for(client, state_is(client, stock, "ready", "failed"))
        assert state_is(client, stock, "ready")(), [m.message for m in client.messages]
        (suspect,) = ledex_diagnostics(client, stock)
        actions = await code_actions(client, stock, suspect)
        titles = [a.title for a in actions]
        assert titles[-2:] == ["Explain this failure", "Dismiss ledex suggestion"]
        fixes = [a for a in actions if a.title.startswith("Fix")]
        (episode,) = episodes(root)
        assert episode["model"].startswith("SmolLM2-135M-Instruct") and episode["model_version"] in ("base", "packaged")
        assert len(episode["candidates"]) >= 1
        # one failing test: a candidate is a quick fix when verified (an unverified one that makes it pass broke another)
        assert len(fixes) == sum(1 for c in episode["candidates"] if c["verified"])
        explained = await command(client, "ledex.explain", TEST_ID)
        assert TEST_ID in Path(explained["uri"].removeprefix("file://")).read_text()
        if fixes:  # apply the top one, as a user would: the episode records the choice
            edit = fixes[0].edit.document_changes[0]
            change(client, stock, 2, apply_text_edit(stock.read_text(), edit.edits[0]))
            assert (await command(client, fixes[0].command.command, *fixes[0].command.arguments))["accepted"]
            assert episodes(root)[0]["outcome"] == "accepted"
        else:
            assert (await command(client, "ledex.dismiss", TEST_ID))["rejected"]
            assert episodes(root)[0]["outcome"] == "rejected"


def model_pids(client) -> list[int]:
    """Model worker processes the server announced (window/logMessage), oldest first."""
    found = (re.search(r"model process (\d+) serves", m.message) for m in client.log_messages)
    return [int(m.group(1)) for m in found if m]


async def test_model_crash_mid_generation_keeps_the_server_serving(project):
    """The real default model's process is killed with SIGSEGV while it generates: that fix
    fails with a message, the server keeps answering, no episode is lost, and the next fix
    gets a fresh model process."""
    root, _, home = project
    stock = root / "inventory" / "stock.py"
    async with session(root, {"samples": 1, "rounds": 1, "runOnSave": False, "search": False}, home) as client:
        open_doc(client, stock)
        await wait_for(client, lambda: model_pids(client), lsp.WINDOW_LOG_MESSAGE)
        generating = lambda: any(getattr(r, "message", "") == "round 1: generating 0/1"  # noqa: E731
                                 for reports in client.progress_reports.values() for r in reports)
        await wait_for(client, generating, lsp.PROGRESS)  # after the re-run of the unchanged code (FixEngine.reproduces)
        (pid,) = model_pids(client)
        os.kill(pid, signal.SIGSTOP)  # freeze it mid-work: prompt evaluation alone takes ~1 s
        assert state_is(client, stock, "queued", "running")() and (await command(client, "ledex.status"))["busy"] is True
        os.kill(pid, signal.SIGSEGV)
        os.kill(pid, signal.SIGCONT)  # the pending SIGSEGV is delivered: a native crash
        await wait_for(client, state_is(client, stock, "failed"))
        crash = next(m.message for m in client.messages if "SIGSEGV" in m.message)
        assert "tests/test_stock.py::test_low_stock_at_threshold" in crash and "starts a new one" in crash
        hover = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(stock.as_uri()), ledex_diagnostics(client, stock)[0].range.start))
        assert hover is not None  # still serving requests
        assert (await command(client, "ledex.status"))["modelProcess"] is None

        await command(client, "ledex.runTests")  # the same failure again: a failed fix is retried
        await wait_for(client, state_is(client, stock, "ready"))
        status = await command(client, "ledex.status")
        assert model_pids(client) == [pid, status["modelProcess"]] and status["busy"] is False
        first, second = episodes(root)
        assert first["candidates"] == [] and first["outcome"] == "ignored"  # logged before the crash, kept
        assert second["model"].startswith("SmolLM2-135M-Instruct") and len(second["candidates"]) == 1


def tiny_adapter(path: Path, seed: int = 0) -> Path:
    """A real GGUF LoRA adapter for the default model (rank 4 on layer 0's q and v), written
    by the exporter the training pipeline uses; random weights: this is about plumbing."""
    import numpy as np

    from ledex.training.export import write_adapter

    rng = np.random.default_rng(seed)
    tensors = {f"blk.0.{t}.weight.lora_{w}": rng.normal(0, 0.02, shape).astype(np.float32)
               for t in ("attn_q", "attn_v") for w, shape in (("a", (4, 576)), ("b", (576 if t == "attn_q" else 192, 4)))}
    return write_adapter(tensors, alpha=8.0, arch="llama", output=path)


@pytest.mark.slow
async def test_promotion_swaps_the_model_for_the_next_fix(project, tmp_path):
    """`ledex-train promote` while the editor is open: no restart, the next fix runs on the
    promoted adapter (new model process), and its episode records the version."""
    from ledex.training.promote import promote

    root, _, home = project
    stock = root / "inventory" / "stock.py"
    async with session(root, {"samples": 1, "rounds": 1, "search": False}, home) as client:
        open_doc(client, stock)
        await wait_for(client, state_is(client, stock, "ready"))
        record = promote(tiny_adapter(tmp_path / "tiny.gguf"), home=home, note="test")
        await wait_for(client, lambda: any("promoted" in m.message for m in client.messages), lsp.WINDOW_SHOW_MESSAGE)

        stock.write_text(stock.read_text() + "\n# touched\n")  # new code, same failure: a new fix
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(stock.as_uri())))
        await wait_for(client, lambda: len(model_pids(client)) == 2 and state_is(client, stock, "ready")())
        before, after = episodes(root)
        assert before["model_version"] == "base" and "+" not in before["model"]
        installed = Path(record["adapter"])
        assert after["model_version"] == str(record["version"]) == "1"
        assert after["model"] == f"{before['model']}+{installed.name}@{record['adapter_hash'][:12]}"
        assert (await command(client, "ledex.status"))["model"] == after["model"]
        with pytest.raises(ProcessLookupError):  # the base model's process was stopped, not leaked
            os.kill(model_pids(client)[0], 0)


@pytest.mark.slow
async def test_user_cancels_a_fix_from_its_progress(project):
    """The editor's cancel button on the fix's work-done progress stops the real model
    mid-generation: the fix ends cancelled early and the model process stays up."""
    root, _, home = project
    stock = root / "inventory" / "stock.py"
    async with session(root, {"samples": 4, "rounds": 2, "runOnSave": False, "search": False}, home) as client:
        open_doc(client, stock)
        await wait_for(client, lambda: model_pids(client), lsp.WINDOW_LOG_MESSAGE)
        (token,) = [t for t, reports in client.progress_reports.items()
                    if reports and getattr(reports[0], "title", "").startswith("ledex: fixing")]
        client.window_work_done_progress_cancel(lsp.WorkDoneProgressCancelParams(token))
        await wait_for(client, state_is(client, stock, "cancelled"))
        await wait_for(client, lambda: client.progress_reports[token][-1].kind == "end", lsp.PROGRESS)
        status = await command(client, "ledex.status")
        assert status["modelProcess"] == model_pids(client)[0], (status, [m.message for m in client.log_messages][-15:])  # a cancel is not a crash
        (episode,) = episodes(root)
        assert len(episode["candidates"]) < 4  # stopped before the first round's 4 answers, let alone round 2


@pytest.mark.parametrize("editor", ["visual-studio-code", "eglot-1.9"])
async def test_code_actions_while_the_model_generates(project, editor):
    """Code actions asked while a fix is being generated (the model process frozen with
    SIGSTOP: deterministic) answer without error, and each client gets what it can show:
    a disabled "still looking" action where disabledSupport is declared, else the state in
    the diagnostic's message and a start/end message; explain as a document or a message."""
    root, replay, home = project
    stock = root / "inventory" / "stock.py"
    bare = editor == "eglot-1.9"
    async with session(root, {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False},
                       home,
                       capabilities=editor) as client:
        open_doc(client, stock)
        await wait_for(client, lambda: model_pids(client), lsp.WINDOW_LOG_MESSAGE)
        (pid,) = model_pids(client)
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_for(client, state_is(client, stock, "running"))
            (suspect,) = ledex_diagnostics(client, stock)
            titles = [a.title for a in await code_actions(client, stock, suspect)]
            explained = await command(client, "ledex.explain", TEST_ID)
            hover = await client.text_document_hover_async(lsp.HoverParams(
                lsp.TextDocumentIdentifier(stock.as_uri()), suspect.range.start))
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_for(client, state_is(client, stock, "ready"))
        (ready,) = ledex_diagnostics(client, stock)
        after = [a.title for a in await code_actions(client, stock, ready)]

    assert after[0] == "Fix: The comparison excludes the threshold itself." and ready.message.endswith("(ledex: 1 verified fix)")
    if not bare:
        assert titles == ["ledex is still looking for a fix…", "Explain this failure", "Dismiss ledex suggestion"]
        assert "(ledex:" not in suspect.message and explained["shown"] == "document"
        assert hover.contents.kind == lsp.MarkupKind.Markdown and "_Looking for a fix…_" in hover.contents.value
        return
    assert titles == ["Explain this failure", "Dismiss ledex suggestion"]
    assert suspect.message.endswith("(ledex: looking for a fix…)")
    assert explained["shown"] == "message" and explained["text"] in [m.message for m in client.messages]
    assert f"Why {TEST_ID} fails" in explained["text"] and "ledex is looking for a fix…" in explained["text"]
    assert hover.contents.kind == lsp.MarkupKind.PlainText and hover.contents.value.endswith("\n\nLooking for a fix…")
    logged = [m.message for m in client.log_messages]
    assert f"ledex: fixing {TEST_ID}: queued" in logged and f"ledex: fixing {TEST_ID}: 1 verified fix" in logged
    assert any(m.message == f"ledex: {TEST_ID}: 1 verified fix (code actions on its diagnostic)" for m in client.messages)
    assert not client.progress_reports  # nothing sent that it did not ask for
    assert repeated_publishes(client) == []  # every state is in the message: still one publish per change


FIXED_DIFFERENTLY = FIXED_IS_LOW_STOCK.replace("The comparison excludes the threshold itself.",
                                               "Equal quantities must count as low stock.")


async def test_every_workspace_folder_gets_its_own_runs_episodes_and_settings(tmp_path, project):
    """Two folders, each with a failing test of the same id: each is run, fixed with its own
    model setting (workspace/configuration scoped to the folder) and logged in its own
    episode log; a folder added later is picked up, a folder removed is cleared."""
    first, replay, home = project
    second = stock_project(tmp_path / "second")
    with (second / "inventory" / "stock.py").open("a") as code:  # other code: the fix cache cannot answer
        code.write("\n\nSECOND = True\n")
    other_replay = tmp_path / "other.json"
    other_replay.write_text(json.dumps([FIXED_DIFFERENTLY]))
    options = {"model": f"replay:{replay}", "samples": 1, "rounds": 1, "runOnSave": False, "search": False}
    stocks = [root / "inventory" / "stock.py" for root in (first, second)]
    async with session(first, options, home) as client:
        client.set_configuration({"model": f"replay:{other_replay}"}, section="ledex", scope_uri=second.as_uri())
        await wait_for(client, state_is(client, stocks[0], "ready"))
        client.workspace_did_change_workspace_folders(lsp.DidChangeWorkspaceFoldersParams(lsp.WorkspaceFoldersChangeEvent(
            added=[lsp.WorkspaceFolder(second.as_uri(), "second")], removed=[])))
        await wait_for(client, state_is(client, stocks[1], "ready"))
        titles = [[a.title for a in await code_actions(client, s, ledex_diagnostics(client, s)[0])][0] for s in stocks]
        assert titles == ["Fix: The comparison excludes the threshold itself.", "Fix: Equal quantities must count as low stock."]
        status = await command(client, "ledex.status")
        assert status["folders"] == [str(first.resolve()), str(second.resolve())]
        assert (await command(client, "ledex.explain", TEST_ID, second.as_uri()))["uri"].startswith(second.as_uri())

        client.workspace_did_change_workspace_folders(lsp.DidChangeWorkspaceFoldersParams(lsp.WorkspaceFoldersChangeEvent(
            added=[], removed=[lsp.WorkspaceFolder(first.as_uri(), "first")])))
        await wait_for(client, lambda: not ledex_diagnostics(client, stocks[0]))
        assert ledex_diagnostics(client, stocks[1]) and (await command(client, "ledex.status"))["folders"] == [
            str(second.resolve())]
    (one,), (two,) = episodes(first), episodes(second)
    assert (one["workspace"], one["outcome"]) == (str(first.resolve()), "ignored")
    assert two["workspace"] == str(second.resolve()) and "Equal quantities" in two["candidates"][0]["explanation"]
