"""The SPML protocol's three catalogs: single-positive train, clean val, clean test."""

from __future__ import annotations

from dataclasses import dataclass

from vlml import data, regimes
from vlml.errors import DataError
from vlml.recipes.spml.config import DataConfig
from vlml.types import Catalog


@dataclass(frozen=True)
class SPMLSplits:
    train: Catalog
    val: Catalog
    test: Catalog


def _require_clean(catalog: Catalog, what: str) -> Catalog:
    if catalog.ground_truth is None:
        raise DataError(f"the {what} catalog needs clean labels (no unknown entries, or "
                        "true_labels kept)", what)
    return catalog


def load_splits(cfg: DataConfig) -> SPMLSplits:
    """Train (observed labels + ground truth), val and test (clean), per methods.md 1.1."""
    if cfg.train_catalog is not None:
        train = Catalog.load(cfg.train_catalog)
        if cfg.val_catalog is not None:
            val = Catalog.load(cfg.val_catalog)
        else:
            train, val = regimes.train_val_split(train, cfg.val_frac, cfg.split_seed)
        if cfg.test_catalog is None:
            raise DataError("data.test_catalog is required with data.train_catalog", "config")
        test = Catalog.load(cfg.test_catalog)
    else:
        full = data.load(cfg.dataset, cfg.root, cfg.train_split, **cfg.options)
        observed = (regimes.single_positive(full, seed=cfg.label_seed)
                    if cfg.regime == "single_positive" else regimes.full(full))
        train, val = regimes.train_val_split(observed, cfg.val_frac, cfg.split_seed)
        test = data.load(cfg.dataset, cfg.root, cfg.test_split, **cfg.options)
    _require_clean(val, "val")
    _require_clean(test, "test")
    for what, cat in (("val", val), ("test", test)):
        if cat.class_names != train.class_names:
            raise DataError(f"{what} classes differ from train classes", what)
    return SPMLSplits(train, val, test)
