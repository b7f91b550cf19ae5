"""The learning loop, measured end to end: does ledex get better from its user's accept/reject alone?

A simulated developer works through a stream of one-bug projects (MBPP validation tasks outside
the promotion gate's slice, bug planted by an AST mutation operator) in ONE workspace served by
the real `ledex-lsp` subprocess: it saves the buggy file, waits for ledex's fix, and decides like
a careful developer (`decide`): a verified fix is accepted only when it also passes the task's
held-back tests (asserts neither the workspace nor the sandbox ever saw), else rejected or, in a
share of cases, accepted and then reverted; some suggestions are ignored; an unverified fix is
never accepted. A careless developer accepts every verified fix. After every N episodes the
editor's "Train now" (`ledex-train all --workspace`) learns from the episode log, the gate
decides, a promoted adapter is hot-swapped into the running server (the next episodes record
its version), and a fixed held-out stream is re-measured: one greedy explain+refine answer per
held-out bug (`promote.self_debug_rate`), counted only if it passes visible AND held-back tests.

    python bench/learning_loop.py --out /tmp/loop --policies careful careless --rounds 3 --per-round 6
    python bench/learning_loop.py --out /tmp/loop --report-only --plot docs/learning-loop.png   # table + PNG

Everything is seeded (stream, policy, sampling). Writes <out>/<policy>/report.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ledex.engine.problems import CodingProblem, judge_solutions, load_problems
from ledex.training.mutate import mutants

REPO = Path(__file__).resolve().parent.parent
STREAM_PROBLEMS = REPO / "ledex" / "data" / "mbpp_validation.jsonl"  # mbpp/511-600, shipped
GATE_SLICE = 20  # the gate debugs mbpp/511-530 (--gate-skip 0); the loop uses 531-600 only
SOLUTION, TESTS = "solution.py", "test_solution.py"


# --- the stream --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One editor project with one bug: the workspace's view (visible tests as ONE test, so one
    failure and one episode per task), the full problem (+ held-back tests) and the wrong code."""

    id: str
    visible: CodingProblem
    full: CodingProblem
    wrong_code: str
    operator: str


def split(problem: CodingProblem, shown: int = 2) -> tuple[CodingProblem, CodingProblem]:
    """(visible, full): the first `shown` asserts joined into test_0; full adds the rest as held-back tests."""
    block = "\n".join(problem.tests[:shown])
    visible = replace(problem, tests=(block,))
    return visible, replace(problem, tests=(block, *problem.tests[shown:]))


def build_stream(ids: range, seed: int, root: Path, path: Path = STREAM_PROBLEMS, limit: int = 10**6) -> list[Task]:
    """Up to `limit` Tasks, one per MBPP task id in `ids` that has held-back tests and a mutant failing
    its visible tests (the first such of up to 4 seeded mutants); sandbox-judged, in id order."""
    tasks = []
    for problem in (p for p in load_problems(path) if int(p.id.split("/")[1]) in ids and len(p.tests) > 2):
        if len(tasks) >= limit:
            break
        visible, full = split(problem)
        found = mutants(problem.solution, limit=4, seed=seed + int(problem.id.split("/")[1]))
        verdicts = judge_solutions(visible, [m.code for m in found], root) if found else []
        bad = next((m for m, v in zip(found, verdicts) if not v.passed and not v.error), None)
        if bad is not None:
            tasks.append(Task(problem.id, visible, full, bad.code, bad.operator))
    return tasks


# --- the simulated developer -------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How the simulated developer answers a suggestion ('careful' or 'careless')."""

    name: str = "careful"
    revert_share: float = 0.3  # careful: of the verified fixes failing held-back tests, accepted then reverted
    ignore_share: float = 0.1  # careful: suggestions left alone whatever they are


