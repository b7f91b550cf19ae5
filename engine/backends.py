"""Model backends: llama.cpp (local GGUF, optional GGUF LoRA), OpenAI-compatible endpoints,
and a replay backend that serves recorded answers (for testing engine logic only).

All backends take the LEDEX conversation from `ledex.engine.format` and return raw answers;
the llama.cpp backend renders the conversation with the GGUF's own chat template through
`format.render_chat`, the same function training uses.

Try it:  python -m ledex.engine.backends "Write add(a, b)."
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from ledex.engine.format import render_chat
from ledex.engine.models import ModelError, ModelIdentity, ModelSpec, identify, parse_model_spec

# Context for the default 135M model: prompts (function + test + clipped traceback) fit in
# ~1.5k tokens, answers in ~512; larger windows only cost memory.
DEFAULT_N_CTX = 4096


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def truncated(self) -> bool:
        return self.finish_reason != "stop"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8  # LEDEX samples refinements at 0.8
    top_p: float = 0.95
    max_tokens: int = 512  # a refined function plus a short explanation fits comfortably
    seed: int = 0


class PromptTooLong(ModelError):
    """The prompt does not fit in the model's context window; nothing was generated.
    `prompt_tokens` and `context_tokens` are token counts (the model's own tokenizer)."""

    def __init__(self, message: str, prompt_tokens: int = 0, context_tokens: int = 0):
        super().__init__(message)
        self.prompt_tokens, self.context_tokens = prompt_tokens, context_tokens


def check_fits(backend: "Backend", messages: list[dict[str, str]], suspect: str) -> None:
    """Raise PromptTooLong ("the suspect is N tokens, the model's context is M") when the
    rendered conversation leaves no room for an answer. Backends that cannot count tokens
    (endpoints, replay) are not checked here; their server answers for itself."""
    count, context = getattr(backend, "count_tokens", None), getattr(backend, "context_tokens", 0)
    if count is None or not context:
        return
    prompt = count(backend.render(messages))
    if prompt < context:
        return
    raise PromptTooLong(f"the suspect is {count(suspect)} tokens (the whole prompt {prompt}), "
                        f"the model's context is {context}", prompt, context)


class CancelFlag(Protocol):
    """What a generation polls to stop early: a threading.Event, or fixer.AnyEvent."""

    def is_set(self) -> bool: ...


class Backend(Protocol):
    identity: ModelIdentity

    def generate(self, messages: list[dict[str, str]], sampling: Sampling, *,
                 cancel: CancelFlag | None = None,
                 on_token: Callable[[], None] | None = None) -> Generation: ...


def default_threads() -> int:
    """All cores but one: verification (a sandboxed pytest) runs beside generation, and
    llama.cpp's spinning worker threads slow down badly when they have to share a core."""
    return max(1, (os.cpu_count() or 2) - 1)


class LlamaCppBackend:
    """A local GGUF through llama-cpp-python; thread-safe (one generation at a time)."""

    def __init__(self, spec: ModelSpec, *, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
        self.identity = identify(spec)
        self._lock = threading.Lock()
        self.context_tokens = n_ctx
        try:
            self.llm = Llama(model_path=spec.location, lora_path=spec.adapter, n_ctx=n_ctx,
                             n_threads=n_threads or default_threads(), verbose=False)
        except Exception as exc:
            raise ModelError(f"llama.cpp could not load {spec.location}"
                             f"{' with adapter ' + spec.adapter if spec.adapter else ''}: {exc}") from exc
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self.eos_text = self._token_text(self.llm.token_eos())

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_chat(messages, self.chat_template, eos_token=self.eos_text)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def generate(self, messages, sampling, *, cancel=None, on_token=None) -> Generation:
        prompt = self.tokenize(self.render(messages))
        if len(prompt) >= self.context_tokens:  # no room to answer (llama.cpp would fail deep inside)
            raise PromptTooLong(f"the prompt is {len(prompt)} tokens, the model's context is {self.context_tokens}",
                                len(prompt), self.context_tokens)
        with self._lock:
            return self._stream(prompt, sampling, cancel, on_token)

    def _stream(self, prompt: list[int], sampling: Sampling, cancel, on_token) -> Generation:
        started, pieces, finish = time.perf_counter(), [], "length"
        # Evaluate the prompt from scratch: reusing the previous call's KV cache changes the
        # logits in the last bits, so the same seed would not give the same answer twice.
        self.llm.reset()
        stream = self.llm.create_completion(prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                            top_p=sampling.top_p, seed=sampling.seed, stream=True)
        for chunk in stream:
            choice = chunk["choices"][0]
            pieces.append(choice["text"])
            if on_token:
                on_token()
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
        stream.close()
        text = "".join(pieces)
        return Generation(text, finish, len(prompt), len(pieces), time.perf_counter() - started)


# Fallback when a GGUF carries no template (ChatML, what SmolLM2 and many small models use).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class EndpointBackend:
    """An OpenAI-compatible /v1/chat/completions server (llama-server, vLLM, Ollama)."""

    def __init__(self, spec: ModelSpec, *, timeout_s: float = 300.0):
        self.identity = identify(spec)
        self.url = spec.location + "/chat/completions"
        self.model = spec.endpoint_model or "default"
        self.timeout_s = timeout_s

    def generate(self, messages, sampling, *, cancel=None, on_token=None) -> Generation:
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "seed": sampling.seed}
        started = time.perf_counter()
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"{self.url} answered something that is not a chat completion: {str(reply)[:200]}") from exc
        return Generation(text, choice.get("finish_reason") or "stop", usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0), time.perf_counter() - started)

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if os.environ.get("LEDEX_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['LEDEX_API_KEY']}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise ModelError(f"model endpoint {self.url} failed: {exc}") from exc


class ReplayBackend:
    """Serves recorded answers in order (cycling). For tests of engine logic, never for users."""

    def __init__(self, answers: Sequence[str], name: str = "replay"):
        if not answers:
            raise ValueError("ReplayBackend needs at least one answer")
        self.answers = list(answers)
        self.identity = ModelIdentity(base=name, base_hash="0" * 64)
        self.prompts: list[list[dict[str, str]]] = []
        self._lock = threading.Lock()

    def generate(self, messages, sampling, *, cancel=None, on_token=None) -> Generation:
        with self._lock:
            text = self.answers[len(self.prompts) % len(self.answers)]
            self.prompts.append(messages)
        return Generation(text, "stop")


REPLAY_PREFIX = "replay:"


def load_replay(path: str) -> ReplayBackend:
    """`replay:<file.json>`: a JSON list of recorded answers, served in order."""
    try:
        answers = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the replay file {path}: {exc}") from exc
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ModelError(f"{path} must hold a non-empty JSON list of answer strings")
    return ReplayBackend(answers, name="replay")


def load_backend(model: str | None = None, adapter: str | None = None, **kwargs) -> Backend:
    """The backend for a model setting (see ledex.engine.models for the accepted forms;
    `replay:<file.json>` serves recorded answers, for tests of the logic around a model)."""
    if model and model.startswith(REPLAY_PREFIX):
        return load_replay(model[len(REPLAY_PREFIX):])
    spec = parse_model_spec(model, adapter)
    if spec.kind == "endpoint":
        return EndpointBackend(spec)
    return LlamaCppBackend(spec, **kwargs)


def generate_many(backend: Backend, messages: list[dict[str, str]], sampling: Sampling, n: int,
                  **kwargs) -> Iterable[Generation]:
    """n samples with distinct seeds (seed, seed+1, ...), yielded as they finish."""
    for i in range(n):
        yield backend.generate(messages, Sampling(sampling.temperature, sampling.top_p,
                                                  sampling.max_tokens, sampling.seed + i), **kwargs)


if __name__ == "__main__":
    import sys

    from ledex.engine.format import Problem, build_messages

    backend = load_backend()
    problem = Problem(sys.argv[1] if len(sys.argv) > 1 else "Write add(a, b) returning their sum.",
                      "def add(a, b):\n    return a - b", "assert add(1, 2) == 3\nAssertionError")
    print(backend.identity.id)
    print(backend.generate(build_messages(problem), Sampling()).text)
