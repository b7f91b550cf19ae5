"""The LEDEX answer shape as a GBNF grammar (llama.cpp's grammar format): the other half of the
one definition of the format (engine/format.py builds the prompts and fences and parses answers).

Serving (the llama.cpp backend, servers that take a grammar) and training (collect, eval, the
gate) constrain sampling with `answer_grammar`, so every answer has the shape
`format.parse_response` checks: explain mode a short prose explanation then one ```python
block, refine mode the block only; the block holds one function named after the suspect.

Try it:  python -m ledex.engine.grammar
"""

from __future__ import annotations

import re

from ledex.engine.format import Mode

# Longest explanation the grammar lets through, in characters (~120 tokens): "a few
# sentences". Without a bound a small model can ramble until max_tokens and never reach code.
MAX_EXPLANATION_CHARS = 480
MAX_IMPORT_LINES = 4  # import lines allowed before the definition (patching adds missing imports)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_GAP_LINES = 4
MAX_INDENT = 32  # deepest indentation (spaces) the grammar spells out; deeper code is refused
# Bounds on the signature, so that it ends: a small model's signature can run on until the budget
# (a return annotation `i.j.i.j...`, a default value that never closes), and an answer cut off in
# its signature has nothing to close. Generous for real code (HumanEvalFix's canonical functions
# have at most 3 parameters); the grammar refuses a longer signature and the model must close it.
MAX_PARAMS = 32  # parameters in one signature
MAX_VALUE_ATOMS = 160  # characters, strings or bracketed groups in one annotation or default value
MAX_DOTS = 8  # parts of a dotted name (an import, a return annotation)
MAX_IDENTIFIER_CHARS = 64
MAX_INDENT_STEP = 8  # a block may be indented 1-8 spaces deeper than its header (Python allows any)