def decide(policy: Policy, verified: bool, held_back_pass: bool, rng: random.Random) -> str:
    """'accept' | 'accept_revert' | 'reject' | 'ignore'. Never accepts an unverified fix.

    >>> r = random.Random(0)
    >>> decide(Policy(ignore_share=0), True, True, r), decide(Policy(ignore_share=0, revert_share=0), True, False, r)
    ('accept', 'reject')
    >>> decide(Policy("careless"), True, False, r), decide(Policy("careless"), False, False, r)
    ('accept', 'ignore')
    """
    if not verified:
        return "ignore"
    if policy.name == "careless":
        return "accept"
    if rng.random() < policy.ignore_share:
        return "ignore"
    if held_back_pass:
        return "accept"
    return "accept_revert" if rng.random() < policy.revert_share else "reject"


@dataclass
class EpisodeResult:
    task: str
    round: int
    episode: str | None
    state: str
    verified: bool
    held_back_pass: bool
    decision: str
    generation_s: float
    verification_s: float
    wall_s: float
    version: str | None = None


class Developer:
    """Drives a real `python -m ledex.server` over LSP on one workspace (pytest-lsp's client)."""

    def __init__(self, workspace: Path, home: Path, options: dict, policy: Policy, seed: int):
        self.root, self.home, self.options, self.policy = workspace, home, options, policy
        self.rng, self.seen, self.client = random.Random(seed), set(), None

    async def __aenter__(self):
        from lsprotocol import types as lsp
        from pytest_lsp import ClientServerConfig, client_capabilities

        env = {**os.environ, "LEDEX_HOME": str(self.home)}
        self.client = await ClientServerConfig([sys.executable, "-m", "ledex.server"], server_env=env).start()
        await self.client.initialize_session(lsp.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"), root_uri=self.root.as_uri(),
            workspace_folders=[lsp.WorkspaceFolder(self.root.as_uri(), self.root.name)],
            initialization_options=self.options))
        return self

    async def __aexit__(self, *exc):
        await self.client.shutdown_session()
        await self.client.stop()

    def _save(self, name: str, text: str) -> None:
        from lsprotocol import types as lsp

        (self.root / name).write_text(text, encoding="utf-8")
        self.client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(
            (self.root / name).as_uri())))

    def _ours(self) -> list:
        uri = (self.root / SOLUTION).as_uri()
        return [d for d in self.client.diagnostics.get(uri, []) if d.source == "ledex" and isinstance(d.data, dict)]

    def _settled(self, task: Task):
        """The ledex diagnostic on solution.py of a new episode about `task`'s function, once its fix ended
        (a fix the server started on the previous project's last state is skipped)."""
        from ledex.engine.episodes import EpisodeLog, default_path

        for d in self._ours():
            episode = d.data.get("episode")
            if episode and episode not in self.seen and d.data.get("state") in ("ready", "failed"):
                found = EpisodeLog(default_path(self.root)).get(episode)
                if found is not None and found.suspect_function == task.visible.entry_point:
                    return d
                self.seen.add(episode)
        return None

    async def episode(self, task: Task, round_no: int, marker: str, timeout: float) -> EpisodeResult:
        """Open the task's project state, wait for ledex's fix, decide and act; returns what happened."""
        from ledex.engine.problems import render_test_module

        started = time.perf_counter()
        self.seen |= {d.data.get("episode") for d in self._ours()}
        self._save(TESTS, render_test_module(task.visible))
        self._save(SOLUTION, f"# {marker}\n{task.wrong_code}\n")
        try:
            async with asyncio.timeout(timeout):
                while (diagnostic := self._settled(task)) is None:
                    await self.client.wait_for_notification("textDocument/publishDiagnostics")
        except TimeoutError:
            return EpisodeResult(task.id, round_no, None, "timeout", False, False, "ignore", 0, 0,
                                 time.perf_counter() - started)
        data = diagnostic.data
        self.seen.add(data["episode"])
        actions = await self._actions(diagnostic)
        fix = next((a for a in actions if a.is_preferred and a.edit), None)  # the best verified fix
        fix = fix or next((a for a in actions if a.edit), None)
        verified = bool(fix and fix.is_preferred)
        before = (self.root / SOLUTION).read_text(encoding="utf-8")
        after = _applied(before, fix) if fix else before
        held = bool(fix) and judge_solutions(task.full, [after], self.root.parent / "judge")[0].passed
        decision = decide(self.policy, verified, held, self.rng)
        await self._act(decision, fix, actions, before, after)
        return EpisodeResult(task.id, round_no, data["episode"], data["state"], verified, held, decision,
                             data.get("generationS", 0.0), data.get("verificationS", 0.0),
                             time.perf_counter() - started)

    async def _actions(self, diagnostic):
        from lsprotocol import types as lsp

        params = lsp.CodeActionParams(lsp.TextDocumentIdentifier((self.root / SOLUTION).as_uri()), diagnostic.range,
                                      lsp.CodeActionContext([diagnostic]))
        msg_id = f"loop-{time.monotonic_ns()}"
        future = self.client.protocol.send_request(lsp.TEXT_DOCUMENT_CODE_ACTION, params, msg_id=msg_id)
        self.client.protocol._result_types.pop(msg_id, None)  # pygls would drop the edits (see tests/lsp_helpers.py)
        raw = await asyncio.wrap_future(future)
        return [self.client.protocol._converter.structure(item, lsp.CodeAction) for item in raw or []]

    async def _act(self, decision: str, fix, actions, before: str, after: str) -> None:
        from lsprotocol import types as lsp

        if decision.startswith("accept"):
            self._save(SOLUTION, after)  # what the editor does with the action's edit
            await self.client.workspace_execute_command_async(lsp.ExecuteCommandParams(
                fix.command.command, fix.command.arguments))
        if decision == "accept_revert":
            self._save(SOLUTION, before)  # undo: the server logs the episode as reverted
        if decision == "reject":
            dismiss = next(a for a in actions if a.command and "ismiss" in a.title)
            await self.client.workspace_execute_command_async(lsp.ExecuteCommandParams(
                dismiss.command.command, dismiss.command.arguments))


