"""Per-class decision thresholds stored in a run folder (`thresholds.json`): what `vlml
calibrate` (and a recipe's default calibration on its validation data) writes, and what the
tagger (`vlml.predict`) reads.

File format (JSON)::

    {"target": "f1" | "precision=0.9" | "recall=0.8",
     "source": "<what they were fitted on: 'catalog: <path> (<n> images)' (`vlml calibrate`)
                or 'validation: <selection rule>, <n> images' (a train recipe)>",
     "default": 0.5,
     "class_names": ["<class name>", ...],
     "classes": {"<class name>": {"threshold": 0.42, "calibrated": true,
                                  "precision": 0.9, "recall": 0.8, "f1": 0.85,
                                  "n_pos": 12, "n_neg": 80}, ...}}

`class_names` is the run's class order (the JSON writer sorts the keys of `classes`; a file
without `class_names` is read in the order of `classes`). precision, recall and f1 are those
of the calibration data at the threshold in use. A class that could not be calibrated keeps
`default`, has `"calibrated": false` and a `"reason"` (no known positive or no known negative in
the calibration data: its precision/recall/f1 are null; a precision target reached at no
threshold: they are those at `default`). How thresholds are fitted: `vlml.calibrate`.
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
CATALOG_SOURCE = "catalog: "  # `vlml calibrate`; a resumed train run keeps such thresholds
VALIDATION_SOURCE = "validation: "  # a train recipe's own validation data


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

    @property
    def reasons(self) -> tuple[str | None, ...]:
        """Per class, why it is not calibrated (None for a calibrated class)."""
        stats = self.stats or tuple({} for _ in self.class_names)
        return tuple(None if c else str(s.get("reason") or "one threshold for every class")
                     for c, s in zip(self.calibrated, stats, strict=True))

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
                "class_names": list(self.class_names),
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
            names = tuple(data.get("class_names") or classes)
            if sorted(names) != sorted(classes):
                raise ValueError(f"class_names {list(names)[:5]}... do not name the classes "
                                 f"{list(classes)[:5]}...")
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
