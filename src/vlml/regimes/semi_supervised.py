"""Semi-supervised: a few images fully labelled, the rest unlabelled (CAP/D2L,
docs/methods.md 1.2)."""

from __future__ import annotations

from numbers import Real

import numpy as np

from vlml.errors import ConfigError
from vlml.regimes.full import check_seed, require_ground_truth
from vlml.types import LABEL_DTYPE, UNKNOWN, Catalog


def labeled_indices(n: int, p: float, seed: int = 1) -> np.ndarray:
    """The labelled rows of `n`: the first `int(p * n)` of `RandomState(seed).permutation(n)`.

    Returned in permutation order (int64, shape (int(p * n),)), as the reference takes them.
    """
    return np.random.RandomState(seed).permutation(n)[:int(p * n)]


def semi_supervised(catalog: Catalog, p: float, seed: int = 1) -> Catalog:
    """Keep all labels of a fraction `p` of the images and none of the others.

    Args:
        catalog: needs ground truth (`true_labels`, or `labels` without unknowns).
        p: fraction of labelled images, in (0, 1] (the protocol uses 0.01 to 0.20).
        seed: `RandomState` seed of the permutation (1 in CAP/D2L).

    Returns:
        A catalog, rows in the original order, whose labelled rows carry the ground truth and whose
        other rows are all -1; `true_labels` is the ground truth. `labeled_mask` recovers the rows.
    """
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 < p <= 1.0:
        raise ConfigError(f"p (fraction of labelled images) must be in (0, 1], got {p!r}")
    seed = check_seed(seed)
    truth = require_ground_truth(catalog, "semi_supervised")
    idx = labeled_indices(catalog.n_images, float(p), seed)
    labels = np.full(truth.shape, UNKNOWN, dtype=LABEL_DTYPE)
    labels[idx] = truth[idx]
    step = {"step": "semi_supervised", "p": float(p), "seed": seed, "n_labeled": int(idx.size),
            "n_unlabeled": catalog.n_images - int(idx.size)}
    return catalog.with_step(step, labels=labels, true_labels=truth.copy())


def labeled_mask(catalog: Catalog) -> np.ndarray:
    """Bool (N,): True for rows with at least one known (non -1) label."""
    return (catalog.labels != UNKNOWN).any(axis=1)


def split_labeled(catalog: Catalog) -> tuple[Catalog, Catalog]:
    """(labelled rows, unlabelled rows) as two catalogs, each in the original row order.

    A row is labelled when it has any known label (`labeled_mask`). Splits are named
    `"<split>/labeled"` and `"<split>/unlabeled"` (without the prefix when `split` is empty).
    """
    mask = labeled_mask(catalog)
    prefix = f"{catalog.split}/" if catalog.split else ""
    parts = []
    for part, rows in (("labeled", np.flatnonzero(mask)), ("unlabeled", np.flatnonzero(~mask))):
        step = {"step": "split_labeled", "part": part, "n": int(rows.size)}
        parts.append(catalog.subset(rows, split=prefix + part, step=step))
    return parts[0], parts[1]
