"""The SPML recipe (VLPL and every SPML baseline loss): `config.py` (its typed config),
`data.py` (the protocol's train/val/test catalogs), `inputs.py` (cached features or images as
batches), `recipe.py` (the pipeline). Run it with `vlml.runs.run(cfg)`."""

from vlml.recipes.spml.config import SPMLConfig
from vlml.recipes.spml.recipe import (
    Config,
    fit,
    load_model,
    load_splits,
    validate,
)

__all__ = ["Config", "SPMLConfig", "validate", "load_splits", "fit", "load_model"]
