"""Model resolution and backends: the real embedded GGUF through llama.cpp, and the
OpenAI-compatible endpoint backend against a local server."""

import threading

import pytest

from ledex.engine.backends import EndpointBackend, LlamaCppBackend, Sampling, load_backend
from ledex.engine.format import Mode, Problem, build_messages, parse_response
from ledex.engine.models import ModelError, default_model_path, identify, parse_model_spec

PROBLEM = Problem("Write add(a, b) returning the sum of a and b.", "def add(a, b):\n    return a - b",
                  "assert add(1, 2) == 3\nAssertionError: assert -1 == 3")


@pytest.fixture(scope="module")
def llama() -> LlamaCppBackend:
    return load_backend()


def test_default_model_is_found_through_the_distribution():
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    identity = identify(parse_model_spec(""))
    assert identity.base == str(path) and len(identity.base_hash) == 64
    assert identity.id.startswith("SmolLM2-135M-Instruct.Q4_1.gguf@")


@pytest.mark.parametrize("spec, message", [
    ("/nonexistent/model.gguf", "model file not found"),
    ("hf://just-a-name", "expected hf://owner/repo/file.gguf"),
])
def test_bad_model_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ModelError, match=message):
        parse_model_spec(spec)


def test_missing_adapter_and_adapter_on_endpoint_are_refused(tmp_path):
    with pytest.raises(ModelError, match="adapter file not found"):
        parse_model_spec("", str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="only be applied to a local GGUF"):
        parse_model_spec("http://127.0.0.1:1/v1", str(tmp_path / "a.gguf"))


def test_a_file_that_is_not_a_gguf_fails_to_load_with_a_clear_error(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelError, match="llama.cpp could not load"):
        load_backend(str(junk))


def test_llama_renders_with_the_gguf_chat_template_and_generates(llama):
    prompt = llama.render(build_messages(PROBLEM))
    assert prompt.startswith("<|im_start|>system\nYou are an expert Python programmer")
    assert prompt.endswith("<|im_start|>assistant\n")
    generation = llama.generate(build_messages(PROBLEM), Sampling(max_tokens=48, seed=1))
    assert generation.completion_tokens > 0 and generation.text.strip()
    assert generation.finish_reason in ("stop", "length")
    again = llama.generate(build_messages(PROBLEM), Sampling(max_tokens=48, seed=1))
    assert again.text == generation.text  # same seed, same answer: runs are reproducible


def test_generation_can_be_cancelled(llama):
    cancel = threading.Event()
    seen = []

    def on_token():
        seen.append(1)
        if len(seen) == 3:
            cancel.set()

    generation = llama.generate(build_messages(PROBLEM), Sampling(max_tokens=200, seed=2), cancel=cancel,
                                on_token=on_token)
    assert generation.finish_reason == "cancelled" and len(seen) == 3


def test_endpoint_backend_speaks_openai_chat_completions(replay_endpoint):
    url = replay_endpoint(["It subtracts.\n```python\ndef add(a, b):\n    return a + b\n```"])
    backend = load_backend(url)
    assert isinstance(backend, EndpointBackend) and backend.model == "replay"
    generation = backend.generate(build_messages(PROBLEM, Mode.EXPLAIN), Sampling(temperature=0.5, seed=7))
    assert parse_response(generation.text).code == "def add(a, b):\n    return a + b"
    sent = replay_endpoint.requests[0]
    assert sent["messages"] == build_messages(PROBLEM) and sent["temperature"] == 0.5 and sent["seed"] == 7


def test_unreachable_endpoint_is_a_model_error():
    backend = load_backend("http://127.0.0.1:9/v1")
    with pytest.raises(ModelError, match="failed"):
        backend.generate(build_messages(PROBLEM), Sampling(max_tokens=4))
