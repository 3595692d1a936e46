"""MAT: metric-adaptive per-class thresholds (D2L, docs/methods.md section 4, optional).

`fit(scores, targets)` picks, per class, the threshold t of a grid (default 0.00, 0.01, ...,
0.99) that maximises F-beta (default beta 0.5) of `score >= t` against the labeled images'
known labels (`scores`: the labeled images' (n_l, C) scores of the same model, `targets`: their
labels in {1, 0, -1}); `transform` gives hard pseudo-labels: 1 where score >= t_c, else 0.

    F_beta(t) = (1 + beta^2) TP / ((1 + beta^2) TP + beta^2 FN + FP),  counted over the known
                (not -1) entries of class c, TP/FP/FN of `score >= t`.

As in the reference code (JiahaoXxX/SSMLL-D2L_MAT, `run_main.py: update_ths`): the comparison is
`>=`, the grid is scanned in increasing order and a later t replaces the best one only when its
score is strictly higher, so ties go to the smallest t. Two departures, both on purpose:
- F-beta is the standard (1 + beta^2) P R / (beta^2 P + R) (scikit-learn's `fbeta_score`);
  the reference's "fB" branch divides by (beta P + R).
- Fallback: a class with no positive in the labeled set, or whose best F-beta over the grid
  is 0, gets threshold +inf, hence no pseudo-positive (all 0). The reference keeps its initial
  threshold 0 there, which makes every unlabeled image positive for such a class: the same
  failure as CAP's index -1. `fallback_` marks these classes.
- Partly observed targets (a user's own labels; the reference's labeled images are fully
  labeled): unknown (-1) entries are left out of every count, never taken as negatives. With
  fully known targets the counts, hence the thresholds, are the reference rule's. A class with
  no known entry, or no known positive, falls back as above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from vlml.errors import ConfigError, DataError
from vlml.pseudo.base import (
    PSEUDO_NEGATIVE,
    PSEUDO_POSITIVE,
    PseudoLabeler,
    PseudoLabels,
    check_scores,
    check_targets,
    require_range,
)

DEFAULT_GRID = np.arange(100) / 100


def fbeta_grid(scores: np.ndarray, positive: np.ndarray, grid: np.ndarray,
               beta: float, known: np.ndarray | None = None) -> np.ndarray:
    """(G, C) F-beta of `scores >= grid[j]` against bool `positive` (N, C); 0 where undefined.

    `known` (N, C) bool, optional: only these entries are counted (`positive` must lie inside
    it); None counts every entry. `grid` must be sorted ascending. Each score falls in bin
    b = #{j: grid[j] <= score}, and `score >= grid[j]` exactly when b > j, so per-class bin
    counts give every grid point's counts at once.
    """
    n, c = scores.shape
    g = grid.size
    bins = np.searchsorted(grid, scores, side="right")          # (N, C) in 0..G
    flat = bins + (g + 1) * np.arange(c)                         # one block of G + 1 bins per class
    counted = flat.ravel() if known is None else flat[known]
    all_counts = np.bincount(counted, minlength=(g + 1) * c).reshape(c, g + 1).T
    pos_counts = np.bincount(flat[positive], minlength=(g + 1) * c).reshape(c, g + 1).T
    # predicted[j] = entries with bin > j: reverse cumulative sums, dropping bin 0
    predicted = np.cumsum(all_counts[::-1], axis=0)[::-1][1:]   # (G, C)
    tp = np.cumsum(pos_counts[::-1], axis=0)[::-1][1:]
    fp = predicted - tp
    fn = positive.sum(axis=0) - tp
    b2 = beta * beta
    denom = (1.0 + b2) * tp + b2 * fn + fp
    return np.divide((1.0 + b2) * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


class MATThreshold(PseudoLabeler):
    """Per-class threshold maximising F-beta on the labeled set.

    Args:
        beta: the F-beta weight, > 0 (0.5 favours precision).
        grid: candidate thresholds (1-D, finite); default `DEFAULT_GRID` = 0.00, 0.01, ..., 0.99.

    Fitted attributes: `thresholds_` (C,) float (+inf for fallback classes), `best_score_` (C,)
    F-beta at the chosen threshold over the known entries, `fallback_` (C,) bool,
    `n_classes_`.
    """

    name = "mat"

    def __init__(self, beta: float = 0.5, grid: Any = DEFAULT_GRID) -> None:
        self.beta = beta
        self.grid = grid

    def _check_params(self) -> tuple[float, np.ndarray]:
        beta = require_range("beta", self.beta, 0.0, np.inf, low_open=True, high_open=True)
        try:
            grid = np.asarray(self.grid, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"grid must be a 1-D sequence of numbers, "
                              f"got {self.grid!r}") from None
        if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
            raise ConfigError(f"grid must be a non-empty 1-D sequence of finite numbers, got "
                              f"shape {grid.shape}")
        return beta, np.unique(grid)

    def check_params(self) -> None:
        self._check_params()

    def fit(self, scores: Any = None, targets: Any = None) -> MATThreshold:
        """Choose each class's threshold from the labeled images' (n_l, C) `scores` and their
        (n_l, C) `targets` in {1, 0, -1} (both required; -1 entries are not counted)."""
        beta, grid = self._check_params()
        if scores is None or targets is None:
            raise DataError("MAT fits on the labeled images' scores and their targets (1, 0 or "
                            f"-1 unknown); got {'no scores' if scores is None else 'no targets'}",
                            "mat fit")
        scores = check_scores(scores, "scores")
        positive, known = check_targets(targets, "targets", scores.shape[1])
        if positive.shape[0] != scores.shape[0]:
            raise DataError(f"{positive.shape[0]} rows of targets for {scores.shape[0]} rows of "
                            f"scores; expected one row per labeled image", "targets")
        n_classes = scores.shape[1]
        f = fbeta_grid(scores, positive, grid, beta, None if known.all() else known)  # (G, C)
        pick = np.argmax(f, axis=0)                                  # first maximum: smallest t
        best = f[pick, np.arange(n_classes)]
        best_t = grid[pick]
        fallback = best <= 0.0
        self.thresholds_ = np.where(fallback, np.inf, best_t)
        self.best_score_ = best
        self.fallback_ = fallback
        self.n_classes_ = n_classes
        return self

    def transform(self, scores: Any) -> PseudoLabels:
        """Hard pseudo-labels (1/0, no -1) for (N, C) scores of the same model."""
        check_is_fitted(self, "thresholds_")
        arr = check_scores(scores, "scores", self.n_classes_)
        labels = np.where(arr >= self.thresholds_, PSEUDO_POSITIVE, PSEUDO_NEGATIVE)
        fitted = {"thresholds": self.thresholds_, "best_fbeta": self.best_score_,
                  "fallback_classes": np.flatnonzero(self.fallback_)}
        return self._make(labels.astype(np.int8), scores=arr, fitted=fitted)
