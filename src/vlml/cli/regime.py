"""`vlml regime ...`: turn a fully labelled catalog into an incomplete-label one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml import regimes
from vlml.cli.common import add_command
from vlml.errors import ConfigError, DataError
from vlml.types import Catalog


def add_parsers(subparsers: Any) -> None:
    group = add_command(subparsers, "regime", "draw a label regime from a fully labelled catalog",
                        "vlml regime single-positive train.catalog.zip --out spml.catalog.zip")
    sub = group.add_subparsers(dest="regime_command", required=True, metavar="REGIME")

    sp = add_command(sub, "single-positive",
                     "keep one random positive per image (Cole et al. draw, docs/methods.md 1.1)",
                     "vlml regime single-positive trainval.catalog.zip --out spml.catalog.zip "
                     "--val-out val.catalog.zip")
    _io_args(sp)
    sp.add_argument("--seed", type=int, default=1200)
    sp.add_argument("--num-pos", type=int, default=1)
    sp.add_argument("--num-neg", type=int, default=0)
    sp.add_argument("--val-out", type=Path,
                    help="also split off a clean validation catalog (80/20, seed 1200) here; "
                         "--out then holds the training part")
    sp.add_argument("--val-frac", type=float, default=0.2)
    sp.add_argument("--split-seed", type=int, default=1200)
    sp.set_defaults(func=run_single_positive)

    pa = add_command(sub, "partial", "observe each label with probability q (DualCoOp protocol)",
                     "vlml regime partial train.catalog.zip --q 0.3 --seed 0 --out q30.catalog.zip")
    _io_args(pa)
    pa.add_argument("--q", type=float, required=True, help="observation probability in (0, 1]")
    pa.add_argument("--seed", type=int, default=0)
    pa.set_defaults(func=run_partial)

    ss = add_command(sub, "semi-supervised",
                     "a proportion p of images fully labelled, the rest unlabelled (CAP protocol)",
                     "vlml regime semi-supervised train.catalog.zip --p 0.05 --out p05.catalog.zip")
    _io_args(ss)
    ss.add_argument("--p", type=float, required=True, help="labelled proportion in (0, 1]")
    ss.add_argument("--seed", type=int, default=1)
    ss.set_defaults(func=run_semi_supervised)


def _io_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", type=Path, help="input catalog with ground-truth labels")
    p.add_argument("--out", required=True, type=Path, help="output catalog file")


def _input(args: argparse.Namespace) -> Catalog:
    """The input catalog, after the output paths are checked (before any work): each a file
    path, not a folder, and not the same twice."""
    outs = [p for p in (args.out, getattr(args, "val_out", None)) if p is not None]
    for flag, path in zip(("--out", "--val-out"), outs, strict=False):
        if path.is_dir():
            raise DataError(f"{flag} is a folder; expected the path of a catalog file to write "
                            "(e.g. spml.catalog.zip)", str(path))
    if len(outs) == 2 and outs[0].absolute() == outs[1].absolute():
        raise ConfigError(f"--out and --val-out are the same file {outs[0]}; expected two paths")
    return Catalog.load(args.catalog, require_images=True)


def _write(*outputs: tuple[Catalog, Path, str]) -> None:
    """Write each (catalog, path, flag), after checking every one (so a refusal writes none): a
    catalog with no image, or with no known label, is a degenerate draw, refused with the
    setting to change."""
    for catalog, path, flag in outputs:
        if catalog.n_images == 0:
            raise DataError(f"the draw leaves no image for {flag} (expected at least one): change "
                            "--val-frac, or use a larger catalog", str(path))
        if catalog.n_classes and not (catalog.labels >= 0).any():
            raise DataError(f"the draw observes no label at all for {flag} (every entry "
                            "unknown): nothing to learn from; raise --q / --p / --num-pos, or "
                            "use a larger catalog", str(path))
    for catalog, path, _ in outputs:
        catalog.save(path)
        known = (catalog.labels >= 0).mean() * 100 if catalog.labels.size else 0.0
        print(f"wrote {path}  ({catalog.n_images} images, {known:.2f}% of labels known)")


def run_single_positive(args: argparse.Namespace) -> int:
    observed = regimes.single_positive(_input(args), seed=args.seed, num_pos=args.num_pos,
                                       num_neg=args.num_neg)
    if args.val_out is None:
        _write((observed, args.out, "--out"))
        return 0
    train, val = regimes.train_val_split(observed, val_frac=args.val_frac, seed=args.split_seed)
    _write((train, args.out, "--out"), (val, args.val_out, "--val-out"))
    return 0


def run_partial(args: argparse.Namespace) -> int:
    _write((regimes.partial(_input(args), q=args.q, seed=args.seed), args.out, "--out"))
    return 0


def run_semi_supervised(args: argparse.Namespace) -> int:
    _write((regimes.semi_supervised(_input(args), p=args.p, seed=args.seed), args.out, "--out"))
    return 0
