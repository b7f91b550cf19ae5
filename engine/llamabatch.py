"""K answers to one prompt in one llama.cpp batch (the machinery behind
`LlamaCppBackend.generate_batch`).

The prompt is decoded once into sequence 0 of a context with a unified KV cache; each answer
is a sequence (slot 1..width) that starts as a copy of sequence 0 (`llama_memory_seq_cp`
shares the prompt's cells, nothing is recomputed) and samples its first token from the
prompt's saved logits. Every step decodes the last token of every active sequence in one
`llama_decode`; each sequence samples with its own chain (top-k 40, top-p, min-p 0.05,
temperature, dist(seed)) and, with a grammar, its own llama.cpp grammar sampler. A sequence
that ends (end of generation, closed answer block under a grammar, max_tokens) is yielded at
once and its slot freed (its KV cells parked in a GRAVE sequence, see BatchRun._retire); a
waiting answer takes the slot. Cancel ends all of them.

Budget-aware closing, with a grammar: prose still going at a third of the token budget is ended
and the code block opened with forced tokens (decoded with the next step, several rows of one
sequence in the batch); code still open when the budget runs out is closed by
`format.close_answer` (its last line that parses, else its open string and brackets closed),
so an answer reaches the parser whole instead of "cut off". The budget is max_tokens or what
the context has left after the prompt, whichever is smaller.

Answers that repeat the wrong code (Sampling.wrong_code, with a grammar): the small model's
main unusable answer is the wrong function written back unchanged ("the same code as before").
When an answer closes its block with code equal to the wrong code once parsed
(`format.repeats_code`), it is rewound to the least sure token it wrote in the function's body
(lowest model probability; not whitespace, not a comment, not the docstring) and must choose
another there: the token it chose, and every token that would spell the same text, are refused
at that position. Its later KV cells go to the grave, the grammar is replayed to that point.
At most MAX_REWINDS per answer; an answer that still repeats the code after that is kept.

Strings that run away (with Sampling.wrong_code and a grammar): a small model copying the
docstring often goes on writing prose inside it until the budget runs out (4 of 11 unusable
explain answers on HumanEvalFix/0-28). A triple-quoted string still open at a line start after
STRING_SLACK x the longest triple-quoted string of the wrong code + STRING_EXTRA characters is
closed with forced tokens (its closing quotes and a newline); the model goes on with code.

Same seed, same answer whatever K: the first token comes from the same saved logits, and a
row's logits depend only on its own sequence as long as the batch has two rows or more. A
one-row batch takes other kernels in ggml's CPU backend (measured: logits differing by up to
0.7 from the same row in a batch of 2-8), so a lone sequence is decoded next to a throwaway
PAD row (sequence id n_parallel + 1, one token at position 0, removed after the step).
tests/test_generation.py checks the equality on the embedded model.

Try it:  python -m ledex.engine.llamabatch 4
"""

from __future__ import annotations

import collections
import ctypes
import time
from typing import TYPE_CHECKING, Iterator

from ledex.engine.format import CODE_FENCE, answer_end, close_answer, open_string, repeats_code
from ledex.engine.models import ModelError
from ledex.engine.sampling_steer import grammar_accepts, least_sure_token, longest_string, probability, vocab_pieces

__all__ = ["BatchRun", "Owned", "decode", "decode_prompt", "grammar_accepts"]

if TYPE_CHECKING:
    from ledex.engine.backends import Generation, LlamaCppBackend, Sampling

MAX_REWINDS = 3  # per answer: how often one that repeats the wrong code is sent back
STRING_SLACK, STRING_EXTRA = 1.25, 200  # a triple-quoted string longer than this is closed (module docstring)


class Owned:
    """A llama_sampler pointer freed with its owner."""

    def __init__(self, pointer):
        self.pointer = pointer

    def __del__(self):
        pointer, self.pointer = self.pointer, None
        if pointer:
            try:
                from llama_cpp import llama_cpp as C

                C.llama_sampler_free(pointer)
            except Exception:  # interpreter shutdown: the process frees it anyway
                pass


