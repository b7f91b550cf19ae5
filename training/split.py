"""`ledex-train split`: a held-back part of a trajectory file, by the function the bug is in.

Every record whose function (`Trajectory.source`, e.g. "mbpp/891:same_Length.py:same_Length")
hashes into the first `--held-back` of `--buckets` buckets (int(sha256(source)) mod buckets) goes
to the held-back file, the rest to the training file, lines copied unchanged. All bugs planted in
one function land on the same side, so the held-back loss (`ledex-train sft --eval-data`) is
measured on functions never trained on; the split depends only on the sources, never on order,
seed or the other records (the same file always splits the same way).

    ledex-train split /work/data-ledex/editor.jsonl --train data/train.jsonl --held-back-file data/held-back.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def held_back(source: str, buckets: int = 10, held: int = 1) -> bool:
    """Whether a record of this source is held back: int(sha256(source)) mod buckets < held.

    >>> held_back("mbpp/891:same_Length.py:same_Length")
    True
    """
    return int(hashlib.sha256(source.encode("utf-8")).hexdigest(), 16) % buckets < held


def split_file(data: Path, train: Path, held_back_file: Path, buckets: int = 10, held: int = 1) -> dict:
    """Write the two files (folders made); returns the counts {'train', 'held_back', 'bad_lines'} and the
    functions on each side. Lines that are not JSON objects with a 'source' are counted and left out.
    Raises FileNotFoundError for a missing input and ValueError for buckets/held out of range."""
    if not 0 < held < buckets:
        raise ValueError(f"--held-back must be between 1 and --buckets - 1 (got {held} of {buckets})")
    out = {"train": [], "held_back": []}
    bad = 0
    for line in Path(data).read_text(encoding="utf-8").splitlines():
        try:
            source = json.loads(line)["source"]
        except (ValueError, KeyError, TypeError):
            bad += bool(line.strip())
            continue
        out["held_back" if held_back(source, buckets, held) else "train"].append((source, line))
    for path, key in ((train, "train"), (held_back_file, "held_back")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for _, line in out[key]), encoding="utf-8")
    return {"train": len(out["train"]), "held_back": len(out["held_back"]), "bad_lines": bad,
            "functions": {k: len({s for s, _ in v}) for k, v in out.items()}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ledex-train split`."""
    parser.add_argument("data", help="trajectory JSONL (from `ledex-train collect`)")
    parser.add_argument("--train", required=True, help="where the training records go")
    parser.add_argument("--held-back-file", required=True, help="where the held-back records go")
    parser.add_argument("--buckets", type=int, default=10, help="hash buckets (default 10)")
    parser.add_argument("--held-back", type=int, default=1, help="buckets held back (default 1: ~10%%)")


def main(args: argparse.Namespace) -> int:
    """`ledex-train split`: prints the counts as JSON; exit status 2 for bad input."""
    try:
        counts = split_file(Path(args.data), Path(args.train), Path(args.held_back_file), args.buckets, args.held_back)
    except (OSError, ValueError) as exc:
        print(f"ledex-train split: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0
