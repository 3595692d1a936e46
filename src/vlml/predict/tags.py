"""Tag decisions from scores, and `Tags`, the record a tagger returns (numpy only, no pandas).

The rule, per image: a class is a tag when its score is >= its threshold (the convention of
`vlml.calibrate` and `vlml.metrics.threshold_metrics`); with `top_k=k`, only the k highest-scoring
of those (ties towards the lower class index). So `threshold=0, top_k=k` gives exactly the k best
classes, and `threshold=t, top_k=k` at most k. Tags are listed by decreasing score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlml.errors import ConfigError

CALIBRATED = "calibrated"


def parse_threshold(value: Any) -> float | str | None:
    """None, "calibrated", or a float in [0, 1] (a number or its text) -> that value.

    Raises:
        ConfigError: anything else (named, with what is accepted).
    """
    if value is None or value == CALIBRATED:
        return value
    if isinstance(value, bool):
        raise ConfigError(f"threshold {value!r}; expected a number in [0, 1] or 'calibrated'")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold {value!r}: neither a number in [0, 1] nor 'calibrated' "
                          "(the run's per-class thresholds)") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ConfigError(f"threshold {value!r} is outside [0, 1]; scores are probabilities")
    return number


def check_top_k(top_k: Any) -> int | None:
    """None or an integer >= 1 (the most tags per image)."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k {top_k!r}; expected an integer >= 1 (or none)")
    return int(top_k)


def decide(scores: np.ndarray, thresholds: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """(N, C) scores, (C,) thresholds -> (N, C) bool: scores >= thresholds, then at most the
    `top_k` highest of those per row (ties towards the lower class index)."""
    selected = scores >= thresholds[None, :]
    if top_k is not None and top_k < scores.shape[1]:
        masked = np.where(selected, scores, -np.inf)
        keep = np.argsort(-masked, axis=1, kind="stable")[:, :top_k]
        best = np.zeros_like(selected)
        np.put_along_axis(best, keep, True, axis=1)
        selected &= best
    return selected


@dataclass(frozen=True)
class Tags:
    """Tagged images, in input order (bad images left out and listed in `bad`).

    Attributes:
        paths: N row names (the image path as given, or `<image i>` for an in-memory image).
        scores: (N, C) float32 probabilities in [0, 1].
        selected: (N, C) bool, True where the class is a tag (`decide`).
        class_names: C names, the columns of `scores`.
        thresholds: (C,) float64 thresholds used.
        index: (N,) int64 position of each row's image in the resolved inputs.
        bad: (name, reason) of each image that could not be read (`skip_bad=True`).
        top_k: the top-k limit used, or None.
    """

    paths: list[str]
    scores: np.ndarray
    selected: np.ndarray
    class_names: tuple[str, ...]
    thresholds: np.ndarray
    index: np.ndarray
    bad: list[tuple[str, str]] = field(default_factory=list)
    top_k: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"Tags({len(self)} images, {len(self.class_names)} classes, "
                f"{int(self.selected.sum())} tags, {len(self.bad)} bad)")

    @property
    def tags(self) -> list[tuple[str, ...]]:
        """Per image, its tags by decreasing score."""
        names = self.class_names
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return [tuple(names[c] for c in row if sel[c])
                for row, sel in zip(order, self.selected, strict=True)]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per image: {"path", "tags": [names], "scores": {class: float}}."""
        names = self.class_names
        return [{"path": p, "tags": list(t), "scores": dict(zip(names, s.tolist(), strict=True))}
                for p, t, s in zip(self.paths, self.tags, self.scores, strict=True)]

    @classmethod
    def concat(cls, parts: Sequence[Tags], class_names: Sequence[str],
               thresholds: np.ndarray, top_k: int | None) -> Tags:
        """The parts (e.g. per-batch records) as one record."""
        c = len(class_names)
        return cls(
            paths=[p for t in parts for p in t.paths],
            scores=np.concatenate([t.scores for t in parts]) if parts
            else np.zeros((0, c), np.float32),
            selected=np.concatenate([t.selected for t in parts]) if parts
            else np.zeros((0, c), bool),
            class_names=tuple(class_names), thresholds=thresholds,
            index=np.concatenate([t.index for t in parts]) if parts
            else np.zeros(0, np.int64),
            bad=[b for t in parts for b in t.bad], top_k=top_k)
