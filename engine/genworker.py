"""Generation in a child process: a native crash in the model (llama.cpp is C++) costs one
request, not the process that asked. The language server keeps serving, says what happened,
and the next request starts a fresh worker. `WorkerBackend` is a `Backend` like the others.

Protocol, one JSON object per line (esbonio-style: narrow, one request at a time):

    parent                                          worker: python -m ledex.engine.genworker
    argv: --model M [--adapter A] [--nice N] [--threads T]
                                                    <- {"ready": <ModelIdentity dict>}  | {"error": "..."}
    {"op": "generate", "id": 1, "messages": [...], "sampling": {...}, "n": K} ->
    {"op": "cancel", "id": 1} ->                    (optional, any time)
                                                    <- {"id": 1, "tokens": 17}    (progress, a few per second)
                                                    <- {"id": 1, "generation": {...}}  (each answer as it finishes, K times)
                                                    <- {"id": 1, "done": K}  | {"id": 1, "error": "..."}
    {"op": "logprobs", "id": 2, "messages": [...], "completions": [...]} ->
                                                    <- {"id": 2, "logprobs": [float | null, ...]}
                                                     | {"id": 2, "error": "...", "unsupported": true | false}

The K answers of one request are one batch in the worker (`backends.generate_batch`), streamed
back one by one so the parent can verify the first while the others are still decoding.

The worker exits when its stdin closes, so it never outlives the parent (even a SIGKILLed
one). Its protocol goes to a private copy of stdout; anything a native library prints goes
to stderr, whose tail the parent quotes when the worker dies.

See tests/test_genworker.py for it in use (crash, cancel, restart, parent death).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from ledex.engine.backends import (Generation, LogprobsUnsupported, Sampling, generate_batch, load_backend,
                                    only_answer)
from ledex.engine.models import ModelError, ModelIdentity

PROGRESS_EVERY_S = 0.25  # liveness + progress; more often only costs pipe traffic
CANCEL_GRACE_S = 10.0  # a worker that ignores a cancel this long (stuck in native code) is killed
LOAD_TIMEOUT_S = 600.0  # a 7B GGUF from a cold disk can take minutes to load
STALL_TIMEOUT_S = 600.0  # no word at all for this long: hung in native code (prompt eval of 4k tokens on 2 slow cores fits)


# --- worker side ----------------------------------------------------------------------------

_write_lock = threading.Lock()  # the reader thread reports malformed lines while the main thread answers


def _send(out, message: dict) -> None:
    with _write_lock:
        out.write(json.dumps(message) + "\n")
        out.flush()


def _read_requests(stream, jobs: queue.Queue, cancels: dict[int, threading.Event], out) -> None:
    """Reader thread: queue generate requests, set cancel flags at once; EOF = parent gone."""
    for line in stream:
        try:
            request = json.loads(line)
            op, rid = request["op"], int(request["id"])
        except (ValueError, KeyError, TypeError) as exc:
            _send(out, {"id": None, "error": f"malformed request ({exc}): {line[:200]!r}"})
            continue
        if op == "cancel":
            cancels.get(rid, threading.Event()).set()
        elif op in ("generate", "logprobs"):
            cancels[rid] = threading.Event()
            jobs.put(request)
    os._exit(0)  # no parent, nobody to answer: stop now, even mid-generation


def _answer(backend, request: dict, cancel: threading.Event, out) -> dict:
    """Stream each answer of the request as it finishes; the closing message is returned."""
    rid, tokens, last, sent = request["id"], 0, time.monotonic(), 0

    def on_token() -> None:
        """Count a generated token; send a progress line {id, tokens} at most every PROGRESS_EVERY_S."""
        nonlocal tokens, last
        tokens += 1
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            _send(out, {"id": rid, "tokens": tokens})

    try:
        sampling = Sampling(**request.get("sampling", {}))
        for generation in generate_batch(backend, request["messages"], sampling, int(request.get("n", 1)),
                                         cancel=cancel, on_token=on_token):
            _send(out, {"id": rid, "generation": asdict(generation)})
            sent += 1
    except Exception as exc:  # a Python-level failure is an answer; only a native crash ends us
        return {"id": rid, "error": f"{type(exc).__name__}: {exc}"}
    return {"id": rid, "done": sent}


def _logprobs(backend, request: dict) -> dict:
    """The reply to a "logprobs" request: the backend's completion_logprobs, or why not."""
    rid = request["id"]
    try:
        scorer = getattr(backend, "completion_logprobs", None)
        if scorer is None:
            raise LogprobsUnsupported(f"the {type(backend).__name__} cannot score a given answer")
        return {"id": rid, "logprobs": list(scorer(request["messages"], request["completions"]))}
    except Exception as exc:  # a Python-level failure is an answer; only a native crash ends us
        return {"id": rid, "error": f"{type(exc).__name__}: {exc}", "unsupported": isinstance(exc, LogprobsUnsupported)}


