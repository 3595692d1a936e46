"""The SPML recipe (VLPL and every SPML baseline loss): `config.py` (its typed config),
`data.py` (the protocol's train/val/test catalogs), `inputs.py` (cached features or images as
batches), `recipe.py` (the pipeline)."""

from vlml.recipes.spml.config import SPMLConfig
from vlml.recipes.spml.recipe import Config, RunResult, evaluate_run, train

__all__ = ["Config", "SPMLConfig", "RunResult", "train", "evaluate_run"]
