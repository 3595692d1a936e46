"""Evaluation metrics for multi-label classification (docs/methods.md section 1.4).

Conventions shared by every function here:

- `scores` is (N, C) real-valued (logits or probabilities; only the order matters for AP).
- `targets` is (N, C) with values in {1 positive, 0 negative, -1 unknown} (bool or 0/1 also
  accepted). Unknown entries are excluded from every count, never treated as negative.
- numpy arrays and torch tensors are both accepted (tensors are converted via numpy).
- Per-class AP is a fraction in [0, 1]; mAP and the threshold metrics are percentages.
- mAP is a mean over the classes whose known targets hold both a positive and a negative; the
  others are skipped, counted and named (`MapReport.note`), never scored as 0 or 1 silently.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlml.errors import ConfigError, DataError
from vlml.types import NEGATIVE, POSITIVE, UNKNOWN

EMPTY_POLICIES = ("skip", "zero")
_MAX_NAMES_SHOWN = 5


# --------------------------------------------------------------------------- input checking

def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of `x`; torch tensors are detached and moved to the CPU first."""
    if type(x).__module__.startswith("torch"):
        import torch

        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_scores(x: Any, what: str = "scores") -> np.ndarray:
    """(N, C) finite float32/float64 scores; float16 widens to float32, ints/bools to float64."""
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D array (N images, C classes), got shape {arr.shape}",
                        what)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected real numbers, got dtype {arr.dtype}", what)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DataError(f"non-finite value {arr[r, c]} at row {r}, column {c}; "
                        "expected finite scores", what)
    return arr


def _as_label_matrix(x: Any, shape: tuple[int, ...] | None, what: str,
                     allow_unknown: bool = True, match: str = "scores") -> np.ndarray:
    """(N, C) int8 labels with values in {1, 0, -1} ({1, 0} if not `allow_unknown`).

    `shape` is the expected shape, taken from the array named `match`; None accepts any 2-D.
    """
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D array (N images, C classes), got shape {arr.shape}",
                        what)
    if shape is not None and arr.shape != shape:
        raise DataError(f"expected shape {shape} matching {match}, got shape {arr.shape}",
                        what)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected integer labels, got dtype {arr.dtype}", what)
    if arr.dtype.kind == "b":
        return arr.astype(np.int8)
    low = UNKNOWN if allow_unknown else NEGATIVE
    bad = (arr < low) | (arr > POSITIVE)
    if arr.dtype.kind == "f":
        bad |= arr != np.trunc(arr)  # also catches NaN
    if bad.any():
        r, c = np.argwhere(bad)[0]
        allowed = [POSITIVE, NEGATIVE, UNKNOWN] if allow_unknown else [POSITIVE, NEGATIVE]
        raise DataError(f"value {arr[r, c]} at row {r}, column {c}; expected one of {allowed}",
                        what)
    return arr.astype(np.int8, copy=False)


