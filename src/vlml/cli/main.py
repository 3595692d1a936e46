"""Entry point of the `vlml` console script."""

from __future__ import annotations

import argparse
import sys

from vlml import __version__
from vlml.cli import calibrate, clip, data, demo, export, predict, regime, train
from vlml.errors import VlmlError

COMMANDS = (data, regime, clip, train, predict, calibrate, export, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlml",
        description="Multi-label learning from incomplete labels with a frozen vision-language "
                    "model.",
        epilog="example:\n  vlml demo --out demo-out",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VlmlError as e:
        print(f"vlml: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
