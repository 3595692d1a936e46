"""CAP: class-distribution-aware thresholds (docs/methods.md section 4).

`fit(scores, targets)` reads the class frequencies of the labeled set's (n_l, C) `targets` in
{1, 0, -1} (its `scores` are ignored: pass None or the labeled images' scores); `transform`
turns the scores of the n_u unlabeled images (the EMA model's probabilities on the weak view)
into hard pseudo-labels and a loss mask, per class c:

    gamma_c = (labeled positives of c) / (labeled entries of c known, i.e. not -1)
    rho_c   = 1 - gamma_c
    k_c     = floor(gamma_c n_u)
    tau_c   = the k_c-th largest score of class c             pseudo-positive where score >= tau_c
                                                              pseudo-negative elsewhere (0)
    mask    = score >= the floor(a gamma_c n_u)-th largest  OR  score <= the floor(b rho_c n_u)-th
              smallest; entries outside the mask are ignored by the loss.

This follows the reference code (xiemk/SSMLL-CAP, `run_CAP.py: pseudo_label` and
`lib/dataset/get_dataset.py`): the k-th largest is `-np.sort(-scores, axis=0)[k - 1]`, the k-th
smallest `np.sort(scores, axis=0)[k - 1]`, and the comparisons are `>=` / `<=`, so scores tied with
the k-th largest are all pseudo-positive (a class can get more than k_c positives on ties).

Guards (where we depart from the reference on purpose):
- k_c < 1 (a class absent from the labeled set, or gamma_c n_u < 1): the reference indexes
  `[-1]`, the *smallest* score, and makes every image positive. Here the class gets no
  pseudo-positive at all (all 0).
- The same for the mask: when floor(a gamma_c n_u) < 1 no entry is masked in through the
  positive side, and when floor(b rho_c n_u) < 1 none through the negative side (the reference's
  `[-1]` would mask in every image on either side).
- Counts are exact floors: floor(gamma_c n_u) with gamma_c = 29/100 and n_u = 100 is 29 here;
  the reference's `int(0.29 * 100)` is 28 because of float rounding.
- Partly observed targets (a user's own labels; the reference's labeled images are fully
  labeled): unknown (-1) entries are left out of gamma_c, whose denominator is the number of
  known entries of class c instead of n_l (the same estimate when labels are missing at
  random). With fully known targets that count is n_l and every result is the reference
  rule's. A class with no known entry has no prior (gamma_c = rho_c = NaN): it gets no
  pseudo-positive and nothing in the mask on either side, so the loss ignores it on the
  unlabeled images. Targets with no known entry at all are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from vlml.errors import DataError
from vlml.pseudo.base import (
    PSEUDO_NEGATIVE,
    PSEUDO_POSITIVE,
    PseudoLabeler,
    PseudoLabels,
    check_scores,
    check_targets,
    floor_count,
    require_range,
)


def kth_sorted(sorted_scores: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per column c, entry k[c] (1-based) of an array sorted along axis 0.

    On a descending array that is the k-th largest score, on an ascending one the k-th smallest.
    Columns with k[c] < 1 get NaN (no threshold), and every comparison with NaN is False.
    """
    n, c = sorted_scores.shape
    out = np.full(c, np.nan)
    ok = (k >= 1) & (k <= n)
    out[ok] = sorted_scores[k[ok] - 1, np.flatnonzero(ok)]
    return out


