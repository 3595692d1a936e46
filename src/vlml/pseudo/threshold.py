"""Stateless threshold labellers: `fit` only checks settings and ignores `targets`.

- `ClassThreshold` and `TopK`, two simpler VLPL variants (docs/methods.md 3.5): pseudo-positives
  only, every other entry gets no pseudo-label (-1);
- `FixedThreshold`, the SSMLL "fixed threshold instead of CAP" ablation (docs/methods.md 5.8): hard
  labels, score >= t positive and negative elsewhere, every entry used by the loss.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from scipy.special import expit

from vlml.errors import ConfigError
from vlml.pseudo.base import (
    NO_PSEUDO,
    PSEUDO_NEGATIVE,
    PSEUDO_POSITIVE,
    PseudoLabeler,
    PseudoLabels,
    check_cosine,
    check_scores,
)

SCORE_KINDS = ("cosine", "sigmoid")


def check_thresholds(threshold: Any, n_classes: int | None) -> np.ndarray:
    """`threshold` (a number, or a (C,) sequence with C = `n_classes` when known) as a finite
    float64 array of shape () or (C,); `ConfigError` otherwise."""
    try:
        t = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a number or a (C,) sequence of numbers, "
                          f"got {threshold!r}") from None
    if t.ndim > 1 or not np.isfinite(t).all():
        raise ConfigError(f"threshold must be a finite number or a (C,) sequence, got "
                          f"shape {t.shape}")
    if t.ndim == 1 and n_classes is not None and t.shape[0] != n_classes:
        raise ConfigError(f"threshold has {t.shape[0]} values; expected one per class "
                          f"({n_classes})")
    return t


class ClassThreshold(PseudoLabeler):
    """Pseudo-positive where a per-class score exceeds its class's threshold (strict `>`).

    Args:
        threshold: one threshold for every class, or a (C,) sequence, one per class.
        score: "cosine" thresholds the cosine similarity itself; "sigmoid" thresholds
            sigmoid(scale * cos + bias) (e.g. a SigLIP-style calibrated probability).
        scale, bias: the affine map applied before the sigmoid (ignored for "cosine").

    Input: (N, C) cosine similarities between L2-normalised image and class-text embeddings.
    `scores` of the output holds the thresholded score (cosine or sigmoid).
    """

    name = "class_threshold"

    def __init__(self, threshold: float | Any, score: str = "cosine", scale: float = 1.0,
                 bias: float = 0.0) -> None:
        self.threshold = threshold
        self.score = score
        self.scale = scale
        self.bias = bias

    def _thresholds(self, n_classes: int | None) -> np.ndarray:
        if self.score not in SCORE_KINDS:
            raise ConfigError(f"score must be one of {SCORE_KINDS}, got {self.score!r}")
        for name in ("scale", "bias"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return check_thresholds(self.threshold, n_classes)

    def check_params(self) -> None:
        self._thresholds(None)

    def fit(self, scores: Any = None, targets: Any = None) -> ClassThreshold:
        """Check the settings (nothing is learned); with `scores`, record `n_classes_`."""
        n_classes = None
        if scores is not None:
            n_classes = check_scores(scores, "similarities").shape[1]
        self._thresholds(n_classes)
        if n_classes is not None:
            self.n_classes_ = n_classes
        return self

    def transform(self, scores: Any) -> PseudoLabels:
        """(N, C) cosine similarities -> pseudo-positives (1) where the score exceeds t_c."""
        sims = check_cosine(
            check_scores(scores, "similarities", getattr(self, "n_classes_", None)),
            "similarities")
        t = self._thresholds(sims.shape[1])
        if self.score == "sigmoid":
            s = expit(float(self.scale) * sims + float(self.bias))
        else:
            s = sims
        labels = np.where(s > t, PSEUDO_POSITIVE, NO_PSEUDO).astype(np.int8)
        thresholds = np.broadcast_to(t, (sims.shape[1],))
        return self._make(labels, scores=s, fitted={"thresholds": thresholds})


class FixedThreshold(PseudoLabeler):
    """Hard pseudo-labels at a fixed threshold: 1 where score >= t_c, else 0 (no -1, no mask:
    every entry takes part in the loss).

    The SSMLL ablation "fixed threshold instead of CAP" (docs/methods.md 5.8). `ClassThreshold`
    cannot express it: it is strict (`>`), leaves the other entries unlabeled (-1) and takes
    cosine similarities only.

    Args:
        threshold: one threshold for every class (default 0.5), or a (C,) sequence.

    Input: any (N, C) scores (probabilities, cosine similarities, ...).
    """

    name = "fixed"

    def __init__(self, threshold: float | Any = 0.5) -> None:
        self.threshold = threshold

    def check_params(self) -> None:
        check_thresholds(self.threshold, None)

    def fit(self, scores: Any = None, targets: Any = None) -> FixedThreshold:
        """Check the settings (nothing is learned); with `scores`, record `n_classes_`."""
        n_classes = None if scores is None else check_scores(scores, "scores").shape[1]
        check_thresholds(self.threshold, n_classes)
        if n_classes is not None:
            self.n_classes_ = n_classes
        return self

    def transform(self, scores: Any) -> PseudoLabels:
        """(N, C) scores -> (N, C) labels in {1, 0}; `scores` of the output = the input."""
        arr = check_scores(scores, "scores", getattr(self, "n_classes_", None))
        t = check_thresholds(self.threshold, arr.shape[1])
        labels = np.where(arr >= t, PSEUDO_POSITIVE, PSEUDO_NEGATIVE).astype(np.int8)
        thresholds = np.broadcast_to(t, (arr.shape[1],))
        return self._make(labels, scores=arr, fitted={"thresholds": thresholds})


class TopK(PseudoLabeler):
    """The k highest-scoring classes of each image are pseudo-positive; the rest get none.

    Ties at the k-th place go to the lower class index, so every image gets exactly k.
    Input: any (N, C) scores (cosine similarities, probabilities, logits); k <= C.
    """

    name = "topk"

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def _check_k(self, n_classes: int | None) -> int:
        try:
            k = operator.index(self.k)
        except TypeError:
            raise ConfigError(f"k must be an integer, got {self.k!r}") from None
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k}")
        if n_classes is not None and k > n_classes:
            raise ConfigError(f"k = {k} exceeds the number of classes ({n_classes})")
        return k

    def check_params(self) -> None:
        self._check_k(None)

    def fit(self, scores: Any = None, targets: Any = None) -> TopK:
        """Check the settings (nothing is learned); with `scores`, record `n_classes_`."""
        n_classes = None if scores is None else check_scores(scores, "scores").shape[1]
        self._check_k(n_classes)
        if n_classes is not None:
            self.n_classes_ = n_classes
        return self

    def transform(self, scores: Any) -> PseudoLabels:
        """(N, C) scores -> pseudo-positives (1) on each row's k highest, -1 elsewhere."""
        arr = check_scores(scores, "scores", getattr(self, "n_classes_", None))
        n, c = arr.shape
        k = self._check_k(c)
        labels = np.full((n, c), NO_PSEUDO, dtype=np.int8)
        if k and n:
            # stable sort of the negated scores: descending, ties to the lower class index
            top = np.argsort(-arr, axis=1, kind="stable")[:, :k]
            np.put_along_axis(labels, top, PSEUDO_POSITIVE, axis=1)
        return self._make(labels, scores=arr, fitted={"positives_per_image": k})
