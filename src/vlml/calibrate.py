"""Per-class decision thresholds fitted on labelled scores: what `vlml calibrate` runs on a
catalog, and every train recipe on its validation data at the end of a run.

`fit_thresholds(scores, targets, class_names, target)` reads (N, C) probabilities and (N, C)
labels in {1, 0, -1}. Per class c, on its known entries only (-1 left out), with n_pos known
positives and n_neg known negatives: sort the distinct scores descending, u_1 > u_2 > ... > u_m.
The cut after u_k tags the entries scoring >= u_k, with tp_k true and fp_k false positives:

    precision_k = tp_k / (tp_k + fp_k)      recall_k = tp_k / n_pos
    F1_k        = 2 tp_k / (2 tp_k + fp_k + (n_pos - tp_k))

The target picks k:

    f1            the k of the highest F1_k; ties go to the smallest k (the highest threshold,
                  the fewest tags)
    precision=P   the largest k with precision_k >= P: the lowest threshold that meets P, so the
                  most recall under the constraint. When no k meets P the class is uncalibrated
                  (it keeps `default`; its stats say why and give the best precision reached).
    recall=R      the smallest k with recall_k >= R: the highest threshold that meets R. The
                  cut after u_m tags every entry (recall 1), so every R in (0, 1] is met.

The threshold sits at the midpoint of the gap below the cut, t = (u_k + u_{k+1}) / 2: an unseen
image scoring a little below the lowest tagged score is still tagged, one a little above the
highest untagged score is not. With nothing left untagged (k = m) t = u_m. On the calibration
data `scores >= t` tags exactly the cut's entries (checked in float64 and float32, the dtype of
the tagger's probabilities; where the midpoint would round onto u_{k+1}, t = u_k).

Precision-recall curves usually list thresholds at the scores themselves (sklearn's
`precision_recall_curve`: `scores >= threshold`); the cut after u_k is that curve's point at
threshold u_k, and only where the threshold is stored differs (the midpoint, on purpose, above).

A class without both a known positive and a known negative cannot be calibrated: it keeps
`default` with `calibrated: false` and the reason. Stats per class (`Thresholds.stats`):
precision, recall, f1, n_pos, n_neg at the threshold in use (precision None when nothing is
tagged; all three None without both a known positive and a known negative), and `reason` for
an uncalibrated class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlml.errors import ConfigError, DataError
from vlml.pseudo.base import check_scores, check_targets
from vlml.thresholds import DEFAULT, Thresholds

TARGET_FORMS = "f1, precision=P or recall=R (P, R in (0, 1], e.g. precision=0.9)"


@dataclass(frozen=True)
class Target:
    """A parsed calibration target: `kind` "f1", "precision" or "recall"; `value` P or R (None
    for f1). `str(target)` is its canonical text ("f1", "precision=0.9")."""

    kind: str
    value: float | None = None

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"


def parse_target(text: str | Target) -> Target:
    """`"f1"`, `"precision=P"` or `"recall=R"` with P, R in (0, 1]; else `ConfigError` naming
    the valid forms."""
    if isinstance(text, Target):
        return text
    raw = str(text)
    kind, sep, value = raw.replace(" ", "").lower().partition("=")
    if kind == "f1" and not sep:
        return Target("f1")
    if kind not in ("precision", "recall") or not sep:
        raise ConfigError(f"calibration target {raw!r} is unknown; expected {TARGET_FORMS}")
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"calibration target {raw!r}: {kind} {value!r} is not a number; "
                          f"expected {TARGET_FORMS}") from None
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"calibration target {raw!r}: {kind} must be in (0, 1], got {v:g}; "
                          f"expected {TARGET_FORMS}")
    return Target(kind, v)


# ---- one class -------------------------------------------------------------------------------
def _cuts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, tp, n_tagged): the distinct scores descending (m,), and per cut after u_k the
    true positives and the entries tagged (both (m,) int)."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_run = np.r_[s[1:] != s[:-1], True]  # a cut cannot split tied scores
    tp = np.cumsum(y)[last_of_run]
    return s[last_of_run], tp, np.flatnonzero(last_of_run) + 1


def _threshold_below(u: np.ndarray, k: int) -> float:
    """The stored threshold of the cut after u[k] (0-based): the midpoint of the gap below."""
    if k + 1 >= len(u):
        return float(u[k])
    hi, lo = float(u[k]), float(u[k + 1])
    mid = (hi + lo) / 2
    keeps_cut = lo < mid <= hi and np.float32(lo) < np.float32(mid) <= np.float32(hi)
    return mid if keeps_cut else hi


def stats_at(s: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    """precision, recall, f1, n_pos, n_neg of tagging `s >= threshold` against the 0/1 (or
    bool) labels `y` of the same (n,) known entries. precision is None when nothing is tagged,
    recall None without a positive, f1 None when neither a positive nor a tag exists."""
    y = np.asarray(y, bool)
    tagged = np.asarray(s) >= threshold
    tp = int((tagged & y).sum())
    n_tagged, n_pos = int(tagged.sum()), int(y.sum())
    f1_denominator = n_tagged + n_pos  # 2 tp + fp + fn
    return {"precision": tp / n_tagged if n_tagged else None,
            "recall": tp / n_pos if n_pos else None,
            "f1": 2 * tp / f1_denominator if f1_denominator else None,
            "n_pos": n_pos, "n_neg": int(y.size - n_pos)}


def _fit_class(s: np.ndarray, y: np.ndarray, target: Target, default: float
               ) -> tuple[float, bool, dict[str, Any]]:
    """(threshold, calibrated, stats) of one class's known entries."""
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        missing = ("no known label" if y.size == 0 else
                   "no known positive" if n_pos == 0 else "no known negative")
        return default, False, {"precision": None, "recall": None, "f1": None, "n_pos": n_pos,
                                "n_neg": n_neg, "reason": missing}
    u, tp, n_tagged = _cuts(s, y.astype(np.int64))
    if target.kind == "f1":
        k = int(np.argmax(2 * tp / (n_tagged + n_pos)))  # first maximum: the highest cut
    elif target.kind == "recall":
        k = int(np.flatnonzero(tp / n_pos >= target.value)[0])
    else:
        precision = tp / n_tagged
        meets = np.flatnonzero(precision >= target.value)
        if not meets.size:
            return default, False, {**stats_at(s, y, default), "reason": (
                f"precision {target.value:g} is reached at no threshold (best "
                f"{precision.max():.3f}); kept the default {default:g}")}
        k = int(meets[-1])
    t = _threshold_below(u, k)
    return t, True, stats_at(s, y, t)


