"""Typed config dataclasses -> argparse options (TRL style: every field has help text).

Each `ledex-train` subcommand declares a dataclass; its fields become `--kebab-case` options
with the field's `metadata["help"]` and default, and `from_args` builds the dataclass back
from the parsed options. Kept tiny and dependency-free (no HfArgumentParser: it cannot add
options to a subparser, and importing transformers would slow `ledex-train --help` down by
seconds). A library: `python -m ledex.training.cli <command> --help` shows what it builds.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base_type(annotation) -> tuple[type, bool]:
    """(element type, is_sequence) of a field annotation such as `int | None`, `list[str]` or
    `tuple[str, ...]`.

    >>> _base_type(int | None), _base_type(list[str]), _base_type(tuple[str, ...])
    ((<class 'int'>, False), (<class 'str'>, True), (<class 'str'>, True))
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(annotation)[0], True
    return annotation, False


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, skip: typing.Iterable[str] = ()) -> None:
    """One `--kebab-case` option per field of dataclass `cls` (except those named in `skip`).

    bool: `--flag` turns it on, `--flag false` off (TRL/HfArgumentParser behaviour); list and
    tuple fields take one or more values and are repeatable; `X | None` takes an X. Help is
    `metadata["help"]` plus the default.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, many = _base_type(hints[f.name])
        default, help_text = _default(f), f.metadata.get("help", "")
        name = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(name, type=_bool, nargs="?", const=True, default=default,
                                help=f"{help_text} (default: {default})")
        elif many:
            parser.add_argument(name, type=kind, nargs="+", action="extend", default=None,
                                help=f"{help_text} (repeatable; default: {_shown(default) or 'none'})")
        else:
            parser.add_argument(name, type=kind, default=default, help=f"{help_text} (default: {default})")


def from_args(cls, args: argparse.Namespace, **overrides: Any):
    """The dataclass `cls` from parsed options: a field's option value, else its default;
    `overrides` win (for options that are not fields, such as --quiet). Sequence values become
    the field's container type (list or tuple)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None and _default(f) is not dataclasses.MISSING:
            value = _default(f)
        elif value is not None and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
        values[f.name] = value
    return cls(**(values | overrides))


def run_command(command: str, cls, args: argparse.Namespace, work: typing.Callable[[Any], Any],
                report: typing.Callable[[Any], str], errors: tuple[type[BaseException], ...]) -> int:
    """The body of a `ledex-train <command>` main: build `cls` from the parsed options, run `work` on
    it and print `report(result)`; exit status 0. One of `errors` (bad input the user can fix) prints
    `ledex-train <command>: <message>` on stderr instead: exit status 2."""
    import sys

    try:
        result = work(from_args(cls, args))
    except errors as exc:
        print(f"ledex-train {command}: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    return 0