def _applied(text: str, action) -> str:
    """The document after the action's single text edit (what an editor does)."""
    edit = action.edit.document_changes[0].edits[0]
    lines = text.splitlines(keepends=True) + [""]
    start, end = edit.range.start, edit.range.end
    offset = lambda p: sum(len(line) for line in lines[:p.line]) + p.character  # noqa: E731
    return text[:offset(start)] + edit.new_text + text[offset(end):]


# --- rounds ------------------------------------------------------------------------------------


@dataclass
class LoopConfig:
    out: Path
    policy: Policy = field(default_factory=Policy)
    model: str = ""  # "" = the embedded default (+ promoted adapter); "replay:<file>" in tests
    rounds: int = 3
    per_round: int = 6  # N episodes between trainings
    samples: int = 2  # K
    fix_rounds: int = 1  # R
    search: bool = True  # the product's default: search-found fixes are offered and logged like the model's
    heldout: int = 8  # held-out bugs re-measured after each promotion
    train_flags: tuple[str, ...] = ("--threads", "1", "--max-steps", "6", "--gate-problems", "8",
                                    "--gate-samples", "0", "--gate-max-tokens", "256")
    seed: int = 0
    episode_timeout: float = 900.0
    heldout_tokens: int = 256
    train: bool = True  # False: episodes only (tests of the policy)
    train_after_last: bool = True  # False: the last round's episodes only show the swap (CI time)


def train_now(config: LoopConfig, workspace: Path, home: Path) -> dict:
    """`ledex-train all --workspace` as the editor runs it (niced); the run's record from runs.jsonl."""
    argv = ["nice", "-n", "10", sys.executable, "-m", "ledex.training.cli", "all", "--workspace", str(workspace),
            "--gate-skip", "0", *config.train_flags]
    started = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, "LEDEX_HOME": str(home)}, capture_output=True, text=True)
    with open(config.out / "train.log", "a", encoding="utf-8") as log:
        log.write(done.stdout + done.stderr)
    runs = (workspace / ".ledex" / "train" / "runs.jsonl").read_text().splitlines()
    return json.loads(runs[-1]) | {"exit": done.returncode, "wall_s": round(time.perf_counter() - started, 1)}