class CAPThreshold(PseudoLabeler):
    """Class-distribution-aware pseudo-labels with the guard of docs/methods.md section 4.

    Args:
        a: share of the expected positives masked in through the top, in [0, 1] (CAP's
            `pos_per`, default 1.0).
        b: share of the expected negatives masked in through the bottom, in [0, 1] (CAP's
            `neg_per`, default 0.998).

    Fitted attributes: `gamma_` (C,) positive frequency of each class among its known labeled
    entries (NaN for a class with none), `rho_` = 1 - gamma_, `positive_count_` (C,) labeled
    positives, `known_count_` (C,) known labeled entries, `n_labeled_`, `n_classes_`.
    """

    name = "cap"

    def __init__(self, a: float = 1.0, b: float = 0.998) -> None:
        self.a = a
        self.b = b

    def _check_params(self) -> tuple[float, float]:
        return require_range("a", self.a, 0.0, 1.0), require_range("b", self.b, 0.0, 1.0)

    def check_params(self) -> None:
        self._check_params()

    def fit(self, scores: Any = None, targets: Any = None) -> CAPThreshold:
        """Learn the class frequencies from `targets`, the labeled set's (n_l, C) labels in
        {1, 0, -1} (-1 entries left out). `scores` are ignored (None, or the labeled images'
        (n_l, C) scores)."""
        self._check_params()
        if targets is None:
            raise DataError("CAP fits on the labeled images' targets (1, 0 or -1 unknown); got "
                            "none", "targets")
        positive, known = check_targets(targets, "targets")
        n_labeled = positive.shape[0]
        if n_labeled == 0:
            raise DataError("the labeled set is empty; CAP needs at least one labeled image",
                            "targets")
        if not known.any():
            raise DataError(f"every entry of the {n_labeled} labeled images is unknown (-1); "
                            "CAP needs known labels to estimate the class priors", "targets")
        self.positive_count_ = positive.sum(axis=0).astype(np.int64)
        self.known_count_ = known.sum(axis=0).astype(np.int64)
        self.n_labeled_ = n_labeled
        self.n_classes_ = positive.shape[1]
        with np.errstate(invalid="ignore"):  # 0 / 0: a class with no known entry has no prior
            self.gamma_ = self.positive_count_ / self.known_count_
        self.rho_ = 1.0 - self.gamma_
        return self

    def counts(self, n_unlabeled: int) -> dict[str, np.ndarray]:
        """The per-class (C,) int counts k, k_mask_pos, k_mask_neg for n_unlabeled images."""
        check_is_fitted(self, "gamma_")
        a, b = self._check_params()
        n_known = self.known_count_
        has_prior = n_known > 0
        # (count * n_u) is an exact integer; dividing by the known count (n_l when every label
        # is known) rounds once, and floor_count absorbs that rounding. No prior: all counts 0.
        denom = np.where(has_prior, n_known, 1)
        pos = np.where(has_prior, self.positive_count_ * n_unlabeled / denom, 0.0)
        neg = np.where(has_prior, (n_known - self.positive_count_) * n_unlabeled / denom, 0.0)
        return {"k": floor_count(pos), "k_mask_pos": floor_count(a * pos),
                "k_mask_neg": floor_count(b * neg)}

    def transform(self, scores: Any) -> PseudoLabels:
        """Hard pseudo-labels (1/0, no -1) and the loss mask for (n_u, C) unlabeled scores."""
        check_is_fitted(self, "gamma_")
        scores = check_scores(scores, "scores", self.n_classes_)
        k = self.counts(scores.shape[0])
        sorted_desc = -np.sort(-scores, axis=0)
        sorted_asc = sorted_desc[::-1]
        tau = kth_sorted(sorted_desc, k["k"])
        mask_hi = kth_sorted(sorted_desc, k["k_mask_pos"])
        mask_lo = kth_sorted(sorted_asc, k["k_mask_neg"])
        with np.errstate(invalid="ignore"):
            positive = scores >= tau
            mask = (scores >= mask_hi) | (scores <= mask_lo)
        labels = np.where(positive, PSEUDO_POSITIVE, PSEUDO_NEGATIVE).astype(np.int8)
        fitted = {"gamma": self.gamma_, "rho": self.rho_, "n_labeled": self.n_labeled_,
                  "n_known": self.known_count_, "n_unlabeled": scores.shape[0], **k, "tau": tau,
                  "mask_pos_threshold": mask_hi, "mask_neg_threshold": mask_lo}
        return self._make(labels, scores=scores, mask=mask, fitted=fitted)
