"""HumanEvalFix-Python as editor projects: the prompt the model sees is what `ledex fix` sends.

HumanEvalFix (Muennighoff et al., "OctoPack", 2023; ../shared/data/humanevalpack-python.jsonl,
164 human-written bugs, MIT; evaluation only, never training) gives per task a `prompt`
(imports, helpers, signature + docstring), a `buggy_solution` (the body), HumanEval's `test`
(`def check(fn): ...` then `check(entry_point)`) and a `bug_type`. `write_project` renders one
task as a folder a user could have open in an editor:

    <root>/<entry_point>.py        the prompt + the buggy body (the module with the bug)
    <root>/test_<entry_point>.py   check()'s body as pytest tests calling the function by its name:
                                   one test per assert when the body is only asserts (test_<entry>_1,
                                   _2, ...; `assert True` placeholders dropped, imports hoisted),
                                   else one test with the whole body (loops, random inputs)

With `held_back_fraction` > 0 some of the split tests are kept out of the project (in
`Project.held_back_source`, runnable with `run_held_back`): the fix is found and verified on the
shown tests, generalisation is measured on the held-back ones.

`editor_failure` runs the project's tests in the sandbox exactly as `ledex fix` does
(failures.discover, then the first failure grouped with those sharing its top suspect), and
`prompt_messages` builds the chat `ledex fix` sends for it (fixer.problem_for + format.build_messages).
The evaluation built on it (base vs adapter, pass@1, fix rate, McNemar) is
`ledex-train eval --benchmarks humanevalfix` (training/fixeval.py, cases from training/fixcases.py).

    python -m ledex.training.humanevalfix 0 /tmp/hefix-0      # write task Python/0 and print the prompt
"""

from __future__ import annotations

import ast
import json
import random
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ledex.engine.failures import Failure, discover, group_by_suspect
from ledex.engine.fixer import problem_for
from ledex.engine.format import Mode, build_messages
from ledex.sandbox import Limits, Verdict, run_tests

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "humanevalpack-python.jsonl"
BUG_TYPES = ("value misuse", "missing logic", "excess logic", "operator misuse", "variable misuse", "function misuse")


class HumanEvalFixError(ValueError):
    """The data file is missing or a task cannot be rendered (its test has no check function)."""


