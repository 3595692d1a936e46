"""Train/val split of a training set, the Cole et al. protocol (docs/methods.md 1.1)."""

from __future__ import annotations

from numbers import Real

import numpy as np

from vlml.errors import ConfigError
from vlml.regimes.full import check_seed, require_ground_truth
from vlml.types import Catalog


def split_indices(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) row indices of `n` rows; int64 arrays that partition range(n).

    `n_val = int(np.round(val_frac * n))` rows go to val, chosen by
    `np.random.RandomState(seed).permutation(n)` (train = its first n - n_val, val = its last
    n_val). When n_val is 0, val is empty (the reference's `perm[-0:]` would be every row).
    """
    n_val = int(np.round(val_frac * n))
    n_tr = n - n_val
    perm = np.random.RandomState(seed).permutation(n)
    train = np.sort(perm[:n_tr])
    val = np.sort(perm[n_tr:])  # == perm[-n_val:] when n_val > 0
    return train, val


def train_val_split(catalog: Catalog, val_frac: float = 0.2,
                    seed: int = 1200) -> tuple[Catalog, Catalog]:
    """Hold out `val_frac` of the rows as a clean validation set.

    Train keeps the observed `labels` (and `true_labels`); val's `labels` are the clean ground
    truth, so model selection uses clean mAP. Both keep the original row order. Their `split` is
    `"<split>/train"` and `"<split>/val"` (just `"train"` / `"val"` when the catalog's split is
    empty). `val_frac` is in [0, 1); 0 gives an empty val. Raises `ConfigError` if train would be
    empty and `DataError` if the catalog has no ground truth for val.
    """
    if isinstance(val_frac, bool) or not isinstance(val_frac, Real) \
            or not 0.0 <= val_frac < 1.0:
        raise ConfigError(f"val_frac must be a number in [0, 1), got {val_frac!r}")
    seed = check_seed(seed)
    truth = require_ground_truth(catalog, "train_val_split (val gets clean labels)")
    train_idx, val_idx = split_indices(catalog.n_images, float(val_frac), seed)
    if train_idx.size == 0:
        raise ConfigError(f"val_frac={val_frac} leaves no training rows out of "
                          f"{catalog.n_images}; expected a smaller val_frac or more images")
    step = {"step": "train_val_split", "val_frac": float(val_frac), "seed": seed,
            "n_train": int(train_idx.size), "n_val": int(val_idx.size)}
    prefix = f"{catalog.split}/" if catalog.split else ""
    train = catalog.subset(train_idx, split=prefix + "train", step={**step, "part": "train"})
    val = catalog.with_step(
        {**step, "part": "val"},
        image_paths=tuple(catalog.image_paths[i] for i in val_idx),
        labels=truth[val_idx],
        true_labels=truth[val_idx],
        split=prefix + "val",
    )
    return train, val


def holdout_split(catalog: Catalog, val_frac: float = 0.2,
                  seed: int = 1200) -> tuple[Catalog, Catalog]:
    """Hold out `val_frac` of the rows with their *observed* labels (no ground truth needed:
    the split of a user's own incomplete labels, `regime: given`). The same rows as
    `train_val_split` for the same (N, val_frac, seed); both parts keep the observed labels."""
    if isinstance(val_frac, bool) or not isinstance(val_frac, Real) \
            or not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be a number in (0, 1), got {val_frac!r}")
    seed = check_seed(seed)
    train_idx, val_idx = split_indices(catalog.n_images, float(val_frac), seed)
    if train_idx.size == 0 or val_idx.size == 0:
        raise ConfigError(f"val_frac={val_frac} of {catalog.n_images} images leaves no "
                          "training or no held-out image; expected more images or another "
                          "val_frac")
    step = {"step": "holdout_split", "val_frac": float(val_frac), "seed": seed,
            "n_train": int(train_idx.size), "n_val": int(val_idx.size)}
    prefix = f"{catalog.split}/" if catalog.split else ""
    return (catalog.subset(train_idx, split=prefix + "train", step={**step, "part": "train"}),
            catalog.subset(val_idx, split=prefix + "val", step={**step, "part": "val"}))

