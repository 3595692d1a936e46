"""The `PseudoLabels` record, the shared estimator base, and the observed-wins rule.

Pseudo-labels live in their own (N, C) int8 matrix, never inside the observed label matrix
(docs/methods.md section 0):

| value | meaning |
|---|---|
| `1` | pseudo-positive |
| `0` | pseudo-negative |
| `-1` | no pseudo-label |

`combine_with_observed` is the one place that relates the two matrices; it returns a new
pseudo-label matrix and leaves the observed one untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from vlml.errors import ConfigError, DataError
from vlml.types import LABEL_DTYPE, UNKNOWN, validate_labels

PSEUDO_POSITIVE, PSEUDO_NEGATIVE, NO_PSEUDO = 1, 0, -1

# Counts such as floor(gamma * n_u) are computed in floating point; a value that is an integer
# in exact arithmetic can land one ulp below it (29 / 100 * 100 == 28.999999999999996).
_FLOOR_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    """Pseudo-labels for N images and C classes, with where they came from.

    Attributes:
        labels: (N, C) int8 in {1 pseudo-positive, 0 pseudo-negative, -1 none}.
        mask: optional (N, C) bool loss mask (True = the entry takes part in the loss); CAP
            sets it, the other pseudo-labelers leave it None.
        scores: optional (N, C) float32, the scores the labels were thresholded from (softmax
            probabilities for VLPL, the transformed score for `ClassThreshold`, the input
            scores otherwise).
        provenance: JSON-ready dict: `method`, `params` (every constructor setting),
            `fitted` (thresholds and counts the method derived), `n_images`, `n_classes`,
            `counts` ({"positive", "negative", "none"} entry counts).
    """

    labels: np.ndarray
    mask: np.ndarray | None = None
    scores: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_labels(self.labels, what="pseudo-labels")
        shape = self.labels.shape
        if self.mask is not None:
            if not isinstance(self.mask, np.ndarray) or self.mask.dtype != np.bool_:
                raise DataError(f"expected a bool array, got {type(self.mask).__name__} "
                                f"of dtype {getattr(self.mask, 'dtype', None)}", "pseudo mask")
            if self.mask.shape != shape:
                raise DataError(f"expected shape {shape}, got {self.mask.shape}", "pseudo mask")
        if self.scores is not None:
            if not isinstance(self.scores, np.ndarray) or self.scores.dtype != np.float32:
                raise DataError(f"expected a float32 array, got "
                                f"{type(self.scores).__name__} of dtype "
                                f"{getattr(self.scores, 'dtype', None)}", "pseudo scores")
            if self.scores.shape != shape:
                raise DataError(f"expected shape {shape}, got {self.scores.shape}",
                                "pseudo scores")
        if not isinstance(self.provenance, dict) or "method" not in self.provenance:
            raise DataError("provenance must be a dict naming the 'method'", "pseudo provenance")

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        """Number of pseudo-positive, pseudo-negative and unlabeled entries."""
        return label_counts(self.labels)


def label_counts(labels: np.ndarray) -> dict[str, int]:
    return {"positive": int((labels == PSEUDO_POSITIVE).sum()),
            "negative": int((labels == PSEUDO_NEGATIVE).sum()),
            "none": int((labels == NO_PSEUDO).sum())}


def combine_with_observed(observed: np.ndarray, pseudo: PseudoLabels | np.ndarray) -> np.ndarray:
    """Pseudo-labels restricted to the entries the observed matrix leaves unknown.

    Returns a new (N, C) int8 matrix that equals the pseudo-labels where `observed == -1` and
    is -1 wherever `observed` is 1 or 0. An observed label always wins: an observed positive is
    never contradicted by a pseudo-negative, an observed negative never by a pseudo-positive,
    and an observed entry never carries a pseudo-label on top. The result contains no observed
    label; the two matrices stay separate and a loss takes both. Neither input is modified.

    Args:
        observed: (N, C) int8 in {1, 0, -1}, the observed labels (docs/methods.md section 0).
        pseudo: a `PseudoLabels` or its (N, C) int8 `labels` matrix.
    """
    validate_labels(observed, what="observed labels")
    labels = pseudo.labels if isinstance(pseudo, PseudoLabels) else pseudo
    validate_labels(labels, what="pseudo-labels")
    if labels.shape != observed.shape:
        raise DataError(f"pseudo-labels have shape {labels.shape}, observed labels "
                        f"{observed.shape}; expected the same (N, C)", "pseudo-labels")
    return np.where(observed == UNKNOWN, labels, NO_PSEUDO).astype(LABEL_DTYPE)


def floor_count(x: np.ndarray | float) -> np.ndarray:
    """floor(x) for non-negative counts computed in floating point, as int64.

    Adds a 1e-9 tolerance so that an exact-arithmetic integer that float rounding put just below
    itself is not floored one too low (see `_FLOOR_TOLERANCE`).
    """
    return np.floor(np.asarray(x, dtype=np.float64) + _FLOOR_TOLERANCE).astype(np.int64)


def check_scores(scores: Any, what: str, n_classes: int | None = None) -> np.ndarray:
    """Return `scores` as a finite float64 (N, C) array or raise `DataError` naming `what`."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected a numeric (N, C) array, got {type(scores).__name__} ({exc})",
                        what) from None
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D array (N images, C classes), got shape {arr.shape}",
                        what)
    if arr.shape[1] == 0:
        raise DataError(f"expected at least one class column, got shape {arr.shape}", what)
    if n_classes is not None and arr.shape[1] != n_classes:
        raise DataError(f"expected {n_classes} columns (one per class, as at fit), got "
                        f"{arr.shape[1]}", what)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"non-finite value {arr[r, c]} at row {r}, column {c}", what)
    return arr