@dataclass(frozen=True)
class Task:
    """One HumanEvalFix-Python row (the fields this module uses)."""

    task_id: str  # "Python/0"
    entry_point: str
    prompt: str  # imports, helper functions, signature + docstring
    buggy_solution: str  # the body of entry_point, with the human-written bug
    canonical_solution: str
    test: str  # "def check(fn): ...\n\ncheck(entry_point)"
    bug_type: str  # one of BUG_TYPES
    failure_symptoms: str = ""

    @property
    def number(self) -> int:
        return int(self.task_id.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class TestCase:
    name: str  # test function name
    body: str  # the function's statements, not indented


@dataclass(frozen=True)
class Project:
    """A rendered task. Test names are pytest node ids relative to `path`; held-back ones name
    tests of `held_back_source`, which is not in the project (see run_held_back)."""

    path: Path
    module: str  # file name of the module with the bug, e.g. "has_close_elements.py"
    function: str  # the buggy function (entry point)
    shown_tests: tuple[str, ...]
    held_back_tests: tuple[str, ...]
    bug_type: str
    task_id: str = ""
    held_back_source: str = ""  # the held-back tests as a test module ("" when none)

    @property
    def test_file(self) -> str:
        return f"test_{self.function}.py"


def available(path: str | Path = DEFAULT_DATA) -> bool:
    """True when the HumanEvalFix data file is there (tests skip without it)."""
    return Path(path).is_file()


def load_tasks(path: str | Path = DEFAULT_DATA, ids: Iterable[int | str] | None = None) -> list[Task]:
    """The tasks of the JSONL file, in file order (all 164, or those whose number or task_id is in
    `ids`). Raises HumanEvalFixError when the file is missing."""
    if not available(path):
        raise HumanEvalFixError(f"HumanEvalFix data not found: {path} (see ../shared/data/README.md)")
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    names = {f.name for f in Task.__dataclass_fields__.values()}
    tasks = [Task(**{k: v for k, v in row.items() if k in names}) for row in rows]
    if ids is None:
        return tasks
    wanted = {str(i) for i in ids}
    return [t for t in tasks if str(t.number) in wanted or t.task_id in wanted]


# --- rendering -------------------------------------------------------------------------------------


def module_name(task: Task) -> str:
    """`<entry_point>.py`, or `<entry_point>_impl.py` where the name would shadow a standard module."""
    entry = task.entry_point
    return f"{entry}_impl.py" if entry in sys.stdlib_module_names else f"{entry}.py"


def module_source(task: Task) -> str:
    """The module with the bug: the prompt followed by the buggy body."""
    return task.prompt + task.buggy_solution


def _check_function(tree: ast.Module) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check" and node.args.args:
            return node
    raise HumanEvalFixError("the task's test has no `def check(fn)`")


def _renamed(test: str, entry: str) -> str:
    """`test` with check()'s parameter renamed to the entry point (by AST position, so strings and
    longer names are untouched)."""
    check = _check_function(ast.parse(test))
    param = check.args.args[0].arg
    check.args.args[0].arg = entry
    lines = test.splitlines(keepends=True)
    spots = sorted(((n.lineno, n.col_offset, n.end_col_offset) for n in ast.walk(check)
                    if isinstance(n, ast.Name) and n.id == param), reverse=True)
    for line, start, end in spots:  # offsets are UTF-8 byte offsets
        raw = lines[line - 1].encode()
        lines[line - 1] = (raw[:start] + entry.encode() + raw[end:]).decode()
    return "".join(lines)


def _lines(text: str, node: ast.stmt) -> str:
    return textwrap.dedent("".join(text.splitlines(keepends=True)[node.lineno - 1:node.end_lineno])).rstrip()


def _placeholder(node: ast.stmt) -> bool:
    """`assert True, ...` and bare strings: HumanEval's no-op statements."""
    if isinstance(node, ast.Assert):
        return isinstance(node.test, ast.Constant) and node.test.value is True
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def split_check(task: Task) -> tuple[list[str], list[TestCase]]:
    """(module-level lines of the test file, test cases) from the task's check(). One test per
    assert when check's body is only asserts and imports (imports go to module level), else one
    test holding the whole body. Raises HumanEvalFixError when there is no check function."""
    entry = task.entry_point
    text = _renamed(task.test, entry)
    tree = ast.parse(text)
    check = _check_function(tree)
    header = [_lines(text, n) for n in tree.body if n is not check and not _calls_check(n)]
    body = [n for n in check.body if not _placeholder(n)]
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
    asserts = [n for n in body if isinstance(n, ast.Assert)]
    if asserts and len(asserts) + len(imports) == len(body):
        cases = [TestCase(f"test_{entry}_{i}", _lines(text, n)) for i, n in enumerate(asserts, 1)]
        return header + [_lines(text, n) for n in imports], cases
    whole = "\n".join(_lines(text, n) for n in body) or "pass"
    return header, [TestCase(f"test_{entry}", whole)]


def _calls_check(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "check")


def _module_names(task: Task, used: set[str]) -> list[str]:
    """Top-level names of the buggy module the tests use (the entry point always), module order."""
    names: list[str] = []
    for node in ast.parse(module_source(task)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [n for n in dict.fromkeys(names) if n == task.entry_point or n in used]


def render_tests(task: Task, header: list[str], cases: list[TestCase]) -> str:
    """A pytest module: the import of the module under test, the header, the test functions."""
    used = {n.id for case in cases for n in ast.walk(ast.parse(case.body)) if isinstance(n, ast.Name)}
    used |= {n.id for line in header for n in ast.walk(ast.parse(line)) if isinstance(n, ast.Name)}
    parts = [f"from {module_name(task)[:-3]} import {', '.join(_module_names(task, used))}"]
    parts += [h for h in header if h.strip()]
    text = "\n".join(parts) + "\n"
    for case in cases:
        text += f"\n\ndef {case.name}():\n{textwrap.indent(case.body, '    ')}\n"
    return text


def _held_back(task: Task, cases: list[TestCase], fraction: float, keep: set[str]) -> set[str]:
    """Names of the cases to hold back: round(fraction * n), chosen by a seed derived from the
    task id (the same split on every run), never one in `keep`, and at least one test stays shown."""
    if not 0.0 <= fraction < 1.0:
        raise HumanEvalFixError(f"held_back_fraction must be in [0, 1) (got {fraction})")
    free = [c.name for c in cases if c.name not in keep]
    count = min(round(fraction * len(cases)), len(cases) - 1, len(free))
    return set(random.Random(task.task_id).sample(free, count)) if count > 0 else set()


def write_project(task: Task, root: str | Path, *, held_back_fraction: float = 0.0,
                  keep_shown: Iterable[str] = ()) -> Project:
    """Write the task as an editor project into `root` (made if missing; the two files are
    overwritten). `keep_shown`: test names that must not be held back (e.g. one known to fail on
    the buggy code, so the shown tests still expose the bug). Raises HumanEvalFixError for a
    fraction outside [0, 1) or a test without check()."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    header, cases = split_check(task)
    held = _held_back(task, cases, held_back_fraction, set(keep_shown))
    shown = [c for c in cases if c.name not in held]
    back = [c for c in cases if c.name in held]
    module, tests = module_name(task), f"test_{task.entry_point}.py"
    (root / module).write_text(module_source(task), encoding="utf-8")
    (root / tests).write_text(render_tests(task, header, shown), encoding="utf-8")
    return Project(root, module, task.entry_point, tuple(f"{tests}::{c.name}" for c in shown),
                   tuple(f"{tests}::{c.name}" for c in back), task.bug_type, task.task_id,
                   render_tests(task, header, back) if back else "")


def run_held_back(project: Project, module_text: str | None = None, *, limits: Limits = Limits()) -> Verdict | None:
    """Run the held-back tests in the sandbox against `module_text` (default: the module as it is
    in the project now), in a throw-away copy. None when the project holds nothing back."""
    if not project.held_back_source:
        return None
    text = module_text if module_text is not None else (project.path / project.module).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="ledex-heldback-") as tmp:
        (Path(tmp) / project.module).write_text(text, encoding="utf-8")
        (Path(tmp) / project.test_file).write_text(project.held_back_source, encoding="utf-8")
        return run_tests(Path(tmp), [project.test_file], limits=limits)


# --- what `ledex fix` sends -------------------------------------------------------------------------


def editor_failure(project: Project, *, limits: Limits = Limits(wall_s=120.0, cpu_s=120)) -> Failure | None:
    """The first problem `ledex fix` works on for this project: the sandboxed test run's failures
    (failures.discover, suspects ranked), the first grouped with those sharing its top suspect
    (failures.group_by_suspect). None when every shown test passes."""
    failures = discover(project.path, limits=limits).failures
    return group_by_suspect(failures)[0] if failures else None


def prompt_messages(failure: Failure, mode: Mode = Mode.EXPLAIN) -> list[dict[str, str]]:
    """The chat `ledex fix --mode <mode>` sends for `failure` (fixer.problem_for + build_messages)."""
    return build_messages(problem_for(failure), mode)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m ledex.training.humanevalfix TASK_NUMBER FOLDER", file=sys.stderr)
        return 2
    task = load_tasks(ids=[argv[0]])[0]
    project = write_project(task, argv[1])
    failure = editor_failure(project)
    print(f"{project.path}: {project.module} ({project.bug_type}), {len(project.shown_tests)} tests")
    for message in prompt_messages(failure) if failure else []:
        print(f"--- {message['role']}\n{message['content']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
