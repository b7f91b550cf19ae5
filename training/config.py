"""Typed config dataclasses -> argparse options (TRL style: every field has help text).

Each `ledex-train` subcommand declares a dataclass; its fields become `--kebab-case` options
with the field's `metadata["help"]` and default. Kept tiny and dependency-free (no
HfArgumentParser: it cannot add options to a subparser, and importing transformers would
slow `ledex-train --help` down by seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def _base_type(annotation) -> tuple[type, bool]:
    """(element type, is_list) of a field annotation such as `int | None` or `list[str]`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"list": list, "dict": dict})  # noqa: S307 - our own annotations
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        kind, many = _base_type(f.type)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = f.metadata.get("help", "")
        name = "--" + f.name.replace("_", "-")
        if kind is bool:
            # `--flag` turns it on, `--flag false` off: TRL/HfArgumentParser behaviour.
            parser.add_argument(name, type=_bool, nargs="?", const=True, default=default,
                                help=f"{help_text} (default: {default})")
        elif many:
            parser.add_argument(name, type=kind, nargs="+", action="extend", default=None,
                                help=f"{help_text} (repeatable)")
        else:
            parser.add_argument(name, type=kind, default=default, help=f"{help_text} (default: {default})")


def from_args(cls, args: argparse.Namespace):
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif value is None and f.default is not dataclasses.MISSING:
            value = f.default
        values[f.name] = value
    return cls(**values)