def serve(backend, requests, out) -> None:
    """Answer requests one at a time until the reader thread sees EOF."""
    jobs: queue.Queue = queue.Queue()
    cancels: dict[int, threading.Event] = {}
    threading.Thread(target=_read_requests, args=(requests, jobs, cancels, out), daemon=True).start()
    while True:
        request = jobs.get()
        if request["op"] == "logprobs":
            _send(out, _logprobs(backend, request))
        else:
            _send(out, _answer(backend, request, cancels[request["id"]], out))
        cancels.pop(request["id"], None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process: load the backend, then answer JSON requests on
    stdin with JSON lines on stdout; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ledex.engine.genworker", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="model setting (see ledex.engine.models)")
    parser.add_argument("--adapter", default="", help="GGUF LoRA adapter on top of the model")
    parser.add_argument("--nice", type=int, default=0, help="lower the worker's CPU priority by this much")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores but one)")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # native code that prints lands on stderr, never inside the protocol
    if args.nice:
        os.nice(args.nice)  # threads llama.cpp starts later inherit it
    try:
        backend = load_backend(args.model or None, args.adapter or None,
                               **({"n_threads": args.threads} if args.threads else {}))
    except Exception as exc:
        _send(out, {"error": str(exc)})
        return 1
    _send(out, {"ready": backend.identity.to_dict()})
    serve(backend, sys.stdin, out)
    return 0


# --- parent side ----------------------------------------------------------------------------

class _Always:
    def is_set(self) -> bool:
        """Always True."""
        return True


_SET = _Always()


