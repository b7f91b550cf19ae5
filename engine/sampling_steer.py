"""What the llama.cpp batch (engine/llamabatch.py) steers answers with, token by token: the
vocabulary's bytes, the tokens that hold a backtick, each token's model probability, the least
sure token of an answer's function body (where an answer that repeats the wrong code is sent
back to), and a check of the answer grammar itself (`grammar_accepts`).

Try it:  python -m pytest tests/test_generation.py -k grammar
"""

from __future__ import annotations

import ast
import ctypes
from typing import TYPE_CHECKING

from ledex.engine.format import CODE_FENCE

if TYPE_CHECKING:
    from ledex.engine.backends import LlamaCppBackend
    from ledex.engine.llamabatch import Sequence


def least_sure_token(sequence: Sequence) -> int | None:
    """Index of the answer's least probable sampled token inside the function's body (after
    the signature and a docstring, before the closing fence; not whitespace, not in a
    comment), or None when there is none. The answer's code block must parse."""
    data = sequence.data
    code_start = data.find(CODE_FENCE.encode()) + len(CODE_FENCE)
    code_end = data.rfind(b"```")
    code = data[code_start:code_end].decode("utf-8", errors="replace")
    function = next((n for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if function is None:
        return None
    body = function.body[1:] if _is_docstring(function.body[0]) and len(function.body) > 1 else function.body
    lines = data[code_start:code_end].split(b"\n")
    body_start = code_start + sum(len(line) + 1 for line in lines[:body[0].lineno - 1])
    best, offset = None, 0
    for i, (piece, prob) in enumerate(zip(sequence.pieces, sequence.probs)):
        line_start = data.rfind(b"\n", 0, offset + 1) + 1
        in_comment = b"#" in data[line_start:offset]
        if prob is not None and body_start <= offset < code_end and piece.strip() and not in_comment and i > 0:
            if best is None or prob < sequence.probs[best]:
                best = i
        offset += len(piece)
    return best


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def probability(logits, token: int) -> float:
    """The model's probability of `token` (softmax of the raw logits, temperature 1)."""
    import numpy as np

    shifted = np.exp(logits - logits.max())
    return float(shifted[token] / shifted.sum())


def vocab_pieces(backend: LlamaCppBackend) -> list[bytes]:
    """Every token's bytes, by token id (computed once per backend)."""
    from llama_cpp import llama_cpp as C

    pieces = getattr(backend, "_vocab_pieces", None)
    if pieces is None:
        vocab, buffer, pieces = backend.llm._model.vocab, ctypes.create_string_buffer(256), []
        for token in range(backend.llm.n_vocab()):
            size = C.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            pieces.append(buffer.raw[:size] if size > 0 else b"")
        backend._vocab_pieces = pieces
    return pieces


def longest_string(code: str) -> int:
    """Characters of the longest triple-quoted string in `code` (0 if none or it does not tokenize)."""
    import io
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return 0
    strings = [len(t.string) for t in tokens if t.type == tokenize.STRING and t.string.lstrip("rRbBuUfF")[:3] in ('"""', "'''")]
    return max(strings, default=0)


def grammar_accepts(backend: LlamaCppBackend, grammar: str, text: str) -> bool:
    """Whether llama.cpp's sampler for this GBNF lets the model write `text` (tokenized with the
    model's tokenizer, fed token by token as generation would): a check of the grammar itself."""
    from llama_cpp import llama_cpp as C

    from ledex.engine.llamabatch import Owned

    sampler = Owned(backend.grammar_sampler(grammar))
    one = (C.llama_token_data * 1)()
    array = C.llama_token_data_array(data=ctypes.cast(one, C.llama_token_data_p), size=1, selected=-1, sorted=False)
    for token in backend.llm.tokenize(text.encode(), add_bos=False, special=False):
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        array.size, array.selected = 1, -1
        C.llama_sampler_apply(sampler.pointer, ctypes.byref(array))
        if one[0].logit == float("-inf"):
            return False
        C.llama_sampler_accept(sampler.pointer, token)
    return True