def _as_pair(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    return s, _as_label_matrix(targets, s.shape, "targets")


def _class_labels(class_names: Sequence[str] | None, n_classes: int) -> list:
    """The names to report classes by: `class_names` when given, else the column indices."""
    if class_names is None:
        return list(range(n_classes))
    names = list(class_names)
    if len(names) != n_classes:
        raise DataError(f"expected {n_classes} class names (one per column), got {len(names)}",
                        "class_names")
    return names


def _check_empty_policy(empty: str) -> None:
    if empty not in EMPTY_POLICIES:
        raise ConfigError(f"empty={empty!r} is not a policy; expected one of {EMPTY_POLICIES} "
                          "('skip': leave classes without a known positive out of the mean, "
                          "'zero': count them as AP 0 like the reference code)")


def _describe(labels: list) -> str:
    shown = ", ".join(repr(x) for x in labels[:_MAX_NAMES_SHOWN])
    more = len(labels) - _MAX_NAMES_SHOWN
    return shown + (f", ... ({more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- average precision

def average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class non-interpolated average precision, equal to scikit-learn's.

    Args:
        scores: (N, C) real scores, numpy array or torch tensor.
        targets: (N, C) labels in {1, 0, -1} (or bool / 0-1); -1 entries are left out of their
            class's AP.

    Returns:
        (C,) float64 AP in [0, 1]; column c equals
        `sklearn.metrics.average_precision_score(targets[k, c], scores[k, c])` over the known
        rows k, tied scores forming a single threshold. NaN for a class with no known positive;
        1 for a class with no known negative (as scikit-learn), which `map_report` leaves out.
    """
    s, t = _as_pair(scores, targets)
    return _average_precision(s, t)


def _average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every column at once: one sort along the images, cumulative counts, tie groups.

    With descending scores, each tie group is one threshold; its precision is read at the
    group's last element and weighted by the recall gained over the group (its positives / P).
    """
    n, c = scores.shape
    if n == 0 or c == 0:
        return np.full(c, np.nan)
    if scores.dtype != np.float32:
        with np.errstate(over="ignore"):
            narrow = scores.astype(np.float32)
        if np.array_equal(narrow, scores):  # same ties in float32, so the faster sort is exact
            scores = narrow
    if scores.dtype == np.float32:
        ends, label = _sort_packed(scores, targets)
    else:
        ends, label = _sort_indirect(scores, targets)
    return _ap_from_sorted(ends, label)


def _sort_indirect(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each class by descending score with argsort (any float dtype).

    Returns (C, N) `ends` (True at the last element of each tie group) and (C, N) int8 labels
    in the sorted order.
    """
    c, n = scores.shape[1], scores.shape[0]
    # Class-major layout so each class is one contiguous row; negated for a descending order.
    keys = np.empty((c, n), dtype=scores.dtype)
    np.negative(scores.T, out=keys)
    order = np.argsort(keys, axis=1)  # tie order is irrelevant: only group ends are read
    keys = np.take_along_axis(keys, order, axis=1)
    label = np.take_along_axis(np.ascontiguousarray(targets.T), order, axis=1)
    ends = np.empty((c, n), dtype=bool)
    np.not_equal(keys[:, 1:], keys[:, :-1], out=ends[:, :-1])
    ends[:, -1] = True
    return ends, label


def _sort_packed(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same result as `_sort_indirect` for float32 scores, about twice as fast.

    Each entry becomes one uint64: the score's bits mapped to an unsigned key that sorts in
    descending score order, shifted left by 2, with the label code (1 - label: 0 pos, 1 neg,
    2 unknown) in the low bits. A direct sort of these keys replaces argsort plus two gathers.
    """
    c, n = scores.shape[1], scores.shape[0]
    x = np.empty((c, n), dtype=np.float32)
    np.add(scores.T, np.float32(0.0), out=x)  # turns -0.0 into +0.0 so the two tie
    bits = x.view(np.uint32)
    # Non-negative floats: flip all but the sign bit (larger score -> smaller key); negative
    # floats keep their bits, which already grow with magnitude and exceed every non-negative.
    flip = bits >> 31
    flip -= 1
    flip &= 0x7FFFFFFF
    bits ^= flip
    del flip
    key = bits.astype(np.uint64)
    del x, bits
    key <<= 2
    code = np.empty((c, n), dtype=np.uint8)
    np.subtract(1, targets.T, out=code, casting="unsafe")  # label 1, 0, -1 -> code 0, 1, 2
    np.bitwise_or(key, code, out=key)
    del code
    key.sort(axis=1)

    label = np.empty((c, n), dtype=np.int8)
    np.bitwise_and(key, 3, out=label, casting="unsafe")
    np.subtract(1, label, out=label)
    key >>= 2
    ends = np.empty((c, n), dtype=bool)
    np.not_equal(key[:, 1:], key[:, :-1], out=ends[:, :-1])
    ends[:, -1] = True
    return ends, label


def _ap_from_sorted(ends: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-row AP from (C, N) tie-group ends and labels, both in descending score order."""
    c, n = label.shape
    tp = np.cumsum(label == POSITIVE, axis=1, dtype=np.int32)
    n_pos = tp[:, -1].astype(np.float64)
    tp_end = tp[ends]
    del tp
    # Known entries ranked at or above each position; None means the position + 1.
    known_cum = None
    if (label == UNKNOWN).any():
        known_cum = np.cumsum(label != UNKNOWN, axis=1, dtype=np.int32)

    # Flattened class by class; `starts` marks each class's first group.
    starts = np.zeros(c, dtype=np.intp)
    np.cumsum(ends.sum(axis=1)[:-1], out=starts[1:])
    gained = np.diff(tp_end, prepend=0)
    gained[starts] = tp_end[starts]
    # Only groups holding a positive add recall; keep those (about one per positive).
    hit = gained > 0
    kept = np.zeros((c, n), dtype=bool)
    kept[ends] = hit
    where = np.flatnonzero(kept)
    row = where // n
    if known_cum is None:
        known = where - row * n + 1
    else:
        known = known_cum.ravel()[where]
    precision = tp_end[hit] / known
    total = np.bincount(row, weights=gained[hit] * precision, minlength=c)

    ap = np.full(c, np.nan)
    has_pos = n_pos > 0
    ap[has_pos] = total[has_pos] / n_pos[has_pos]
    return ap


@dataclass(frozen=True, eq=False)
class MapReport:
    """mAP with the per-class detail behind it.

    Attributes:
        map: mean AP in percent (NaN when no class could be scored: see `available`, `note`).
        per_class_ap: (C,) read-only AP in [0, 1]; NaN for skipped classes, 0 for classes
            without a known positive under policy "zero".
        n_skipped: number of classes left out of the mean.
        skipped_classes: names (or column indices when no names were given) of those classes:
            `no_negative_classes` always, and `empty_classes` under policy "skip".
        empty: the policy used, "skip" or "zero".
        empty_classes: classes without a known positive, whatever the policy.
        no_negative_classes: classes with a known positive but no known negative; their AP
            would be 1 whatever the scores, so they are always skipped.
    """

    map: float
    per_class_ap: np.ndarray
    n_skipped: int
    skipped_classes: tuple
    empty: str = "skip"
    empty_classes: tuple = ()
    no_negative_classes: tuple = ()

    @property
    def available(self) -> bool:
        """True when at least one class was scored, i.e. `map` is a number."""
        return not math.isnan(self.map)

    def note(self) -> str:
        """Why classes were left out of the mean ('' when none was); when no class could be
        scored, a sentence saying that no mAP is reported and why."""
        n_classes = len(self.per_class_ap)
        parts = []
        empty = self.empty_classes if self.empty == "skip" else ()
        if empty:
            parts.append(f"{len(empty)} with no known positive ({_describe(list(empty))})")
        if self.no_negative_classes:
            parts.append(f"{len(self.no_negative_classes)} with no known negative, whose AP "
                         f"would be 1 whatever the scores "
                         f"({_describe(list(self.no_negative_classes))})")
        if not parts and self.available:
            return ""
        skipped = f"skipped {self.n_skipped} of {n_classes} classes: {'; '.join(parts)}" \
            if parts else f"{n_classes} classes"
        if self.available:
            return skipped
        return ("no class has both a known positive and a known negative among the evaluated "
                f"labels, so no mAP is reported; {skipped}")


def map_report(scores: Any, targets: Any, empty: str = "skip",
               class_names: Sequence[str] | None = None) -> MapReport:
    """mAP (percent) over the classes with both a known positive and a known negative.

    A class is scored only when its known (not -1) targets hold both a positive and a
    negative. A class with no known negative has an AP of 1 whatever the scores (e.g. a
    catalog where only positives are known): it is always left out of the mean, counted in
    `n_skipped` and named in the warning. When no class can be scored, `map` is NaN and
    `MapReport.note()` says why.

    Args:
        scores: (N, C) real scores.
        targets: (N, C) labels in {1, 0, -1}; -1 entries are excluded.
        empty: what to do with a class that has no positive among its known entries:
            "skip" (default) leaves it out of the mean and warns; "zero" counts it as AP 0,
            the reference code's behaviour.
        class_names: optional C names used to report skipped classes.
    """
    return _map_report(scores, targets, empty, class_names, stacklevel=3)


def _map_report(scores: Any, targets: Any, empty: str, class_names: Sequence[str] | None,
                stacklevel: int) -> MapReport:
    _check_empty_policy(empty)
    s, t = _as_pair(scores, targets)
    labels = _class_labels(class_names, s.shape[1])
    ap = _average_precision(s, t)
    is_empty = np.isnan(ap)
    no_negative = ~is_empty & ~(t == NEGATIVE).any(axis=0)
    empty_classes = tuple(labels[i] for i in np.flatnonzero(is_empty))
    no_negative_classes = tuple(labels[i] for i in np.flatnonzero(no_negative))

    ap[no_negative] = np.nan
    if empty == "zero":
        ap[is_empty] = 0.0
    skip = no_negative | (is_empty if empty == "skip" else False)
    skipped = tuple(labels[i] for i in np.flatnonzero(skip))
    scored = ap[~skip]
    value = float(100.0 * scored.mean()) if scored.size else float("nan")
    ap.flags.writeable = False
    report = MapReport(map=value, per_class_ap=ap, n_skipped=len(skipped),
                       skipped_classes=skipped, empty=empty, empty_classes=empty_classes,
                       no_negative_classes=no_negative_classes)
    if skipped:
        warnings.warn(f"mAP: {report.note()}", stacklevel=stacklevel)
    return report


def mean_average_precision(scores: Any, targets: Any, empty: str = "skip") -> float:
    """mAP in percent: 100 x mean per-class AP over the classes with a known positive and a
    known negative (NaN when there is none). See `map_report` for `empty`."""
    return _map_report(scores, targets, empty, None, stacklevel=3).map


# --------------------------------------------------------------------------- threshold metrics

def threshold_metrics(scores: Any, targets: Any, threshold: float | None = None,
                      top_k: int | None = None) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 in percent for hard predictions.

    Predictions are `scores >= threshold` or the `top_k` highest scores of each image (ties
    broken towards the lower class index); give at most one of the two. With neither,
    the threshold is 0.5 (scores are then probabilities).

    Unknown (-1) target entries are left out of every count (a prediction there is neither a
    true nor a false positive). Conventions, those of the ML-GCN/ASL reference code
    (`Np[Np == 0] = 1`): a class with no predicted positive has precision 0 and stays in the
    CP mean; CF1 = 2 CP CR / (CP + CR) from the means (not a mean of per-class F1), 0 when
    CP + CR = 0. Where the reference would give NaN (a class with no known positive makes its
    recall 0/0), such classes are left out of the CR mean with a warning; CR is NaN if none
    has a positive.

    Returns:
        {"CP", "CR", "CF1", "OP", "OR", "OF1"}: floats in percent.
    """
    s, t = _as_pair(scores, targets)
    n, c = s.shape
    if threshold is not None and top_k is not None:
        raise ConfigError(f"got threshold={threshold} and top_k={top_k}; give one of the two")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) \
                or not 1 <= top_k <= c:
            raise ConfigError(f"top_k={top_k!r}; expected an integer in [1, {c}]")
        order = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
        pred = np.zeros((n, c), dtype=bool)
        np.put_along_axis(pred, order, True, axis=1)
    else:
        thr = 0.5 if threshold is None else float(threshold)
        if not np.isfinite(thr):
            raise ConfigError(f"threshold={threshold!r}; expected a finite number")
        pred = s >= thr

    pos, neg = t == POSITIVE, t == NEGATIVE
    tp = (pred & pos).sum(axis=0).astype(np.float64)
    fp = (pred & neg).sum(axis=0).astype(np.float64)
    n_true = pos.sum(axis=0).astype(np.float64)  # TP + FN

    cp = float(np.mean(tp / np.maximum(tp + fp, 1))) if c else float("nan")
    has_pos = n_true > 0
    if not has_pos.all():
        missing = np.flatnonzero(~has_pos).tolist()
        warnings.warn(f"threshold_metrics: {len(missing)} of {c} classes have no positive among "
                      f"their known targets and are left out of CR: {_describe(missing)}",
                      stacklevel=2)
    cr = float(np.mean(tp[has_pos] / n_true[has_pos])) if has_pos.any() else float("nan")
    op = float(tp.sum() / max(tp.sum() + fp.sum(), 1.0))
    orr = float(tp.sum() / n_true.sum()) if n_true.sum() > 0 else float("nan")
    return {"CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * _f1(cp, cr),
            "OP": 100 * op, "OR": 100 * orr, "OF1": 100 * _f1(op, orr)}


def _f1(p: float, r: float) -> float:
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


# --------------------------------------------------------------------------- pseudo-labels

def pseudo_label_quality(pseudo: Any, truth: Any, class_names: Sequence[str] | None = None,
                         mask: Any = None) -> dict[str, Any]:
    """Precision and recall of pseudo-positives and pseudo-negatives against ground truth.

    Args:
        pseudo: (N, C) in {1 pseudo-positive, 0 pseudo-negative, -1 no pseudo-label}.
        truth: (N, C) ground truth in {1, 0}; -1 entries are not evaluated.
        class_names: optional C names, returned as "class_names" (column indices otherwise).
        mask: optional (N, C) bool, the entries to evaluate, e.g. `observed == -1` to judge
            pseudo-labels only where the observed labels were unknown.

    Returns:
        {"class_names": list of C, "per_class": {key: (C,) array}, "overall": {key: number}}
        with the same keys in both, pooled over all evaluated entries in "overall":
        pos_precision = correct pseudo-positives / pseudo-positives,
        pos_recall = correct pseudo-positives / true positives,
        neg_precision = correct pseudo-negatives / pseudo-negatives,
        neg_recall = correct pseudo-negatives / true negatives (fractions in [0, 1], NaN when
        the denominator is 0), and the counts n_pseudo_pos, n_pseudo_pos_correct,
        n_pseudo_neg, n_pseudo_neg_correct, n_true_pos, n_true_neg, n_evaluated.
    """
    p = _as_label_matrix(pseudo, None, "pseudo")
    tr = _as_label_matrix(truth, p.shape, "truth", match="pseudo")
    evaluated = tr != UNKNOWN
    if mask is not None:
        m = _to_numpy(mask)
        if m.shape != p.shape:
            raise DataError(f"expected shape {p.shape} matching pseudo, got shape {m.shape}",
                            "mask")
        if m.dtype != bool:
            if m.dtype.kind not in "iu" or ((m != 0) & (m != 1)).any():
                raise DataError(f"expected a boolean mask, got dtype {m.dtype}", "mask")
            m = m.astype(bool)
        evaluated &= m

    true_pos = evaluated & (tr == POSITIVE)
    true_neg = evaluated & (tr == NEGATIVE)
    pseudo_pos = evaluated & (p == POSITIVE)
    pseudo_neg = evaluated & (p == NEGATIVE)
    counts = {
        "n_pseudo_pos": pseudo_pos.sum(axis=0),
        "n_pseudo_pos_correct": (pseudo_pos & true_pos).sum(axis=0),
        "n_pseudo_neg": pseudo_neg.sum(axis=0),
        "n_pseudo_neg_correct": (pseudo_neg & true_neg).sum(axis=0),
        "n_true_pos": true_pos.sum(axis=0),
        "n_true_neg": true_neg.sum(axis=0),
        "n_evaluated": evaluated.sum(axis=0),
    }
    per_class = {**_pseudo_rates(counts), **counts}
    totals = {k: int(v.sum()) for k, v in counts.items()}
    overall = {k: float(v) for k, v in _pseudo_rates(totals).items()}
    return {"class_names": _class_labels(class_names, p.shape[1]),
            "per_class": per_class, "overall": {**overall, **totals}}


def _pseudo_rates(counts: dict[str, Any]) -> dict[str, Any]:
    def ratio(num: Any, den: Any) -> Any:
        num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    return {
        "pos_precision": ratio(counts["n_pseudo_pos_correct"], counts["n_pseudo_pos"]),
        "pos_recall": ratio(counts["n_pseudo_pos_correct"], counts["n_true_pos"]),
        "neg_precision": ratio(counts["n_pseudo_neg_correct"], counts["n_pseudo_neg"]),
        "neg_recall": ratio(counts["n_pseudo_neg_correct"], counts["n_true_neg"]),
    }


def pseudo_quality(labels: Any, mask: Any, truth: Any | None = None,
                   scores: Any | None = None) -> dict[str, float | None]:
    """A flat, JSON-ready summary of one round of pseudo-labels (one record per epoch).

    Args:
        labels: (N, C) pseudo-labels in {1, 0} (-1 allowed: no pseudo-label).
        mask: (N, C) bool, the entries the loss uses.
        truth: (N, C) ground truth in {1, 0, -1} of the same images, or None.
        scores: (N, C) scores behind the labels, or None.

    Returns:
        `pl_used_fraction` (mean of mask) and `pl_positive_rate` (share of entries labelled 1);
        given `truth`, `pl_{pos,neg}_{precision,recall}` over all entries and
        `pl_used_{pos,neg}_{precision,recall}` over the entries of the mask (see
        `pseudo_label_quality`); given `scores` too, `pl_score_map`, their mAP in percent over
        the N images (how well they rank, whatever the thresholds). Undefined values (a zero
        denominator) are None.
    """
    labels, m = _to_numpy(labels), _to_numpy(mask)
    out: dict[str, float | None] = {"pl_used_fraction": float(m.mean()),
                                    "pl_positive_rate": float((labels == POSITIVE).mean())}
    if truth is None:
        return out
    for prefix, sub in (("pl_", None), ("pl_used_", m)):
        q = pseudo_label_quality(labels, truth, mask=sub)["overall"]
        for key in ("pos_precision", "pos_recall", "neg_precision", "neg_recall"):
            out[prefix + key] = finite_or_none(q[key])
    if scores is not None:
        out["pl_score_map"] = finite_or_none(map_report(scores, truth, empty="skip").map)
    return out


def finite_or_none(value: Any) -> float | None:
    """`float(value)`, or None when it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def observed_recall_at_k(scores: Any, observed: Any, k: int) -> float | None:
    """Observed-positive recall at k, in percent: of all observed positive entries (value 1)
    of `observed` (N, C) in {1, 0, -1}, the share whose class ranks among the `k` highest
    `scores` (N, C) of its image (ties broken by class order). None when nothing is observed
    positive. The metric a set of images with one observed positive each supports: it needs
    no negative and no ground truth."""
    s, o = _to_numpy(scores).astype(np.float64), _to_numpy(observed)
    if s.shape != o.shape or s.ndim != 2:
        raise DataError(f"scores {s.shape} and observed labels {o.shape} must be the same "
                        "(N, C)", "observed_recall_at_k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise DataError(f"k must be an integer >= 1, got {k!r}", "observed_recall_at_k")
    positives = o == POSITIVE
    if not positives.any():
        return None
    rank = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1, kind="stable")
    return float(100.0 * (positives & (rank < k)).sum() / positives.sum())

