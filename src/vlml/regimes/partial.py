"""Partial labels: each label of each image observed independently with probability q
(the DualCoOp protocol, docs/methods.md 1.3)."""

from __future__ import annotations

from numbers import Real

import numpy as np

from vlml.errors import ConfigError
from vlml.regimes.full import check_seed, require_ground_truth
from vlml.types import LABEL_DTYPE, UNKNOWN, Catalog


def partial(catalog: Catalog, q: float, seed: int) -> Catalog:
    """Observe each ground-truth entry with probability `q`, else mark it unknown (-1).

    Entry (i, c) is observed when `u[i, c] < q` for `u = np.random.default_rng(seed).random((N, C))`
    (so q = 1 observes everything). No per-image minimum: an image may end up all unknown.

    Args:
        catalog: needs ground truth (`true_labels`, or `labels` without unknowns).
        q: fraction of labels kept, in (0, 1].
        seed: seed of `np.random.default_rng`, an integer in [0, 2**32).

    Returns:
        A catalog with observed `labels` (N, C) int8, `true_labels` = ground truth and a `partial`
        provenance step.
    """
    if isinstance(q, bool) or not isinstance(q, Real) or not 0.0 < q <= 1.0:
        raise ConfigError(f"q (fraction of labels observed) must be in (0, 1], got {q!r}")
    seed = check_seed(seed)
    truth = require_ground_truth(catalog, "partial")
    observed_mask = np.random.default_rng(seed).random(truth.shape) < q
    labels = np.where(observed_mask, truth, UNKNOWN).astype(LABEL_DTYPE)
    step = {"step": "partial", "q": float(q), "seed": seed}
    return catalog.with_step(step, labels=labels, true_labels=truth.copy())
