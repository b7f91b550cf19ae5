"""Explanations grounded in the failure, as LEDEX's teacher writes them (issue 16 item 4).

For a planted bug with a known fix, `explain` writes a few sentences that a person debugging
the failure would write: where the fault is (the line, quoted), what the test expected and what
the code produced (values quoted from pytest's actual failure output), why that line produces
it, and what to write instead. Wording varies by seed (several phrasings for each part), and it
never speaks of how the bug was made: only of the code, the test and the output.

The text fits the served answer grammar (grammar.answer_grammar): at most
grammar.MAX_EXPLANATION_CHARS characters, no run of three backticks, not starting with a
backtick or a space.

    python -m ledex.training.explain      # a few explanations of one example failure
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ledex.engine.grammar import MAX_EXPLANATION_CHARS

VALUE_CHARS = 60  # longest value quoted from the failure output (longer ones are cut, with "…")
_COMPARE = re.compile(r"\s(==|!=|<=|>=|<|>|not in|in|is not|is)\s")
_WHERE = re.compile(r"^\s*\+\s+where (?P<got>.+?) = (?P<call>.+)$", re.MULTILINE)
_EXCEPTION = re.compile(r"^(?P<error>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Observation:
    """What the failing test saw: kind "compare" (got vs want), "truth" (a falsy/truthy
    result), "exception" (error line) or "stopped" (killed: timeout...)."""

    kind: str
    got: str = ""
    want: str = ""
    call: str = ""
    error: str = ""
    op: str = "=="


def _split_top(text: str) -> tuple[str, str, str] | None:
    """(left, op, right) of `left op right` at bracket depth 0 outside quotes."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch == " ":
            match = _COMPARE.match(text, i)
            if match:
                return text[:i].strip(), match.group(1), text[match.end():].strip()
    return None


def observe(message: str, details: str) -> Observation:
    """Read pytest's failure output (the one-line message and the traceback text)."""
    where = _WHERE.search(details)
    assertion = re.search(r"(?:AssertionError: )?assert (?P<expr>.+)$", message) or \
        re.search(r"^(?:E\s+)?AssertionError: assert (?P<expr>.+)$", details, re.MULTILINE)
    if assertion:
        expr = assertion.group("expr").strip()
        parts = _split_top(expr)
        if parts:
            left, op, right = parts
            got, want = (right, left) if where and where["got"].strip() == right and where["got"].strip() != left \
                else (left, right)
            return Observation("compare", got, want, _call(where), op=op)
        if where:
            return Observation("truth", where["got"].strip(), "", _call(where),
                               op="not" if expr.startswith("not ") else "")
    errors = [m["error"].strip() for m in _EXCEPTION.finditer(details) if not m["error"].startswith("AssertionError")]
    if errors:
        return Observation("exception", error=errors[-1])
    if re.search(r"timeout|timed out|was stopped", message + details, re.IGNORECASE):
        return Observation("stopped", error=message.strip())
    return Observation("other", error=(message.strip() or details.strip().splitlines()[-1:] or [""])[0])


def _call(where) -> str:
    """The call pytest shows under `+ where`, a function's repr written as its name."""
    return re.sub(r"<(?:bound method|function) ([\w.]+)(?: of <.*?>)? at 0x[0-9a-f]+>", r"\1",
                  where["call"].strip()) if where else ""


def _clip(text: str, limit: int = VALUE_CHARS) -> str:
    flat = re.sub(r"\s*\n\s*", " ", text.strip()).replace("```", "'''")  # a quote stays exact within a line
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _code(text: str, limit: int = VALUE_CHARS) -> str:
    return "`" + _clip(text, limit).replace("`", "'") + "`"


@dataclass(frozen=True)
class Fault:
    """The known fault: where (file line, its text in the wrong code) and the right text."""

    name: str  # function or method name as the prompt shows it
    line: int  # 1-based line in the file
    line_text: str  # that line of the wrong code
    wrong: str  # the wrong fragment ("" when something is missing)
    right: str  # what it should be ("" when something must go)
    operator: str  # engine.operators.OPERATORS (chooses the "why"; never named in the text)


