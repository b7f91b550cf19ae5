"""Teacher-forced log-likelihood of given answers on the llama.cpp backend: what
`LlamaCppBackend.completion_logprobs` runs (ranking.score_codes uses it to rank verified fixes).

For a conversation and N candidate answers, the prompt (the chat rendered with the model's own
template, backends.LlamaCppBackend.render, generation prompt included) is evaluated once into
sequence 0 of the backend's batch context; each answer is then decoded in sequence 1, which
shares the prompt's KV cells (`llama_memory_seq_cp`, the layout of engine/llamabatch.py), and
the log-softmax of the logits before each of its tokens is summed:

    logprob(answer) = sum_i log p(token_i | prompt, token_<i)     (nats, <= 0)

The answer is tokenized without BOS and without parsing special tokens (it is text the model
would write). An answer that does not fit the context scores None.

Try it:  python -m ledex.engine.llamascore   (the embedded model scores a likely and a garbled answer)
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def completion_logprobs(backend: Any, messages: list[dict[str, str]], completions: Sequence[str]) -> list[float | None]:
    """Per completion, the summed token log-probability (nats) as the answer to `messages`; None
    where prompt + answer do not fit the context. `backend` is a LlamaCppBackend whose lock the
    caller holds. Raises backends.PromptTooLong when the prompt alone does not fit, ModelError
    when llama.cpp refuses a batch."""
    if not completions:
        return []
    return _Scorer(backend, messages).score(completions)


class _Scorer:
    """One prompt evaluated into sequence 0, then each answer teacher-forced in sequence 1."""

    def __init__(self, backend: Any, messages: list[dict[str, str]]):
        from llama_cpp import llama_cpp as C

        from ledex.engine.backends import PromptTooLong

        self.b, self.C = backend, C
        self.ctx = backend.llm._ctx.ctx
        self.memory = C.llama_get_memory(self.ctx)
        self.prompt = backend.tokenize(backend.render(messages))
        self.n_ctx = C.llama_n_ctx(self.ctx)
        if len(self.prompt) >= self.n_ctx:
            raise PromptTooLong(f"the prompt is {len(self.prompt)} tokens, the model's context is {self.n_ctx}",
                                len(self.prompt), self.n_ctx)

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        from ledex.engine.llamabatch import _fill, decode

        _fill(self.b._batch.batch, rows)
        decode(self.ctx, self.b._batch.batch)

    def score(self, completions: Sequence[str]) -> list[float | None]:
        """The prompt once, then every completion (module docstring)."""
        self.b.llm.reset()  # the Llama object must not think its tokens are still in the cache
        self.C.llama_memory_clear(self.memory, True)
        from ledex.engine.llamabatch import decode_prompt

        decode_prompt(self.ctx, self.b._batch.batch, self.prompt, self.b.llm.n_batch)
        last = self._log_softmax(-1)
        try:
            return [self._answer(text, last) for text in completions]
        finally:
            self.C.llama_memory_clear(self.memory, True)

    def _log_softmax(self, index: int):
        import numpy as np

        n_vocab = self.b.llm.n_vocab()
        logits = np.ctypeslib.as_array(self.C.llama_get_logits_ith(self.ctx, index), shape=(n_vocab,)).astype(np.float64)
        top = logits.max()
        return logits - (top + math.log(np.exp(logits - top).sum()))

    def _answer(self, text: str, first) -> float | None:
        tokens = self.b.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        base = len(self.prompt)
        if not tokens or base + len(tokens) >= self.n_ctx:
            return None
        total = float(first[tokens[0]])
        self.C.llama_memory_seq_cp(self.memory, 0, 1, -1, -1)
        size = self.b.llm.n_batch
        for start in range(0, len(tokens) - 1, size):  # the last token's logits predict nothing we score
            chunk = tokens[start:start + size]
            self._decode([(t, base + start + i, 1, True) for i, t in enumerate(chunk)])
            for i in range(len(chunk)):
                if start + i + 1 < len(tokens):
                    total += float(self._log_softmax(i)[tokens[start + i + 1]])
        self.C.llama_memory_seq_rm(self.memory, 1, -1, -1)
        return total


if __name__ == "__main__":
    from ledex.engine.backends import load_backend

    model = load_backend()
    chat = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}]
    likely = "```python\ndef add(a, b):\n    return a + b\n```"
    garbled = "```python\ndef add(a, b):\n    b a + return\n```"
    for answer, logprob in zip((likely, garbled), model.completion_logprobs(chat, [likely, garbled])):
        print(f"{logprob:9.2f} nats  {answer!r}")
