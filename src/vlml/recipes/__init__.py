"""Recipes wire data, encoders, pseudo-labels, models, losses and the engine into experiments.

- `spml/`: single-positive multi-label learning (VLPL and every SPML baseline loss, by name).
- `ssmll/`: semi-supervised multi-label learning: `ssmll/cbsa.py` (CBSA), `ssmll/cap.py` (CAP).

The registry holds records; a record imports its recipe module only when asked
(`entry.load()`), so listing recipes imports no torch.

>>> from vlml import recipes
>>> recipes.list_recipes()
['cap', 'cbsa', 'spml', 'vlpl']
>>> recipes.RECIPES.get("cbsa").module
'vlml.recipes.ssmll.cbsa'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from vlml.registry import Registry


@dataclass(frozen=True)
class RecipeEntry:
    """A registered recipe: its module (with `Config`, `train`, `build_inputs`...), its family
    ("spml" or "ssmll") and a one-line description."""

    name: str
    module: str
    family: str
    description: str

    def load(self) -> ModuleType:
        """The recipe module (imports torch)."""
        return importlib.import_module(self.module)


RECIPES: Registry[RecipeEntry] = Registry("recipe")
for _entry in (
    RecipeEntry("spml", "vlml.recipes.spml", "spml",
                "single-positive labels: VLPL and every SPML baseline loss (loss.name)"),
    RecipeEntry("vlpl", "vlml.recipes.spml", "spml", "alias of spml"),
    RecipeEntry("cbsa", "vlml.recipes.ssmll.cbsa", "ssmll",
                "semi-supervised: context-based semantic-aware alignment on CLIP tokens"),
    RecipeEntry("cap", "vlml.recipes.ssmll.cap", "ssmll",
                "semi-supervised baseline: class-distribution-aware pseudo-labels"),
):
    RECIPES.register(_entry.name, _entry)


def list_recipes() -> list[str]:
    """Registered recipe names, sorted."""
    return RECIPES.names()


def get(name: str) -> ModuleType:
    """The recipe module registered as `name` (close-name suggestion on a miss)."""
    return RECIPES.get(name).load()


__all__ = ["RECIPES", "RecipeEntry", "list_recipes", "get"]
