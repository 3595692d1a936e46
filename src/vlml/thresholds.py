"""Per-class decision thresholds stored in a run folder (`thresholds.json`): what `vlml
calibrate` (and a recipe's default calibration on its validation data) writes, and what the
tagger (`vlml.predict`) reads.

File format (JSON)::

    {"target": "f1" | "precision=0.9" | "recall=0.8",
     "source": "<what the thresholds were fitted on, e.g. a catalog path or 'validation'>",
     "default": 0.5,
     "classes": {"<class name>": {"threshold": 0.42, "calibrated": true,
                                  "precision": 0.9, "recall": 0.8, "f1": 0.85,
                                  "n_pos": 12, "n_neg": 80}, ...}}

A class without both a known positive and a known negative in the calibration data keeps
`default` and has `"calibrated": false` (its precision/recall/f1 are null).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlml.errors import DataError
from vlml.fileio import write_json_atomic

FILE = "thresholds.json"
DEFAULT = 0.5


@dataclass(frozen=True)
class Thresholds:
    """C per-class thresholds, in the order of `class_names`.

    Attributes:
        class_names: C names.
        values: (C,) float64 thresholds on probabilities in [0, 1].
        calibrated: (C,) bool; False where `values` is the default.
        target: "f1", "precision=P" or "recall=R" (or "default").
        source: what the thresholds were fitted on.
        default: the threshold of uncalibrated classes.
        stats: per-class dicts (precision, recall, f1, n_pos, n_neg) at the threshold.
    """

    class_names: tuple[str, ...]
    values: np.ndarray
    calibrated: np.ndarray
    target: str = "default"
    source: str = ""
    default: float = DEFAULT
    stats: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def constant(cls, class_names: list[str] | tuple[str, ...],
                 value: float = DEFAULT) -> Thresholds:
        """One threshold for every class (nothing calibrated)."""
        n = len(class_names)
        return cls(tuple(class_names), np.full(n, float(value)), np.zeros(n, bool),
                   target="default", default=float(value))

    def to_json(self) -> dict[str, Any]:
        stats = self.stats or tuple({} for _ in self.class_names)
        return {"target": self.target, "source": self.source, "default": self.default,
                "classes": {name: {"threshold": float(v), "calibrated": bool(c), **s}
                            for name, v, c, s in zip(self.class_names, self.values,
                                                     self.calibrated, stats, strict=True)}}

    def save(self, run_dir: str | Path) -> Path:
        """Write `thresholds.json` into the run folder (atomically)."""
        path = Path(run_dir) / FILE
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Thresholds:
        try:
            classes = data["classes"]
            names = tuple(classes)
            values = np.array([float(classes[n]["threshold"]) for n in names])
            calibrated = np.array([bool(classes[n]["calibrated"]) for n in names])
            stats = tuple({k: v for k, v in classes[n].items()
                           if k not in ("threshold", "calibrated")} for n in names)
            return cls(names, values, calibrated, str(data["target"]),
                       str(data.get("source", "")), float(data.get("default", DEFAULT)), stats)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"not a thresholds file ({type(e).__name__}: {e}); expected the "
                            "format of vlml.thresholds", where) from e


def load(run_dir: str | Path) -> Thresholds | None:
    """The run's stored thresholds, or None when it has none."""
    import json

    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{FILE} is not valid JSON ({e})", str(path)) from e
    return Thresholds.from_json(data, str(path))
