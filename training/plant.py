"""Bugs planted in a source's projects, seen as the editor sees them (``ledex-train collect``).

For each target function of a project (training/sources.py): the pristine test run with per-test
coverage (``baseline``), single-site edits of the function from engine/operators.py (the same
operators search inverts), each planted bug kept only when tests that passed before now fail,
the failure read, localised and put into a prompt by the fix engine's own code
(engine/failures.py, engine/fixer.problem_for: the prompt is what ``ledex fix`` sends), and the
correct function verified against the fix engine's re-run set before it becomes a trajectory
(``plant``). Used by training/editordata.py; run through ``ledex-train collect``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ledex.engine.localize import read_source
from ledex.sandbox import source_bytes
from ledex.training.sources import Project

@dataclass(frozen=True)
class Baseline:
    """The pristine project's test run: which tests pass, and which passing tests execute each
    target function (from per-test line coverage; "path::qualname" -> node ids)."""

    passed: frozenset[str]
    covering: dict[str, tuple[str, ...]]
    seconds: float


MAX_COVERING_TESTS = 200  # tests run per planted bug (the ones that execute the function)


def baseline(project: Project, limits=None) -> Baseline:
    """Run the pristine project's tests once in the sandbox with per-test coverage (cached in
    <root>/.ledex/). A planted bug then runs only the passing tests that execute its function:
    no other test can fail because of it, so the failures (and the prompt) are those of the
    whole suite, at a fraction of the cost."""
    from ledex.sandbox import Limits, run_tests

    cache = project.root / ".ledex" / "baseline-coverage.json"
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return Baseline(frozenset(data["passed"]), {k: tuple(v) for k, v in data["covering"].items()}, data["seconds"])
    # a test module that cannot be collected (a test-only dependency missing: itsdangerous' freezegun)
    # stopped the whole session, and six packages gave no bug at all; the other modules still count
    verdict = run_tests(project.root, limits=limits or Limits(wall_s=1800.0, cpu_s=1800), coverage=True,
                        extra_args=["--continue-on-collection-errors"])
    passed = sorted(o.nodeid for o in verdict.outcomes if o.outcome == "passed")
    covering = _covering(project, verdict.coverage or {}, set(passed))
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps({"passed": passed, "covering": covering, "seconds": verdict.duration_s}), encoding="utf-8")
    return Baseline(frozenset(passed), {k: tuple(v) for k, v in covering.items()}, verdict.duration_s)


def _covering(project: Project, coverage: dict, passed: set[str]) -> dict[str, list[str]]:
    """"path::qualname" -> passing tests that executed a line of the function's body."""
    from ledex.engine.localize import function_named

    out = {}
    for rel, names in project.targets.items():
        text = read_source(project.root / rel) or ""
        for name in names:
            node = function_named(text, name)
            body = set(range(node.body[0].lineno, node.end_lineno + 1)) if node is not None else set()
            tests = [t for t in sorted(passed) if body & set(coverage.get(t, {}).get(rel, ()))]
            if tests:
                out[f"{rel}::{name}"] = tests[:MAX_COVERING_TESTS]
    return out


def pick_edits(edits: list, limit: int, seed: int) -> list:
    """Up to `limit` edits, round-robin over operators (seeded order), so every kind of bug shows."""
    import random

    rng = random.Random(seed)
    by_op: dict[str, list] = {}
    for edit in edits:
        by_op.setdefault(edit.operator, []).append(edit)
    for group in by_op.values():
        rng.shuffle(group)
    order = sorted(by_op)
    rng.shuffle(order)
    picked = []
    while len(picked) < limit and any(by_op.values()):
        for op in order:
            if by_op[op] and len(picked) < limit:
                picked.append(by_op[op].pop())
    return picked


def editor_failure(failures: list, rel: str, qualname: str, passed: frozenset[str]):
    """The failure (with that suspect) for which `ledex fix` asks the model about rel::qualname:
    failures grouped as the CLI groups them, each group's suspects tried as the fix engine tries
    them (FixConfig.suspects); only tests that passed before the bug count. None if never asked."""
    from dataclasses import replace

    from ledex.engine.failures import group_by_suspect
    from ledex.engine.fixer import FixConfig, suspects_to_try

    for group in group_by_suspect(failures):
        if group.test not in passed:
            continue
        for suspect in suspects_to_try(group, FixConfig.suspects):
            if (suspect.path, suspect.qualname) == (rel, qualname):
                return replace(group, suspect=suspect)
    return None


