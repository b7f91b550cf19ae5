"""The LEDEX format: prompt shape, chat rendering, and the parser over malformed answers."""

import pytest

from ledex.engine.format import (Candidate, Mode, NoCandidate, Problem, build_messages, build_training_messages,
                                 clip_middle, first_sentence, format_response, parse_response, render_chat)
from ledex.engine.backends import CHATML_TEMPLATE

PROBLEM = Problem("Write add(a, b).", "def add(a, b):\n    return a - b", "AssertionError: assert -1 == 3")
GOOD = "It subtracts instead of adding.\n\n```python\ndef add(a, b):\n    return a + b\n```"


def test_messages_follow_the_ledex_shape():
    messages = build_messages(PROBLEM, Mode.EXPLAIN)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == PROBLEM.task
    assert "return a - b" in messages[2]["content"] and messages[2]["content"].startswith("```python")
    assert "AssertionError" in messages[3]["content"] and "explain" in messages[3]["content"].lower()
    assert "explain" not in build_messages(PROBLEM, Mode.REFINE)[3]["content"].lower()


def test_training_target_parses_back_to_the_same_candidate():
    messages = build_training_messages(PROBLEM, "It subtracts.", "def add(a, b):\n    return a + b")
    assert messages[:-1] == build_messages(PROBLEM)
    parsed = parse_response(messages[-1]["content"])
    assert parsed == Candidate("It subtracts.", "def add(a, b):\n    return a + b")
    assert format_response("ignored", "x = 1", Mode.REFINE) == "```python\nx = 1\n```"


def test_render_chat_uses_the_template_and_generation_prompt():
    text = render_chat(build_messages(PROBLEM), CHATML_TEMPLATE)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>") == 5
    assert not render_chat(build_messages(PROBLEM), CHATML_TEMPLATE, add_generation_prompt=False).endswith("assistant\n")


@pytest.mark.parametrize("answer, reason", [
    ("I think the bug is the minus sign.", "no code block"),
    ("", "no code block"),
    ("Fix:\n```python\ndef add(a, b):\n    return a +", "cut off"),
    ("```python\ndef add(a, b):\n    return a + b\n```\nand\n```python\nprint(add(1, 2))\n```", "2 code blocks"),
    ("Here:\n```python\ndef add(a, b)\n    return a + b\n```", "does not parse"),
    ("Empty:\n```python\n\n```", "empty"),
    ("```javascript\nfunction add(a, b) { return a + b }\n```", "no code block"),
])
def test_parser_rejects_junk_with_a_reason(answer, reason):
    parsed = parse_response(answer)
    assert isinstance(parsed, NoCandidate)
    assert reason in parsed.reason
    assert parsed.raw == answer


def test_parser_accepts_variants():
    assert parse_response(GOOD) == Candidate("It subtracts instead of adding.", "def add(a, b):\n    return a + b")
    bare = parse_response("```\ndef add(a, b):\n    return a + b\n```", Mode.REFINE)
    assert isinstance(bare, Candidate) and bare.explanation == ""
    after = parse_response("```py\ndef add(a, b):\n    return a + b\n```\nThe sign was wrong.")
    assert after.explanation == "The sign was wrong."
    # a shell/output block beside the code is not a second code block
    mixed = parse_response(GOOD + "\n```text\n3\n```")
    assert isinstance(mixed, Candidate)


def test_truncated_generation_is_never_a_candidate():
    parsed = parse_response(GOOD, truncated=True)
    assert isinstance(parsed, NoCandidate) and "cut off" in parsed.reason


def test_clip_middle_keeps_head_and_tail():
    text = "HEAD" + "x" * 5000 + "TAIL"
    clipped = clip_middle(text, 100)
    assert clipped.startswith("HEAD") and clipped.endswith("TAIL") and len(clipped) < 200


def test_first_sentence_is_a_short_menu_title():
    assert first_sentence("The loop stops one early. Use <=.") == "The loop stops one early."
    assert len(first_sentence("word " * 100)) <= 100


def test_answer_grammar_names_the_suspect_and_refuses_what_is_not_a_name():
    from ledex.engine.grammar import answer_grammar

    explain, refine = answer_grammar(Mode.EXPLAIN, "Inventory.restock"), answer_grammar(Mode.REFINE, "add")
    assert explain.startswith("root ::= explanation ") and 'name ::= "restock"' in explain
    assert refine.startswith('root ::= "```python') and "explanation" not in refine.splitlines()[0]
    assert "name ::= [A-Za-z_]" in answer_grammar(Mode.REFINE, None)  # any function name
    with pytest.raises(ValueError, match="not a Python function name"):
        answer_grammar(Mode.REFINE, 'x" | "anything')


