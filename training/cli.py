"""`ledex-train`: the training command line (collect, sft, export, promote, rollback, ...).

Subcommands are registered in COMMANDS: name -> (module, add-arguments function, main
function, help). A module is imported only when its subcommand runs, so `ledex-train --help`
is instant and a missing optional dependency breaks only its own subcommand. To add one,
write `add_arguments(parser)` and `main(args) -> int` in the module (training.config has the
dataclass-to-options bridge and `run_command`) and add a line here.

    ledex-train collect --problems ../shared/data/mbpp.jsonl --split train --output data/mbpp.jsonl
    ledex-train split data/mbpp.jsonl --train data/train.jsonl --held-back-file data/held-back.jsonl
    ledex-train sft --data data/train.jsonl --eval-data data/held-back.jsonl --output-dir runs/sft
    ledex-train export runs/sft/adapter --output runs/sft/adapter.gguf
    ledex-train promote runs/sft/adapter.gguf --problems ../shared/data/mbpp.jsonl
    ledex-train rollback
Multi-GPU SFT:  accelerate launch -m ledex.training.cli sft --data ... --output-dir ...
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "collect": ("ledex.training.collect", "add_arguments", "main", "collect execution-verified LEDEX trajectories"),
    "split": ("ledex.training.split", "add_arguments", "main", "hold back part of a trajectory file, by function"),
    "sft": ("ledex.training.sft", "add_arguments", "main", "LoRA/QLoRA SFT on correct trajectories (TRL)"),
    "export": ("ledex.training.export", "add_arguments", "main", "PEFT adapter -> GGUF LoRA adapter for llama.cpp"),
    "promote": ("ledex.training.promote", "add_arguments", "main", "gate and promote an adapter into service"),
    "rollback": ("ledex.training.promote", "add_rollback_arguments", "rollback_main", "put the previous adapter back"),
    "rl": ("ledex.training.rl", "add_arguments", "main", "RL on success and failure trajectories"),
    "kto": ("ledex.training.kto", "add_arguments", "main", "KTO on desirable/undesirable trajectories"),
    "eval": ("ledex.training.evaluate", "add_arguments", "main", "evaluate self-debugging (MBPP, HumanEval)"),
    "all": ("ledex.training.pipeline", "add_arguments", "main", "collect, sft, export and gated promote in one go"),
}

# Positional shorthands: `export DIR`, `promote FILE` (the option form works too).
POSITIONAL = {"export": "adapter_dir", "promote": "adapter"}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """(the top-level parser, subcommand name -> its subparser, options not yet added)."""
    parser = argparse.ArgumentParser(prog="ledex-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {}
    for name, (_, _, _, help_text) in COMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
    return parser, parsers


def main(argv: list[str] | None = None) -> int:
    """Run `ledex-train <command> ...` (argv without the program name; default sys.argv[1:]).
    Returns the subcommand's exit status; 2 for an unknown command, 130 when interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in parsers:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"ledex-train: unknown command {argv[0]!r} (choose from {', '.join(parsers)})", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module_name, add_name, main_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    getattr(module, add_name)(parsers[name])
    if name in POSITIONAL:
        parsers[name].add_argument("positional", nargs="?", help=f"same as --{POSITIONAL[name].replace('_', '-')}")
    args = parser.parse_args(argv)
    if getattr(args, "positional", None):
        setattr(args, POSITIONAL[name], args.positional)
    try:
        return int(getattr(module, main_name)(args) or 0)
    except KeyboardInterrupt:
        print(f"ledex-train {name}: interrupted (finished work is cached; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
