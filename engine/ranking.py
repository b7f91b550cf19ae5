"""The ONE rule that orders a failure's candidates (CLI, editor code actions, episode order).

Order, first key first:
1. verified before not verified (the sandbox's word: engine/fixer.judge);
2. among verified ones, a *test-overfitting risk* after the rest: a search candidate that only
   changed a numeric constant (operators "constant") passes because the shown tests happen to be
   satisfied by that value at least as often as because the logic is right (issue 20: a median
   dividing by 3 instead of 2 passed weak tests) - it ranks below the model's verified fixes;
3. plausibility: the model's log-likelihood of the patched function given the failure (sum of
   token log-probabilities, llama.cpp, `score_codes`) minus EDIT_WEIGHT nats per changed token
   (smaller edits first, the minimal-repair prior of program repair); without a log-likelihood
   only the edit size counts;
4. unverified ones by pass rate; then round, then arrival order.

Candidates are anything with the attributes of fixer.CandidateResult (verified, pass_rate,
round, source, operator, loglik, edit_size).

Try it:  python -m ledex.engine.ranking   (orders a few made-up candidates)
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

# Nats per changed token: one changed token is worth about a 7x likelihood ratio. Set by reasoning,
# not tuned on any benchmark item: a candidate must be e^2 more likely per extra changed token.
EDIT_WEIGHT = 2.0
_TOKEN = re.compile(r"\w+|[^\w\s]")


def edit_size(old: str, new: str) -> int:
    """Changed tokens (words and punctuation) between two versions of a function."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def overfit_risk(candidate: Any) -> bool:
    """A verified search candidate that only changed a numeric constant (see the module docstring)."""
    return getattr(candidate, "source", "model") == "search" and getattr(candidate, "operator", "") == "constant" \
        and not re.fullmatch(r"True|False", getattr(candidate, "edit_after", "") or "")


def plausibility(candidate: Any) -> float:
    """Log-likelihood (nats, 0 when unknown) minus EDIT_WEIGHT per changed token."""
    loglik = getattr(candidate, "loglik", None)
    size = getattr(candidate, "edit_size", 0) or 0
    return (loglik if loglik is not None and math.isfinite(loglik) else 0.0) - EDIT_WEIGHT * size


def sort_key(candidate: Any, index: int = 0) -> tuple:
    """Sort key, smallest best: verified first, low overfit risk, then higher plausibility
    (verified) or pass rate, earlier round, earlier index."""
    verified = bool(getattr(candidate, "verified", False))
    return (not verified, verified and overfit_risk(candidate),
            -plausibility(candidate) if verified else -getattr(candidate, "pass_rate", 0.0),
            getattr(candidate, "round", 0), index)


def rank(candidates: Sequence[T]) -> list[T]:
    """The candidates, best first (the module docstring's rule)."""
    return [c for _, c in rank_indexed(candidates)]


def rank_indexed(candidates: Sequence[T]) -> list[tuple[int, T]]:
    """(arrival index, candidate) pairs, best first: what the editor needs (index = episode idx)."""
    return sorted(enumerate(candidates), key=lambda ic: sort_key(ic[1], ic[0]))


# --- the model's log-likelihood of a patched function -------------------------------------------------


def score_codes(backend: Any, messages: list[dict[str, str]], codes: Sequence[str]) -> list[float | None]:
    """Sum of the model's token log-probabilities (nats) of each code block as the answer to
    `messages` (format.build_messages in REFINE mode: the answer is just the code block), with the
    prompt evaluated once and shared. None for every code when the backend cannot score (an
    endpoint, a replay) or the prompt does not fit."""
    if not codes or getattr(backend, "llm", None) is None or not hasattr(backend, "_batch"):
        return [None] * len(codes)
    try:
        return _LlamaScorer(backend, messages).score(codes)
    except Exception:  # noqa: BLE001 - ranking without likelihoods beats no ranking
        return [None] * len(codes)


class _LlamaScorer:
    """Teacher-forced scoring on the llama.cpp backend's batch context (engine/llamabatch.py's layout:
    the prompt in sequence 0, each answer in sequence 1 copied from it)."""

    def __init__(self, backend: Any, messages: list[dict[str, str]]):
        from llama_cpp import llama_cpp as C

        self.b, self.C = backend, C
        self.ctx = backend.llm._ctx.ctx
        self.memory = C.llama_get_memory(self.ctx)
        self.prompt = backend.tokenize(backend.render(messages))
        self.n_ctx = C.llama_n_ctx(self.ctx)

    def _decode(self, rows: list[tuple[int, int, int, bool]]):
        from ledex.engine.llamabatch import _fill

        _fill(self.b._batch.batch, rows)
        if self.C.llama_decode(self.ctx, self.b._batch.batch) != 0:
            raise RuntimeError("llama_decode failed")

    def score(self, codes: Sequence[str]) -> list[float | None]:
        """Per code, its log-likelihood as the answer to the prompt (a fenced block), teacher-forced;
        None where it does not fit the context."""
        with self.b._lock:
            self.b.llm.reset()
            self.C.llama_memory_clear(self.memory, True)
            size = self.b.llm.n_batch
            last_logits = None
            for start in range(0, len(self.prompt), size):
                chunk = self.prompt[start:start + size]
                end = start + len(chunk) == len(self.prompt)
                self._decode([(t, start + i, 0, end and i == len(chunk) - 1) for i, t in enumerate(chunk)])
                if end:
                    last_logits = self._row(len(chunk) - 1)
            return [self._answer(code, last_logits) for code in codes]

    def _row(self, index: int):
        import numpy as np

        n_vocab = self.b.llm.n_vocab()
        logits = np.ctypeslib.as_array(self.C.llama_get_logits_ith(self.ctx, index), shape=(n_vocab,)).astype(np.float64)
        top = logits.max()
        return logits - (top + math.log(np.exp(logits - top).sum()))

    def _answer(self, code: str, first) -> float | None:
        text = f"```python\n{code.rstrip()}\n```"
        tokens = self.b.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        base = len(self.prompt)
        if base + len(tokens) >= self.n_ctx or not tokens:
            return None
        total = float(first[tokens[0]])
        self.C.llama_memory_seq_cp(self.memory, 0, 1, -1, -1)
        size = self.b.llm.n_batch
        for start in range(0, len(tokens) - 1, size):
            chunk = tokens[start:start + size]
            self._decode([(t, base + start + i, 1, True) for i, t in enumerate(chunk)])
            for i in range(len(chunk)):
                following = start + i + 1
                if following < len(tokens):
                    total += float(self._row(i)[tokens[following]])
        self.C.llama_memory_seq_rm(self.memory, 1, -1, -1)
        return total


if __name__ == "__main__":
    from types import SimpleNamespace as C

    made_up = [C(verified=True, source="search", operator="constant", loglik=-40.0, edit_size=1, round=0),
               C(verified=True, source="model", operator="", loglik=-60.0, edit_size=6, round=1),
               C(verified=False, source="model", pass_rate=0.5, round=1),
               C(verified=True, source="search", operator="compare", loglik=-41.0, edit_size=1, round=0)]
    for position, c in enumerate(rank(made_up), 1):
        print(position, c)
