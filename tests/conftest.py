"""Shared fixtures: a fresh copy of the example project, independent re-runs of its tests,
and a replaying OpenAI-compatible endpoint on 127.0.0.1 (for the endpoint backend and for
paths that need a model answer known in advance; the real model runs end to end elsewhere)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "inventory"
SHARED = REPO.parent / "shared"


@pytest.fixture
def example(tmp_path) -> Path:
    """A private copy of examples/inventory (tests may break or fix it freely)."""
    target = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".ledex", ".pytest_cache"))
    return target


def tree_digest(root: Path) -> str:
    """Hash of every file's path and bytes under root (caches excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and ".pytest_cache" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pytest_outcomes(workspace: Path, *node_ids: str) -> dict[str, str]:
    """Run pytest ourselves (not through ledex) and return {nodeid: outcome} from -rA lines."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *node_ids],
                          cwd=workspace, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR"):
            outcomes[rest.split(" - ")[0].strip()] = word.lower()
    return outcomes


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
