"""Model backends: llama.cpp (local GGUF, optional GGUF LoRA), OpenAI-compatible endpoints,
and a replay backend that serves recorded answers (for testing engine logic only).

All backends take the LEDEX conversation from `ledex.engine.format` and return raw answers;
the llama.cpp backend renders the conversation with the GGUF's own chat template through
`format.render_chat`, the same function training uses.

K answers to one prompt: `generate_batch(backend, messages, sampling, n)` yields them as they
finish. The llama.cpp backend evaluates the prompt once and decodes the K sequences together
in one llama.cpp batch (the prompt's KV cells are shared through sequence ids); each sequence
has its own sampler chain (grammar, top-k/top-p/min-p, temperature, seed = sampling.seed + i),
so answer i is the same whatever K is. A `Sampling.grammar` (GBNF, see
`grammar.answer_grammar`) constrains every answer to the LEDEX shape.

Endpoints and grammars: the grammar is sent in the field the server reads (`grammar_field`):
llama-server reads `grammar` (the default); vLLM reads `guided_grammar` (before 0.11) or
`structured_outputs: {"grammar": ...}` (0.11 on); Ollama and hosted OpenAI take no GBNF
grammar (they ignore the field). Every request also carries the stop sequence
`format.ANSWER_STOP`, so a server that ignores the grammar still stops at the closing fence,
and `parse_response` checks every answer either way. K answers are one request with `n=K`
(vLLM, llama-server); a server that returns fewer choices is asked again for the rest.

Try it:  python -m ledex.engine.backends "Write add(a, b)."
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

from ledex.engine.format import ANSWER_STOP, render_chat
from ledex.engine.models import (ModelError, ModelIdentity, ModelKind, ModelSpec, identify, model_kind, parse_model_spec,
                                 replay_file, served_default_path)

# Context for the default 135M model, shared by the K sequences of a batch: prompts (function
# + test + clipped traceback) fit in ~1.5k tokens, answers in ~512 (K=8 x 512 + 1.5k < 6k).
# The KV cache costs ~23 KB per token for the 135M model (190 MB at 8192).
DEFAULT_N_CTX = 8192
MAX_PARALLEL = 8  # sequences decoded together; more K than this (or than n_ctx fits) waits for a free slot


def parallel_from_env() -> int:
    """Answers decoded together: $LEDEX_PARALLEL if set (1 = one after another, the order before
    batching, as a reference in bench/bench_lsp.py; the same seeds give the same answers), else
    MAX_PARALLEL. ValueError for a value that is not a positive integer."""
    value = os.environ.get("LEDEX_PARALLEL", "").strip()
    if not value:
        return MAX_PARALLEL
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LEDEX_PARALLEL must be a positive integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Generation:
    """One answer from a backend: its text, why it ended ("stop" | "length" | "cancelled"),
    token counts, seconds from the request, and the sampling seed."""
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # from the request to this answer (in a batch: to when this one finished)
    seed: int = 0  # the sampling seed that produced it (answers of a batch arrive out of order)
    rewinds: int = 0  # times it was sent back for repeating Sampling.wrong_code (llamabatch)

    @property
    def truncated(self) -> bool:
        """True unless the answer ended by itself (finish_reason "stop")."""
        return self.finish_reason != "stop"


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for one request; max_tokens counts answer tokens, grammar is GBNF."""
    temperature: float = 0.8  # LEDEX samples refinements at 0.8
    top_p: float = 0.95
    max_tokens: int = 512  # a refined function plus a short explanation fits comfortably
    seed: int = 0
    grammar: str = ""  # GBNF the answer must match (grammar.answer_grammar); "" = unconstrained
    # The code the prompt shows as wrong: with a grammar, llama.cpp answers that would repeat it
    # are steered away (llamabatch, "Answers that repeat the wrong code"); endpoints ignore it.
    wrong_code: str = ""


class PromptTooLong(ModelError):
    """The prompt does not fit in the model's context window; nothing was generated.
    `prompt_tokens` and `context_tokens` are token counts (the model's own tokenizer)."""

    def __init__(self, message: str, prompt_tokens: int = 0, context_tokens: int = 0):
        super().__init__(message)
        self.prompt_tokens, self.context_tokens = prompt_tokens, context_tokens


