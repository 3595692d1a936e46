"""Recipes wire data, encoders, pseudo-labels, models, losses and the engine into experiments.

`vlpl`: single-positive multi-label learning (VLPL and every SPML baseline loss, by name).
`cbsa`, `cap`: semi-supervised multi-label learning (CBSA; the CAP baseline).
"""

from vlml.recipes import cap, cbsa, vlpl
from vlml.registry import Registry

RECIPES: Registry = Registry("recipe")
RECIPES.register("spml", vlpl)
RECIPES.register("vlpl", vlpl)
RECIPES.register("cbsa", cbsa)
RECIPES.register("cap", cap)


def list_recipes() -> list[str]:
    return RECIPES.names()


__all__ = ["vlpl", "cbsa", "cap", "RECIPES", "list_recipes"]