class Sequence:
    """One answer being decoded: its slot (sequence id), samplers and text so far."""

    def __init__(self, backend: LlamaCppBackend, slot: int, sampling: Sampling, seed: int, pos: int):
        from llama_cpp import _internals, llama_cpp as C

        self.slot, self.seed, self.pos, self.tokens, self.data = slot, seed, pos, [], b""
        self.feed: list[int] = []  # tokens sampled (or forced) but not yet decoded into the KV cache
        self.pieces: list[bytes] = []  # each token's bytes
        self.probs: list[float | None] = []  # each token's model probability (None: forced)
        self.refused: dict[int, set[int]] = {}  # token index -> tokens refused there (rewinds)
        self.rewinds = 0
        self.grammar = Owned(backend.grammar_sampler(sampling.grammar)) if sampling.grammar else None
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        else:  # llama-cpp-python's create_completion defaults: top-k 40, min-p 0.05
            for sampler in (C.llama_sampler_init_top_k(40), C.llama_sampler_init_top_p(sampling.top_p, 1),
                            C.llama_sampler_init_min_p(0.05, 1), C.llama_sampler_init_temp(sampling.temperature),
                            C.llama_sampler_init_dist(seed & 0xFFFFFFFF)):
                C.llama_sampler_chain_add(chain, sampler)
        self.chain = Owned(chain)
        self.candidates = _internals.LlamaTokenDataArray(n_vocab=backend.llm.n_vocab())
        self._one = (C.llama_token_data * 1)()
        self.one = C.llama_token_data_array(data=ctypes.cast(self._one, C.llama_token_data_p), size=1,
                                            selected=-1, sorted=False)

    def sample(self, logits) -> int:
        """Sample from the chain; if the grammar rejects the token, resample with the grammar
        applied to every token first (what llama.cpp's common sampler does: the full-vocabulary
        grammar pass is paid only when the model wants something the grammar forbids)."""
        from llama_cpp import llama_cpp as C

        refused = self.refused.get(len(self.tokens))
        if refused:
            logits = logits.copy()
            logits[list(refused)] = float("-inf")
        token = self._apply(logits, with_grammar=False)
        if self.grammar is not None and not self._allowed(token, float(logits[token])):
            token = self._apply(logits, with_grammar=True)
        if self.grammar is not None:
            C.llama_sampler_accept(self.grammar.pointer, token)
        C.llama_sampler_accept(self.chain.pointer, token)
        return token

    def append(self, token: int, piece: bytes, prob: float | None) -> None:
        """Record a token to decode with the next step."""
        self.tokens.append(token)
        self.feed.append(token)
        self.pieces.append(piece)
        self.probs.append(prob)
        self.data += piece

    def rewind(self, index: int, refused: set[int], grammar) -> None:
        """Back to just before token `index`, which must differ from `refused` this time: token
        index-1 is decoded again (its KV cell must be gone) to get the logits to choose from."""
        from llama_cpp import llama_cpp as C

        self.refused.setdefault(index, set()).update(refused)
        self.pos -= len(self.tokens) - len(self.feed) - (index - 1)
        del self.tokens[index:], self.pieces[index:], self.probs[index:]
        self.data, self.feed, self.rewinds = b"".join(self.pieces), [self.tokens[-1]], self.rewinds + 1
        self.grammar = Owned(grammar)
        for token in self.tokens:
            C.llama_sampler_accept(self.grammar.pointer, token)

    def force(self, tokens: list[int], pieces: list[bytes]) -> bool:
        """Append tokens the model did not choose (the grammar must allow each in turn); they
        are decoded with the next step. False, and nothing appended, if the grammar refuses one."""
        from llama_cpp import llama_cpp as C

        probe = Owned(C.llama_sampler_clone(self.grammar.pointer))
        for token in tokens:
            if not self._allowed(token, 0.0, probe):
                return False
            C.llama_sampler_accept(probe.pointer, token)
        for token, piece in zip(tokens, pieces):
            C.llama_sampler_accept(self.grammar.pointer, token)
            C.llama_sampler_accept(self.chain.pointer, token)
            self.append(token, piece, None)
        return True

    def _apply(self, logits, *, with_grammar: bool) -> int:
        from llama_cpp import llama_cpp as C

        self.candidates.copy_logits(logits)
        array = ctypes.byref(self.candidates.candidates)
        if with_grammar:
            C.llama_sampler_apply(self.grammar.pointer, array)
        C.llama_sampler_apply(self.chain.pointer, array)
        return int(self.candidates.candidates.data[self.candidates.candidates.selected].id)

    def _allowed(self, token: int, logit: float, grammar: Owned | None = None) -> bool:
        from llama_cpp import llama_cpp as C

        self.one.data[0].id, self.one.data[0].logit, self.one.data[0].p = token, logit, 0.0
        self.one.size, self.one.selected, self.one.sorted = 1, -1, False
        C.llama_sampler_apply((grammar or self.grammar).pointer, ctypes.byref(self.one))
        return self.one.data[0].logit != float("-inf")

    @property
    def text(self) -> str:
        """The answer's bytes so far as text (invalid UTF-8 replaced)."""
        return self.data.decode("utf-8", errors="replace")


