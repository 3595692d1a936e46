"""The SPML run's catalogs: training labels (given, or drawn by a simulated regime), validation
(clean, or held-out training images with their observed labels) and the test set.

The benchmark protocol (docs/methods.md 1.1): a fully labelled train split -> single positive
(seed 1200) -> 80/20 train/val with clean val labels; the official test split, clean.
A user's own labels (`data.regime: given`): the training catalog as it is; validation from a
fully labelled `val_catalog`, else `val_frac` of the training images with their observed labels
(`vlml.recipes.selection` says what that selects on; a catalog that keeps `true_labels`, e.g.
one a simulator prepared, gives its held-out images their clean labels instead); a test catalog
when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlml import data, regimes
from vlml.errors import DataError
from vlml.recipes.base import evaluation_labels
from vlml.recipes.spml.config import DataConfig, effective_regime
from vlml.types import Catalog


@dataclass(frozen=True)
class SPMLSplits:
    """train: the labels learnt from; val: validation images (`val_clean`: their labels are
    ground truth, else observed labels only); test: clean test catalog, or None."""

    train: Catalog
    val: Catalog
    test: Catalog | None
    val_clean: bool = True


def _require_clean(catalog: Catalog, what: str, where: str) -> Catalog:
    if evaluation_labels(catalog) is None:
        raise DataError(f"the {what} catalog needs fully known labels (no unknown entries, or "
                        "true_labels kept) to report a clean mAP", where)
    return catalog


def _train_catalog(cfg: DataConfig, regime: str) -> Catalog:
    if cfg.train_catalog is not None:
        train = Catalog.load(cfg.train_catalog)
    else:
        train = data.load(cfg.dataset, cfg.root, cfg.train_split, **cfg.options)
    if regime == "single_positive":
        return regimes.single_positive(train, seed=cfg.label_seed)
    return regimes.full(train) if regime == "full" else train


def _test_catalog(cfg: DataConfig, regime: str) -> Catalog | None:
    if cfg.test_catalog is not None:
        return Catalog.load(cfg.test_catalog)
    if cfg.train_catalog is None:
        return data.load(cfg.dataset, cfg.root, cfg.test_split, **cfg.options)
    if regime != "given":
        raise DataError("data.test_catalog is required with data.train_catalog and a "
                        f"simulated regime ({regime}); the benchmark reports test mAP", "config")
    return None


def load_splits(cfg: DataConfig) -> SPMLSplits:
    """The run's train, validation and test catalogs (module docstring)."""
    regime = effective_regime(cfg)
    train = _train_catalog(cfg, regime)
    if cfg.val_catalog is not None:
        val = _require_clean(Catalog.load(cfg.val_catalog), "validation", cfg.val_catalog)
        clean = True
    elif regime == "given" and train.ground_truth is None:
        train, val = regimes.holdout_split(train, cfg.val_frac, cfg.split_seed)
        clean = False
    else:
        train, val = regimes.train_val_split(train, cfg.val_frac, cfg.split_seed)
        clean = True
    test = _test_catalog(cfg, regime)
    if test is not None:
        _require_clean(test, "test", cfg.test_catalog or f"{cfg.dataset}:{cfg.test_split}")
    for what, cat in (("validation", val), ("test", test)):
        if cat is not None and cat.class_names != train.class_names:
            raise DataError(f"{what} classes differ from the training classes "
                            f"{list(train.class_names)[:5]}...", what)
    return SPMLSplits(train, val, test, clean)
