"""Trajectory records: the dataset `ledex-train collect` writes and `sft`, `rl`, `kto` read.

One JSON object per line. A record is one explanation+refinement attempt for one wrong
solution, with the sandbox's verdict. LEDEX keeps both kinds: correct trajectories feed SFT,
failed ones feed RL (and KTO as undesirable examples).

    python -m ledex.training.records data.jsonl     # print a summary of a dataset
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

from ledex.engine.apply import atomic_write_text
from ledex.engine.format import Mode, Problem

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A dataset line that is not a valid trajectory; says which line and why."""


@dataclass(frozen=True)
class Trajectory:
    """One explain+refine attempt at one wrong solution, with the sandbox's verdict on the
    refinement (one JSONL line of a dataset; `id` deduplicates identical attempts).
    """

    source: str  # "mbpp/601", "feedback/<episode id>", "<jsonl stem>/<n>"
    task: str  # first user turn (problem text, or the failing test for editor episodes)
    wrong_code: str
    feedback: str  # execution feedback on the wrong code
    explanation: str
    code: str  # the refinement
    correct: bool  # the refinement passed every test in the sandbox
    pass_rate: float  # S_ut for the RL refinement reward
    mode: str = Mode.EXPLAIN.value
    teacher: str = ""  # model identity that wrote explanation+code ("user" for accepted editor fixes)
    origin: str = "sampled"  # "sampled" | "mutation" | "reference" | "accepted" | "rejected"
    tests: tuple[str, ...] = ()  # the problem's tests (RL re-verifies new completions with them)
    setup: str = ""
    entry_point: str | None = None
    schema: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)
    licence: str = ""  # of the code the problem comes from ("CC-BY-4.0" for MBPP, the package's own)
    split: str = ""  # the source's split ("train", "prompt"); evaluation splits never appear
    operator: str = ""  # engine.operators.OPERATORS, for planted bugs
    verdicts: dict = field(default_factory=dict)  # sandbox verdicts on the wrong and the refined code

    @property
    def problem(self) -> Problem:
        """The LEDEX debugging problem this attempt answers (task, wrong code, feedback)."""
        return Problem(self.task, self.wrong_code, self.feedback)

    @property
    def id(self) -> str:
        """Content id: identical attempts deduplicate to one record."""
        key = "\x00".join([self.task, self.wrong_code, self.explanation, self.code, self.mode])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def wrong_id(self) -> str:
        """Groups attempts at the same wrong solution (CodeBLEU/embedding references)."""
        return hashlib.sha256(f"{self.task}\x00{self.wrong_code}".encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """One JSON line (no newline) with the content id first."""
        return json.dumps({"id": self.id, **asdict(self)}, ensure_ascii=False)


_FIELDS = {f.name for f in fields(Trajectory)}
_REQUIRED = {"source", "task", "wrong_code", "feedback", "explanation", "code", "correct", "pass_rate"}


def from_dict(row: dict, where: str = "") -> Trajectory:
    """A Trajectory from one parsed JSON line; unknown keys are ignored. Raises RecordError
    (naming `where`) for a missing required field, a non-boolean 'correct' or a non-numeric
    'pass_rate'."""
    missing = _REQUIRED - row.keys()
    if missing:
        raise RecordError(f"{where}: missing {', '.join(sorted(missing))}")
    values = {k: v for k, v in row.items() if k in _FIELDS}
    values["tests"] = tuple(values.get("tests") or ())
    if not isinstance(values["correct"], bool) or not isinstance(values["pass_rate"], (int, float)):
        raise RecordError(f"{where}: 'correct' must be a boolean and 'pass_rate' a number")
    return Trajectory(**values)


def read(path: str | Path, *, skip_bad: bool = False, errors: list[str] | None = None) -> Iterator[Trajectory]:
    """Records from a JSONL file; a corrupt or partial line raises, or is skipped and noted."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield from_dict(json.loads(line), f"{path}:{number}")
            except (json.JSONDecodeError, RecordError, TypeError) as exc:
                if not skip_bad:
                    raise RecordError(f"{path}:{number}: {exc}") from exc
                if errors is not None:
                    errors.append(f"{path}:{number}: {exc}")


def write(path: str | Path, records: Iterable[Trajectory]) -> int:
    """Write deduplicated records (first of each id kept) atomically: temp file, fsync, rename
    (`ledex.engine.apply.atomic_write_text`); makes the folder; returns the count written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unique: dict[str, str] = {}
    for record in records:
        unique.setdefault(record.id, record.to_json() + "\n")
    atomic_write_text(path, "".join(unique.values()))
    return len(unique)


def initial_path(output: str | Path) -> Path:
    """The sibling file of `output` that holds the correct initial solutions
    (`data.jsonl` -> `data.initial.jsonl`): collect writes it, sft reads it next to the trajectories.
    """
    output = Path(output)
    return output.with_name(output.stem + ".initial.jsonl")


def summary(records: Iterable[Trajectory]) -> dict:
    """The LEDEX yield table: wrong solutions, those with a correct refinement, refine rate."""
    wrong, fixed, total, correct = set(), set(), 0, 0
    for record in records:
        total += 1
        wrong.add(record.wrong_id)
        if record.correct:
            correct += 1
            fixed.add(record.wrong_id)
    return {"trajectories": total, "correct_trajectories": correct, "wrong_solutions": len(wrong),
            "wrong_solutions_fixed": len(fixed), "refine_rate": len(fixed) / len(wrong) if wrong else 0.0}


def yield_by(records: Iterable[Trajectory], key) -> dict[str, dict]:
    """summary() per value of key(record) (a source, an operator...), sorted by value."""
    groups: dict[str, list[Trajectory]] = {}
    for record in records:
        groups.setdefault(str(key(record)), []).append(record)
    return {name: summary(rows) for name, rows in sorted(groups.items())}


# Bucket edges of the token-length histogram (tokens of prompt + answer under the chat template).
HISTOGRAM_EDGES = (256, 384, 512, 768, 1024, 1536, 2048, 4096, 8192)


def histogram(lengths: Iterable[int], edges: tuple[int, ...] = HISTOGRAM_EDGES) -> dict[str, int]:
    """Counts per bucket "<=edge" (and ">last") of a list of token lengths.

    >>> histogram([100, 300, 300, 9000], (256, 512))
    {'<=256': 1, '<=512': 2, '>512': 1}
    """
    counts = {f"<={e}": 0 for e in edges} | {f">{edges[-1]}": 0}
    for n in lengths:
        counts[next((f"<={e}" for e in edges if n <= e), f">{edges[-1]}")] += 1
    return counts


class ServedTokens:
    """Token counts under the served model's tokenizer and chat template (the embedded GGUF's,
    or `model`'s): what `ledex fix` renders (format.render_chat) and what SFT trains on."""

    def __init__(self, model: str = ""):
        from llama_cpp import Llama

        from ledex.engine.backends import CHATML_TEMPLATE
        from ledex.engine.models import parse_model_spec

        self.llm = Llama(model_path=parse_model_spec(model).location, vocab_only=True, verbose=False)
        self.template = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self.eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode("utf-8", errors="replace")

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def lengths(self, record: Trajectory) -> tuple[int, int]:
        """(prompt tokens as served, answer tokens): the answer is the SFT target."""
        from ledex.engine.format import build_messages, format_response, render_chat

        mode = Mode(record.mode)
        prompt = self.count(render_chat(build_messages(record.problem, mode), self.template, eos_token=self.eos))
        answer = len(self.llm.tokenize(format_response(record.explanation, record.code, mode).encode("utf-8"),
                                       add_bos=False, special=True)) + 1  # + end of turn
        return prompt, answer


if __name__ == "__main__":
    import sys

    print(json.dumps(summary(read(sys.argv[1], skip_bad=True)), indent=2))