def heldout_rate(tasks: list[Task], home: Path, config: LoopConfig) -> dict:
    """The model in service's held-out fix rate (greedy; fixes must pass held-back tests too)."""
    from ledex.engine import registry
    from ledex.engine.backends import load_backend
    from ledex.training.promote import Case, GateArgs, self_debug_rate

    if config.model.startswith("replay:"):
        return {"fixed": 0, "cases": 0, "rate": 0.0, "seconds": 0.0, "skipped": "recorded answers"}
    record = registry.current(home)
    memo = config.out.parent / f"heldout-{_model_key(record, config)}.json"  # shared by the policies' runs
    if memo.is_file():
        return json.loads(memo.read_text()) | {"seconds": 0.0, "memo": True}
    started = time.perf_counter()
    root = config.out / "heldout-judge"
    cases = [Case(t.full, t.wrong_code, judge_solutions(t.visible, [t.wrong_code], root)[0], "mutation")
             for t in tasks]
    backend = load_backend(config.model or "default", record["adapter"] if record else None, n_threads=1)
    gate = GateArgs(temperature=0.0, max_tokens=config.heldout_tokens, seed=config.seed)
    result = self_debug_rate(backend, cases, gate, root, "held-out")
    result |= {"seconds": round(time.perf_counter() - started, 1), "version": record["version"] if record else 0}
    memo.write_text(json.dumps(result))
    return result


def _model_key(record: dict | None, config: LoopConfig) -> str:
    from ledex.engine.models import file_hash

    adapter = file_hash(record["adapter"])[:12] if record else "base"
    return f"{adapter}-{config.heldout}-{config.heldout_tokens}-{config.seed}"


def round_summary(number: int, episodes: list[EpisodeResult], run: dict | None, heldout: dict) -> dict:
    steps = {s["name"]: s["seconds"] for s in (run or {}).get("steps", [])}
    outcome = (run or {}).get("outcome") or {}
    decided = [e for e in episodes if e.verified]
    return {"round": number, "episodes": len(episodes), "verified": len(decided),
            "accepted": sum(e.decision.startswith("accept") for e in episodes),
            "accepted_good": sum(e.decision == "accept" and e.held_back_pass for e in episodes),
            "accepted_fix_rate": sum(e.decision == "accept" for e in episodes) / max(len(episodes), 1),
            "generation_s": round(sum(e.generation_s for e in episodes), 1),
            "verification_s": round(sum(e.verification_s for e in episodes), 1),
            "episode_wall_s": round(sum(e.wall_s for e in episodes), 1),
            "training_s": round(sum(steps.get(k, 0) for k in ("collect", "sft", "export")), 1),
            "gate_s": steps.get("promote", 0.0), "train_exit": (run or {}).get("exit"),
            "promoted": bool(outcome.get("promoted")), "version": outcome.get("version"),
            "refusal": None if outcome.get("promoted") else (outcome.get("reason") or _failed_step(run)),
            "audit_flagged": (run or {}).get("audit", {}).get("flagged", 0),
            "heldout_fixed": heldout.get("fixed"), "heldout_cases": heldout.get("cases"),
            "heldout_rate": heldout.get("rate"), "heldout_s": heldout.get("seconds", 0.0)}


def _failed_step(run: dict | None) -> str | None:
    failed = [s["name"] for s in (run or {}).get("steps", []) if s["status"]]
    return f"step {failed[0]} failed (exit {run['exit']}; see train.log)" if failed else None


