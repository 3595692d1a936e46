"""Label regimes: turn a fully annotated `Catalog` into the incomplete labels a method learns from.

>>> from vlml import regimes
>>> spml = regimes.single_positive(catalog, seed=1200)           # doctest: +SKIP
>>> train, val = regimes.train_val_split(spml, val_frac=0.2)     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

from vlml.regimes.full import full
from vlml.regimes.partial import partial
from vlml.regimes.semi_supervised import labeled_mask, semi_supervised, split_labeled
from vlml.regimes.single_positive import single_positive
from vlml.regimes.splits import holdout_split, train_val_split
from vlml.registry import Registry
from vlml.types import Catalog

REGIMES: Registry[Callable[..., Catalog]] = Registry("label regime")
REGIMES.register("single_positive", single_positive)
REGIMES.register("partial", partial)
REGIMES.register("semi_supervised", semi_supervised)
REGIMES.register("full", full)


def list_regimes() -> list[str]:
    """Names in `REGIMES`."""
    return REGIMES.names()


__all__ = ["REGIMES", "list_regimes", "single_positive", "partial", "semi_supervised", "full",
           "train_val_split", "holdout_split", "labeled_mask", "split_labeled"]
