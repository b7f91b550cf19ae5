"""The cases of the editor evaluation (training/fixeval.py): small pytest projects with one bug.

Sets (evaluation data only, never training; selection is seeded and identical for every version):

- `humanevalfix`: HumanEvalFix-Python (../shared/data/humanevalpack-python.jsonl, 164 human-written
  bugs, MIT) rendered by training/humanevalfix.py (the module with the bug, check()'s asserts as
  pytest tests); category: the bug type.
- `mbpp-mutants`: MBPP **test** split reference solutions with single-site bugs from the operators of
  engine/operators.py (training/mutate.mutants, seeded per task), rendered as training renders MBPP
  (sources.mbpp_files: `<entry>.py` + `tests/test_<entry>.py`, one test per assert); category: the
  operator. A mutant no test catches is left out by the evaluation and counted.
- `mbpp-sampled`: MBPP test solutions sampled from the base model (the first version, or
  --initial-model; LEDEX's "wrong solutions sampled from the model"), kept when they parse and
  define the task's function; the evaluation leaves out those that pass; category "sampled".
  Generations are cached (EvalStore) like every other answer.
- `inventory`: examples/inventory (the demo project, three seeded bugs), one case per failure group
  `ledex fix` works on; category: the suspect function.
- the promotion gate's (`gate_cases`): MBPP validation (never test) mutants + wrong solutions sampled
  from the plain base, set "gate", category "mutation" or "sampled".

    python -m ledex.training.fixcases mbpp-mutants 3      # list the cases of the first 3 test tasks
"""

from __future__ import annotations

import ast
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ledex.engine.backends import Sampling
from ledex.engine.problems import CodingProblem, extract_code, initial_messages, load_mbpp, load_problems
from ledex.training.mutate import mutants
from ledex.training.sources import mbpp_files

EDITOR_SETS = ("humanevalfix", "mbpp-mutants", "mbpp-sampled", "inventory")
DEFAULT_INVENTORY = Path(__file__).resolve().parent.parent / "examples" / "inventory"
_SKIP_PARTS = ("__pycache__", ".ledex", ".pytest_cache")


@dataclass(frozen=True)
class Case:
    """One evaluation case: its set, id and category (bug type / operator / origin), the project's
    files as (relative path, text) pairs, and which failure group of the project is the case."""

    set: str
    id: str
    category: str
    files: tuple[tuple[str, str], ...]
    group: int = 0

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the files and the group: a changed project is another case."""
        digest = hashlib.sha256(str(self.group).encode())
        for rel, text in self.files:
            digest.update(f"\0{rel}\0{text}".encode())
        return digest.hexdigest()[:16]

    def write(self, root: Path) -> Path:
        """Write the project into `root` (made if missing); returns `root`."""
        for rel, text in self.files:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return root


def make_case(set_name: str, case_id: str, category: str, files: dict[str, str], group: int = 0) -> Case:
    """A Case from a files dict (sorted by path, so equal projects have equal fingerprints)."""
    return Case(set_name, case_id, category, tuple(sorted(files.items())), group)


# --- HumanEvalFix ----------------------------------------------------------------------------------


def humanevalfix_cases(path: str | Path, limit: int, ids: Sequence[str] = ()) -> list[Case]:
    """The first `limit` HumanEvalFix tasks by number, or exactly those named (humanevalfix/3, Python/3
    or 3), as training/humanevalfix.write_project renders them. Raises HumanEvalFixError without the file."""
    from ledex.training import humanevalfix as hx

    tasks = hx.load_tasks(path)
    if ids:
        wanted = {i.rsplit("/", 1)[-1] for i in ids if i.startswith(("humanevalfix/", "Python/")) or i.isdigit()}
        tasks = [t for t in tasks if str(t.number) in wanted]
    else:
        tasks = tasks[:limit]
    return [humanevalfix_case(task) for task in tasks]


def humanevalfix_case(task) -> Case:
    """One HumanEvalFix task (humanevalfix.Task) as a case: the files write_project writes."""
    from ledex.training import humanevalfix as hx

    header, tests = hx.split_check(task)
    files = {hx.module_name(task): hx.module_source(task),
             f"test_{task.entry_point}.py": hx.render_tests(task, header, tests)}
    return make_case("humanevalfix", task.task_id, task.bug_type, files)


# --- MBPP --------------------------------------------------------------------------------------------


def _number(problem: CodingProblem, index: int) -> int:
    tail = problem.id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else index


def mutant_cases(problems: Sequence[CodingProblem], per_task: int, seed: int, set_name: str = "mbpp-mutants",
                 category: str | None = None) -> list[Case]:
    """Up to `per_task` single-site mutants of each problem's reference solution (mutate.mutants,
    seed + task number: the same mutants whatever else is selected); category: the operator, or
    `category` when given."""
    cases = []
    for index, problem in enumerate(problems):
        for j, mutant in enumerate(mutants(problem.solution, limit=per_task, seed=seed + _number(problem, index))):
            files = mbpp_files(problem, mutant.code + "\n")
            if files:
                cases.append(make_case(set_name, f"{problem.id}:m{j + 1}", category or mutant.operator, files))
    return cases


def defines(code: str, name: str | None) -> bool:
    """Whether `code` parses and defines a top-level function `name` (what the tests call)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


Generate = Callable[[list[dict], Sampling], str]