async def run_loop(config: LoopConfig, stream: list[Task], heldout: list[Task]) -> dict:
    """The whole loop for one policy; writes and returns <out>/report.json's content."""
    workspace, home = config.out / "workspace", config.out / "home"
    workspace.mkdir(parents=True, exist_ok=True)
    options = {"samples": config.samples, "rounds": config.fix_rounds, "runOnStart": False, "seed": config.seed,
               "search": config.search,
               **({"model": config.model} if config.model else {})}
    rate = heldout_rate(heldout, home, config) if heldout else {}
    report = {"config": {**asdict(config), "out": str(config.out)}, "start_heldout": rate, "rounds": [],
              "episodes": []}
    async with Developer(workspace, home, options, config.policy, config.seed) as dev:
        for number in range(1, config.rounds + 1):
            batch = stream[(number - 1) * config.per_round: number * config.per_round]
            episodes = [await dev.episode(t, number, f"round {number}", config.episode_timeout) for t in batch]
            _versions(workspace, episodes)
            last = number == config.rounds and not config.train_after_last
            run = train_now(config, workspace, home) if config.train and not last else None
            if ((run or {}).get("outcome") or {}).get("promoted") and heldout:
                rate = heldout_rate(heldout, home, config)
            report["rounds"].append(round_summary(number, episodes, run, rate))
            report["episodes"] += [asdict(e) for e in episodes]
            (config.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
            print(json.dumps(report["rounds"][-1]), flush=True)
    return report


def _versions(workspace: Path, episodes: list[EpisodeResult]) -> None:
    """Each episode's model version as the server logged it."""
    from ledex.engine.episodes import EpisodeLog, default_path

    log = EpisodeLog(default_path(workspace))
    for e in episodes:
        found = log.get(e.episode) if e.episode else None
        e.version = found.model_version if found else None


# --- report ------------------------------------------------------------------------------------


def table(reports: dict[str, dict]) -> str:
    """The markdown table of docs/training.md's "Learning loop" section."""
    rows = ["| policy | round | episodes | verified | accepted (good) | held-out fixed | promoted | "
            "generation s | verification s | training s | gate s |", "|" + "---|" * 11]
    for name, report in reports.items():
        start = report.get("start_heldout") or {}
        rows.append(f"| {name} | 0 (start) | | | | {start.get('fixed')}/{start.get('cases')} | | | | | |")
        for r in report["rounds"]:
            promoted = f"v{r['version']}" if r["promoted"] else f"no: {(r['refusal'] or '')[:60]}"
            rows.append(f"| {name} | {r['round']} | {r['episodes']} | {r['verified']} | {r['accepted']} "
                        f"({r['accepted_good']}) | {r['heldout_fixed']}/{r['heldout_cases']} | {promoted} | "
                        f"{r['generation_s']} | {r['verification_s']} | {r['training_s']} | {r['gate_s']} |")
    return "\n".join(rows)


def plot(reports: dict[str, dict], path: Path) -> None:
    """Held-out fix rate and accepted-fix rate per round, one line per policy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, report in reports.items():
        rounds = [0] + [r["round"] for r in report["rounds"]]
        left.plot(rounds, [100 * (report["start_heldout"] or {}).get("rate", 0)] +
                  [100 * (r["heldout_rate"] or 0) for r in report["rounds"]], marker="o", label=name)
        right.plot(rounds[1:], [100 * r["accepted_fix_rate"] for r in report["rounds"]], marker="o", label=name)
    left.set(title="held-out fix rate (%)", xlabel="round (0: before any training)", ylim=(-2, 100))
    right.set(title="accepted fixes (% of episodes)", xlabel="round", ylim=(-2, 100))
    for axis in (left, right):
        axis.xaxis.get_major_locator().set_params(integer=True)
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--policies", nargs="+", default=["careful", "careless"], choices=["careful", "careless"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-search", dest="search", action="store_false",
                        help="offer only the model's fixes (search-found ones are on by default, as in the editor)")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--gate-problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256, help="per held-out and gate answer")
    parser.add_argument("--report-only", action="store_true", help="only print the table / write the plot")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        tasks = build_stream(range(511 + GATE_SLICE, 601), args.seed, args.out / "stream-judge",
                             limit=args.heldout + args.rounds * args.per_round)
        heldout, stream = tasks[:args.heldout], tasks[args.heldout:]
        flags = ("--threads", "1", "--max-steps", str(args.max_steps), "--gate-problems", str(args.gate_problems),
                 "--gate-samples", "0", "--gate-max-tokens", str(args.max_tokens))
        for name in args.policies:
            config = LoopConfig(args.out / name, Policy(name), rounds=args.rounds, per_round=args.per_round,
                                samples=args.samples, heldout=args.heldout, seed=args.seed, search=args.search,
                                train_flags=flags, heldout_tokens=args.max_tokens)
            asyncio.run(run_loop(config, stream, heldout))
    reports = {p.name: json.loads((p / "report.json").read_text()) for p in sorted(args.out.iterdir())
               if (p / "report.json").is_file()}
    print(table(reports))
    if args.plot:
        plot(reports, args.plot)
    return reports


if __name__ == "__main__":
    main()
