"""`vlml train CONFIG [key=value ...]` and `vlml eval RUN_DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlml import config, recipes, runs
from vlml.cli.common import add_command


def add_parsers(subparsers: Any) -> None:
    t = add_command(subparsers, "train", "train a model from a YAML config (resumes a run)",
                    "vlml train spml/voc2007/vlpl data.root=~/datasets "
                    "optim.epochs=5")
    t.add_argument("config", help="a YAML config file, or a shipped config name such as "
                                   "spml/voc2007/vlpl (vlml.config.list_shipped())")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. optim.lr=1e-4 loss.name=em")
    t.add_argument("--recipe", help="recipe name (default: the config's `recipe` key, else spml)")
    claim = t.add_mutually_exclusive_group()
    claim.add_argument("--new", action="store_true",
                       help="put the run in a fresh suffixed folder (<out_dir>-2, -3, ...) when "
                            "out_dir holds a run of another config")
    claim.add_argument("--overwrite", action="store_true",
                       help="delete the run in out_dir and start again")
    t.set_defaults(func=run_train)

    e = add_command(subparsers, "eval", "re-evaluate a finished run on its test split (or on "
                    "another catalog)", "vlml eval runs/voc2007-vlpl\n"
                    "  vlml eval runs/vlpl --catalog catalogs/test/all.catalog.zip")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--catalog", type=Path,
                   help="a catalog with the run's classes, fully labelled (default: the run's "
                        "test split)")
    e.set_defaults(func=run_eval)


def recipe_of(config_path: str | Path, given: str | None) -> Any:
    """The recipe module: `given`, else the config's top-level `recipe` key, else spml.
    `config_path`: a file or a shipped config name (`vlml.config.resolve`)."""
    if given is None:
        given = str(config.read_yaml(config.resolve(config_path)).get("recipe", "spml"))
    return recipes.get(given)


def run_train(args: argparse.Namespace) -> int:
    recipe = recipe_of(args.config, args.recipe)
    forced = [f"recipe={args.recipe}"] if args.recipe else []
    cfg = config.load(recipe.Config, args.config, [*args.overrides, *forced])
    print(f"run folder: {cfg.out_dir}", flush=True)
    result = runs.run(cfg, new=args.new, overwrite=args.overwrite)
    print(summary_line(result))
    return 0


def summary_line(result: runs.RunResult) -> str:
    """One line: test mAP (or why there is none), the selected epoch and what selected it."""
    test = ("no test catalog, so no test mAP" if result.test_map is None
            else f"test mAP {result.test_map:.2f}")
    sel = result.selection or {}
    value = sel.get("value")
    chosen = (f"{sel['metric']} {value:.2f}" if sel.get("rule") not in (None, "last")
              and value is not None else "the last epoch")
    return (f"{test} (epoch {result.best_epoch}, selected by {chosen}); run folder: "
            f"{result.run_dir}")


def run_eval(args: argparse.Namespace) -> int:
    result = runs.evaluate_run(args.run_dir, args.catalog)
    print(json.dumps({"run": str(args.run_dir), "test_map": result["test_map"]}))
    return 0
