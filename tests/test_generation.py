"""Generation v2 on the real embedded model: answers constrained by the LEDEX grammar, K
answers decoded in one llama.cpp batch, and the endpoint backend's grammar/n/stop requests
against a local OpenAI-compatible server (a stdlib http.server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from ledex.engine.backends import MAX_PARALLEL, EndpointBackend, Sampling, load_backend
from ledex.engine.format import Candidate, Mode, Problem, build_messages, parse_response, repeats_code
from ledex.engine.grammar import answer_grammar
from ledex.engine.models import ModelSpec

PROBLEMS = {
    "add": Problem("Write add(a, b) returning the sum of a and b.", "def add(a, b):\n    return a - b",
                   "assert add(1, 2) == 3\nAssertionError: assert -1 == 3"),
    "is_even": Problem("Write is_even(n) returning True when n is even.", "def is_even(n):\n    return n % 2 == 1",
                       "assert is_even(4)\nAssertionError"),
    "largest": Problem("Write largest(xs) returning the largest number in the list xs.",
                       "def largest(xs):\n    return min(xs)", "assert largest([1, 5, 2]) == 5\nAssertionError: assert 1 == 5"),
}


@pytest.fixture(scope="module")
def llama():
    return load_backend()


def grammar(mode: Mode, name: str) -> str:
    return answer_grammar(mode, name, max_explanation_chars=100)  # short prose keeps the test quick


# explain (prose, then the block) in make test; refine (the block alone, the same grammar rule) in make test-long
@pytest.mark.parametrize("mode", [pytest.param(Mode.REFINE, marks=pytest.mark.long), Mode.EXPLAIN])
def test_every_answer_under_the_grammar_parses(llama, mode):
    """8 seeds (one full batch) x 3 problems: each answer is one python block defining the suspect, and
    generation stopped at its closing fence."""
    for name, problem in PROBLEMS.items():
        sampling = Sampling(max_tokens=128, seed=0, grammar=grammar(mode, name))
        answers = list(llama.generate_batch(build_messages(problem, mode), sampling, 8))
        assert sorted(a.seed for a in answers) == list(range(8))
        for answer in answers:
            parsed = parse_response(answer.text, mode, truncated=answer.truncated)
            assert isinstance(parsed, Candidate), (name, answer.seed, parsed)
            assert parsed.code.lstrip().startswith((f"def {name}(", "@", "async def", "import", "from")), parsed.code
            assert f"def {name}" in parsed.code and answer.text.endswith("```")
            assert (mode is Mode.EXPLAIN) == bool(parsed.explanation), answer.text


GRAMMAR_ACCEPTS = [  # valid Python the grammar must let through (styles a model copies from user code)
    "```python\ndef add(a, b):\n    return a + b\n```",
    '```python\nimport math\n@cache\ndef add(a: int, b=(1, 2)) -> int:  # sum\n    """Add `a`\n    and b."""\n'
    "    if a:\n      x = {'k': [a,\n  b]}  # two-space block\n    elif b:\n        pass\n\n    # note\n"
    "    return (a +\n            b) if a else \\\n        b\n```",
    "```python\ndef add(self , x: List[int] = [], *args, key=lambda v: v, **kw) -> int:\n    return x\n```",
    "```python\ndef add(a, b) -> Dict[str, Tuple[int, ...]] | None :\n    return a\n```",
    "```python\nimport os.path, re as regex\ndef add(a, b):\n    return a\n```",
    "```python\ndef add(a, b):\n    def inner(x: int = 0, *, k: 'T' = (1, 2)) -> Dict[str, int]:\n"
    "        return sorted(x, key=lambda v: v[1:], reverse=(n := 2) > 1)\n    return {a: b,\n            b: a}[a]\n```",
    "```python\ndef add(a, b):\n    x = not a in b is not None and f'{a}' if a else b'' or lambda: 0; y: int = -1\n"
    "    with open(a) as f, x as y:\n        raise ValueError(a) from None\n    return [x for x in b if x] or None\n```",
    "```python\nasync def add(a, b):\n    s = f\"{a!r}\" + '\\'' + \"\"\"x\"\"\"\n    return s[1:]\n```",
    "```python\ndef add(a, b):\n    # why\n    if a:\n        pass\n    return b\n```",  # `pass` inside a block
    '```python\ndef add(a, b):\n    """Add."""\n    def inner():\n        return a\n    return inner()\n```',
]
GRAMMAR_REFUSES = [  # Python errors the small model made under the first grammar, and shapes outside one function
    "```python\ndef add(a, b):\n    return (a + b\n```",  # unclosed bracket
    "```python\ndef add(a, b):\n    return [a + b)\n```",  # mismatched bracket
    '```python\ndef add(a, b):\n    """Add.\n    return a + b\n```',  # unterminated docstring
    "```python\ndef add(a, b):\n    if a:\n        x = 1\n      return a\n```",  # dedent to no level
    "```python\ndef add(a, b):\n    if a:\n    return a\n```",  # header without a block
    "```python\ndef add(a, b):\n    return a\ndef g():\n    pass\n```",  # a second top-level definition
    "```python\ndef add(a, b=):\n    return a\n```",  # a signature that does not parse
    "```python\ndef add(a b):\n    return a\n```",
    "```python\ndef add(a, b):\n    return a\n# Test\nprint(add(1, 2))\n```",  # test code after the function
    '```python\ndef add(a, b):\n    s = """\n```\n"""\n```',  # a fence line inside a string
    "```python\nfrom the corrected code.\ndef add(a, b):\n    return a\n```",  # prose starting like an import
    "```python\ndef add(a, b) -> int that can be replaced:\n    return a\n```",  # prose as the return annotation
    "```python\ndef add(a, b):\n    for k in range(2, min(a, b) + 1:\n        return k\n```",  # a header inside a call
    "```python\ndef add(a, b) -> i" + ".j" * 8 + ":\n    return a\n```",  # a runaway annotation
    "```python\ndef add(" + ", ".join(f"a{i}" for i in range(33)) + "):\n    return a0\n```",  # a runaway signature
    '```python\ndef add(a, b):\n    """Add."""\n    The sum is wrong here.\n    return a + b\n```',  # prose as a line of code
    '```python\ndef add(a, b):\n    """Add a\n    and b" \n\n    """ This function adds.\n    return a\n```',  # prose after a string
    '```python\ndef add(a, b):\n    """Add."""\n    # c\n    def test_solution.py(*args):\n        return a\n```',  # seen
]


