"""The SPML recipe (VLPL and every SPML baseline loss): `config.py` (its typed config),
`data.py` (the protocol's train/val/test catalogs), `inputs.py` (cached features or images as
batches), `recipe.py` (the pipeline). Run it with `vlml.runs.run(cfg)`.

The recipe functions load lazily, so `vlml.recipes.spml.config` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {"Config": "recipe", "fit": "recipe", "load_model": "recipe", "load_splits": "recipe",
         "validate": "recipe", "preflight": "recipe", "SPMLConfig": "config"}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
