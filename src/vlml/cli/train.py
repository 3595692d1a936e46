"""`vlml train CONFIG [key=value ...]` and `vlml eval RUN_DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlml import config, recipes
from vlml.cli.common import add_command, say


def add_parsers(subparsers: Any) -> None:
    t = add_command(subparsers, "train", "train a model from a YAML config (resumes a run)",
                    "vlml train spml/voc2007/vlpl data.root=~/datasets "
                    "optim.epochs=5")
    t.add_argument("config", help="a YAML config file, or a shipped config name such as "
                                   "spml/voc2007/vlpl (vlml.config.list_shipped())")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. optim.lr=1e-4 loss.name=em")
    t.add_argument("--recipe", help="recipe name (default: the config's `recipe` key, else spml)")
    t.add_argument("--out", metavar="DIR", help="the run folder (same as out_dir=DIR; default: "
                                                "the config's out_dir)")
    claim = t.add_mutually_exclusive_group()
    claim.add_argument("--new", action="store_true",
                       help="put the run in a fresh suffixed folder (<out_dir>-2, -3, ...) when "
                            "out_dir holds a run of another config")
    claim.add_argument("--overwrite", action="store_true",
                       help="delete the run in out_dir and start again")
    t.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, the effective per-dataset values and what "
                        "would run (data, run folder, weights); do no work")
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
    from vlml import runs

    recipe = recipe_of(args.config, args.recipe)
    forced = [f"recipe={args.recipe}"] if args.recipe else []
    forced += [f"out_dir={args.out}"] if args.out else []
    cfg = config.load(recipe.Config, args.config, [*args.overrides, *forced])
    if args.dry_run:
        say(dry_run(recipe, cfg, new=args.new, overwrite=args.overwrite), end="")
        return 0
    say(f"run folder: {cfg.out_dir}", flush=True)
    result = runs.run(cfg, new=args.new, overwrite=args.overwrite)
    say(summary_line(result))
    return 0


def _effective(cfg: Any) -> dict[str, Any]:
    """The values a run would use where the config leaves them to per-dataset defaults."""
    loss = getattr(cfg, "loss", None)
    if loss is None or not hasattr(loss, "name"):
        return {}
    from vlml import losses

    params = {**losses.get(loss.name).params(cfg.data.dataset), **loss.params}
    return {"loss.params": {k: params[k] for k in sorted(params)}}


def dry_run(recipe: Any, cfg: Any, *, new: bool = False, overwrite: bool = False) -> str:
    """What `vlml train --dry-run` prints: the validated, resolved config as YAML, the effective
    per-dataset values, the data it would read, the run folder and whether it starts, resumes or
    replaces a run, and whether the weights it needs are at hand. Nothing is written."""
    import yaml

    from vlml.errors import VlmlError
    from vlml.runs.folder import plan

    cfg = recipe.validate(cfg)
    lines = ["# resolved config", yaml.safe_dump(config._plain(config.to_dict(cfg)),
                                                  sort_keys=False).rstrip()]
    effective = _effective(cfg)
    if effective:
        lines += ["# effective per-dataset values", yaml.safe_dump(
            effective, sort_keys=False, default_flow_style=None).rstrip()]
    d = cfg.data
    data = (f"catalogs train={d.train_catalog} test={d.test_catalog}"
            + (f" val={d.val_catalog}" if getattr(d, "val_catalog", None) else "")
            if d.train_catalog else f"dataset {d.dataset} at {d.root or '.'!r}")
    folder, action = plan(cfg.out_dir, cfg, new=new, overwrite=overwrite)
    try:
        if hasattr(recipe, "preflight"):
            recipe.preflight(cfg)
        weights = "available"
    except VlmlError as e:
        weights = f"NOT available: {e}"
    lines += ["# would run",
              f"recipe: {cfg.recipe}", f"data: {data}", f"run folder: {folder} ({action})",
              f"weights: {weights}", "(dry run: nothing was read, trained or written)"]
    return "\n".join(lines) + "\n"


def summary_line(result: Any) -> str:
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
    from vlml import runs

    result = runs.evaluate_run(args.run_dir, args.catalog)
    print(json.dumps({"run": str(args.run_dir), "test_map": result["test_map"]}))
    return 0