def sampled_cases(problems: Sequence[CodingProblem], per_task: int, generate: Generate, sampling: Sampling,
                  set_name: str = "mbpp-sampled") -> list[Case]:
    """Up to `per_task` solutions per problem written by a model (`generate(messages, sampling)` -> text,
    initial_messages prompt, seed = sampling.seed + 1000 x task number + i), kept when they parse, define
    the task's function and differ from the reference and from each other; category "sampled"."""
    from dataclasses import replace

    cases = []
    for index, problem in enumerate(problems):
        seen = {problem.solution.strip()}
        for i in range(per_task):
            seed = sampling.seed + 1000 * _number(problem, index) + i
            code = extract_code(generate(initial_messages(problem), replace(sampling, seed=seed)))
            if code.strip() in seen or not defines(code, problem.entry_point):
                continue
            seen.add(code.strip())
            files = mbpp_files(problem, code.rstrip() + "\n")
            if files:
                cases.append(make_case(set_name, f"{problem.id}:s{i + 1}", "sampled", files))
    return cases


def mbpp_test_problems(path: str | Path, limit: int, ids: Sequence[str] = ()) -> list[CodingProblem]:
    """MBPP's test split (tasks 11-510; evaluation only), the first `limit` by id or those named
    (mbpp/11). Raises FileNotFoundError without the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"MBPP file not found: {path} (pass --mbpp-path)")
    problems = sorted(load_mbpp(path, "test"), key=lambda p: _number(p, 0))
    if ids:
        return [p for p in problems if p.id in ids]
    return problems[:limit]


# --- examples/inventory --------------------------------------------------------------------------------


def project_files(folder: Path) -> dict[str, str]:
    """Every text file of a project folder (caches and .ledex left out), relative path -> text."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part in _SKIP_PARTS for part in rel.parts) and path.suffix != ".pyc":
            files[str(rel)] = path.read_text(encoding="utf-8")
    return files


def inventory_cases(folder: str | Path = DEFAULT_INVENTORY) -> list[Case]:
    """One case per failure group of the project (discovered once here, as `ledex fix` would),
    category: the group's top suspect. Raises FileNotFoundError for a missing folder."""
    import tempfile

    from ledex.engine.failures import discover, group_by_suspect

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"project not found: {folder} (pass --inventory-path)")
    files = project_files(folder)
    probe = make_case("inventory", "probe", "", files)
    with tempfile.TemporaryDirectory(prefix="ledex-inventory-") as tmp:
        groups = group_by_suspect(discover(probe.write(Path(tmp)), coverage=True).failures)
    return [make_case("inventory", g.test, g.suspect.qualname if g.suspect else "(no suspect)", files, i)
            for i, g in enumerate(groups)]


# --- what `ledex-train eval` and the gate select -------------------------------------------------------


def cases_for(config, versions: Sequence, loader: Callable) -> list[Case]:
    """The cases of the editor sets in config.benchmarks (an EvalConfig, training/evaluate.py), in
    that order; mbpp-sampled's solutions come from config.initial_model or the first version."""
    cases: list[Case] = []
    for name in (b for b in config.benchmarks if b in EDITOR_SETS):
        if name == "humanevalfix":
            cases += humanevalfix_cases(config.humanevalfix_path, config.limit, config.tasks)
        elif name == "inventory":
            cases += inventory_cases(config.inventory_path)
        elif name == "mbpp-mutants":
            problems = mbpp_test_problems(config.mbpp_path, _mbpp_limit(config), config.tasks)
            cases += mutant_cases(problems, config.mutations, config.seed)
        else:
            problems = mbpp_test_problems(config.mbpp_path, _mbpp_limit(config), config.tasks)
            cases += sampled_cases(problems, config.wrong_samples, _sampler(config, versions, loader),
                                   Sampling(config.temperature, config.top_p, config.initial_max_tokens, config.seed))
    return cases


def _mbpp_limit(config) -> int:
    limit = getattr(config, "mbpp_limit", None)
    return config.limit if limit is None else limit


def _sampler(config, versions: Sequence, loader: Callable) -> Generate:
    """generate(messages, sampling) -> text by the sampling version, cached in the eval's EvalStore."""
    from ledex.training.eval_report import EvalStore
    from ledex.training.evaluate import generate

    chosen = next((v for v in versions if v.name == config.initial_model), versions[0])
    store = EvalStore(Path(config.cache) if config.cache else Path(config.out) / "cache.jsonl")
    backend = loader(chosen)
    return lambda messages, sampling: generate(backend, store, messages, sampling)["text"]


def gate_cases(gate, sampler: Generate | None) -> list[Case]:
    """The promotion gate's cases (promote.GateArgs `gate`): the selected problems of gate.problems /
    gate.split (MBPP validation by default), gate.mutations mutants each ("mutation") and gate.samples
    solutions sampled by `sampler` at T=1.0 ("sampled"; needs a sampler when gate.samples > 0)."""
    problems = load_problems(gate.problems, gate.split)[gate.skip: gate.skip + gate.n_problems]
    cases = mutant_cases(problems, gate.mutations, gate.seed, "gate", "mutation") if gate.mutations else []
    if gate.samples and sampler is not None:
        cases += sampled_cases(problems, gate.samples, sampler, Sampling(1.0, 0.95, gate.max_tokens, gate.seed),
                               "gate")
    return cases


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name, limit = (argv[0] if argv else "mbpp-mutants"), (argv[1] if len(argv) > 1 else "3")
    data = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if name == "humanevalfix":
        cases = humanevalfix_cases(data / "humanevalpack-python.jsonl", int(limit))
    elif name == "inventory":
        cases = inventory_cases()
    else:
        cases = mutant_cases(mbpp_test_problems(data / "mbpp.jsonl", int(limit)), 1, 0)
    for case in cases:
        print(f"{case.set} {case.id} [{case.category}] group {case.group}: {', '.join(r for r, _ in case.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
