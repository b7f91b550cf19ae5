"""The model's explanation of a verified search fix, kept only where it can be trusted.

A search fix is verified; the model is then asked to explain its diff
(`format.build_explain_diff_messages`), and what it says is shown after the edit in words
(`fixer.FixEngine._explain`). A 135M model explaining someone else's diff often invents values
or babbles; every fresh-user run found such text next to a right fix (X3: "expected to return
196, but it returned 198" for roman numerals; X4: "it returns the suffix that should be added ...
However, it returns the suffix that should be added"; "the `test_inflection.py` is set to test
the `test_inflection.py` file"). Next to a verified fix, such text reads as fact, so it is
dropped: sentences quoting numbers the model never saw, then the whole explanation when it
repeats itself, contrasts code with itself (X6: "`len(c) == 1` instead of the actual
`len(c) == 1`") or names nothing the edit changed.

Try it:  python -m doctest -v engine/explanations.py
"""

from __future__ import annotations

import keyword
import re

def parse_explanation(text: str, limit: int = 600) -> str:
    """The prose of an explain-this-diff answer: code blocks dropped, whitespace flattened, clipped."""
    prose = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)
    flat = " ".join(prose.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")  # 196, 3.5; not x2 or 1e3
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def grounded(explanation: str, context: str) -> str:
    """`explanation` without the sentences that quote a number found nowhere in `context` (the
    conversation the model saw): a small model explaining a diff invents values ("expected to
    return 196, but it returned 198" for roman numerals, fresh-user run X3), and next to a
    verified fix an invented value reads as a fact. Sentences without numbers stay.

    >>> grounded("It returned 198 instead of 196. The loop stops early.", "assert f(4) == 'IV'")
    'The loop stops early.'
    >>> grounded("f(4) gave 'IIII', not 'IV'.", "assert f(4) == 'IV'")
    "f(4) gave 'IIII', not 'IV'."
    """
    seen = set(_NUMBER.findall(context))
    kept = [s for s in _SENTENCE.split(explanation.strip()) if set(_NUMBER.findall(s)) <= seen]
    return " ".join(kept)


_QUOTED = re.compile(r"`([^`\n]+)`")
_CODE_WORD = re.compile(r"\b[A-Za-z_]\w*_\w*\b|\b[a-z]+[A-Z]\w*\b")  # snake_case, camelCase


def names_known(explanation: str, context: str) -> str:
    """`explanation` without the sentences naming code that is nowhere in `context` (a quoted
    name, a snake_case or camelCase word), and without a last sentence cut off unfinished: next
    to a verified search fix the model wrote of `user_data`, which hyperlink has not, and stopped
    mid-sentence (fresh-user run X11 F8).

    >>> names_known("The `user_data` list is too long. So `userinfo` splits on `:`. The `**kw` syntax is used to", "userinfo.split(':')")
    'So `userinfo` splits on `:`.'
    """
    words = set(_WORD.findall(context))
    sentences = _SENTENCE.split(explanation.strip())
    if sentences and not re.search(r"[.!?:)`'\"]$", sentences[-1]):
        sentences = sentences[:-1]

    def named(sentence: str) -> set[str]:
        quoted = {w for q in _QUOTED.findall(sentence) for w in _WORD.findall(q)}
        return quoted | set(_CODE_WORD.findall(_QUOTED.sub("", sentence)))

    return " ".join(s for s in sentences if named(s) <= words)


_WORD = re.compile(r"[A-Za-z_]\w+")
_REPEAT_WORDS = 5  # a run of this many words said twice is babble, not emphasis


def repetitive(text: str, n: int = _REPEAT_WORDS) -> bool:
    """Whether some run of `n` words (case folded) occurs twice in `text`.

    >>> repetitive("It returns the suffix that should be added. However, it returns the suffix that should be added")
    True
    >>> repetitive("The floor division drops the hundreds; the remainder keeps the last two digits.")
    False
    """
    words = [w.lower() for w in _WORD.findall(text)]
    runs = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(runs) != len(set(runs))


def edited_names(diff: str) -> set[str]:
    r"""What an explanation of `diff` (unified) would name: the tokens present on one side of its
    changed lines only (operators, literals, names), and the names on those lines (not Python
    keywords: "in", "if" are English too).

    >>> sorted(edited_names("-    if n // 100 in (11, 12):\n+    if n % 100 in (11, 12):\n"))
    ['%', '//', 'n']
    """
    sides: dict[str, list[str]] = {"-": [], "+": []}
    for line in diff.splitlines():
        if line[:1] in sides and not line.startswith(("---", "+++")):
            sides[line[0]] += re.findall(r"\w+|[^\w\s]+", line[1:])
    names = {t for t in sides["-"] + sides["+"] if t.isidentifier() and not keyword.iskeyword(t)}
    return (set(sides["-"]) ^ set(sides["+"])) | names


def about_the_edit(explanation: str, diff: str) -> bool:
    r"""Whether `explanation` names something on the lines the edit changed (edited_names): a word
    of its prose, or any token of the code it quotes in backticks (operators only count there).

    >>> about_the_edit("Use `%` to keep the last two digits.", "-    n // 100\n+    n % 100\n")
    True
    >>> about_the_edit("The test checks the function.", "-    n // 100\n+    n % 100\n")
    False
    """
    quoted = " ".join(re.findall(r"`([^`]+)`", explanation))  # code: operators count too
    words = set(re.findall(r"\w+", explanation)) | set(re.findall(r"\w+|[^\w\s]+", quoted))
    return bool(edited_names(diff) & words)


_CONTRAST = re.compile(r"`([^`]+)`[^`.]{0,40}?\b(?:instead of|rather than|not|but)\b[^`.]{0,40}?`([^`]+)`")


def self_contrast(text: str) -> bool:
    """Whether `text` contrasts a piece of code with itself ("uses `x == 1` instead of the actual
    `x == 1`": docopt-ng, fresh-user run X6), which says nothing true about any edit.

    >>> self_contrast("It is using `len(c) == 1` instead of the actual `len(c) == 1` to check")
    True
    >>> self_contrast("It uses `>` instead of `>=`, so the equal case is missed.")
    False
    """
    return any(a.strip() == b.strip() for a, b in _CONTRAST.findall(text))


def trusted(explanation: str, diff: str, context: str) -> str:
    r"""The part of the model's explanation of `diff` worth showing: `grounded` in `context`,
    and "" when what is left repeats itself, contrasts code with itself or names nothing the edit
    changed.

    >>> trusted("The check used `//`, which drops the hundreds. Use `%`.", "-  n // 100\n+  n % 100\n", "")
    'The check used `//`, which drops the hundreds. Use `%`.'
    >>> trusted("The test is set to test the test file. The test is set to test it.", "-  n // 100\n+  n % 100\n", "")
    ''
    """
    kept = names_known(grounded(explanation, context), context)
    return kept if kept and not repetitive(kept) and not self_contrast(kept) and about_the_edit(kept, diff) else ""