def test_answer_end_is_the_first_closing_fence():
    from ledex.engine.format import answer_end

    text = "Why.\n```python\ndef f():\n    return 1\n```\nTrailing talk\n```python\nx\n```"
    assert text[:answer_end(text)].endswith("return 1\n```") and answer_end("Why.\n```python\ndef f(") is None


def test_close_answer_ends_a_cut_off_block_at_its_last_line_that_parses():
    from ledex.engine.format import close_answer

    cut = "Why.\n```python\ndef f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return (total +"
    closed = close_answer(cut)
    assert closed == "Why.\n```python\ndef f(xs):\n    total = 0\n    for x in xs:\n        total += x\n```"
    assert isinstance(parse_response(closed), Candidate)
    # a header whose block never started is dropped with it; nothing usable -> None
    assert close_answer("```python\ndef f(x):\n    y = 1\n    if y:\n") == "```python\ndef f(x):\n    y = 1\n```"
    assert close_answer("```python\ndef f(x):\n    return x +") is None
    # no whole line to keep: the open string and brackets of the last one are closed
    assert close_answer("```python\ndef f(x):\n    return g(x, [1, 'a") == "```python\ndef f(x):\n    return g(x, [1, 'a'])\n```"
    assert close_answer('```python\ndef f(x):\n    return x + """a\n    b\n').endswith('    b"""\n```')
    # a function that would be only its docstring is no answer (format.empty_function)
    assert close_answer('```python\ndef f(x):\n    """Doc\n    return x\n') is None
    assert close_answer('```python\ndef f(x):\n    """Doc."""\n    return (x') == '```python\ndef f(x):\n    """Doc."""\n    return (x)\n```'
    assert close_answer("Prose only, no block") is None
    assert close_answer(GOOD) is None  # already closed: nothing to do


def test_answer_grammar_spells_out_python_blocks():
    from ledex.engine.grammar import MAX_INDENT, answer_grammar

    grammar = answer_grammar(Mode.REFINE, "add")
    assert f"block{MAX_INDENT} ::=" in grammar and f"block{MAX_INDENT + 1}" not in grammar
    assert "header" not in grammar.split(f"block{MAX_INDENT} ::=")[1]  # the deepest block opens none


def test_a_function_with_only_its_docstring_is_no_candidate():
    text = 'It was wrong.\n```python\ndef f(x):\n    """Doc."""\n```'
    assert parse_response(text).reason == "the function has no statement besides its docstring"
    assert isinstance(parse_response(text.replace('"""Doc."""', '"""Doc."""\n    return 0')), Candidate)


def test_repeats_code_compares_the_parsed_functions():
    from ledex.engine.format import repeats_code

    wrong = "    def total(self, xs):\n        return sum(xs) - 1  # method source, indented"
    assert repeats_code("Same.\n```python\ndef total(self, xs):\n    return (sum(xs) - 1)\n```", wrong)
    assert repeats_code("```python\nimport math\n\ndef total(self, xs):\n    return sum(xs) - 1\n```", wrong)
    assert not repeats_code("```python\ndef total(self, xs):\n    return sum(xs)\n```", wrong)
    assert not repeats_code("```python\ndef total(self, xs):\n    return sum(xs) -\n```", wrong)  # does not parse
    assert not repeats_code("no block", wrong) and not repeats_code(GOOD, "")
    assert not repeats_code("```python\nx = 1\n```", "x = 1")  # no function: nothing to compare


def test_one_failure_is_one_prompt_whatever_the_memory_addresses_in_its_report():
    """pytest's assertion introspection prints object reprs with their addresses, which change
    from run to run: the same failure made another prompt, so the same seed gave other answers
    (fresh-user run X6, docopt-ng). The prompt, for serving and training alike, has none."""
    from ledex.engine.format import build_explain_diff_messages

    def problem(address: str) -> Problem:
        return Problem("Fix f.", "def f(s):\n    return s", "assert False\n +  where False = "
                       f"<built-in method startswith of str object at {address}>('Usage')")

    one, other = problem("0x7f6826153c60"), problem("0x7f20e1f53c60")
    assert build_messages(one) == build_messages(other) and "0x7f" not in str(build_messages(one))
    assert build_explain_diff_messages(one, "-x\n+y") == build_explain_diff_messages(other, "-x\n+y")
