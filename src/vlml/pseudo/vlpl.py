"""VLPL pseudo-labels: a temperature softmax over CLIP similarities, thresholded
(docs/methods.md 3).

For one image with cosine similarities `sim_c` to the C class texts:

    s_c = exp(sim_c / tau) / sum_j exp(sim_j / tau)
    pseudo-positive  where s_c > theta            (strict)
    pseudo-negative  for the floor(delta * C) classes with the lowest s_c of that image
    no pseudo-label  elsewhere

Because the s_c of an image sum to 1, at most floor(1 / theta) of them can exceed theta.

The negative share `delta` is a fraction in [0, 1] (0.1 = 10 %) of the C classes, counted per
image, as the paper's Algorithm 1 ranks each image's vector P and as the reference code
(mvrl/VLPL, models.py) does: `topk(similarity, int(partial * classes), largest=False)` along
the class axis of each row. Two details differ from that code, both on purpose:
- the count uses a floor with a 1e-9 tolerance, so delta = 0.29 with C = 100 gives 29 (the
  reference's `int(0.29 * 100)` gives 28);
- if a class is both among the lowest and above theta (only possible when delta is close to 1),
  it stays pseudo-positive (the reference's scatter lets the negative overwrite it).
The ranking uses the similarities themselves (the same order as s, without the ties that
underflowed softmax values create); ties go to the lower class index.

One class is refused (`check_softmax_classes`): a softmax over one class is 1 for every image,
so every image would be pseudo-positive whatever CLIP sees. A per-class rule on the cosine
itself (`class_threshold`) is the labeller for a one-class catalog.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from vlml.errors import DataError, UnknownNameError
from vlml.pseudo.base import (
    NO_PSEUDO,
    PSEUDO_NEGATIVE,
    PSEUDO_POSITIVE,
    PseudoLabeler,
    PseudoLabels,
    check_cosine,
    check_scores,
    floor_count,
    require_range,
)

_ONE_CLASS_INSTEAD = ("For one class, threshold the cosine similarity itself: "
                      "method 'class_threshold' (e.g. threshold=0.25).")

# Best (tau, theta) per dataset, VLPL paper section 4 (hyper-parameter sweep, Figure 3).
VLPL_DEFAULTS: dict[str, dict[str, float]] = {
    "voc": {"tau": 0.03, "theta": 0.3},
    "coco": {"tau": 0.01, "theta": 0.3},
    "nus": {"tau": 0.03, "theta": 0.1},
    "cub": {"tau": 0.03, "theta": 0.01},
}


def check_softmax_classes(n_classes: int, where: str, instead: str) -> None:
    """Refuse a softmax over classes when there is only one: it is 1 for every image.

    `where` names what refuses (e.g. "VLPL pseudo-labels"), `instead` what to use instead.
    """
    if n_classes == 1:
        raise DataError(f"a softmax over one class is 1 for every image, so it says nothing "
                        f"about the image; {where} need at least 2 classes, got 1. "
                        f"{instead}", where)


def temperature_softmax(sims: np.ndarray, tau: float) -> np.ndarray:
    """softmax(sims / tau) along the class axis of an (N, C) array, in float64."""
    z = sims / tau
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class VLPLThreshold(PseudoLabeler):
    """VLPL softmax-threshold pseudo-labeler.

    Args:
        tau: softmax temperature, > 0 (VOC 0.03, COCO 0.01, NUS 0.03, CUB 0.03).
        theta: positive threshold on the softmax probability, in (0, 1); pseudo-positive
            where s > theta (strict), hence at most floor(1 / theta) positives per image.
        delta: share of each image's C classes, as a fraction in [0, 1], that become
            pseudo-negatives: the floor(delta * C) lowest-scoring classes of that image.
            Default 0 (the paper's final setting: positives only).

    Input of `fit`/`transform`: (N, C) cosine similarities between L2-normalised image and
    class-text embeddings (values in [-1, 1]), C >= 2 (one class is refused: its softmax is
    always 1). Stateless: `fit` ignores `targets`.
    """

    name = "vlpl"

    def __init__(self, tau: float, theta: float, delta: float = 0.0) -> None:
        self.tau = tau
        self.theta = theta
        self.delta = delta

    @classmethod
    def from_paper(cls, dataset: str, delta: float = 0.0) -> VLPLThreshold:
        """The paper's best setting for `dataset` (one of `VLPL_DEFAULTS`: voc, coco, nus, cub)."""
        if dataset not in VLPL_DEFAULTS:
            close = difflib.get_close_matches(str(dataset), VLPL_DEFAULTS, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(f"no VLPL paper setting for dataset {dataset!r}.{hint} "
                                   f"Valid choices: {', '.join(sorted(VLPL_DEFAULTS))}.")
        return cls(delta=delta, **VLPL_DEFAULTS[dataset])

    def _check_params(self) -> tuple[float, float, float]:
        tau = require_range("tau", self.tau, 0.0, np.inf, low_open=True, high_open=True)
        theta = require_range("theta", self.theta, 0.0, 1.0, low_open=True, high_open=True)
        delta = require_range("delta", self.delta, 0.0, 1.0)
        return tau, theta, delta

    def check_params(self) -> None:
        self._check_params()

    def fit(self, scores: Any = None, targets: Any = None) -> VLPLThreshold:
        """Check the settings (nothing is learned); with `scores`, record `n_classes_`."""
        self._check_params()
        if scores is not None:
            n_classes = check_scores(scores, "similarities").shape[1]
            check_softmax_classes(n_classes, "VLPL pseudo-labels", _ONE_CLASS_INSTEAD)
            self.n_classes_ = n_classes
        return self

    def transform(self, scores: Any) -> PseudoLabels:
        """Pseudo-label (N, C) cosine similarities; `scores` holds the softmax probabilities."""
        tau, theta, delta = self._check_params()
        sims = check_cosine(
            check_scores(scores, "similarities", getattr(self, "n_classes_", None)),
            "similarities")
        n, c = sims.shape
        check_softmax_classes(c, "VLPL pseudo-labels", _ONE_CLASS_INSTEAD)
        s = temperature_softmax(sims, tau) if n else np.zeros((0, c))
        positive = s > theta
        n_neg = int(floor_count(delta * c))
        negative = np.zeros_like(positive)
        if n_neg and n:
            lowest = np.argsort(sims, axis=1, kind="stable")[:, :n_neg]
            np.put_along_axis(negative, lowest, True, axis=1)
        labels = np.full((n, c), NO_PSEUDO, dtype=np.int8)
        labels[negative & ~positive] = PSEUDO_NEGATIVE
        labels[positive] = PSEUDO_POSITIVE
        fitted = {"max_positives_per_image": int(floor_count(1.0 / theta)),
                  "negatives_per_image": n_neg}
        return self._make(labels, scores=s, fitted=fitted)
