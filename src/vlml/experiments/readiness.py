"""Before any cell runs: the weights every pending cell needs can be had, its data can be read,
and the feature caches they read are known (`vlml.experiments.caches`).

Cells that share a data section (the same dataset or catalogs, regime and seeds) share one
loading of their splits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vlml import config, recipes
from vlml.errors import ConfigError, VlmlError


def load_splits_once() -> Callable[[Any], Any]:
    """`splits(cfg)`: the recipe's `load_splits(cfg.data)`, loaded once per distinct
    (recipe, data section)."""
    memo: dict[str, Any] = {}

    def splits(cfg: Any) -> Any:
        key = json.dumps([cfg.recipe, config._plain(config.to_dict(cfg.data))], sort_keys=True,
                         default=str)
        if key not in memo:
            memo[key] = recipes.get(cfg.recipe).load_splits(cfg.data)
        return memo[key]

    return splits


def check_ready(cells: list[Any], where: str = "") -> list[Any]:
    """Preflight (weights) and data of every planned cell; returns their feature needs.
    `ConfigError` (naming the cell) on the first problem."""
    from vlml.experiments import caches

    splits = load_splits_once()
    needs: list[Any] = []
    for cell in cells:
        cfg = cell.cfg
        recipe = recipes.get(cfg.recipe)
        try:
            if hasattr(recipe, "preflight"):
                recipe.preflight(cfg)
            needs += caches.feature_needs(cfg, splits(cfg))
        except VlmlError as e:
            raise ConfigError(f"{where}cell {cell.id}: {e}") from None
    return needs


__all__ = ["check_ready", "load_splits_once"]