class LogprobsUnsupported(ModelError):
    """The backend cannot give the log-probability of a given answer (`completion_logprobs`):
    callers rank without it (engine/ranking.py)."""


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
    """What the engine needs of a model. A backend may also offer
    `generate_batch(messages, sampling, n, *, cancel, on_token) -> Iterator[Generation]`
    (n answers with seeds sampling.seed + i, yielded as they finish); `generate_batch` below
    falls back to one `generate` after another for backends that do not. A backend may offer
    `completion_logprobs(messages, completions) -> list[float | None]` (the model's
    log-likelihood of given answers, nats); one that cannot raises LogprobsUnsupported."""

    identity: ModelIdentity

    def generate(self, messages: list[dict[str, str]], sampling: Sampling, *,
                 cancel: CancelFlag | None = None,
                 on_token: Callable[[], None] | None = None) -> Generation: ...


def only_answer(answers: Iterator[Generation], sampling: Sampling) -> Generation:
    """The one answer of an n=1 batch (read to its end), or an empty cancelled one."""
    return next(iter(list(answers)), Generation("", "cancelled", seed=sampling.seed))


def default_threads() -> int:
    """All cores but one: verification (a sandboxed pytest) runs beside generation, and
    llama.cpp's spinning worker threads slow down badly when they have to share a core."""
    return max(1, (os.cpu_count() or 2) - 1)