@pytest.mark.parametrize("text", GRAMMAR_ACCEPTS)
def test_grammar_lets_valid_python_through(llama, text):
    from ledex.engine.llamabatch import grammar_accepts

    assert grammar_accepts(llama, answer_grammar(Mode.REFINE, "add"), text)


@pytest.mark.parametrize("text", GRAMMAR_REFUSES)
def test_grammar_refuses_broken_python(llama, text):
    from ledex.engine.llamabatch import grammar_accepts

    assert not grammar_accepts(llama, answer_grammar(Mode.REFINE, "add"), text)


def test_grammar_lets_every_humanevalfix_canonical_function_through(llama):
    """The grammar must not refuse real Python: the 164 canonical solutions of HumanEvalFix
    (evaluation data, used here only as valid code; 2- and 4-space styles, docstrings with
    backticks), each as the one function of a refine answer."""
    import ast
    from pathlib import Path

    from ledex.engine.llamabatch import grammar_accepts

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "humanevalpack-python.jsonl"
    if not data.exists():
        pytest.skip(f"no {data}")
    refused = []
    for row in map(json.loads, data.read_text().splitlines()):
        source = row["prompt"] + row["canonical_solution"]
        node = next(n for n in ast.parse(source).body if getattr(n, "name", "") == row["entry_point"])
        code = "\n".join(source.splitlines()[node.lineno - 1 - len(node.decorator_list):node.end_lineno])
        if not grammar_accepts(llama, answer_grammar(Mode.REFINE, row["entry_point"]), f"```python\n{code}\n```"):
            refused.append(row["task_id"])
    assert refused == []