# What Python says when 1 is added to or taken from a value that is not a number (3.11-3.13).
_INT_OPERAND = re.compile(r"TypeError: (?:unsupported operand type\(s\) for [+-]: '[^']+' and 'int'"
                          r"|can only concatenate \w+ \(not \"int\"\) to \w+)\s*$")


def not_a_number(edit, details: str) -> bool:  # noqa: ANN001 - an engine.operators.Edit
    """Whether a planted +-1 (`edit`, operator "bound", that added `+ 1`/`- 1`) failed only because
    its value is no number (`iteratee + 1` on a function: TypeError), which is not a bug people
    write: the search tries it on any call argument (the verdict decides there), but as training
    data 70 of 165 such records in collect run 11 taught "remove the `- 1` that a dict cannot
    take" under the explanation "it stops one step too early or too late".

    >>> from ledex.engine.operators import Edit
    >>> e = Edit("bound", 3, "`f` -> `f + 1`", "", before="f", after="f + 1")
    >>> not_a_number(e, "...\\nTypeError: unsupported operand type(s) for +: 'function' and 'int'\\n")
    True
    >>> not_a_number(e, "AssertionError: assert 3 == 2")
    False
    """
    added = re.search(r" [+-] 1$", edit.after) is not None and not re.search(r" [+-] 1$", edit.before)
    last = details.rstrip().splitlines()[-1] if details.strip() else ""  # the exception's line
    return edit.operator == "bound" and added and _INT_OPERAND.search(last) is not None


_ANSWER_CODE = re.compile(r"^(?:(?:import |from )[^\n]*\n){0,4}(?:@[^\n]*\n)*(?:async )?def \w+\((?:[^()\n]|\([^()\n]*\))*\)"
                          r"(?: ?->[^:\n]+)?:[ \t]*\n(?:[ \t][^\n]*\n|\n)*$")


def answer_shape_ok(code: str) -> bool:
    """Whether the served answer grammar (grammar.answer_grammar) can write `code`: one function,
    signature on one line, every later line indented or blank."""
    return _ANSWER_CODE.match(code.rstrip() + "\n") is not None


def right_answer(original: str, rel: str, qualname: str) -> str | None:
    """The correct function as the model should write it (dedented; a wrapped signature on one
    line, as the answer grammar writes it and the patcher puts back: patching.joined_header), or
    None when the answer grammar could not produce it."""
    import textwrap

    from ledex.engine.localize import function_named, make_suspect
    from ledex.engine.patching import joined_header

    node = function_named(original, qualname)
    if node is None:
        return None
    code = joined_header(textwrap.dedent(make_suspect(rel, qualname, node, original, "").source).rstrip() + "\n")
    return code.rstrip() if code is not None and answer_shape_ok(code) else None



@dataclass(frozen=True)
class PlantOptions:
    mutants: int = 3  # planted bugs tried per function
    coverage: bool = True  # order suspects with coverage, as `ledex fix` does (costs a second run)
    wall_s: float = 60.0  # one sandbox run (an edit that makes a loop endless is cut here)
    test_timeout_s: float = 10.0


def _add(counts: dict, key: str, value: float = 1) -> None:
    counts[key] = counts.get(key, 0) + value


def plant(project: Project, rel: str, qualname: str, base: Baseline, work: Path, options: PlantOptions,
          seed: int, stats: dict) -> list:
    """Trajectories for bugs planted in rel::qualname: each edit (engine.operators) is written to
    a copy of the project under `work`, the tests run through `engine.failures.discover` (the
    serving path), and a bug is kept when tests that passed before now fail and `ledex fix`
    would ask the model about this function (editor_failure); the prompt is fixer.problem_for's,
    the answer the correct function, verified (judge) against the fix engine's re-run set.
    `stats` counts what happened to each edit."""
    from ledex.engine.operators import single_site_edits

    original = read_source(project.root / rel)
    right = right_answer(original, rel, qualname) if original is not None else None
    if right is None:
        _add(stats, "function: answer grammar cannot write it")
        return []
    if f"{rel}::{qualname}" not in base.covering:
        _add(stats, "function: no passing test runs it")
        return []
    edits = pick_edits(list(single_site_edits(original, qualname)), options.mutants, seed)
    folder = Path(work) / project.root.name
    if not (folder / rel).is_file():
        shutil.copytree(project.root, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".ledex"))
    out = []
    try:
        for n, edit in enumerate(edits):
            (folder / rel).write_bytes(source_bytes(edit.code))
            record, why = _one_bug(project, rel, qualname, base, folder, options, edit, right, seed + n, stats)
            _add(stats, why)
            if record is not None:
                out.append(record)
    finally:
        (folder / rel).write_bytes(source_bytes(original))
    return out


