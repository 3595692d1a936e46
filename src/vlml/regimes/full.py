"""The fully labelled regime, and the ground-truth and seed checks every regime shares."""

from __future__ import annotations

from typing import Any

import numpy as np

from vlml.errors import ConfigError, DataError
from vlml.types import UNKNOWN, Catalog


def require_ground_truth(catalog: Catalog, regime: str) -> np.ndarray:
    """The catalog's clean (N, C) int8 0/1 labels, or `DataError` saying why `regime` needs them.

    Ground truth is `catalog.true_labels` when kept, else `catalog.labels` when it has no unknowns.
    """
    truth = catalog.ground_truth
    if truth is None:
        n_unknown = int((catalog.labels == UNKNOWN).sum())
        why = (f"has {n_unknown} unknown (-1) label entries" if n_unknown else
               "has labels given by a user (provenance 'labels': 'given'), not ground truth,")
        raise DataError(
            f"{regime} draws its labels from ground truth, but this catalog {why} "
            "and no true_labels; expected a fully annotated catalog "
            "(e.g. straight from a dataset reader). The simulated regimes are for benchmarks "
            "with a ground truth to draw from; to train on labels that already are incomplete, "
            "use them as they are with `data.regime: given`",
            f"catalog split {catalog.split!r}" if catalog.split else "catalog")
    return truth


def check_seed(seed: Any) -> int:
    """`seed` as a Python int if it is an integer in [0, 2**32), else `ConfigError`.

    That is the range `np.random.RandomState` accepts; the regimes use the same one everywhere.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def full(catalog: Catalog) -> Catalog:
    """Every ground-truth label observed: `labels` = `true_labels` = ground truth, (N, C) int8."""
    truth = require_ground_truth(catalog, "full")
    return catalog.with_step({"step": "full"}, labels=truth.copy(), true_labels=truth.copy())
