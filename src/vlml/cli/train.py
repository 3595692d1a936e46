"""`vlml train CONFIG [key=value ...]` and `vlml eval RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml import config, recipes
from vlml.cli.common import add_command


def add_parsers(subparsers: Any) -> None:
    t = add_command(subparsers, "train", "train a model from a YAML config (resumes a run)",
                    "vlml train configs/spml/voc2007/vlpl.yaml data.root=~/datasets "
                    "optim.epochs=5")
    t.add_argument("config", type=Path, help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. optim.lr=1e-4 loss.name=em")
    t.add_argument("--recipe", help="recipe name (default: the config's `recipe` key, else spml)")
    t.set_defaults(func=run_train)

    e = add_command(subparsers, "eval", "re-evaluate a finished run on its test split",
                    "vlml eval runs/voc2007-vlpl")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--recipe", help="recipe name (default: the one the run was trained with)")
    e.set_defaults(func=run_eval)


def recipe_of(config_path: Path, given: str | None) -> Any:
    """The recipe module: `given`, else the config's top-level `recipe` key, else spml."""
    if given is None:
        given = str(config.read_yaml(config_path).get("recipe", "spml"))
    return recipes.get(given)


def run_train(args: argparse.Namespace) -> int:
    recipe = recipe_of(args.config, args.recipe)
    cfg = config.load(recipe.Config, args.config, args.overrides)
    result = recipe.train(cfg)
    print(f"test mAP {result.test_map:.2f} (best epoch {result.best_epoch}, val mAP "
          f"{result.val_map:.2f}); run folder: {result.run_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    recipe_of(args.run_dir / "config.yaml", args.recipe).evaluate_run(args.run_dir)
    return 0
