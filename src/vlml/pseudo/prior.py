"""A frozen CLIP's zero-shot scores as a prior on a teacher's pseudo-label scores (CBSA).

CBSA leans on the vision-language model to make better pseudo-labels for the unlabeled images
(docs/methods.md 5, "(choice)": how is not published). `fuse_prior` combines the teacher's sigmoid
score p_c with the zero-shot softmax s_c of the same image as a product of experts in log-odds:

    fused_c = sigmoid(logit(p_c) + w * log(C * s_c))

w = 0 (or a uniform s_c = 1/C) leaves the teacher's scores unchanged; the class-wise CAP
thresholds then rank the fused scores. Measured on the toy world (README, w = 0.5): the
labelled-only teacher and the zero-shot scores make different mistakes, and the fused scores
rank the unlabeled images better than the teacher alone.

>>> import numpy as np
>>> fuse_prior(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]), weight=1.0).tolist()
[[0.5, 0.5]]
"""

from __future__ import annotations

import numpy as np

from vlml.errors import ConfigError

_EPS = 1e-6


def fuse_prior(scores: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """(N, C) teacher probabilities and (N, C) zero-shot softmax scores (rows sum to 1) ->
    (N, C) float32 fused probabilities `sigmoid(logit(scores) + weight * log(C * prior))`.
    Probabilities are clipped to [1e-6, 1 - 1e-6] first."""
    scores, prior = np.asarray(scores, dtype=np.float64), np.asarray(prior, dtype=np.float64)
    if scores.shape != prior.shape or scores.ndim != 2:
        raise ConfigError(f"prior shape {prior.shape} does not match the scores' {scores.shape} "
                          "(expected two equal (N, C) arrays)")
    if weight < 0:
        raise ConfigError(f"prior weight must be >= 0, got {weight!r}")
    p = np.clip(scores, _EPS, 1.0 - _EPS)
    z = np.log(p) - np.log1p(-p) + weight * np.log(np.clip(prior, _EPS, None) * prior.shape[1])
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)  # stable sigmoid


__all__ = ["fuse_prior"]
