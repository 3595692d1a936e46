"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vlml import distributed
from vlml.errors import ConfigError


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """--progress, --quiet and --debug, on the main parser and on every command (so they may
    come before or after the command name)."""
    g = parser.add_argument_group("output")
    g.add_argument("--progress", choices=("auto", "bar", "plain", "none"),
                   default=argparse.SUPPRESS,
                   help="progress display: bars on a terminal, plain lines (files, CI), or "
                        "none; default auto (bars when stderr is a terminal)")
    g.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress and no per-epoch lines; results and errors only")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def add_command(subparsers: Any, name: str, help: str, example: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose --help ends with a worked example, with the output
    options; a command may re-declare one of them (`conflict_handler="resolve"`)."""
    parser = subparsers.add_parser(
        name, help=help, description=description or help, conflict_handler="resolve",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(parser)
    return parser


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """`["difficult=ignore", "version=em_apl"]` -> dict; values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def say(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only: under torchrun every process runs the command, one speaks."""
    if distributed.is_main():
        print(*args, **kwargs)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