@pytest.mark.parametrize("mode, budget", [(Mode.REFINE, 40), (Mode.EXPLAIN, 64)])
def test_a_tiny_budget_still_yields_closed_answers(llama, mode, budget):
    """Budget-aware closing: prose is ended at a third of the budget and the code block opened;
    code still open at the budget is closed (format.close_answer). 4 seeds on a problem whose
    answers run long (without the closing, 2 of these 8 answers end cut off): every answer is a
    parseable candidate within the budget; in refine mode one was closed by the budget."""
    sampling = Sampling(max_tokens=budget, seed=0, grammar=grammar(mode, "largest"))
    answers = list(llama.generate_batch(build_messages(PROBLEMS["largest"], mode), sampling, 4))
    for answer in answers:
        parsed = parse_response(answer.text, mode, truncated=answer.truncated)
        assert isinstance(parsed, Candidate), (answer.seed, answer.text)
        assert answer.completion_tokens <= budget and answer.text.endswith("\n```")
        assert (mode is Mode.EXPLAIN) == bool(parsed.explanation)
    if mode is Mode.REFINE:  # an answer was still open at the budget (in explain mode prose is cut instead)
        assert any(a.completion_tokens == budget for a in answers)


def test_batched_answers_equal_one_at_a_time(llama):
    """Same seed, same answer whatever K: K=3 in one batch equals three single generations
    (grammar on; answers of different lengths, so some go on after another one finished),
    and the prompt was evaluated once for the batch. llama.cpp does not promise this; it
    holds because of flash attention, the padded one-row batch and the grave for finished
    answers' KV cells (engine/llamabatch.py), and this test notices if that stops being enough."""
    messages = build_messages(PROBLEMS["largest"], Mode.EXPLAIN)
    sampling = Sampling(max_tokens=72, seed=7, grammar=grammar(Mode.EXPLAIN, "largest"))
    before = llama.prompt_evals
    batched = {a.seed: (a.text, a.completion_tokens) for a in llama.generate_batch(messages, sampling, 3)}
    assert llama.prompt_evals == before + 1
    single = {s: llama.generate(messages, Sampling(max_tokens=72, seed=s, grammar=sampling.grammar))
              for s in range(7, 10)}
    assert batched == {s: (a.text, a.completion_tokens) for s, a in single.items()}
    assert len({t for t, _ in batched.values()}) > 1  # the seeds really differ (not one answer three times)
    assert len({n for _, n in batched.values()}) > 1, "every answer had the same length: no early finish tested"


def test_no_answer_repeats_the_wrong_code(llama):
    """Sampling.wrong_code: 6 seeds that, left alone, write the wrong function back unchanged
    in 2 answers (seeds 0 and 5, checked here), write none with it; the answers that did not
    repeat it are untouched, and a rewound answer is the same alone as in the batch."""
    problem, mode = PROBLEMS["largest"], Mode.REFINE
    plain = Sampling(max_tokens=128, seed=0, grammar=grammar(mode, "largest"))
    steered = Sampling(max_tokens=128, seed=0, grammar=plain.grammar, wrong_code=problem.wrong_code)
    messages = build_messages(problem, mode)
    before = {a.seed: a.text for a in llama.generate_batch(messages, plain, 6)}
    after = {a.seed: a.text for a in llama.generate_batch(messages, steered, 6)}
    repeated = {seed for seed, text in before.items() if repeats_code(text, problem.wrong_code)}
    assert repeated, "no seed repeated the wrong code: this test no longer tests anything"
    assert not [seed for seed, text in after.items() if repeats_code(text, problem.wrong_code)]
    assert all(isinstance(parse_response(text, mode), Candidate) for text in after.values())
    assert {s: t for s, t in after.items() if s not in repeated} == {s: t for s, t in before.items() if s not in repeated}
    seed = min(repeated)
    alone = llama.generate(messages, Sampling(max_tokens=128, seed=seed, grammar=plain.grammar, wrong_code=problem.wrong_code))
    assert alone.text == after[seed]


