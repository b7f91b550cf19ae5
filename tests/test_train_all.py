"""`ledex-train all` (the editor's "Train now"): its steps are valid ledex-train command lines,
and it refuses clearly when there is nothing to learn from."""

import argparse
import importlib
import subprocess
import sys

from ledex.training import cli
from ledex.training.pipeline import GATE_PROBLEMS, steps


def parse(argv: list[str]) -> argparse.Namespace:
    parser, parsers = cli.build_parser()
    module_name, add_name, _, _ = cli.COMMANDS[argv[0]]
    getattr(importlib.import_module(module_name), add_name)(parsers[argv[0]])
    return parser.parse_args(argv)


def test_every_step_parses_with_its_subcommand(tmp_path):
    (tmp_path / ".ledex").mkdir()
    (tmp_path / ".ledex" / "episodes.sqlite3").write_bytes(b"")
    args = argparse.Namespace(workspace=str(tmp_path), problems=[], limit=3, no_gate=False)
    planned = steps(args)
    assert [argv[0] for argv in planned] == ["collect", "sft", "export", "promote"]
    collect, sft, export, promote = (parse(argv) for argv in planned)
    assert collect.feedback_log == [str(tmp_path / ".ledex" / "episodes.sqlite3")] and collect.limit == 3
    assert sft.data == [collect.output]
    assert export.adapter_dir.startswith(sft.output_dir) and promote.adapter == export.output
    assert promote.problems == str(GATE_PROBLEMS) and GATE_PROBLEMS.is_file()


def test_nothing_to_learn_from_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ledex.training.cli", "all", "--workspace", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nothing to learn from" in proc.stderr
