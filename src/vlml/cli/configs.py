"""`vlml config show RECIPE` and `vlml config init RECIPE [--from CONFIG] --out FILE`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command


def add_parsers(subparsers: Any) -> None:
    c = add_command(subparsers, "config", "list a recipe's config keys, or write a starting "
                    "config file", "vlml config show spml\n"
                    "  vlml config init spml --from spml/toy/vlpl --out my.yaml")
    sub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    s = add_command(sub, "show", "every key of a recipe's config: default, type, allowed "
                    "values, meaning", "vlml config show cbsa")
    s.add_argument("recipe", help="a recipe name (spml, cbsa, cap), or a config file / shipped "
                                  "config name whose recipe is meant")
    s.set_defaults(func=run_show)
    i = add_command(sub, "init", "write a complete, commented config file to start from",
                    "vlml config init spml --from spml/voc2007/vlpl --out my.yaml")
    i.add_argument("recipe", help="a recipe name (spml, cbsa, cap)")
    i.add_argument("--from", dest="source", metavar="CONFIG",
                   help="a shipped config name or a YAML file whose values to start from "
                        "(default: the recipe's defaults)")
    i.add_argument("--out", required=True, type=Path, help="the YAML file to write")
    i.add_argument("--force", action="store_true", help="replace an existing file")
    i.set_defaults(func=run_init)


def _recipe(name: str) -> tuple[str, Any]:
    """(recipe name, its Config class) from a recipe name or a config naming one."""
    from vlml import config, recipes

    if name in recipes.list_recipes():
        return name, recipes.get(name).Config
    recipe = str(config.read_yaml(config.resolve(name)).get("recipe", "spml"))
    return recipe, recipes.get(recipe).Config


def run_show(args: argparse.Namespace) -> int:
    from vlml import config_docs

    recipe, cls = _recipe(args.recipe)
    print(config_docs.show_text(cls, recipe), end="")
    return 0


def run_init(args: argparse.Namespace) -> int:
    from vlml import config, config_docs, recipes
    from vlml.errors import ConfigError
    from vlml.fileio import write_text_atomic

    if args.recipe not in recipes.list_recipes():
        raise ConfigError(f"unknown recipe {args.recipe!r}; expected one of "
                          f"{', '.join(recipes.list_recipes())}")
    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    data: dict[str, Any] = {}
    source = ""
    if args.source:
        path = config.resolve(args.source)
        data = config.read_yaml(path)
        source = args.source
        given = data.get("recipe", "spml")
        if given != args.recipe:
            raise ConfigError(f"{args.source} is a {given!r} config, not {args.recipe!r}")
    # a copied starting point must not keep the shipped run's name and folder
    data.update({"recipe": args.recipe, "name": out.stem, "out_dir": f"runs/{out.stem}"})
    cls = recipes.get(args.recipe).Config
    write_text_atomic(out, config_docs.init_yaml(cls, args.recipe, data, source))
    print(f"wrote {out} (recipe {args.recipe}; run folder runs/{out.stem}); train it with: "
          f"vlml train {out}")
    return 0