def _one_bug(project, rel, qualname, base, folder, options, edit, right, seed, stats):
    """(Trajectory or None, what happened) for one planted edit (already written to folder)."""
    from ledex.engine.failures import DiscoveryError, discover
    from ledex.engine.fixer import problem_for
    from ledex.sandbox import Limits

    limits = Limits(wall_s=options.wall_s, cpu_s=int(options.wall_s), test_timeout_s=options.test_timeout_s)
    started = time.perf_counter()
    try:
        found = discover(folder, tests=base.covering[f"{rel}::{qualname}"], coverage=options.coverage, limits=limits)
    except DiscoveryError:
        return None, "tests did not run"
    finally:
        _add(stats, "seconds: discover", time.perf_counter() - started)
    if found.verdict is not None and found.verdict.killed_reason:
        return None, f"stopped ({found.verdict.killed_reason})"
    newly = [f for f in found.failures if f.test in base.passed]
    if not newly:
        return None, "survived (no test that passed fails)"
    failure = editor_failure(found.failures, rel, qualname, base.passed)
    if failure is None:
        return None, "not among the suspects ledex fix tries"
    if not_a_number(edit, failure.details):
        return None, "+-1 on a value that is not a number"
    problem = problem_for(failure)
    started = time.perf_counter()
    refined = _verify(folder, failure, edit, right, base, limits)
    _add(stats, "seconds: verify", time.perf_counter() - started)
    if refined is None:
        return None, "answer does not patch"
    return _record(project, rel, qualname, folder, failure, problem, edit, right, refined, newly, seed), \
        "kept" if refined["passed"] else "kept (refinement not verified)"


def _verify(folder: Path, failure, edit, right: str, base: Baseline, limits) -> dict | None:
    """The verdict on the correct answer, as the fix engine judges a candidate: patched in with
    engine.patching, the failing test, its group and the passing siblings re-run. When the patched
    file is byte-identical to the pristine one and all those tests passed in the baseline run,
    that run is the verdict ("by": "baseline"); otherwise the sandbox runs them now."""
    from ledex.engine.judging import judge
    from ledex.engine.patching import PatchError, make_patch
    from ledex.sandbox import verify_many

    try:
        patch = make_patch(edit.code, failure.suspect, right)
    except PatchError:
        return None
    needed = (failure.test, *failure.also, *failure.passing_siblings)
    pristine = edit.code[:edit.start] + edit.before + edit.code[edit.start + len(edit.after):]
    if patch.new_text == pristine and all(t in base.passed for t in needed):
        return {"by": "baseline", "passed": True, "tests": len(needed)}
    tests = tuple(dict.fromkeys((failure.test, *failure.also, *failure.siblings)))
    verdict = next((v for _, v in verify_many(folder, [{patch.path: patch.new_text}], tests, limits=limits, workers=1)), None)
    ok, reason = judge(verdict, failure) if verdict is not None else (False, "no verdict")
    return {"by": "sandbox", "passed": ok, "tests": len(tests), "reason": reason,
            "pass_rate": verdict.pass_rate if verdict is not None else 0.0}


def _record(project, rel, qualname, folder, failure, problem, edit, right, refined, newly, seed):
    from ledex.training.explain import Fault, explain, observe
    from ledex.training.records import Trajectory

    line_text = edit.code.splitlines()[edit.line - 1] if edit.line <= len(edit.code.splitlines()) else ""
    fault = Fault(qualname.rsplit(".", 1)[-1], edit.line, line_text, edit.after, edit.before, edit.operator)
    text = explain(fault, observe(failure.message, failure.details), failure.test, seed)
    verdicts = {"wrong": {"failed": [f.test for f in newly][:20], "failing": len(newly)}, "refined": refined}
    return Trajectory(f"{project.id}:{rel}:{qualname}", problem.task, problem.wrong_code, problem.feedback, text,
                      right, bool(refined["passed"]), 1.0 if refined["passed"] else refined.get("pass_rate", 0.0),
                      teacher="mutation-oracle", origin="mutation", licence=project.licence, split=project.split,
                      operator=edit.operator, verdicts=verdicts,
                      extra={"source": project.source, "workspace": str(folder), "file": rel, "function": qualname, "line": edit.line, "test": failure.test,
                             "edit": edit.description, "seed": seed})
