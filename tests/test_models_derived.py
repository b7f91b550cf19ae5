"""The default model's served weights with LEDEX_DEFAULT_WEIGHTS=Q8_0: the embedded Q4_1 GGUF
requantized once into the user cache (engine/models.py, served_default_path), with the real
llama.cpp and model; unset, the embedded file is served."""

from __future__ import annotations

import inspect
import logging
import os
import textwrap

import numpy as np
import pytest

from ledex.engine import models
from ledex.engine.backends import Sampling, load_backend
from ledex.engine.format import Candidate, Mode, Problem, build_messages, parse_response
from ledex.engine.grammar import answer_grammar

TEXT = inspect.getsource(textwrap)[:480]  # ~130 tokens of real Python (the stdlib, stable)


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """The default's served file, derived once for this module into a fresh cache."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("cache")
        patch.setenv("LEDEX_CACHE", str(cache))
        patch.setenv(models.WEIGHTS_ENV, "Q8_0")
        yield cache, models.served_default_path()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(models.WEIGHTS_ENV, raising=False)
    return tmp_path / "cache"


def test_q8_0_weights_are_derived_once_named_so_and_served(derived, monkeypatch):
    cache, path = derived
    monkeypatch.setenv("LEDEX_CACHE", str(cache))
    monkeypatch.setenv(models.WEIGHTS_ENV, "Q8_0")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.requant-Q8_0.gguf" and path.is_relative_to(cache)
    stamp = path.stat().st_mtime_ns
    assert models.served_default_path() == path and path.stat().st_mtime_ns == stamp  # made once
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".part"] == []
    backend = load_backend()
    assert backend.identity.id.startswith("SmolLM2-135M-Instruct.Q4_1.requant-Q8_0.gguf@")
    assert backend.identity.base == str(path)
    problem = Problem("Write add(a, b) returning the sum of a and b.", "def add(a, b):\n    return a - b",
                      "assert add(1, 2) == 3\nAssertionError: assert -1 == 3")
    sampling = Sampling(max_tokens=64, seed=0, grammar=answer_grammar(Mode.REFINE, "add"))
    answer = backend.generate(build_messages(problem, Mode.REFINE), sampling)
    assert isinstance(parse_response(answer.text, Mode.REFINE), Candidate), answer.text


def test_the_derived_weights_predict_what_the_embedded_ones_do(derived):
    """Same weights on a finer grid: next-token distributions over ~130 tokens of Python differ by
    a KL divergence < 0.02 nats per token, the top choice agrees at >= 95% of positions (measured
    0.006 and 97%; a Q4_0 requantization, for contrast, 0.33 and 72%)."""
    from llama_cpp import Llama

    scores = []
    for path in (models.default_model_path(), derived[1]):
        llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, logits_all=True, verbose=False)
        tokens = llm.tokenize(TEXT.encode())
        llm.eval(tokens)
        logits = np.array(llm.scores[:len(tokens)], dtype=np.float64)
        llm.close()
        logits -= logits.max(axis=1, keepdims=True)
        scores.append(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    embedded, derived = scores
    kl = (np.exp(embedded) * (embedded - derived)).sum(axis=1).mean()
    assert kl < 0.02 and np.mean(embedded.argmax(axis=1) == derived.argmax(axis=1)) >= 0.95, kl


def test_q4_1_serves_the_embedded_file_and_a_failed_derivation_falls_back(cache, monkeypatch, caplog):
    assert models.served_default_path() == models.default_model_path()  # the default: nothing derived
    assert not cache.exists()
    monkeypatch.setenv(models.WEIGHTS_ENV, "Q4_1")
    assert models.served_default_path() == models.default_model_path()
    monkeypatch.setenv(models.WEIGHTS_ENV, "Q5_K")
    with pytest.raises(models.ModelError, match="expected one of Q4_1, Q8_0, Q4_0"):
        models.served_default_path()
    monkeypatch.setenv(models.WEIGHTS_ENV, "Q8_0")
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="ledex.engine.models"):
        assert models.served_default_path() == models.default_model_path()
    assert "serving the embedded Q4_1 model: deriving Q8_0 weights failed" in caplog.text
    assert os.path.isfile(cache)  # nothing of the user's was replaced