@dataclass
class _Await:
    """Where the parent is in one request's replies."""

    rid: int
    cancel: object
    on_token: Callable[[], None] | None
    heard: float = field(default_factory=time.monotonic)
    cancelled_at: float | None = None
    tokens: int = 0
    over: bool = False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class WorkerBackend:
    """A Backend whose model lives in a child process; thread-safe, one request at a time.

    The model is loaded when the backend is made (a bad setting fails there, with the
    worker's message). If the worker dies, the request it was on raises ModelError and the
    next request starts a new worker."""

    def __init__(self, model: str = "", adapter: str | None = None, *, nice: int = 0, threads: int = 0,
                 load_timeout_s: float = LOAD_TIMEOUT_S, stall_timeout_s: float = STALL_TIMEOUT_S,
                 cancel_grace_s: float = CANCEL_GRACE_S, on_start: Callable[[WorkerBackend], None] | None = None):
        self.model, self.adapter, self.nice, self.threads = model, adapter or "", nice, threads
        self.load_timeout_s, self.stall_timeout_s, self.cancel_grace_s = load_timeout_s, stall_timeout_s, cancel_grace_s
        self.on_start = on_start  # called after every (re)start, e.g. to log the new process id
        self.identity: ModelIdentity | None = None
        self.starts = 0  # worker processes started so far (1 + restarts)
        self.crashes_in_a_row = 0  # requests the worker died on since its last answer (see ModelHost)
        self._proc: subprocess.Popen | None = None
        self._messages: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        self._next_id = 0
        with self._lock:
            self._start()

    @property
    def pid(self) -> int | None:
        """Process id of the worker while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # process lifetime (callers hold self._lock)

    def _start(self) -> None:
        command = [sys.executable, "-m", "ledex.engine.genworker", "--model", self.model,
                   "--adapter", self.adapter, "--nice", str(self.nice), "--threads", str(self.threads)]
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, encoding="utf-8", errors="replace", bufsize=1)
        except OSError as exc:
            raise ModelError(f"cannot start the model process ({sys.executable}): {exc}") from exc
        self._proc, self._messages, self.starts = proc, queue.Queue(), self.starts + 1
        self._stderr.clear()
        threading.Thread(target=self._pump, args=(proc.stdout, self._messages), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(proc.stderr,), daemon=True).start()
        first = self._receive(self.load_timeout_s, "loading the model")
        if "error" in first:
            self._stop()
            raise ModelError(first["error"])
        self.identity = ModelIdentity(**{k: v for k, v in first["ready"].items() if k != "id"})
        if self.on_start:
            self.on_start(self)

    @staticmethod
    def _pump(stream, messages: queue.Queue) -> None:
        for line in stream:
            try:
                messages.put(json.loads(line))
            except ValueError:
                continue  # not ours (cannot happen with the fd split, but never trust a pipe)
        messages.put(None)  # EOF: the worker is gone

    def _pump_stderr(self, stream) -> None:
        for line in stream:
            self._stderr.append(line.rstrip())

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the worker's cue to exit
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def _reap(self) -> int | None:
        """Forget the current worker; its exit code (None if it would not exit)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None

    def _died(self, doing: str, *, kill: bool = False) -> ModelError:
        """The worker died (or, with kill, is put down) while `doing` a request: the error for it."""
        if kill and self._proc is not None:
            self._proc.kill()
        self.crashes_in_a_row += 1
        code = self._reap()
        time.sleep(0.05)  # let the stderr pump take the last lines
        tail = "\n".join(list(self._stderr)[-5:])
        return ModelError(f"the model process {_describe_exit(code)} while {doing}; ledex starts a new one for "
                          f"the next request" + (f". Its last output:\n{tail}" if tail else ""))

    def _receive(self, timeout: float, doing: str) -> dict:
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise self._died(doing, kill=True) from None
        if message is None:
            raise self._died(doing)
        return message

    def _send_request(self, message: dict, doing: str) -> None:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            raise self._died(doing) from None

    # the Backend interface

    def generate(self, messages, sampling: Sampling, *, cancel=None, on_token=None) -> Generation:
        """One answer: generate_batch with n=1."""
        return only_answer(self.generate_batch(messages, sampling, 1, cancel=cancel, on_token=on_token), sampling)

    def generate_batch(self, messages, sampling: Sampling, n: int, *, cancel=None,
                       on_token=None) -> Iterator[Generation]:
        """n answers decoded together in the worker, yielded as each finishes. Closing the
        iterator early cancels the rest (and waits for the worker to say it stopped)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._reap()  # it died between requests (OOM killer, a user's kill): no request lost, start anew
            if self._proc is None:
                self._start()
            self._next_id += 1
            rid = self._next_id
            self._send_request({"op": "generate", "id": rid, "messages": messages, "sampling": asdict(sampling),
                                "n": n}, "generating")
            state = _Await(rid, cancel, on_token)
            try:
                while (message := self._await(state)) is not None:
                    yield message
            finally:
                if not state.over and self._proc is not None:  # the caller stopped early: cancel the rest
                    state.cancel = _SET
                    while not state.over and self._await(state) is not None:
                        pass

    def completion_logprobs(self, messages, completions) -> list[float | None]:  # noqa: ANN001
        """The worker backend's completion_logprobs (see backends.LlamaCppBackend): per completion,
        its summed token log-probability (nats) as the answer to `messages`, None where it does
        not fit. Raises LogprobsUnsupported when the worker's backend cannot score, ModelError
        when the worker fails or dies."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._reap()
            if self._proc is None:
                self._start()
            self._next_id += 1
            rid = self._next_id
            self._send_request({"op": "logprobs", "id": rid, "messages": messages, "completions": list(completions)},
                               "scoring")
            while (message := self._receive(self.stall_timeout_s, "scoring")).get("id") != rid:
                continue  # a late line of an earlier request
            if "error" in message:
                raise (LogprobsUnsupported if message.get("unsupported") else ModelError)(message["error"])
            self.crashes_in_a_row = 0
            return message["logprobs"]

    def _await(self, state: _Await) -> Generation | None:
        """The request's next answer, or None when the worker said it is done."""
        while True:
            try:
                message = self._messages.get(timeout=0.05)
            except queue.Empty:
                now = time.monotonic()
                if state.cancel is not None and state.cancel.is_set() and state.cancelled_at is None:
                    state.cancelled_at = now
                    self._send_request({"op": "cancel", "id": state.rid}, "generating")
                if state.cancelled_at is not None and now - state.cancelled_at > self.cancel_grace_s:
                    self._stop()  # stuck in native code: a new worker is cheaper than waiting
                    state.over = True
                    return None
                if now - state.heard > self.stall_timeout_s:
                    state.over = True
                    raise self._died(f"generating (no word for {self.stall_timeout_s:.0f} s)", kill=True)
                continue
            if message is None:
                state.over = True
                raise self._died("generating")
            state.heard = time.monotonic()
            if message.get("id") != state.rid:
                continue
            if "tokens" in message:
                for _ in range(message["tokens"] - state.tokens if state.on_token else 0):
                    state.on_token()
                state.tokens = max(state.tokens, message["tokens"])
            elif "error" in message:
                state.over = True
                raise ModelError(message["error"])
            elif "done" in message:
                state.over = True
                self.crashes_in_a_row = 0
                return None
            else:
                self.crashes_in_a_row = 0
                return Generation(**message["generation"])

    def close(self) -> None:
        """Stop the worker (waits for a running generation to return first)."""
        with self._lock:
            self._stop()

    def terminate(self) -> None:
        """Stop the worker now, even mid-generation (that request raises ModelError)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)  # SIGKILL is not refused: this returns at once


if __name__ == "__main__":
    sys.exit(main())
