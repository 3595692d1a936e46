"""Pseudo-labelers: scores in, `PseudoLabels` (with provenance) out, scikit-learn contract.

Every labeller: `fit(scores, targets=None) -> self`, `transform(scores) -> PseudoLabels`,
`fit_transform(scores, targets=None)` = `fit(...).transform(...)`. What `fit` needs is read
from the registry entry's flags, never from the name:

| flag | meaning | set for |
|---|---|---|
| `needs_targets` | `fit` needs the labeled images' (n_l, C) targets (1, 0, -1 unknown) | cap, mat |
| `needs_labeled_scores` | `fit` needs those images' scores (rows as the targets) | mat |
| `needs_similarities` | the scores must be CLIP cosine similarities in [-1, 1] | vlpl, |
|  | (without it: any scores, e.g. a classifier's probabilities) | class_threshold |

>>> from vlml import pseudo
>>> pseudo.list_pseudo_labelers()
['cap', 'class_threshold', 'fixed', 'mat', 'topk', 'vlpl']
>>> pseudo.list_pseudo_labelers(needs_targets=True)
['cap', 'mat']
>>> labeler = pseudo.create("vlpl", tau=0.03, theta=0.3)      # or pseudo.get("vlpl")(...)
>>> out = labeler.fit_transform([[0.31, 0.22, 0.18]])
>>> out.labels.tolist(), out.provenance["method"]
([[1, -1, -1]], 'vlpl')

Pseudo-labels never enter the observed label matrix: `combine_with_observed` returns them
restricted to the entries the observation leaves unknown, as a separate matrix.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any

from vlml.errors import ConfigError
from vlml.pseudo.base import (
    NO_PSEUDO,
    PSEUDO_NEGATIVE,
    PSEUDO_POSITIVE,
    PseudoLabeler,
    PseudoLabels,
    combine_with_observed,
)
from vlml.pseudo.cap import CAPThreshold
from vlml.pseudo.mat import MATThreshold
from vlml.pseudo.threshold import ClassThreshold, FixedThreshold, TopK
from vlml.pseudo.vlpl import VLPL_DEFAULTS, VLPLThreshold
from vlml.registry import Registry


@dataclass(frozen=True)
class PseudoLabelerEntry:
    """A registered pseudo-labeler: its class, a one-line description, and what it needs.

    Attributes:
        needs_targets: `fit(scores, targets)` needs `targets`, the labeled images' (n_l, C)
            labels in {1, 0, -1} (CAP's class priors, MAT's F-beta fit), unknown (-1) entries
            left out of the fit; without it, `targets` is ignored.
        needs_labeled_scores: `fit` needs `scores` to be the labeled images' (n_l, C) scores,
            of the same model as the scores it will transform, row-aligned with `targets`
            (MAT). Without it, `fit` accepts None (or any scores of the right width).
        needs_similarities: the input scores must be CLIP cosine similarities in [-1, 1]
            (VLPL's temperature softmax, `class_threshold`); without it, any (N, C) scores,
            e.g. a classifier's probabilities.
    """

    name: str
    cls: type[PseudoLabeler]
    description: str
    needs_targets: bool = False
    needs_labeled_scores: bool = False
    needs_similarities: bool = False


_FLAGS = tuple(f.name for f in fields(PseudoLabelerEntry) if f.name.startswith("needs_"))
PSEUDO_LABELERS: Registry[PseudoLabelerEntry] = Registry("pseudo-labeler")

for _cls, _description, _flags in (
    (VLPLThreshold, "VLPL: softmax(sim / tau) > theta per image, optional delta share of "
                    "pseudo-negatives (docs/methods.md 3)", {"needs_similarities": True}),
    (ClassThreshold, "per-class threshold on cosine or sigmoid(scale * cos + bias) scores",
     {"needs_similarities": True}),
    (TopK, "the k highest-scoring classes of each image", {}),
    (FixedThreshold, "hard labels at a fixed threshold: score >= t, every entry used "
                     "(docs/methods.md 5.8 ablation)", {}),
    (CAPThreshold, "CAP class-distribution-aware thresholds with loss mask (docs/methods.md 4)",
     {"needs_targets": True}),
    (MATThreshold, "D2L metric-adaptive per-class thresholds maximising F-beta",
     {"needs_targets": True, "needs_labeled_scores": True}),
):
    PSEUDO_LABELERS.register(_cls.name,
                             PseudoLabelerEntry(_cls.name, _cls, _description, **_flags))


def list_pseudo_labelers(**flags: bool) -> list[str]:
    """Names accepted by `get` and `create`; `flags` (e.g. `needs_targets=False`) keep only
    the entries whose `PseudoLabelerEntry` flags have those values."""
    unknown = sorted(set(flags) - set(_FLAGS))
    if unknown:
        raise ConfigError(f"no pseudo-labeler flag(s) {unknown}; flags: {list(_FLAGS)}")
    return [name for name in PSEUDO_LABELERS.names()
            if all(getattr(PSEUDO_LABELERS.get(name), k) == v for k, v in flags.items())]


def entry(name: str) -> PseudoLabelerEntry:
    """The registry entry of `name` (class, description, flags); close-name suggestion on a
    miss."""
    return PSEUDO_LABELERS.get(name)


def get(name: str) -> type[PseudoLabeler]:
    """The pseudo-labeler class registered as `name` (close-name suggestion on a miss)."""
    return PSEUDO_LABELERS.get(name).cls


def create(name: str, **params: Any) -> PseudoLabeler:
    """An instance of pseudo-labeler `name` built with `params`; unknown parameters are a
    `ConfigError` listing the accepted ones."""
    cls = get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"pseudo-labeler {name!r} has no parameter(s) {unknown}; "
                          f"accepted: {accepted}")
    try:
        return cls(**params)
    except TypeError as exc:  # a required parameter is missing
        raise ConfigError(f"pseudo-labeler {name!r}: {exc}; accepted: {accepted}") from None


__all__ = [
    "PseudoLabels", "PseudoLabeler", "combine_with_observed",
    "PSEUDO_POSITIVE", "PSEUDO_NEGATIVE", "NO_PSEUDO",
    "VLPLThreshold", "VLPL_DEFAULTS", "ClassThreshold", "FixedThreshold", "TopK", "CAPThreshold",
    "MATThreshold", "PSEUDO_LABELERS", "PseudoLabelerEntry", "list_pseudo_labelers", "entry",
    "get", "create",
]