def test_cancel_mid_batch_stops_every_sequence(llama):
    cancel, tokens = threading.Event(), []

    def on_token():
        tokens.append(1)
        if len(tokens) == 20:
            cancel.set()

    answers = list(llama.generate_batch(build_messages(PROBLEMS["largest"]), Sampling(max_tokens=400, seed=0), 4,
                                        cancel=cancel, on_token=on_token))
    assert [a.finish_reason for a in answers] == ["cancelled"] * 4
    assert len(tokens) <= 20 + 4  # at most the step in flight: one more token per sequence
    assert sum(a.completion_tokens for a in answers) <= 24


def test_a_cancel_stops_the_prompt_between_chunks(llama):
    """The prompt is read in chunks of PREFILL_CHUNK tokens with the cancel flag checked between
    them (a 750-token prompt took 10 s on a loaded 2-core box, and the editor's cancel waited
    it out, then killed the model process): a cancel set before the first chunk reads none."""
    from ledex.engine.llamabatch import PREFILL_CHUNK

    messages = [{"role": "user", "content": "def f(x):\n    return x + 1\n" * 40}]
    assert len(llama.llm.tokenize(messages[0]["content"].encode())) > 2 * PREFILL_CHUNK
    cancel, before = threading.Event(), llama.prompt_tokens
    cancel.set()
    answers = list(llama.generate_batch(messages, Sampling(max_tokens=8, seed=0), 3, cancel=cancel))
    assert [a.finish_reason for a in answers] == ["cancelled"] * 3 and llama.prompt_tokens == before


def test_a_sequence_finishing_early_frees_its_slot(llama):
    """Two slots, three answers: the first to finish gives its slot (and KV cells) to the third."""
    from llama_cpp import llama_cpp as C

    memory = C.llama_get_memory(llama.llm._ctx.ctx)
    occupied = lambda: [slot for slot in (1, 2) if C.llama_memory_seq_pos_max(memory, slot) >= 0]  # noqa: E731
    messages = build_messages(PROBLEMS["add"], Mode.REFINE)
    sampling = Sampling(max_tokens=64, seed=0, grammar=grammar(Mode.REFINE, "add"))
    llama.n_parallel = 2
    try:
        seen = [(a.seed, occupied()) for a in llama.generate_batch(messages, sampling, 3)]
    finally:
        llama.n_parallel = MAX_PARALLEL
    assert len(seen[0][1]) == 1 and sorted(s for s, _ in seen) == [0, 1, 2]  # freed at once, all three done
    assert seen[-1][1] == []


# --- endpoints ----------------------------------------------------------------------------------

