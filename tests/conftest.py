"""Shared fixtures: a fresh copy of the example project, independent re-runs of its tests,
and a replaying OpenAI-compatible endpoint on 127.0.0.1 (for the endpoint backend and for
paths that need a model answer known in advance; the real model runs end to end elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "inventory"
SHARED = REPO.parent / "shared"


def _descendants(pid: int) -> list[int]:
    """The process ids below `pid` (read from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop(0))
        todo += children.get(found[-1], [])
    return found


def _unblock(item: pytest.Item) -> None:
    """A test still running WATCHDOG_S after it started (pytest-timeout's one alarm has fired, and
    its teardown waits on something that will never come: CI at 1dbd772 printed one F and then
    nothing for 78 min): print every thread's stack, and kill the processes it started (servers,
    editors, sandboxes), so whatever waits on them returns and the suite goes on."""
    import faulthandler
    import signal
    import sys

    print(f"\n[watchdog] {item.nodeid} still running after {WATCHDOG_S} s: its stacks, then its child processes are "
          "killed", file=sys.__stderr__, flush=True)
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# past pytest-timeout's 600 s (it fires once) and faulthandler_timeout's 480 s; LEDEX_TEST_WATCHDOG_S=8 with
# `-o timeout=4` shows it on a test whose fixture waits for a child process in its teardown
WATCHDOG_S = int(os.environ.get("LEDEX_TEST_WATCHDOG_S", "720"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001 - pytest's hook
    """Arm the watchdog (_unblock) for the whole of one test: setup, call and teardown."""
    timer = threading.Timer(WATCHDOG_S, _unblock, (item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture(autouse=True)
def private_ledex_home(tmp_path_factory, monkeypatch):
    """No test sees (or changes) the adapter a developer promoted on this machine."""
    monkeypatch.setenv("LEDEX_HOME", str(tmp_path_factory.mktemp("ledex-home")))


@pytest.fixture
def example(tmp_path) -> Path:
    """A private copy of examples/inventory (tests may break or fix it freely)."""
    target = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".ledex", ".pytest_cache"))
    return target


class _ReplayHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        server = self.server
        with server.lock:
            answer = server.answers[len(server.requests) % len(server.answers)]
            server.requests.append(request)
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def replay_endpoint():
    """Start an OpenAI-compatible server on 127.0.0.1 that replays answers; yields a setter."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReplayHandler)
    server.lock, server.requests, server.answers = threading.Lock(), [], ["no answer configured"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def configure(answers: list[str]) -> str:
        server.answers[:] = answers
        return f"http://127.0.0.1:{server.server_address[1]}/v1#replay"

    configure.requests = server.requests
    yield configure
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["auto", "none"])
def cgroups(request, monkeypatch):
    """Run a sandbox limit test with this machine's cgroups (if any) and with the fallback (RLIMIT_NPROC)."""
    from ledex.sandbox import limits

    if request.param == "none":
        monkeypatch.setenv("LEDEX_SANDBOX_CGROUP", "none")
    limits.cgroup_base.cache_clear()
    yield request.param
    limits.cgroup_base.cache_clear()