class BatchRun:
    """One call of generate_batch: prompt once into sequence 0, then K sequences in slots 1..width."""

    def __init__(self, backend: LlamaCppBackend, prompt: list[int], sampling: Sampling, n: int, cancel, on_token):
        from llama_cpp import llama_cpp as C

        self.b, self.prompt, self.sampling, self.cancel, self.on_token = backend, prompt, sampling, cancel, on_token
        self.ctx, self.vocab = backend.llm._ctx.ctx, backend.llm._model.vocab
        self.memory = C.llama_get_memory(self.ctx)
        n_ctx = C.llama_n_ctx(self.ctx)
        if len(prompt) >= n_ctx:
            raise ModelError(f"the prompt has {len(prompt)} tokens; the model's context holds {n_ctx}")
        per_answer = max(1, min(sampling.max_tokens, n_ctx - len(prompt)))
        self.width = max(1, min(n, backend.n_parallel, (n_ctx - len(prompt)) // per_answer))
        self.max_tokens = per_answer
        # Budget-aware closing (grammar only): prose past this many tokens is ended and the code
        # block opened for the model (so a small budget still reaches code); code still open at
        # max_tokens is closed at its last line that parses (format.close_answer).
        self.prose_budget = max(1, per_answer // 3)
        self.opening = backend.llm.tokenize(("\n" + CODE_FENCE).encode(), add_bos=False, special=False)
        self.pending = collections.deque(range(n))
        self._buffer = ctypes.create_string_buffer(256)
        self.opening_pieces = [self._piece(token) for token in self.opening]
        self.wrong_code = sampling.wrong_code if sampling.grammar and sampling.wrong_code.strip() else ""
        self.string_limit = int(STRING_SLACK * longest_string(self.wrong_code) + STRING_EXTRA) if self.wrong_code else 0
        self.closed_strings = 0  # strings closed for the model (string_limit)
        self.rewound_tokens = 0  # tokens thrown away by rewinds (decoded again)
        self.started_tokens: dict[int, int] = {}  # slot -> KV cells its answer may take
        self.retired_tokens = 0  # KV cells held by the grave (finished answers)
        self.started = time.perf_counter()

    def run(self) -> Iterator[Generation]:
        """Decode the batch, yielding each Generation as it finishes (not in seed order);
        on cancel the unfinished ones are yielded as cancelled."""
        from llama_cpp import llama_cpp as C

        self.b.llm.reset()  # the Llama object must not think its tokens are still in the cache
        C.llama_memory_clear(self.memory, True)  # from scratch: the same seed gives the same answer
        first = self._eval_prompt()
        if first is None:  # cancelled while it read the prompt
            yield from self._cancel_all([])
            return
        active: list[Sequence] = []
        free = list(range(1, self.width + 1))
        while self.pending or active:
            if self.cancel is not None and self.cancel.is_set():
                yield from self._cancel_all(active)
                return
            while self.pending and free:  # a new sequence takes a free slot, starting from the prompt
                sequence = Sequence(self.b, free.pop(0), self.sampling, self.sampling.seed + self.pending.popleft(),
                                     len(self.prompt))
                self._make_room()
                self.started_tokens[sequence.slot] = self.max_tokens  # reserved (an upper bound)
                C.llama_memory_seq_cp(self.memory, 0, sequence.slot, -1, -1)
                active.append(sequence)
                done = self._take(sequence, first)
                if done is not None:
                    yield from self._finish(sequence, done, active, free)
            if active:
                yield from self._step(active, free)

    def _eval_prompt(self):
        """Decode the prompt into sequence 0 (in chunks, cancellable between them); a copy of its
        last logits, None when cancelled meanwhile."""
        import numpy as np
        from llama_cpp import llama_cpp as C

        started = time.perf_counter()
        if not decode_prompt(self.ctx, self.b._batch.batch, self.prompt, self.b.llm.n_batch, self.cancel):
            return None
        self.b.prompt_evals += 1
        self.b.prompt_tokens += len(self.prompt)
        self.b.prompt_seconds += time.perf_counter() - started
        return np.ctypeslib.as_array(C.llama_get_logits_ith(self.ctx, -1), shape=(self.b.llm.n_vocab(),)).copy()

    def _decode(self, batch) -> None:
        decode(self.ctx, batch)

    def _step(self, active: list[Sequence], free: list[int]) -> Iterator[Generation]:
        """Decode every active sequence's last token together; sample each one's next."""
        import numpy as np
        from llama_cpp import llama_cpp as C

        rows, last_row = [], {}
        for s in active:  # usually one token each; more after forced tokens
            rows += [(token, s.pos + i, s.slot, i == len(s.feed) - 1) for i, token in enumerate(s.feed)]
            last_row[s.slot] = len(rows) - 1
        padded = len(rows) == 1  # see PAD below
        if padded:
            rows.append((rows[0][0], 0, self.b.pad_seq, False))
        _fill(self.b._batch.batch, rows)
        self._decode(self.b._batch.batch)
        if padded:
            C.llama_memory_seq_rm(self.memory, self.b.pad_seq, -1, -1)
        n_vocab = self.b.llm.n_vocab()
        for sequence in list(active):
            sequence.pos += len(sequence.feed)
            sequence.feed = []
            logits = np.ctypeslib.as_array(C.llama_get_logits_ith(self.ctx, last_row[sequence.slot]), shape=(n_vocab,))
            done = self._take(sequence, logits)
            if done is not None:
                yield from self._finish(sequence, done, active, free)

    def _take(self, sequence: Sequence, logits) -> str | None:
        """Sample the sequence's next token; its finish reason if it is done, else None."""
        from llama_cpp import llama_cpp as C

        token = sequence.sample(logits)
        if self.on_token:
            self.on_token()
        if C.llama_vocab_is_eog(self.vocab, token):
            return "stop"
        sequence.append(token, self._piece(token), probability(logits, token) if self.wrong_code else None)
        if not self.sampling.grammar:
            return "length" if len(sequence.tokens) >= self.max_tokens else None
        if b"`" in sequence.data[-8:]:
            end = answer_end(sequence.text)
            if end is not None:
                if self.wrong_code and repeats_code(sequence.text, self.wrong_code) and self._rewind(sequence):
                    return None
                sequence.data = sequence.text[:end].encode()
                return "stop"
        return self._budget(sequence)

    def _rewind(self, sequence: Sequence) -> bool:
        """Send an answer that repeats the wrong code back to its least sure token (module
        docstring); False (the answer stands) after MAX_REWINDS or without room in the context."""
        index = least_sure_token(sequence) if sequence.rewinds < MAX_REWINDS else None
        if index is None:
            return False
        rest = sequence.data[sum(map(len, sequence.pieces[:index])):]
        same_text = {t for t, piece in enumerate(vocab_pieces(self.b)) if piece and rest.startswith(piece)}
        return self._rewind_at(sequence, index, same_text | {sequence.tokens[index]})

    def _rewind_at(self, sequence: Sequence, index: int, refused: set[int]) -> bool:
        """Back to just before token `index`, which must not be one of `refused` this time;
        False (nothing changed) without room in the context for the tokens decoded again."""
        from llama_cpp import llama_cpp as C

        decoded = len(sequence.tokens) - len(sequence.feed)
        removed = decoded - (index - 1)  # KV cells from token index-1 on (it is decoded again)
        live = len(self.prompt) + sum(self.started_tokens.values()) + self.retired_tokens
        if live + removed + 1 > C.llama_n_ctx(self.ctx):
            return False
        start = len(self.prompt) + index - 1
        C.llama_memory_seq_cp(self.memory, sequence.slot, self.b.grave_seq, start, -1)
        C.llama_memory_seq_rm(self.memory, sequence.slot, start, -1)
        self.retired_tokens += removed
        self.rewound_tokens += len(sequence.tokens) - index
        sequence.rewind(index, refused, self.b.grammar_sampler(self.sampling.grammar))
        return True

    def _budget(self, sequence: Sequence) -> str | None:
        """Budget-aware closing under the grammar (see prose_budget): None to go on, "stop"
        for an answer closed here, "length" when the budget ran out with nothing to close."""
        used = len(sequence.tokens)
        if used >= self.prose_budget and CODE_FENCE.encode() not in sequence.data:
            at_sentence_end = sequence.data.rstrip().endswith((b".", b":")) or used >= self.prose_budget + 16
            if at_sentence_end and used + len(self.opening) < self.max_tokens:
                sequence.force(self.opening, self.opening_pieces)
        if self.string_limit and sequence.data.rstrip(b" ").endswith(b"\n") and used + 4 < self.max_tokens:
            self._close_long_string(sequence)
        if used < self.max_tokens:
            return None
        closed = close_answer(sequence.text)
        if closed is None:
            return "length"
        sequence.data = closed.encode()
        return "stop"

    def _close_long_string(self, sequence: Sequence) -> None:
        """Close a triple-quoted string open longer than string_limit characters (module
        docstring) with forced tokens: its quotes, then a newline."""
        data = sequence.data
        start = data.find(CODE_FENCE.encode())
        if start < 0:
            return
        code = data[start + len(CODE_FENCE):].decode("utf-8", errors="replace")
        quote = open_string(code)
        if len(quote) != 3 or len(code) - code.rfind(quote) <= self.string_limit:
            return
        opening = code.rfind(quote)
        line = code[code.rfind("\n", 0, opening) + 1:opening]
        indent = len(line) - len(line.lstrip(" ")) - (len(code) - len(code.rstrip(" ")))
        closing = " " * max(0, indent) + quote + "\n"  # at the opening line's indentation
        tokens = self.b.llm.tokenize(closing.encode(), add_bos=False, special=False)
        if sequence.force(tokens, [self._piece(t) for t in tokens]):
            self.closed_strings += 1

    def _retire(self, slot: int) -> None:
        """Free the slot (its sequence id) at once. Its KV cells go to the GRAVE sequence rather
        than being freed: a freed cell below the others' would be filled by their next tokens,
        putting their cells out of position order, and the attention sums then round differently
        from a one-at-a-time run. The grave is emptied only when a waiting answer needs the room."""
        from llama_cpp import llama_cpp as C

        C.llama_memory_seq_cp(self.memory, slot, self.b.grave_seq, -1, -1)
        C.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self.retired_tokens += self.started_tokens.pop(slot, 0)

    def _make_room(self) -> None:
        """Before a waiting answer starts: empty the grave if the context cannot hold it too."""
        from llama_cpp import llama_cpp as C

        n_ctx = C.llama_n_ctx(self.ctx)
        live = len(self.prompt) + sum(self.started_tokens.values()) + self.retired_tokens
        if live + self.max_tokens + 1 > n_ctx:
            C.llama_memory_seq_rm(self.memory, self.b.grave_seq, -1, -1)
            self.retired_tokens = 0

    def _piece(self, token: int) -> bytes:
        """The token's bytes (a multi-byte character may span tokens; text decodes at the end)."""
        from llama_cpp import llama_cpp as C

        size = C.llama_token_to_piece(self.vocab, token, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[:size] if size >= 0 else b""

    def _finish(self, sequence: Sequence, reason: str, active: list[Sequence], free: list[int]):
        active.remove(sequence)
        self._retire(sequence.slot)
        free.append(sequence.slot)
        free.sort()
        yield self._generation(sequence, reason)

    def _generation(self, sequence: Sequence, reason: str) -> Generation:
        from ledex.engine.backends import Generation

        return Generation(sequence.text, reason, len(self.prompt), len(sequence.tokens),
                          time.perf_counter() - self.started, sequence.seed, sequence.rewinds)

    def _cancel_all(self, active: list[Sequence]) -> Iterator[Generation]:
        for sequence in active:
            yield self._generation(sequence, "cancelled")
        from ledex.engine.backends import Generation

        while self.pending:
            yield Generation("", "cancelled", len(self.prompt), 0, time.perf_counter() - self.started,
                             self.sampling.seed + self.pending.popleft())


def decode(ctx, batch) -> None:
    """llama_decode of a filled batch; ModelError when llama.cpp refuses it."""
    from llama_cpp import llama_cpp as C

    code = C.llama_decode(ctx, batch)
    if code != 0:
        raise ModelError(f"llama_decode failed ({code}): the batch does not fit the context")


PREFILL_CHUNK = 128  # prompt tokens per decode when the prompt can be cancelled: one chunk is
# ~1/6 of a 750-token prompt that took 10 s on this 2-core box under load (a cancel waited it all)


def decode_prompt(ctx, batch, prompt: list[int], n_batch: int, cancel=None) -> bool:  # noqa: ANN001
    """Decode `prompt` into sequence 0 from position 0 in chunks of n_batch tokens (of at most
    PREFILL_CHUNK with a `cancel` flag, checked between chunks), with logits for its last token
    only (index n-1 of the last chunk, or -1): generation and scoring share it. False when
    cancelled before the end (the sequence then holds part of the prompt)."""
    size = n_batch if cancel is None else min(n_batch, PREFILL_CHUNK)
    for start in range(0, len(prompt), size):
        if cancel is not None and cancel.is_set():
            return False
        chunk = prompt[start:start + size]
        last = start + len(chunk) == len(prompt)
        _fill(batch, [(token, start + i, 0, last and i == len(chunk) - 1) for i, token in enumerate(chunk)])
        decode(ctx, batch)
    return True


def _fill(batch, items: list[tuple[int, int, int, bool]]) -> None:
    """Put (token, position, sequence id, wants logits) items into a llama_batch."""
    batch.n_tokens = len(items)
    for i, (token, pos, seq, logits) in enumerate(items):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
        batch.seq_id[i][0] = seq


if __name__ == "__main__":
    import sys

    from ledex.engine import backends
    from ledex.engine.format import Mode, Problem, build_messages
    from ledex.engine.grammar import answer_grammar

    k = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    backend = backends.load_backend()
    problem = Problem("Write add(a, b) returning their sum.", "def add(a, b):\n    return a - b",
                      "assert add(1, 2) == 3\nAssertionError")
    sampling = backends.Sampling(max_tokens=200, grammar=answer_grammar(Mode.EXPLAIN, "add"))
    for generation in backend.generate_batch(build_messages(problem), sampling, k):
        print(f"--- seed {generation.seed} ({generation.finish_reason}, {generation.seconds:.1f} s)\n{generation.text}")
    print(f"prompt evaluations: {backend.prompt_evals}")
