"""Entry point of the `vlml` console script."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
import warnings

from vlml import __version__, distributed, progress
from vlml.cli import (
    calibrate,
    clip,
    configs,
    data,
    demo,
    experiments,
    export,
    predict,
    regime,
    train,
)
from vlml.cli.common import add_output_options
from vlml.errors import Terminated, VlmlError

COMMANDS = (data, regime, clip, configs, train, predict, calibrate, export, experiments, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlml",
        description="Multi-label learning from incomplete labels with a frozen vision-language "
                    "model.",
        epilog="example:\n  vlml demo --out demo-out",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlml {__version__}")
    add_output_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """Warnings as `vlml: warning: ...` (what they say about the data or the run), not the
    library source line that raised them; `--debug` keeps Python's format."""
    return f"vlml: warning: {message}\n"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


def _on_sigterm_raise() -> tuple[bool, object]:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) in this process while the command
    runs; returns (whether it was set: not off the main thread, the handler to restore)."""
    if threading.current_thread() is not threading.main_thread():
        return False, None
    return True, signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may also follow options (`vlml train CFG --out D optim.lr=1e-3`)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "debug", False):
        warnings.formatwarning = _format_warning
    try:
        multi = distributed.init()  # under torchrun: join the process group
    except VlmlError as e:
        print(f"vlml: error: {e}", file=sys.stderr)
        return 2
    progress.configure(mode=getattr(args, "progress", "auto") if distributed.is_main() else
                       "none", quiet=getattr(args, "quiet", False) or not distributed.is_main())
    args.quiet = getattr(args, "quiet", False)
    where = f" (rank {distributed.rank()})" if multi else ""
    sigterm_set, previous = _on_sigterm_raise()
    try:
        return int(args.func(args) or 0)
    except VlmlError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"vlml: error{where}: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"vlml: stopped{where} by SIGTERM; run the same command again to resume",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("vlml: interrupted", file=sys.stderr)
        return 130
    finally:
        if sigterm_set:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if multi:  # leave the process group cleanly (gloo aborts at exit otherwise)
            distributed.destroy()


if __name__ == "__main__":
    sys.exit(main())