# ---- every class -----------------------------------------------------------------------------
def check_pair(scores: Any, targets: Any, class_names: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores float64 (N, C), positive (N, C) bool, known (N, C) bool), or `DataError` for a
    shape, value or class-count mismatch."""
    s = check_scores(scores, "scores")
    positive, known = check_targets(targets, "targets", s.shape[1])
    if positive.shape[0] != s.shape[0]:
        raise DataError(f"{positive.shape[0]} rows of targets for {s.shape[0]} rows of scores; "
                        "expected one row per image in both", "targets")
    if class_names is not None and len(class_names) != s.shape[1]:
        raise DataError(f"{len(class_names)} class names for {s.shape[1]} score columns",
                        "class_names")
    return s, positive, known


def fit_thresholds(scores: Any, targets: Any, class_names: Sequence[str],
                   target: str | Target = "f1", default: float = DEFAULT, source: str = ""
                   ) -> Thresholds:
    """Per-class thresholds for the (N, C) probabilities `scores` against the (N, C) labels
    `targets` in {1, 0, -1} (see the module docstring for the rule of each target).

    Args:
        class_names: C names, in column order.
        target: "f1", "precision=P" or "recall=R" (`parse_target`).
        default: the threshold of a class that cannot be calibrated, in [0, 1].
        source: what the scores and labels are (stored in `thresholds.json`).

    Returns:
        `Thresholds` with per-class values (C,), calibrated flags (C,) and stats.
    """
    goal = parse_target(target)
    if not 0.0 <= float(default) <= 1.0:
        raise ConfigError(f"default threshold must be in [0, 1], got {default!r}")
    s, positive, known = check_pair(scores, targets, class_names)
    fits = [_fit_class(s[known[:, c], c], positive[known[:, c], c], goal, float(default))
            for c in range(s.shape[1])]
    values, calibrated, stats = zip(*fits, strict=True) if fits else ((), (), ())
    return Thresholds(tuple(class_names), np.array(values, np.float64),
                      np.array(calibrated, bool), str(goal), source, float(default),
                      tuple(stats))


def evaluate_thresholds(scores: Any, targets: Any, values: Any) -> list[dict[str, Any]]:
    """Per class, `stats_at` of tagging `scores[:, c] >= values[c]` on the known entries of
    the (N, C) `targets`; `values` (C,) thresholds (or one number for every class)."""
    s, positive, known = check_pair(scores, targets)
    v = np.broadcast_to(np.asarray(values, np.float64), (s.shape[1],))
    return [stats_at(s[known[:, c], c], positive[known[:, c], c], float(v[c]))
            for c in range(s.shape[1])]


def mean_f1(per_class: Sequence[dict[str, Any]]) -> float | None:
    """The mean per-class F1 over the classes with both a known positive and a known negative
    (None when there is none)."""
    f1 = [p["f1"] for p in per_class if p["n_pos"] and p["n_neg"] and p["f1"] is not None]
    return float(np.mean(f1)) if f1 else None


__all__ = ["Target", "parse_target", "fit_thresholds", "evaluate_thresholds", "stats_at",
           "mean_f1", "check_pair", "TARGET_FORMS"]