_WHERE_TEMPLATES = (
    "The bug is on line {line} of {name}: {text}.",
    "Look at line {line} of {name}, {text}.",
    "In {name}, line {line} reads {text}, and that is where it goes wrong.",
    "The function {name} goes wrong at line {line}: {text}.",
)
# ... when the fault is a statement that is not there (its line is blank in the wrong code): a
# "where" quoting the blank line read "line 2333 reads ``" (pydash records, session 13)
_MISSING_TEMPLATES = (
    "The bug is in {name}: a statement is missing at line {line}.",
    "In {name}, line {line} is where something that should run is missing.",
    "The function {name} skips a step at line {line}.",
)
_SAW = {
    "compare": ("The test expects {want} but gets {got}.",
                "The call {call} returns {got}, while the test wants {want}.",
                "The assertion compares {got} with the expected {want}.",
                "Expected {want}, got {got}."),
    "truth": ("The call {call} returns {got}, but the test needs it to be {truth}.",
              "The test expects a {truth} result and gets {got} from {call}.",
              "The result of {call} should be {truth}; it is {got}."),
    "exception": ("Instead of a result, the call raises {error}.",
                  "The test never gets a value: {error} is raised.",
                  "Running the test raises {error}."),
    "stopped": ("The test never finishes: it was stopped ({error}).",
                "The call does not return in time ({error})."),
    "other": ("The test fails with {error}.", "The failure says {error}."),
}
_WHY = {
    "compare": ("the comparison is the wrong one, so the condition decides the wrong way",
                "the condition lets the wrong values through"),
    "binop": ("the arithmetic uses the wrong operator and computes another value",
              "the expression combines its operands the wrong way"),
    "constant": ("the constant is off", "the value written there is not the right one"),
    "bound": ("the bound is off by one", "it stops one step too early or too late"),
    "boolop": ("the conditions are joined with the wrong boolean operator",
               "the two conditions must hold together in the other way"),
    "negation": ("the condition is inverted", "the test of the condition is the opposite of what is needed"),
    "name": ("it reads the wrong variable", "another variable is used where this one belongs"),
    "method": ("it calls the wrong function", "the method called is not the one that does this job"),
    "swap": ("the operands are in the wrong order", "the arguments are swapped"),
    "assign": ("the variable is assigned where it must be updated, or updated where it must be assigned",
               "the running value is not kept the way the loop needs"),
    "return": ("the value is not returned the way the caller needs", "the return is wrong here"),
    "add_return": ("it returns a value it should not", "the function stops with the wrong return"),
    "drop_statement": ("a step the function needs is missing", "a statement is missing here"),
    "drop_condition": ("part of the condition is missing", "the condition checks too little"),
    "drop_term": ("a term of the expression is missing", "the value is off by the term that belongs there"),
}
_CHANGE = (
    "It should be {right} instead of {wrong}.",
    "Writing {right} instead of {wrong} fixes it.",
    "The fix is to write {right} there, not {wrong}.",
    "Replace {wrong} with {right}.",
)
_ADD = ("It needs {right} there.", "Adding {right} there fixes it.", "What is missing is {right}.")
_REMOVE = ("The code {wrong} should not be there.", "Removing {wrong} fixes it.")


def _saw(obs: Observation, test: str, rng: random.Random) -> str:
    values = {"want": _code(obs.want), "got": _code(obs.got), "call": _code(obs.call or test, 50),
              "error": _code(obs.error, 90), "truth": "false" if obs.op == "not" else "true"}
    choices = [t for t in _SAW[obs.kind] if "{call}" not in t or obs.call]
    return rng.choice(choices).format(**values)


def _change(fault: Fault, rng: random.Random) -> str:
    wrong, right = _code(fault.wrong.strip(), 70), _code(fault.right.strip(), 70)
    if not fault.wrong.strip():
        return rng.choice(_ADD).format(right=right)
    if not fault.right.strip():
        return rng.choice(_REMOVE).format(wrong=wrong)
    return rng.choice(_CHANGE).format(wrong=wrong, right=right)


def explain(fault: Fault, obs: Observation, test: str, seed: int) -> str:
    """A few sentences (<= MAX_EXPLANATION_CHARS, no fence) in a seed-chosen wording."""
    rng = random.Random(seed)
    name = _code(fault.name, 40)
    templates = _WHERE_TEMPLATES if fault.line_text.strip() else _MISSING_TEMPLATES
    where = rng.choice(templates).format(line=fault.line, name=name, text=_code(fault.line_text.strip(), 70))
    why = rng.choice(_WHY.get(fault.operator, ("this line is wrong",)))
    because = rng.choice(("This happens because {why}.", "The reason: {why}.", "That is because {why}.")).format(why=why)
    parts = [where, _saw(obs, test, rng), because, _change(fault, rng)]
    if rng.random() < 0.5:
        parts[0], parts[1] = parts[1], parts[0]  # symptom first, then the place
    text = " ".join(p.strip() for p in parts)
    while len(text) > MAX_EXPLANATION_CHARS and len(parts) > 2:
        parts.pop(2)  # keep place, symptom and (when it fits) the change
        text = " ".join(parts)
    return text[:MAX_EXPLANATION_CHARS]


if __name__ == "__main__":
    observed = observe("assert -1 == 3", "AssertionError: assert -1 == 3\n +  where -1 = add(1, 2)")
    bug = Fault("add", 2, "    return a - b", "a - b", "a + b", "binop")
    for n in range(4):
        print(explain(bug, observed, "test_add", n))