class LlamaCppBackend:
    """A local GGUF through llama-cpp-python; thread-safe (one generation or batch at a time).

    Generation uses llama.cpp's low-level batch API on a context with n_parallel + 2
    sequence ids (prompt, answers, padding, finished) and a unified KV cache (sequence 0 holds the prompt, the others share its
    cells through `llama_memory_seq_cp`). `prompt_evals` counts prompt evaluations
    (`prompt_tokens` their tokens, `prompt_seconds` their time)."""

    def __init__(self, spec: ModelSpec, *, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None,
                 n_parallel: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
        self.identity = identify(spec)
        self._lock = threading.Lock()
        self.context_tokens = n_ctx
        try:
            # Flash attention visits a sequence's KV cells in order and skips the others, so a
            # sequence's logits do not depend on what else shares the unified cache (llamabatch).
            self.llm = Llama(model_path=spec.location, lora_path=spec.adapter, n_ctx=n_ctx, flash_attn=True,
                             n_threads=n_threads or default_threads(), verbose=False)
            self.n_parallel = max(1, n_parallel or parallel_from_env())
            self.pad_seq = self.n_parallel + 1  # llamabatch pads a one-row batch with this sequence
            self.grave_seq = self.n_parallel + 2  # and keeps finished answers' KV cells here
            self._use_multi_sequence_context(self.n_parallel + 3)
        except Exception as exc:
            raise ModelError(f"llama.cpp could not load {spec.location}"
                             f"{' with adapter ' + spec.adapter if spec.adapter else ''}: {exc}") from exc
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self.eos_text = self._token_text(self.llm.token_eos())
        self.prompt_evals, self.prompt_tokens, self.prompt_seconds = 0, 0, 0.0  # prompt evaluations so far
        self._grammars: dict = {}  # parsed grammar per GBNF text, cloned per sequence

    def _use_multi_sequence_context(self, n_seq: int) -> None:
        """Replace the Llama object's one-sequence context by one with n_seq sequence ids
        (same size and threads; the LoRA adapter applied again). Llama's own API keeps working."""
        from llama_cpp import _internals, llama_cpp as C

        params = C.llama_context_params.from_buffer_copy(self.llm.context_params)
        params.n_seq_max, params.kv_unified = n_seq, True
        # A batch of K tokens runs on n_threads_batch, which llama-cpp-python sets to every core:
        # spinning threads on a core that verification (or anyone) also uses slow down ~30x.
        params.n_threads_batch = params.n_threads
        ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        adapter = getattr(self.llm, "_lora_adapter", None)
        if adapter is not None:
            adapters = (C.llama_adapter_lora_p_ctypes * 1)(adapter)
            if C.llama_set_adapters_lora(ctx.ctx, adapters, 1, (ctypes.c_float * 1)(self.llm.lora_scale)):
                ctx.close()
                raise ModelError("llama.cpp could not apply the adapter to the batch context")
        old, self.llm._ctx = self.llm._ctx, ctx
        old.close()
        self.llm._stack.callback(ctx.close)
        self._batch = _internals.LlamaBatch(n_tokens=max(self.llm.n_batch, n_seq), embd=0, n_seq_max=1, verbose=False)

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: list[dict[str, str]]) -> str:
        """The chat messages as one prompt string in the model's chat template."""
        return render_chat(messages, self.chat_template, eos_token=self.eos_text)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` with BOS, special tokens parsed."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` takes in the prompt (tokenize's length)."""
        return len(self.tokenize(text))

    def completion_logprobs(self, messages: list[dict[str, str]], completions: Sequence[str]) -> list[float | None]:
        """Per completion, the sum of its tokens' log-probabilities (nats, <= 0) as the assistant's
        answer to `messages`, teacher-forced with the prompt evaluated once (engine/llamascore.py);
        None for one that does not fit the context. Raises PromptTooLong when the prompt does not."""
        from ledex.engine.llamascore import completion_logprobs

        with self._lock:
            return completion_logprobs(self, messages, completions)

    def generate(self, messages, sampling, *, cancel=None, on_token=None) -> Generation:
        """One answer: generate_batch with n=1."""
        return only_answer(self.generate_batch(messages, sampling, 1, cancel=cancel, on_token=on_token), sampling)

    def generate_batch(self, messages, sampling: Sampling, n: int, *, cancel=None,
                       on_token=None) -> Iterator[Generation]:
        """n answers (seeds sampling.seed + i) decoded together, yielded as each finishes;
        on cancel the unfinished ones are yielded with finish_reason "cancelled"."""
        prompt = self.tokenize(self.render(messages))
        if len(prompt) >= self.context_tokens:  # no room to answer (llama.cpp would fail deep inside)
            raise PromptTooLong(f"the prompt is {len(prompt)} tokens, the model's context is {self.context_tokens}",
                                len(prompt), self.context_tokens)
        from ledex.engine.llamabatch import BatchRun

        with self._lock:
            yield from BatchRun(self, prompt, sampling, n, cancel, on_token).run()

    def grammar_sampler(self, grammar: str):
        """A fresh llama.cpp grammar sampler for this GBNF text (parsed once, then cloned)."""
        from llama_cpp import llama_cpp as C

        from ledex.engine.llamabatch import Owned

        if grammar not in self._grammars:
            sampler = C.llama_sampler_init_grammar(self.llm._model.vocab, grammar.encode(), b"root")
            if not sampler:
                raise ModelError(f"llama.cpp cannot parse the answer grammar: {grammar[:200]!r}")
            self._grammars[grammar] = Owned(sampler)
        return C.llama_sampler_clone(self._grammars[grammar].pointer)


# Fallback when a GGUF carries no template (ChatML, what SmolLM2 and many small models use).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


GRAMMAR_FIELDS = ("grammar", "guided_grammar", "structured_outputs", "none")


class EndpointBackend:
    """An OpenAI-compatible /v1/chat/completions server (llama-server, vLLM, Ollama).

    `grammar_field` (or LEDEX_ENDPOINT_GRAMMAR_FIELD): where a Sampling.grammar goes in the
    request, one of GRAMMAR_FIELDS (see the module docstring for which server reads which)."""

    def __init__(self, spec: ModelSpec, *, timeout_s: float = 300.0, grammar_field: str | None = None):
        self.identity = identify(spec)
        self.url = spec.location + "/chat/completions"
        self.model = spec.endpoint_model or "default"
        self.timeout_s = timeout_s
        self.grammar_field = grammar_field or os.environ.get("LEDEX_ENDPOINT_GRAMMAR_FIELD") or "grammar"
        if self.grammar_field not in GRAMMAR_FIELDS:
            raise ModelError(f"unknown grammar field {self.grammar_field!r}; expected one of {', '.join(GRAMMAR_FIELDS)}")
        self.takes_n = True  # until a server refuses n > 1

    def completion_logprobs(self, messages, completions) -> list[float | None]:  # noqa: ANN001
        """Always raises LogprobsUnsupported: the chat completions API returns log-probabilities
        of the tokens the server generates (`logprobs: true`), never of an answer given to it."""
        raise LogprobsUnsupported(f"{self.url} cannot score a given answer: the chat completions API returns "
                                  "log-probabilities of generated tokens only")

    def generate(self, messages, sampling, *, cancel=None, on_token=None) -> Generation:
        """One answer from the endpoint: generate_batch with n=1 (on_token is not called)."""
        return only_answer(self.generate_batch(messages, sampling, 1, cancel=cancel), sampling)

    def generate_batch(self, messages, sampling: Sampling, n: int, *, cancel=None,
                       on_token=None) -> Iterator[Generation]:
        """n answers in as few requests as the server allows (n=K, then the rest one by one)."""
        done = 0
        while done < n:
            if cancel is not None and cancel.is_set():
                return
            ask = n - done if self.takes_n else 1
            seeded = dataclasses.replace(sampling, seed=sampling.seed + done)
            try:
                answers = self._request(messages, seeded, ask)
            except ModelError:
                if ask == 1:
                    raise
                self.takes_n = False  # e.g. "only one completion choice is allowed": ask one by one
                continue
            for answer in answers[:n - done]:
                yield answer
                done += 1

    def body(self, messages, sampling: Sampling, n: int = 1) -> dict:
        """The request: sampling, n, the stop sequence, and the grammar in `grammar_field`."""
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "seed": sampling.seed}
        if n > 1:
            body["n"] = n
        if sampling.grammar:
            body["stop"] = [ANSWER_STOP]
            if self.grammar_field == "structured_outputs":
                body["structured_outputs"] = {"grammar": sampling.grammar}
            elif self.grammar_field != "none":
                body[self.grammar_field] = sampling.grammar
        return body

    def _request(self, messages, sampling: Sampling, n: int) -> list[Generation]:
        started = time.perf_counter()
        reply = self._post(self.body(messages, sampling, n))
        try:
            choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
            usage = reply.get("usage") or {}
            texts = [(c["message"]["content"] or "", c.get("finish_reason") or "stop") for c in choices]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelError(f"{self.url} answered something that is not a chat completion: {str(reply)[:200]}") from exc
        if not texts:
            raise ModelError(f"{self.url} answered with no choices")
        seconds = time.perf_counter() - started
        tokens = usage.get("completion_tokens", 0) // len(texts)
        return [Generation(_closed(text, finish, bool(sampling.grammar)), finish, usage.get("prompt_tokens", 0),
                           tokens, seconds, sampling.seed + i) for i, (text, finish) in enumerate(texts)]

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


