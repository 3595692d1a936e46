"""Score and label arrays written for a person carry their image paths and class names.

`write_named(path, array, image_paths, class_names)` picks the format from the suffix:
- `.npz`: arrays `values` (N, C), `image_paths` (N,) and `class_names` (C,) (`np.load` reads
  them back; no pickle needed);
- `.csv`: a header `image,<class 1>,...`, one row per image;
- `.jsonl`: one object per image, `{"image": path, "values": {class: value}}`;
- `.npy`: the bare (N, C) array, with `<name>.names.json` beside it holding the paths and
  the class names.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlml.errors import ConfigError, DataError
from vlml.fileio import atomic_open, save_npy_atomic, write_json_atomic, write_text_atomic

SUFFIXES = (".npz", ".csv", ".jsonl", ".npy")


def check_suffix(path: str | Path, option: str = "the output") -> Path:
    """`path` if its suffix is one of `SUFFIXES`, else a ConfigError naming them."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{option} {path}: unknown format {path.suffix or '(no suffix)'!r}; "
                          f"expected one of {', '.join(SUFFIXES)}")
    return path


def _value(v: float | int) -> float | int:
    return int(v) if isinstance(v, (np.integer, int)) else round(float(v), 6)


def write_named(path: str | Path, array: np.ndarray, image_paths: Sequence[str],
                class_names: Sequence[str]) -> list[Path]:
    """Write (N, C) `array` with its N image paths and C class names; returns the files
    written."""
    path = check_suffix(path)
    array = np.asarray(array)
    if array.shape != (len(image_paths), len(class_names)):
        raise DataError(f"array of shape {array.shape} does not match {len(image_paths)} images "
                        f"x {len(class_names)} classes", str(path))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with atomic_open(path, "wb") as f:
            np.savez(f, values=array, image_paths=np.asarray(list(image_paths), dtype=str),
                     class_names=np.asarray(list(class_names), dtype=str))
        return [path]
    if suffix == ".npy":
        names = path.with_name(path.stem + ".names.json")
        save_npy_atomic(path, array)
        write_json_atomic(names, {"image_paths": list(image_paths),
                                  "class_names": list(class_names),
                                  "rows": "image_paths", "columns": "class_names"})
        return [path, names]
    buf = io.StringIO()
    if suffix == ".csv":
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", *class_names])
        for p, row in zip(image_paths, array, strict=True):
            w.writerow([p, *(_value(v) for v in row)])
    else:
        for p, row in zip(image_paths, array, strict=True):
            buf.write(json.dumps({"image": p, "values": {
                c: _value(v) for c, v in zip(class_names, row, strict=True)}}) + "\n")
    write_text_atomic(path, buf.getvalue())
    return [path]
