"""The single-positive draw of Cole et al. 2021 (docs/methods.md 1.1), bit for bit.

Their `observe_uniform` walks the -1/+1 ground truth row by row with one `RandomState`: the row's
positive column indices (ascending, from `np.nonzero`) are shuffled and the first `num_pos` kept,
then its negative column indices are shuffled and the first `num_neg` kept. The negative shuffle
happens even when `num_neg` is 0, and each shuffle of k > 1 items advances the generator, so
skipping it would change every later row. A row with no positive gets no positive, but its
negatives are still shuffled (and `num_neg` of them observed when `num_neg` > 0), as in theirs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlml.errors import ConfigError
from vlml.regimes.full import check_seed, require_ground_truth
from vlml.types import LABEL_DTYPE, NEGATIVE, POSITIVE, UNKNOWN, Catalog

ALL = -1  # num_pos / num_neg value meaning "observe all of them" (the reference's convention)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < ALL:
        raise ConfigError(f"{name} must be an integer >= 0 (or -1 for all), got {value!r}")
    return int(value)


def _row_segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-major (rows, cols) of `mask`'s True entries, each row's start in them, and ranks.

    Row i's columns are `cols[starts[i]:starts[i + 1]]`, ascending as `np.nonzero(mask[i])[0]`;
    `rank` is each entry's position within its row.
    """
    rows, cols = np.nonzero(mask)
    starts = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=mask.shape[0]), out=starts[1:])
    rank = np.arange(rows.size, dtype=np.int64) - starts[rows]
    return rows, cols, starts, rank


def draw_observed(truth: np.ndarray, num_pos: int, num_neg: int,
                  rng: np.random.RandomState) -> np.ndarray:
    """Observed labels (N, C) int8 in {1, 0, -1} drawn from 0/1 `truth` (N, C) as Cole et al. do.

    `rng` is advanced exactly as their `observe_uniform` advances it.
    """
    n = truth.shape[0]
    # Indices of +1 / -1 in their -1/+1 matrix are those of 1 / 0 in ours.
    pos_rows, pos_cols, pos_start, pos_rank = _row_segments(truth == POSITIVE)
    neg_rows, neg_cols, neg_start, neg_rank = _row_segments(truth == NEGATIVE)
    shuffle = rng.shuffle
    ps, ns = pos_start.tolist(), neg_start.tolist()  # Python ints: fast slicing in the loop
    # Shuffling each row's segment in place permutes it exactly as shuffling a fresh copy would.
    for i in range(n):
        shuffle(pos_cols[ps[i]:ps[i + 1]])
        shuffle(neg_cols[ns[i]:ns[i + 1]])
    observed = np.full(truth.shape, UNKNOWN, dtype=LABEL_DTYPE)
    keep = pos_rank < num_pos if num_pos != ALL else slice(None)
    observed[pos_rows[keep], pos_cols[keep]] = POSITIVE
    keep = neg_rank < num_neg if num_neg != ALL else slice(None)
    observed[neg_rows[keep], neg_cols[keep]] = NEGATIVE
    return observed


def single_positive(catalog: Catalog, seed: int = 1200, num_pos: int = 1,
                    num_neg: int = 0) -> Catalog:
    """Keep `num_pos` random positives and `num_neg` random negatives per image; the rest unknown.

    Args:
        catalog: needs ground truth (`true_labels`, or `labels` without unknowns).
        seed: seed of the one `np.random.RandomState` drawing the whole split (Cole et al.: 1200).
        num_pos, num_neg: labels kept per image; -1 keeps all of them.

    Returns:
        A catalog whose `labels` (N, C) int8 are the observed labels and whose `true_labels` are
        the ground truth, with a `single_positive` provenance step.
    """
    num_pos = _check_count(num_pos, "num_pos")
    num_neg = _check_count(num_neg, "num_neg")
    seed = check_seed(seed)
    truth = require_ground_truth(catalog, "single_positive")
    observed = draw_observed(truth, num_pos, num_neg, np.random.RandomState(seed))
    step = {"step": "single_positive", "seed": seed, "num_pos": num_pos, "num_neg": num_neg}
    return catalog.with_step(step, labels=observed, true_labels=truth.copy())
