"""How a run picks its epoch, and what that choice measures (issue "labels that really are
incomplete", part 2).

- `clean_val_map`: a fully labelled validation set (`data.val_catalog`, or the clean split a
  simulated regime holds out); maximises mAP on clean labels.
- `observed_map`: held-out training images whose observed labels include negatives; mAP over
  their observed entries (unknowns excluded).
- `observed_recall_at_k`: held-out training images with observed positives only (one tag
  each); observed-positive recall@k.
- `labeled_val` (SSMLL): held-out labelled images; mAP over their observed entries.
- `last`: no validation data; the last epoch.

The observed-label rules need no ground truth: they score what the user's own tags support,
and the run report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vlml import metrics

DESCRIPTIONS = {
    "clean_val_map": "mAP on fully labelled validation images",
    "observed_map": "mAP on held-out training images against their observed labels only "
                    "(unknown entries excluded)",
    "observed_recall_at_k": "observed-positive recall@{k} on held-out training images: the "
                            "share of their observed tags ranked among the {k} highest scores "
                            "(no negatives are known, so no mAP)",
    "labeled_val": "mAP on held-out labelled images (their observed entries)",
    "last": "none: the last epoch is kept (no validation data)",
}


@dataclass(frozen=True)
class Selection:
    """A rule, the epoch-record key it writes (`metric`), and k for recall@k."""

    rule: str
    metric: str
    k: int | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready: rule, metric, what it measures (and k)."""
        out = {"rule": self.rule, "metric": self.metric,
               "description": DESCRIPTIONS[self.rule].format(k=self.k)}
        return out if self.k is None else {**out, "k": self.k}

    def score(self, probs: np.ndarray, targets: np.ndarray,
              class_names: list[str] | None = None) -> float | None:
        """The rule's value (percent) of (N, C) scores against (N, C) targets in {1, 0, -1};
        None when the targets support no value (e.g. no known positive)."""
        if self.rule == "observed_recall_at_k":
            return metrics.observed_recall_at_k(probs, targets, self.k)
        report = metrics.map_report(probs, targets, empty="skip", class_names=class_names)
        return metrics.finite_or_none(report.map)


def for_validation(targets: np.ndarray, clean: bool, k: int) -> Selection:
    """The rule validation targets (N, C) support: clean mAP; else observed mAP when some
    negative is observed; else observed-positive recall@k."""
    if clean:
        return Selection("clean_val_map", "val_map")
    if (np.asarray(targets) == 0).any():
        return Selection("observed_map", "val_observed_map")
    return Selection("observed_recall_at_k", f"val_observed_recall_at_{k}", k)


LAST_EPOCH = Selection("last", "epoch")