def _closed(text: str, finish: str, asked_to_stop: bool) -> str:
    """A server that stopped at ANSWER_STOP leaves the stop text out: put the closing fence back."""
    if asked_to_stop and finish == "stop" and text.count("```") % 2 == 1:
        return text.rstrip("\n") + "\n```"
    return text


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
        """The next canned answer, cycling through `answers`; the messages are recorded in `prompts`."""
        with self._lock:
            text = self.answers[len(self.prompts) % len(self.answers)]
            self.prompts.append(messages)
        return Generation(text, "stop")


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
    `replay:<file.json>` serves recorded answers, for tests of the logic around a model).
    The default is served from `models.served_default_path()` (LEDEX_DEFAULT_WEIGHTS)."""
    kind = model_kind(model)
    if kind is ModelKind.REPLAY:
        return load_replay(replay_file(model))
    spec = parse_model_spec(model, adapter)
    if spec.kind == "endpoint":
        return EndpointBackend(spec)
    if kind is ModelKind.DEFAULT:
        spec = dataclasses.replace(spec, location=str(served_default_path()))
    return LlamaCppBackend(spec, **kwargs)


def generate_batch(backend: Backend, messages: list[dict[str, str]], sampling: Sampling, n: int, *,
                   cancel: CancelFlag | None = None, on_token: Callable[[], None] | None = None) -> Iterator[Generation]:
    """n answers with seeds sampling.seed + i, yielded as they finish: the backend's own
    batch when it has one, else one `generate` after another (stopping at a cancelled one)."""
    batch = getattr(backend, "generate_batch", None)
    if batch is not None:
        yield from batch(messages, sampling, n, cancel=cancel, on_token=on_token)
        return
    for i in range(n):
        if cancel is not None and cancel.is_set():
            return
        generation = backend.generate(messages, dataclasses.replace(sampling, seed=sampling.seed + i),
                                      cancel=cancel, on_token=on_token)
        yield generation
        if generation.finish_reason == "cancelled":
            return


if __name__ == "__main__":
    import sys

    from ledex.engine.format import Problem, build_messages

    backend = load_backend()
    problem = Problem(sys.argv[1] if len(sys.argv) > 1 else "Write add(a, b) returning their sum.",
                      "def add(a, b):\n    return a - b", "assert add(1, 2) == 3\nAssertionError")
    print(backend.identity.id)
    print(backend.generate(build_messages(problem), Sampling()).text)