class FakeServer(http.server.ThreadingHTTPServer):
    """/v1/chat/completions that records each request and answers ANSWER (ignoring the grammar),
    optionally refusing n > 1 the way llama-server's older versions do."""

    def __init__(self, answer: str, refuse_n: bool = False):
        self.answer, self.refuse_n, self.requests = answer, refuse_n, []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        n = body.get("n", 1)
        if n > 1 and self.server.refuse_n:
            self._reply(400, {"error": {"message": "Only one completion choice is allowed"}})
            return
        choices = [{"index": i, "message": {"role": "assistant", "content": self.server.answer},
                    "finish_reason": "stop"} for i in range(n)]
        self._reply(200, {"choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 8 * n}})

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(answer: str, refuse_n: bool = False) -> tuple[FakeServer, EndpointBackend]:
        server = FakeServer(answer, refuse_n)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        spec = ModelSpec("endpoint", f"http://127.0.0.1:{server.server_address[1]}/v1", endpoint_model="m")
        return server, EndpointBackend(spec)

    yield start
    for server in servers:
        server.shutdown()


# What a server that ignored the grammar but honoured the stop sequence returns: the closing
# fence is cut off with the stop text.
STOPPED = "It subtracts.\n```python\ndef add(a, b):\n    return a + b"


def test_endpoint_sends_grammar_n_and_stop_and_parses_an_answer_that_ignored_them(serve):
    server, backend = serve(STOPPED)
    sampling = Sampling(max_tokens=64, seed=5, grammar=answer_grammar(Mode.EXPLAIN, "add"))
    answers = list(backend.generate_batch(build_messages(PROBLEMS["add"]), sampling, 3))
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["n"] == 3 and request["grammar"] == sampling.grammar and request["stop"] == ["\n```\n"]
    assert request["seed"] == 5 and request["max_tokens"] == 64
    assert [a.seed for a in answers] == [5, 6, 7]
    for answer in answers:
        assert parse_response(answer.text, Mode.EXPLAIN, truncated=answer.truncated) == \
            Candidate("It subtracts.", "def add(a, b):\n    return a + b")


def test_endpoint_that_refuses_n_is_asked_one_by_one(serve):
    server, backend = serve("```python\ndef add(a, b):\n    return a + b\n```", refuse_n=True)
    answers = list(backend.generate_batch(build_messages(PROBLEMS["add"]), Sampling(seed=0), 3))
    assert [r.get("n", 1) for r in server.requests] == [3, 1, 1, 1]
    assert [r["seed"] for r in server.requests[1:]] == [0, 1, 2] and len(answers) == 3
    assert "grammar" not in server.requests[0] and "stop" not in server.requests[0]  # no grammar asked for


@pytest.mark.parametrize("field, expected", [
    ("guided_grammar", {"guided_grammar": "G"}),
    ("structured_outputs", {"structured_outputs": {"grammar": "G"}}),
    ("none", {}),
])
def test_endpoint_grammar_field_for_vllm_and_servers_without_grammars(serve, field, expected):
    server, _ = serve("x")
    backend = EndpointBackend(ModelSpec("endpoint", "http://127.0.0.1:1/v1"), grammar_field=field)
    body = backend.body([], Sampling(grammar="G"))
    assert {k: body[k] for k in ("guided_grammar", "structured_outputs", "grammar") if k in body} == expected
    assert body["stop"] == ["\n```\n"]


def test_a_docstring_that_runs_on_is_closed_for_the_model(llama, monkeypatch):
    """A triple-quoted string open past the limit (here 24 characters, instead of 1.25 x the wrong
    code's longest + 200) is closed at the next line start with forced tokens, at its opening
    line's indentation; the answer goes on under the grammar and ends at its fence. Seed 0 copies
    the wrong code's two-paragraph docstring in full when left alone (checked here)."""
    from ledex.engine import llamabatch

    problem = Problem("Write largest(xs) returning the largest number in the list xs.",
                      'def largest(xs):\n    """Return the largest number in the list xs.\n\n    An empty list gives None.\n'
                      '    """\n    return min(xs)', "assert largest([1, 5, 2]) == 5\nAssertionError: assert 1 == 5")
    sampling = Sampling(max_tokens=128, seed=0, grammar=grammar(Mode.REFINE, "largest"), wrong_code=problem.wrong_code)
    messages = build_messages(problem, Mode.REFINE)
    assert "An empty list gives None." in llama.generate(messages, sampling).text
    monkeypatch.setattr(llamabatch, "STRING_SLACK", 0)
    monkeypatch.setattr(llamabatch, "STRING_EXTRA", 24)
    answer = llama.generate(messages, sampling)
    assert '"""Return the largest number in the list xs.\n\n    """\n' in answer.text, answer.text
    assert answer.text.endswith("\n```") and answer.finish_reason == "stop"


def test_ledex_parallel_sets_how_many_answers_decode_together(monkeypatch):
    from ledex.engine.backends import parallel_from_env

    monkeypatch.delenv("LEDEX_PARALLEL", raising=False)
    assert parallel_from_env() == MAX_PARALLEL
    monkeypatch.setenv("LEDEX_PARALLEL", "1")
    assert parallel_from_env() == 1
    monkeypatch.setenv("LEDEX_PARALLEL", "0")
    with pytest.raises(ValueError, match="positive integer"):
        parallel_from_env()