# The code block, close to Python's own lexical rules (docs.python.org/3/reference/lexical_analysis):
# a line is atoms (one plain character, a string, a bracketed group), strings are closed on their
# line (triple-quoted ones may span lines), brackets are balanced (a group may span lines, as in
# Python), a line ending in ":" is a header and must be followed by a block indented deeper
# (spaces only), any other line by one at its own indentation or at an enclosing block's. No backtick outside the fences, so the
# closing fence is the only place "```" can appear. Between lines, at most MAX_GAP_LINES blank or
# comment lines, and a comment is indented: what a small model writes after its function (tests,
# usage notes) cannot pile up outside it until the token budget runs out. A line is a sequence of
# words (names, numbers), keywords, strings, groups and operators in which a word or a string is
# never followed by a word after spaces (Python has no `name name` or `"text" name`: that is prose
# written as code, the main syntax error left after the first lexical grammar), and a ":" inside
# parentheses belongs to a lambda or `:=` (a header's ":" written before its call is closed, as in
# `for k in range(2, f(x) + 1:`, would otherwise open a group that swallows the rest of the answer).
# What the grammar cannot see (operators in a wrong order, a misplaced keyword) is left to the parser.
_GRAMMAR_RULES = r"""
code        ::= import-line{0,%(imports)d} decorator* "async "? "def " name "(" params ")" returns? ":" tail "\n" body gap "```"
params      ::= " "* (param (" "* "," " "* param){0,%(params)d} (" "* ",")? " "*)?
param       ::= ("*" | "**")? ident (" "? ":" " "? value)? (" "? "=" " "? value)? | "*" | "/"
ident       ::= [A-Za-z_] [A-Za-z0-9_]{0,%(ident)d}
value       ::= (value-char | string | group){1,%(value)d}
value-char  ::= [^(),=\n`\[\]{}"'#]
returns     ::= " "? "->" " "? annotation " "?
annotation  ::= (dotted ("[" inner* "]")? | string) (" "? "|" " "? annotation)?
import-line ::= "import " dotted alias? ("," " "? dotted alias?)* tail "\n"
dotted      ::= ident ("." ident){0,%(dots)d}
alias       ::= " as " ident
decorator   ::= "@" [^\n`]* "\n"
tail        ::= [ \t]* comment?
gap         ::= ([ \t]* "\n" | [ \t]+ comment "\n"){0,%(gap)d}
comment     ::= "#" [^\n`]*
simple      ::= item-s
header      ::= item-h | "async "? "def " ident "(" params ")" returns? ":" tail "\n"
word        ::= [A-Za-z0-9_]+
keyword     ::= "and" | "as" | "assert" | "async" | "await" | "case" | "class" | "del" | "elif" | "else" | "except" | "for" | "from" | "global" | "if" | "import" | "in" | "is" | "lambda" | "match" | "nonlocal" | "not" | "or" | "raise" | "return" | "while" | "with" | "yield"
op          ::= [^A-Za-z0-9_ \t\n"'#()\[\]{}`:\\] | "\\\n"
item-s      ::= word after-w-s | keyword after-k-s | string after-s-s | group after-g-s | op after-p-s | ":" after-c-s
after-w-s   ::= [ \t]* (op after-p-s | group after-g-s | ":" after-c-s) | string after-s-s | [ \t]+ keyword after-k-s | tail "\n"
after-k-s   ::= [ \t]* (op after-p-s | group after-g-s | string after-s-s | ":" after-c-s) | [ \t]+ (word after-w-s | keyword after-k-s) | tail "\n"
after-s-s   ::= [ \t]* (op after-p-s | group after-g-s | string after-s-s | ":" after-c-s) | [ \t]+ keyword after-k-s | tail "\n"
after-g-s   ::= [ \t]* (op after-p-s | group after-g-s | ":" after-c-s) | [ \t]+ keyword after-k-s | tail "\n"
after-p-s   ::= [ \t]* item-s | tail "\n"
after-c-s   ::= [ \t]* item-s
item-h      ::= word after-w-h | keyword after-k-h | string after-s-h | group after-g-h | op after-p-h | ":" after-c-h
after-w-h   ::= [ \t]* (op after-p-h | group after-g-h | ":" after-c-h) | string after-s-h | [ \t]+ keyword after-k-h
after-k-h   ::= [ \t]* (op after-p-h | group after-g-h | string after-s-h | ":" after-c-h) | [ \t]+ (word after-w-h | keyword after-k-h)
after-s-h   ::= [ \t]* (op after-p-h | group after-g-h | string after-s-h | ":" after-c-h) | [ \t]+ keyword after-k-h
after-g-h   ::= [ \t]* (op after-p-h | group after-g-h | ":" after-c-h) | [ \t]+ keyword after-k-h
after-p-h   ::= [ \t]* item-h
after-c-h   ::= [ \t]* item-h | tail "\n"
group       ::= "(" paren* ")" | "[" inner* "]" | "{" inner* "}"
paren       ::= [^"'#()\[\]{}`:] | string | group | comment | ":=" | "lambda" [^:"'#()\[\]{}`\n]* ":"
inner       ::= [^"'#()\[\]{}`] | string | group | comment
string      ::= "\"\"\"" tq-dq "\"\"\"" | "'''" tq-sq "'''" | "\"" dq-char* "\"" | "'" sq-char* "'"
dq-char     ::= [^"\\\n`] | "\\" [^\n`] | "`"
sq-char     ::= [^'\\\n`] | "\\" [^\n`] | "`"
tq-dq       ::= ([^"`\\] | "\\" [^`] | "\"" [^"`\\] | "\"\"" [^"`\\] | tick)*
tq-sq       ::= ([^'`\\] | "\\" [^`] | "'" [^'`\\] | "''" [^'`\\] | tick)*
tick        ::= "`" [^`"'\\] | "``" [^`"'\\]
explanation ::= [^`\n\t ] prose-char{0,%(prose)d} "\n"
prose-char  ::= [^`] | "`" [^`] | "``" [^`]
"""


