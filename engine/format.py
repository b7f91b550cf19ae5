"""The one definition of the LEDEX prompt and response format.

Inference (`ledex fix`, `ledex-lsp`) and training (`ledex-train`) both build their
conversations here and render them with the model's own chat template, so the text a
model is trained on is byte-for-byte the text it is served with (train/serve skew is the
classic bug of this kind of system).

Conversation shape, as in the LEDEX paper (see ../shared/ledex-method.md):

    user:       the task (what the code must do: problem text or the failing test)
    assistant:  the wrong code                       (no loss on it in training)
    user:       execution feedback + instruction ("explain, then refine" or "refine")
    assistant:  explanation in prose, then the refined code in ONE ```python block

The answer shape is also written down as a GBNF grammar (engine/grammar.py,
`answer_grammar`), which the llama.cpp backend (and servers that take one) use to constrain
sampling, so that every answer the model writes has that shape; `parse_response` stays the
check.

Try it:  python -m ledex.engine.format
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from enum import Enum

from jinja2.sandbox import ImmutableSandboxedEnvironment


class Mode(str, Enum):
    """Prompt mode: EXPLAIN (explain, then refine: LEDEX) or REFINE (the paper's baseline)."""
    EXPLAIN = "explain"  # explain why the code is wrong, then refine it (LEDEX)
    REFINE = "refine"  # refine directly (the paper's baseline)


SYSTEM_PROMPT = "You are an expert Python programmer who debugs code."

INSTRUCTIONS = {
    Mode.EXPLAIN: (
        "The code above is wrong. First explain in a few sentences why it is wrong. "
        "Then write the complete corrected code in a single ```python code block."
    ),
    Mode.REFINE: "The code above is wrong. Write the complete corrected code in a single ```python code block.",
}

# Feedback longer than this is cut from the middle: tracebacks can be huge and the
# default model has a small context; the head (test) and tail (error) matter most.
MAX_FEEDBACK_CHARS = 1500


@dataclass(frozen=True)
class Problem:
    """One self-debugging problem: what the code must do, the wrong code, what went wrong."""

    task: str
    wrong_code: str
    feedback: str


@dataclass(frozen=True)
class Candidate:
    """A usable model response: the explanation (may be empty in refine mode) and the code."""

    explanation: str
    code: str


@dataclass(frozen=True)
class NoCandidate:
    """A response that cannot be used, with the reason a person can read."""

    reason: str
    raw: str


def fenced(code: str) -> str:
    """`code` in a ```python fence, trailing whitespace stripped."""
    return f"```python\n{code.rstrip()}\n```"


def clip_middle(text: str, limit: int = MAX_FEEDBACK_CHARS) -> str:
    """`text` if at most `limit` characters, else its head and tail with a note of how many
    characters were cut from the middle."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"


_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{4,}\b")


def without_addresses(text: str) -> str:
    """`text` with the memory addresses of object reprs ("<... object at 0x7f6826153c60>", as
    pytest's assertion introspection prints them) written as "at 0x…": they change from run to
    run, and made the same failure's prompt, and so the model's answers for the same seed, differ
    (fresh-user run X6, docopt-ng).

    >>> without_addresses("where False = <built-in method startswith of str object at 0x7f6826153c60>('x')")
    "where False = <built-in method startswith of str object at 0x…>('x')"
    """
    return _ADDRESS.sub("at 0x…", text)


def _feedback(problem: Problem) -> str:
    return clip_middle(without_addresses(problem.feedback.strip()))


def build_messages(problem: Problem, mode: Mode = Mode.EXPLAIN) -> list[dict[str, str]]:
    """The conversation up to (not including) the model's answer; the feedback without memory
    addresses (without_addresses), so one failure is one prompt whatever the run."""
    feedback = _feedback(problem)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem.task.strip()},
        {"role": "assistant", "content": fenced(problem.wrong_code)},
        {"role": "user", "content": f"Execution feedback:\n{feedback}\n\n{INSTRUCTIONS[Mode(mode)]}"},
    ]


def format_response(explanation: str, code: str, mode: Mode = Mode.EXPLAIN) -> str:
    """The assistant answer a trained model should produce (the SFT target)."""
    if Mode(mode) is Mode.REFINE or not explanation.strip():
        return fenced(code)
    return f"{explanation.strip()}\n\n{fenced(code)}"


def build_training_messages(problem: Problem, explanation: str, code: str, mode: Mode = Mode.EXPLAIN) -> list[dict[str, str]]:
    """Full conversation including the target answer (training uses only its last turn as loss)."""
    answer = {"role": "assistant", "content": format_response(explanation, code, mode)}
    return build_messages(problem, mode) + [answer]


# --- rendering with the model's chat template --------------------------------------------

_JINJA = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
_JINJA.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))


def render_chat(messages: list[dict[str, str]], chat_template: str, *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "") -> str:
    """Render messages with a Hugging Face-style Jinja chat template (the one in the GGUF).

    >>> tpl = "{% for m in messages %}<{{m.role}}>{{m.content}}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    >>> render_chat([{"role": "user", "content": "hi"}], tpl)
    '<user>hi</s><assistant>'
    """
    template = _JINJA.from_string(chat_template)
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           bos_token=bos_token, eos_token=eos_token)


# --- the answer's fences ------------------------------------------------------------------

# What a server without grammar support is asked to stop at: the end of a closing fence.
# (The opening fence is followed by "python", so this does not cut it.)
ANSWER_STOP = "\n```\n"
CODE_FENCE = "```python\n"  # how the grammar (engine/grammar.py) opens the code block


def answer_end(text: str) -> int | None:
    """Index just past the closing fence of the first complete code block, or None.

    Where a grammar-constrained answer is complete (generation stops there).

    >>> answer_end("Why.\\n```python\\ndef f():\\n    pass\\n```\\nmore")
    36
    """
    blocks, _ = _blocks(text)
    if not blocks:
        return None
    closing = _FENCE.search(text, blocks[0][2])
    return closing.end() if closing else None


def close_answer(text: str) -> str | None:
    """An answer cut off inside its code block (a token budget ran out), closed: the code up to
    its last line boundary where it parses and defines a function with a statement besides its
    docstring (`empty_function`), or failing that the whole code with its open string and
    brackets closed (`_closers`), then the closing fence. None when the text has no open code
    block or neither does (say, only the `def` line, or only the docstring). What
    the model wrote past the kept line is dropped.

    >>> print(close_answer("Why.\\n```python\\ndef f(x):\\n    y = x\\n    return (y +"))
    Why.
    ```python
    def f(x):
        y = x
    ```
    >>> close_answer("```python\\ndef f(x):\\n    return max(x, (1, 2")
    '```python\\ndef f(x):\\n    return max(x, (1, 2))\\n```'
    """
    opening = text.find(CODE_FENCE)
    if opening < 0 or answer_end(text) is not None:
        return None
    start = opening + len(CODE_FENCE)
    lines = text[start:].split("\n")
    whole = text[start:].rstrip()
    for code in ["\n".join(lines[:n]) for n in range(len(lines) - 1, 0, -1)] + [whole + _closers(whole)]:
        if _defines_function(code) and not empty_function(code):
            return f"{text[:start]}{code.rstrip()}\n```"
    return None


def _defines_function(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in tree.body)


def open_string(code: str) -> str:
    """The quote of the string left open at the end of `code`: '' when none, else one or three
    quote characters.

    >>> open_string("def f():\\n    \'\'\'Doc\\n    more"), open_string("x = 'a'")
    ("\'\'\'", '')
    """
    closers = _closers(code)
    return closers[:len(closers) - len(closers.lstrip("\"'"))]


def _closers(code: str) -> str:
    """What closes the string and brackets left open at the end of `code` (a quote, then
    closing brackets innermost first); comments and escapes are skipped as Python's tokenizer
    does. '' when nothing is open."""
    stack, quote, i = [], "", 0
    while i < len(code):
        if quote:
            if code[i] == "\\":
                i += 1
            elif code.startswith(quote, i):
                i, quote = i + len(quote) - 1, ""
            elif code[i] == "\n" and len(quote) == 1:
                quote = ""  # an unclosed one-line string: Python rejects it anyway
        elif code[i] == "#":
            i = code.find("\n", i) if "\n" in code[i:] else len(code)
        elif code[i] in "\"'":
            quote = code[i] * 3 if code.startswith(code[i] * 3, i) else code[i]
            i += len(quote) - 1
        elif code[i] in "([{":
            stack.append(")]}"["([{".index(code[i])])
        elif code[i] in ")]}" and stack:
            stack.pop()
        i += 1
    return quote + "".join(reversed(stack))


# --- parsing the model's answer ----------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$", re.MULTILINE)
_CODE_LANGS = {"", "python", "py", "python3"}


def _blocks(text: str) -> tuple[list[tuple[int, int, int, str]], bool]:
    """Fenced blocks as (start_of_opening_fence, body_start, body_end, lang); True if one is unclosed."""
    fences = list(_FENCE.finditer(text))
    blocks = []
    for i in range(0, len(fences) - 1, 2):
        opening, closing = fences[i], fences[i + 1]
        blocks.append((opening.start(), opening.end() + 1, closing.start(), opening.group(1).lower()))
    return blocks, len(fences) % 2 == 1


def parse_response(text: str, mode: Mode = Mode.EXPLAIN, *, truncated: bool = False) -> Candidate | NoCandidate:
    """Explanation + code from a model answer, or a NoCandidate that says why not.

    >>> parse_response("It adds 1 too many.\\n```python\\ndef f(x):\\n    return x\\n```")
    Candidate(explanation='It adds 1 too many.', code='def f(x):\\n    return x')
    >>> parse_response("no code here").reason
    'no code block in the answer'
    """
    blocks, unclosed = _blocks(text)
    code_blocks = [b for b in blocks if b[3] in _CODE_LANGS]
    if truncated or (unclosed and not code_blocks):
        return NoCandidate("the answer was cut off before the code block ended", text)
    if not code_blocks:
        return NoCandidate("no code block in the answer", text)
    if len(code_blocks) > 1:
        return NoCandidate(f"{len(code_blocks)} code blocks in the answer (expected exactly one)", text)
    start, body_start, body_end, _ = code_blocks[0]
    code = text[body_start:body_end].rstrip()
    if not code.strip():
        return NoCandidate("the code block is empty", text)
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return NoCandidate(f"the code does not parse: {exc.msg} (line {exc.lineno})", text)
    if empty_function(code):
        return NoCandidate("the function has no statement besides its docstring", text)
    explanation = text[:start].strip()
    if Mode(mode) is Mode.EXPLAIN and not explanation:
        explanation = text[body_end:].split("```", 1)[-1].strip()
    return Candidate(explanation=explanation, code=code)


def empty_function(code: str) -> bool:
    """True when the code's first function has no statement but strings and `pass`: a small
    model's answer that kept the docstring and dropped the body (15 of 80 explain answers on
    HumanEvalFix/0-39, docs/benchmarks.md, generation session 5) is never a fix, and verifying
    it costs a sandbox run. False when the code does not parse or defines no function.

    >>> empty_function("def f(x):\\n    'Doc.'\\n    pass"), empty_function("def f(x):\\n    return x")
    (True, False)
    """
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return False
    function = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if function is None:
        return False
    return all(isinstance(n, ast.Pass) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                            and isinstance(n.value.value, str)) for n in function.body)


def repeats_code(text: str, wrong_code: str) -> bool:
    """True when the answer's first code block defines the same functions as `wrong_code`:
    equal once parsed (formatting, comments and import lines aside), the answer that patching
    refuses as "the same code as before". False when either does not parse.

    >>> repeats_code("```python\\ndef f(x):\\n    return x  # same\\n```", "def f(x):\\n    return (x)")
    True
    """
    blocks, _ = _blocks(text)
    if not blocks or not wrong_code.strip():
        return False
    functions = [_function_dump(text[blocks[0][1]:blocks[0][2]]), _function_dump(wrong_code)]
    return bool(functions[0]) and functions[0] == functions[1]


def _function_dump(code: str) -> str | None:
    """ast.dump of the function definitions in `code` (dedented), None if it does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return None
    return "\n".join(ast.dump(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def first_sentence(explanation: str, limit: int = 100) -> str:
    """A one-line summary for menus ("Fix: <this>").

    >>> first_sentence("The loop stops one early. It should use <=.")
    'The loop stops one early.'
    """
    flat = " ".join(explanation.split())
    match = re.match(r"(.+?[.!?])(\s|$)", flat)
    line = match.group(1) if match else flat
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# --- explaining a fix found by search (issue 20) --------------------------------------------------

EXPLAIN_DIFF_INSTRUCTION = ("The code above is wrong. This change fixes it:\n{diff}\n"
                            "Explain in a few sentences why the code was wrong and why the change fixes it. "
                            "Do not write code.")


def build_explain_diff_messages(problem: Problem, diff: str) -> list[dict[str, str]]:
    """The LEDEX conversation asking the model to explain a known fix (a search fix's diff): the
    same first turns as build_messages, the last one shows the diff instead of asking for code."""
    messages = build_messages(problem, Mode.EXPLAIN)
    feedback = _feedback(problem)
    shown = f"```diff\n{diff.rstrip()}\n```"
    messages[-1] = {"role": "user",
                    "content": f"Execution feedback:\n{feedback}\n\n{EXPLAIN_DIFF_INSTRUCTION.format(diff=shown)}"}
    return messages


if __name__ == "__main__":
    demo = Problem(task="Write add(a, b) returning a + b.", wrong_code="def add(a, b):\n    return a - b",
                   feedback="assert add(1, 2) == 3\nAssertionError: assert -1 == 3")
    for message in build_messages(demo):
        print(f"--- {message['role']}\n{message['content']}")
