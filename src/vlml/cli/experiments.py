"""`vlml sweep GRID --out DIR` and `vlml table DIR`: a paper's table in one command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command
from vlml.errors import ConfigError

EXECUTORS = ("local", "slurm", "submitit-local")  # as vlml.experiments.executors.EXECUTORS
FORMATS = ("md", "latex", "csv")                  # as vlml.experiments.table.FORMATS


def add_parsers(subparsers: Any) -> None:
    """Register the commands."""
    s = add_command(
        subparsers, "sweep", "run every cell of a grid x seeds, each in its own run folder",
        "vlml sweep toy --out sweeps/toy\n"
        "  vlml sweep vlpl_table1 --out sweeps/t1 --root voc2012=~/data/VOCdevkit/VOC2012 \\\n"
        "      --root coco2014=~/data/coco --executor slurm",
        description="Plan and validate every cell (a grid file's axes x seeds) before any "
        "run, extract every feature cache the cells read once, then run the cells (finished "
        "ones are skipped, a failing one is recorded in DIR/sweep.json and the others go on) "
        "and print the tables. Shipped grids: toy, vlpl_table1, vlpl_table2, cbsa_main, "
        "cbsa_ablations (`vlml sweep --list`).")
    s.add_argument("grid", nargs="?", help="a grid file, or a shipped grid name")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides of every cell, e.g. optim.epochs=1")
    s.add_argument("--out", type=Path, help="the sweep folder (run folders, caches, record)")
    s.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="training seeds (default: the grid's); the data stay the same")
    s.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this machine (processes); slurm: a SLURM job per cell via "
                        "submitit (resources from the grid's slurm: section); submitit-local: "
                        "the slurm code path on this machine")
    s.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells at once on this machine (each in its own process when N > 1)")
    s.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2",
                   help="run only these values of an axis (or part=NAME); repeatable")
    s.add_argument("--root", action="append", default=[], metavar="DATASET=PATH",
                   help="data.root of the cells of a dataset (its `dataset` axis value or "
                        "data.dataset); repeatable")
    s.add_argument("--dry-run", action="store_true",
                   help="validate every cell and say what would run; run nothing")
    s.add_argument("--no-table", action="store_true", help="do not print the tables at the end")
    s.add_argument("--list", action="store_true", help="list the shipped grids and exit")
    s.set_defaults(func=run_sweep)

    t = add_command(
        subparsers, "table", "a sweep's tables: mean ± std over seeds, best marked, "
        "optionally beside the published numbers",
        "vlml table sweeps/toy\n  vlml table sweeps/t1 --compare --format latex",
        description="One row per method, one column per dataset (or proportion), test mAP "
        "mean ± std over seeds, the best of each column marked. --compare adds the paper's "
        "numbers (shipped, from methods.md section 6) and the difference. Writes DIR/tables/"
        "<part>.{md,tex,csv} and a plot <part>.png beside each table.")
    t.add_argument("dir", type=Path, help="a sweep folder (holds sweep.json)")
    t.add_argument("--format", choices=FORMATS, default="md", help="md (default), latex or csv")
    t.add_argument("--compare", nargs="?", const="auto", metavar="PUBLISHED",
                   help="compare with published numbers: the grid's own (no value) or a "
                        "shipped name / YAML file")
    t.add_argument("--part", action="append", default=[], help="only these parts (tables)")
    t.add_argument("--no-plot", action="store_true", help="write no plot")
    t.set_defaults(func=run_table)


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _only(items: list[str]) -> dict[str, list[str]]:
    return {k: [x for x in v.split(",") if x] for k, v in _pairs(items, "--only").items()}


def run_sweep(args: argparse.Namespace) -> int:
    from vlml import progress
    from vlml.experiments import grid as grids

    if args.list:
        for name in grids.list_shipped():
            g = grids.load(name)
            print(f"{name:16s} {g.title} ({len(g.cells())} cells)")
        return 0
    if not args.grid or args.out is None:
        raise ConfigError("vlml sweep needs a GRID and --out DIR (or --list)")
    from vlml.experiments.sweep import run_sweep as sweep

    grid = grids.load(args.grid)
    report = sweep(grid, args.out, seeds=args.seeds, executor=args.executor, jobs=args.jobs,
                   overrides=args.overrides, roots=_pairs(args.root, "--root"),
                   only=_only(args.only), dry_run=args.dry_run)
    if args.dry_run:
        print(f"{report.cells} cells valid; {report.finished_before} finished, "
              f"{len(report.pending)} would run (dry run: nothing was run or written)")
        for cell_id in report.pending:
            print(f"  {cell_id}")
        return 0
    if not args.no_table:
        print(_tables_text(args.out, "md", None, [], plot=True))
    for cell_id, error in report.failed.items():
        progress.summary(f"failed: {cell_id}: {error}")
    print(report.line())
    return 0 if report.ok else 1


def _tables_text(out: Path, fmt: str, compare: str | None, parts: list[str],
                 plot: bool) -> str:
    """Build, write (DIR/tables/) and return the tables of a sweep folder."""
    from vlml.experiments import plots, published, record
    from vlml.experiments.table import SUFFIX, build_tables, render
    from vlml.fileio import write_text_atomic

    meta = record.SweepRecord.load(out, required=True).data["grid"]
    names = list(meta["parts"])
    for p in parts:
        if p not in names:
            from vlml.experiments.grid import unknown_message

            raise ConfigError(f"--part: {unknown_message('part', p, names)}")
    chosen = parts or names
    pub: dict[str, Any] = {}
    if compare is not None:
        for name in chosen:
            source = meta["parts"][name].get("published") if compare == "auto" else compare
            if source is None:
                raise ConfigError(f"--compare: the grid gives part {name!r} no published "
                                  f"numbers; name them (shipped: "
                                  f"{', '.join(published.list_shipped())})")
            pub[name] = published.load(source)
    texts = []
    for table in build_tables(out, pub):
        if table.part not in chosen:
            continue
        text = render(table, fmt)
        folder = Path(out) / "tables"
        write_text_atomic(folder / f"{table.part}{SUFFIX[fmt]}", text)
        if plot:
            png = plots.plot(table, folder / f"{table.part}.png")
            if png is not None and fmt == "md":
                text += f"\nplot: {png}\n"
        texts.append(text)
    return "\n".join(texts)


def run_table(args: argparse.Namespace) -> int:
    print(_tables_text(args.dir, args.format, args.compare, args.part, not args.no_plot),
          end="")
    return 0
