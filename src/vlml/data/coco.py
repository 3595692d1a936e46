"""MS-COCO instance annotations -> multi-label `Catalog` (json module only, no pycocotools).

Parity with Cole et al.'s `format_coco.py` (docs/methods.md 1.1): only images with at least one
annotation are kept, rows are ordered by image id compared as strings ("10" < "100" < "9"),
column c is the c-th entry of the `categories` list (not sorted by category id).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlml.data.images import require_dir
from vlml.errors import DataError
from vlml.types import LABEL_DTYPE, LABELS_GROUND_TRUTH, LABELS_KEY, POSITIVE, Catalog


def read_coco(root: Path, split: str, annotations: Path | None = None) -> Catalog:
    """Read split `split` (e.g. "train2014", "val2017") of COCO stored under `root`.

    Args:
        root: folder holding `annotations/instances_<split>.json` and the image folder `<split>/`.
        split: the split name; it names both the annotation file and the image folder.
        annotations: another instances JSON to read instead of the default one.

    Returns:
        Catalog with image paths `<split>/<file_name>` relative to `root`, labels (N, C) int8
        in {0, 1} (C = len(categories), 80 for COCO), true_labels None.
    """
    root = Path(root)
    path = Path(annotations) if annotations is not None else \
        root / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise DataError(f"missing COCO annotation file for split {split!r}"
                        f"{_available_splits(root)}", str(path))
    image_dir = require_dir(root / split, f"COCO {split} image")
    data = _load_json(path)

    categories = _get_list(data, "categories", path)
    images = _get_list(data, "images", path)
    anns = _get_list(data, "annotations", path)
    cat_ids, class_names = _parse_categories(categories, path)
    image_ids, file_names = _parse_images(images, path)
    if not anns:
        raise DataError("'annotations' is empty; expected at least one (only annotated images "
                        "are kept)", str(path))

    try:
        pairs = [(a["image_id"], a["category_id"]) for a in anns]
    except (KeyError, TypeError):
        raise _bad_entry(anns, ("image_id", "category_id"), "annotations", path) from None
    pairs_arr = np.asarray(pairs).reshape(-1, 2)
    if pairs_arr.dtype.kind not in "iu":
        raise _bad_entry(anns, ("image_id", "category_id"), "annotations", path,
                         need_int=True)
    ann_images, ann_cats = pairs_arr[:, 0], pairs_arr[:, 1]

    cols = _lookup(cat_ids, ann_cats)
    if (cols < 0).any():
        i = int(np.flatnonzero(cols < 0)[0])
        raise DataError(f"annotation refers to category_id {int(ann_cats[i])}, which is not in "
                        f"'categories' (ids {sorted(cat_ids.tolist())})",
                        f"{path} annotation id {_ann_id(anns[i])}")
    image_pos = _lookup(image_ids, ann_images)
    if (image_pos < 0).any():
        i = int(np.flatnonzero(image_pos < 0)[0])
        raise DataError(f"annotation refers to image_id {int(ann_images[i])}, which is not in "
                        "'images'", f"{path} annotation id {_ann_id(anns[i])}")

    kept, inverse = np.unique(ann_images, return_inverse=True)
    order = np.argsort(kept.astype(str), kind="stable")  # string order, as format_coco.py
    row_of_kept = np.empty_like(order)
    row_of_kept[order] = np.arange(order.size)
    labels = np.zeros((kept.size, len(class_names)), dtype=LABEL_DTYPE)
    labels[row_of_kept[inverse.ravel()], cols] = POSITIVE

    kept_pos = _lookup(image_ids, kept[order])
    return Catalog(
        image_paths=tuple(f"{split}/{file_names[p]}" for p in kept_pos),
        class_names=class_names,
        labels=labels,
        root=str(root.absolute()),
        split=split,
        provenance=({"step": "read", "dataset": "coco", "split": split,
                     "annotations": str(path.absolute()), "image_dir": image_dir.name,
                     LABELS_KEY: LABELS_GROUND_TRUTH},),
    )


def _available_splits(root: Path) -> str:
    found = sorted(p.name[len("instances_"):-len(".json")]
                   for p in (root / "annotations").glob("instances_*.json"))
    return f"; splits found there: {', '.join(found)}" if found else ""


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): "
                        f"{e.msg}", str(path)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the annotation file ({e})", str(path)) from e


def _get_list(data: Any, key: str, path: Path) -> list[Any]:
    if not isinstance(data, dict) or key not in data:
        raise DataError(f"missing top-level key {key!r}; expected a COCO instances file with "
                        "'images', 'annotations' and 'categories'", str(path))
    value = data[key]
    if not isinstance(value, list):
        raise DataError(f"{key!r} is a {type(value).__name__}; expected a list", str(path))
    return value


def _bad_entry(entries: list[Any], keys: tuple[str, ...], what: str, path: Path,
               need_int: bool = False) -> DataError:
    """The error for the first entry of `entries` lacking `keys` (or integer values)."""
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            return DataError(f"{what}[{i}] is a {type(e).__name__}; expected an object",
                             str(path))
        for k in keys:
            if k not in e:
                return DataError(f"{what}[{i}] lacks key {k!r}; expected keys {list(keys)}",
                                 f"{path} id {e.get('id')}")
            if need_int and (not isinstance(e[k], int) or isinstance(e[k], bool)):
                return DataError(f"{what}[{i}] has {k}={e[k]!r}; expected an integer",
                                 f"{path} id {e.get('id')}")
    return DataError(f"malformed {what}; expected objects with keys {list(keys)}", str(path))


def _parse_categories(categories: list[Any], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Category ids (in list order) and names; ids and names must be unique."""
    try:
        ids = [c["id"] for c in categories]
        names = [str(c["name"]) for c in categories]
    except (KeyError, TypeError):
        raise _bad_entry(categories, ("id", "name"), "categories", path) from None
    if not categories:
        raise DataError("'categories' is empty; expected at least one category", str(path))
    id_arr = np.asarray(ids)
    if id_arr.dtype.kind not in "iu":
        raise _bad_entry(categories, ("id",), "categories", path, need_int=True)
    for values, what in ((ids, "id"), (names, "name")):
        if len(set(values)) != len(values):
            dup = next(v for i, v in enumerate(values) if v in values[:i])
            raise DataError(f"category {what} {dup!r} appears twice; expected unique", str(path))
    return id_arr, tuple(names)


def _parse_images(images: list[Any], path: Path) -> tuple[np.ndarray, list[str]]:
    """Image ids and file names in list order; ids must be unique integers."""
    try:
        ids = [im["id"] for im in images]
        names = [im["file_name"] for im in images]
    except (KeyError, TypeError):
        raise _bad_entry(images, ("id", "file_name"), "images", path) from None
    id_arr = np.asarray(ids).reshape(-1)
    if id_arr.size and id_arr.dtype.kind not in "iu":
        raise _bad_entry(images, ("id",), "images", path, need_int=True)
    id_arr = id_arr.astype(np.int64)
    uniq, counts = np.unique(id_arr, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"image id {int(uniq[counts > 1][0])} appears twice in 'images'",
                        str(path))
    return id_arr, names


def _lookup(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Position of each query in `keys` (unique ints, any order), -1 where absent."""
    sorter = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys, queries, sorter=sorter)
    pos = np.minimum(pos, max(keys.size - 1, 0))
    found = sorter[pos] if keys.size else np.zeros_like(queries)
    ok = keys[found] == queries if keys.size else np.zeros(queries.shape, dtype=bool)
    return np.where(ok, found, -1)


def _ann_id(ann: Any) -> Any:
    return ann.get("id") if isinstance(ann, dict) else None
