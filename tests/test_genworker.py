"""The generation worker process (ledex.engine.genworker): the real default model in a real
child process, killed, frozen, cancelled and orphaned on purpose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ledex.engine.backends import Sampling, load_backend
from ledex.engine.format import Problem, build_messages
from ledex.engine.genworker import WorkerBackend
from ledex.engine.models import ModelError

PROBLEM = Problem("Write add(a, b) returning the sum of a and b.", "def add(a, b):\n    return a - b",
                  "assert add(1, 2) == 3\nAssertionError: assert -1 == 3")
MESSAGES = build_messages(PROBLEM)


@pytest.fixture(scope="module")
def worker():
    backend = WorkerBackend("")
    yield backend
    backend.close()


@pytest.fixture
def replay_worker(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["first answer", "second answer"]))
    backend = WorkerBackend(f"replay:{answers}", stall_timeout_s=3, cancel_grace_s=1)
    yield backend
    backend.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead for our purposes
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_answers_are_the_in_process_backends(worker):
    """The protocol loses nothing: same identity, same text for the same seed."""
    local = load_backend()
    sampling = Sampling(max_tokens=48, seed=1)
    assert worker.identity == local.identity and worker.pid != os.getpid()
    remote, here = worker.generate(MESSAGES, sampling), local.generate(MESSAGES, sampling)
    assert (remote.text, remote.finish_reason, remote.completion_tokens) == (here.text, here.finish_reason,
                                                                            here.completion_tokens)


def test_a_native_crash_costs_one_request_and_the_next_restarts(worker):
    first_pid, starts = worker.pid, worker.starts
    tokens = []

    def crash_midway() -> None:
        tokens.append(1)
        if len(tokens) == 1:
            os.kill(first_pid, signal.SIGSEGV)

    with pytest.raises(ModelError, match="killed by SIGSEGV while generating; ledex starts a new one"):
        worker.generate(MESSAGES, Sampling(max_tokens=300, seed=2), on_token=crash_midway)
    assert tokens and not alive(first_pid) and worker.pid is None
    again = worker.generate(MESSAGES, Sampling(max_tokens=24, seed=1))
    assert again.completion_tokens > 0 and worker.pid not in (None, first_pid) and worker.starts == starts + 1


def test_cancel_stops_a_generation_midway(worker):
    cancel, tokens = threading.Event(), []

    def count() -> None:
        tokens.append(1)
        if len(tokens) == 3:
            cancel.set()

    pid = worker.pid
    generation = worker.generate(MESSAGES, Sampling(max_tokens=400, seed=3), cancel=cancel, on_token=count)
    assert generation.finish_reason == "cancelled" and generation.completion_tokens < 400
    assert worker.pid == pid  # a cancel is an answer, not a restart


def test_a_python_level_error_is_an_answer_and_the_worker_lives(worker):
    pid = worker.pid
    with pytest.raises(ModelError, match="has no attribute .role."):
        worker.generate("not a conversation", Sampling(max_tokens=8))
    assert worker.pid == pid and worker.generate(MESSAGES, Sampling(max_tokens=8)).completion_tokens > 0


def test_a_model_that_cannot_load_fails_at_construction_with_its_message(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelError, match="llama.cpp could not load"):
        WorkerBackend(str(junk))
    with pytest.raises(ModelError, match="model file not found"):
        WorkerBackend(str(tmp_path / "missing.gguf"))


def test_a_hung_worker_is_replaced(replay_worker):
    assert replay_worker.generate(MESSAGES, Sampling()).text == "first answer"
    frozen = replay_worker.pid
    os.kill(frozen, signal.SIGSTOP)  # hung in native code, as far as anyone can tell
    try:
        with pytest.raises(ModelError, match=r"no word for 3 s"):
            replay_worker.generate(MESSAGES, Sampling())
        assert replay_worker.crashes_in_a_row == 1
        assert replay_worker.generate(MESSAGES, Sampling()).text == "first answer"  # a fresh worker
        assert replay_worker.pid != frozen and replay_worker.starts == 2 and replay_worker.crashes_in_a_row == 0
    finally:
        os.kill(frozen, signal.SIGKILL) if alive(frozen) else None


def test_a_cancel_the_worker_ignores_ends_it(replay_worker):
    frozen = replay_worker.pid
    os.kill(frozen, signal.SIGSTOP)
    cancel = threading.Event()
    cancel.set()
    try:
        assert replay_worker.generate(MESSAGES, Sampling(), cancel=cancel).finish_reason == "cancelled"
        assert not alive(frozen) or replay_worker.pid is None
    finally:
        os.kill(frozen, signal.SIGKILL) if alive(frozen) else None


def test_the_worker_never_outlives_its_parent(tmp_path):
    """A SIGKILLed parent (an editor crash) leaves no model process behind."""
    script = ("from ledex.engine.genworker import WorkerBackend\nimport sys, time\n"
              "w = WorkerBackend('')\nprint(w.pid, flush=True)\nsys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on a process that is not ours to wait() for
    assert not alive(child)


def test_a_worker_that_died_between_requests_is_replaced_silently(replay_worker):
    idle = replay_worker.pid
    os.kill(idle, signal.SIGKILL)  # e.g. the OOM killer, while nothing was asked of it
    while replay_worker.pid is not None:  # until its death can be seen (all its threads gone)
        time.sleep(0.01)
    assert replay_worker.generate(MESSAGES, Sampling()).text == "first answer"  # no request lost
    assert replay_worker.starts == 2 and replay_worker.pid != idle


def test_a_batch_streams_each_answer_and_an_early_close_cancels_the_rest(worker):
    """K answers of one request come back one by one (seeds seed..seed+K-1, each the answer
    a single request gives); closing the stream early leaves the worker ready, same process."""
    sampling = Sampling(max_tokens=12, seed=4)
    answers = {a.seed: a.text for a in worker.generate_batch(MESSAGES, sampling, 3)}
    assert sorted(answers) == [4, 5, 6] and answers[5] == worker.generate(MESSAGES, Sampling(max_tokens=12, seed=5)).text
    pid, stream = worker.pid, worker.generate_batch(MESSAGES, Sampling(max_tokens=200, seed=0), 3)
    next(stream)
    stream.close()  # the rest are cancelled and drained: nothing of them reaches the next request
    assert worker.generate(MESSAGES, sampling).text == answers[4] and worker.pid == pid