def check_cosine(sims: np.ndarray, what: str) -> np.ndarray:
    """Raise `DataError` unless every entry lies in [-1, 1] (with float slack)."""
    if sims.size and np.abs(sims).max() > 1.0 + 1e-3:
        raise DataError(f"expected cosine similarities in [-1, 1] between L2-normalised "
                        f"embeddings, got values in [{sims.min():.4g}, {sims.max():.4g}] "
                        f"(logits already multiplied by a logit scale?)", what)
    return sims


def check_targets(targets: Any, what: str, n_classes: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Return labels in {1, 0, -1} (-1 = unknown; 0/1 or bool also accepted) as two (N, C)
    bool arrays: (positive, known)."""
    arr = np.asarray(targets)
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D array of labels (N images, C classes), got shape "
                        f"{arr.shape}", what)
    if n_classes is not None and arr.shape[1] != n_classes:
        raise DataError(f"expected {n_classes} columns (one per class), got {arr.shape[1]}",
                        what)
    bad = ~np.isin(arr, (1, 0, UNKNOWN))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"value {arr[r, c].item()!r} at row {r}, column {c}; expected 1 "
                        "(positive), 0 (negative) or -1 (unknown)", what)
    return arr == 1, arr != UNKNOWN


def require_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> float:
    """Return `value` as float if it lies in the interval, else raise `ConfigError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must lie in {interval}, got {value!r}")
    return v


def to_jsonable(value: Any) -> Any:
    """Numpy arrays and scalars to plain Python; non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PseudoLabeler(BaseEstimator):
    """Base of every pseudo-labeler (scikit-learn contract).

    - `__init__` only stores settings;
    - `fit(scores, targets=None) -> self` learns what the method needs and keeps it in
      attributes ending in `_`. `scores` (N, C) are the scores it fits on and `targets`
      (N, C) their labels in {1, 0, -1}; unknown (-1) entries are left out of what is learned
      (fully known 0/1 targets are the usual case). A method that reads the targets says so by
      its registry entry's `needs_targets`; one that reads the scores of the labeled images
      (rows matching `targets`) by `needs_labeled_scores`. The others accept either argument
      and ignore what they do not use (stateless methods only check their settings);
    - `transform(scores) -> PseudoLabels` labels (M, C) scores and never changes the estimator;
    - `fit_transform(scores, targets=None)` is exactly `fit(scores, targets).transform(scores)`;
    - `check_params()` raises `ConfigError` for a bad setting before any data is seen.
    """

    name: ClassVar[str] = ""

    def fit(self, scores: Any = None, targets: Any = None) -> PseudoLabeler:
        """Learn from (N, C) `scores` and/or their (N, C) `targets` in {1, 0, -1}; return
        self."""
        raise NotImplementedError  # pragma: no cover - abstract

    def transform(self, scores: Any) -> PseudoLabels:  # pragma: no cover - abstract
        """(M, C) scores -> `PseudoLabels` of shape (M, C)."""
        raise NotImplementedError

    def fit_transform(self, scores: Any, targets: Any = None) -> PseudoLabels:
        """`fit(scores, targets).transform(scores)`: the same rows fitted and labeled."""
        return self.fit(scores, targets).transform(scores)

    def check_params(self) -> None:
        """Raise `ConfigError` if a setting is invalid (nothing is learned)."""

    def _make(self, labels: np.ndarray, *, scores: np.ndarray | None = None,
              mask: np.ndarray | None = None, fitted: dict[str, Any] | None = None
              ) -> PseudoLabels:
        provenance = {
            "method": self.name,
            "params": to_jsonable(self.get_params()),
            "fitted": to_jsonable(fitted or {}),
            "n_images": int(labels.shape[0]),
            "n_classes": int(labels.shape[1]),
            "counts": label_counts(labels),
        }
        return PseudoLabels(
            labels=labels.astype(LABEL_DTYPE, copy=False),
            mask=mask,
            scores=None if scores is None else scores.astype(np.float32),
            provenance=provenance,
        )