def _block_rules() -> str:
    """body, then block<n> for n = 1..MAX_INDENT: lines indented exactly n spaces, where a
    header opens a block 1..MAX_INDENT_STEP spaces deeper. The rule for a block depends on its
    indentation only; the enclosing blocks are the grammar's stack, so a dedent can only return
    to a level in use, as Python's tokenizer requires. `def` is written only by the header
    rule (`def name(params):`), never as a keyword of a generic line: `def test_solution.py(*args):`
    was. An answer that is only the docstring is left to the parser (`empty_function`): a
    grammar forcing a statement after the docstring turned every such answer into a runaway
    (docs/benchmarks.md, generation session 6)."""
    def deeper(n: int) -> str:
        """Grammar alternatives for the blocks 1..MAX_INDENT_STEP spaces deeper than n (up to MAX_INDENT)."""
        return " | ".join(f"block{m}" for m in range(n + 1, min(n + MAX_INDENT_STEP, MAX_INDENT) + 1))
    rules = [f"body ::= {deeper(0)}"]
    for n in range(1, MAX_INDENT + 1):
        opens = f" | header ({deeper(n)})" if n < MAX_INDENT else ""
        rules.append(f'block{n} ::= (gap "{" " * n}" (simple{opens}))+')
    return "\n".join(rules)


def answer_grammar(mode: Mode = Mode.EXPLAIN, suspect_name: str | None = None, *,
                   max_explanation_chars: int = MAX_EXPLANATION_CHARS) -> str:
    """The LEDEX answer shape as a GBNF grammar (llama.cpp's grammar format, root rule `root`).

    Explain mode: a prose explanation (1-max_explanation_chars characters, no run of three
    backticks, so no fence), a newline, then exactly one ```python block; refine mode: the
    block only. The block's code starts with at most MAX_IMPORT_LINES import lines, then
    decorators, then `def`/`async def` with the suspect's name (the last part of a qualname:
    a method is written as a plain function, as `engine.patching` expects) and a one-line
    signature (parameters as Python writes them: names, `*`/`**`, annotations, defaults; at
    most MAX_PARAMS of them, so that a signature ends) ending in `:`; then the function's body as Python
    blocks (see _GRAMMAR_RULES: closed strings, balanced brackets, a header opens a deeper
    block, a dedent returns to a level in use), so the block holds that one function and
    its indentation and brackets are right. All 164 HumanEvalFix canonical functions pass it
    (tests/test_generation.py checks valid and broken samples). The grammar ends at the
    closing fence: a sampler that honours it stops there. `suspect_name` None allows any name.
    Raises ValueError for a name that is not a Python identifier.

    >>> print(answer_grammar(Mode.REFINE, "Inventory.restock").splitlines()[:2])
    ['root ::= "```python\\\\n" code "```"', 'name ::= "restock"']
    """
    name = (suspect_name or "").rsplit(".", 1)[-1]
    if suspect_name and not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a Python function name: {suspect_name!r}")
    block = '"```python\\n" code "```"'
    root = f"root ::= explanation {block}" if Mode(mode) is Mode.EXPLAIN else f"root ::= {block}"
    name_rule = f'name ::= "{name}"' if name else "name ::= [A-Za-z_] [A-Za-z0-9_]*"
    rules = _GRAMMAR_RULES % {"imports": MAX_IMPORT_LINES, "gap": MAX_GAP_LINES, "prose": max(0, max_explanation_chars - 1),
                              "params": MAX_PARAMS - 1, "value": MAX_VALUE_ATOMS, "dots": MAX_DOTS - 1,
                              "ident": MAX_IDENTIFIER_CHARS - 1}
    return f"{root}\n{name_rule}{rules}{_block_rules()}\n"


if __name__ == "__main__":
    print(answer_grammar(Mode.EXPLAIN, "restock"))
