"""Cole et al. (2021) formatted arrays, the interchange format of the SPML repos; NUS-WIDE via them.

Files under `root` for split in {"train", "val"} (Cole's "val" files hold the official test split):

    formatted_<split>_images.npy      (N,) unicode: image paths relative to the images folder
    formatted_<split>_labels.npy      (N, C) float64 in {0, 1}: ground truth
    formatted_<split>_labels_obs.npy  (N, C) float64 in {+1, -1, 0}: observed positive, observed
                                      negative, unknown (optional)
    class_names.txt                   C lines (ours: the reference arrays carry no class names)

The reference observed-label convention (0 = unknown, -1 = negative) is converted to ours
(docs/methods.md section 0: 1 positive, 0 negative, -1 unknown) here and nowhere else.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlml.data.manifest import read_class_list
from vlml.errors import ConfigError, DataError
from vlml.fileio import save_npy_atomic, write_text_atomic
from vlml.types import (
    LABEL_DTYPE,
    LABELS_GROUND_TRUTH,
    LABELS_KEY,
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    Catalog,
)

SPLITS = ("train", "val")
CLASS_FILE_NAMES = ("class_names.txt", "classes.txt")
NUSWIDE_CLASSES = 81
NUSWIDE_VERSIONS: dict[str, str] = {
    "cole2020": "Cole et al.'s 2020 re-crawl of the NUS-WIDE Flickr images",
    "em_apl": "the set distributed by the EM/APL authors (150,000 train / 60,260 test)",
}
_EM_APL_SIZES = {"train": 150_000, "val": 60_260}
REFERENCE_LABEL_DTYPE = np.float64  # format_*.py: np.zeros(...) -> float64 0/1
_REF_POS, _REF_NEG, _REF_UNK = 1.0, -1.0, 0.0


def cole_files(root: Path, split: str, obs_variant: str | None = None) -> dict[str, Path]:
    """Paths of the three arrays of `split` under `root` ("labels_obs" may not exist).

    `obs_variant` selects `formatted_<split>_<variant>_labels_obs.npy` (later Cole code writes
    e.g. `formatted_train_uniform_labels_obs.npy`).
    """
    obs = f"formatted_{split}_{obs_variant}_labels_obs.npy" if obs_variant else \
        f"formatted_{split}_labels_obs.npy"
    return {"images": root / f"formatted_{split}_images.npy",
            "labels": root / f"formatted_{split}_labels.npy",
            "labels_obs": root / obs}


def from_reference_observed(obs: np.ndarray) -> np.ndarray:
    """Reference observed labels (+1 pos, -1 neg, 0 unknown) -> ours (1, 0, -1) as int8.

    Raises `DataError` (without a location) if a value is not exactly one of +1, -1, 0.
    """
    obs = np.asarray(obs)
    _check_values(obs, (_REF_POS, _REF_NEG, _REF_UNK), None)
    out = np.full(obs.shape, UNKNOWN, dtype=LABEL_DTYPE)
    out[obs == _REF_POS] = POSITIVE
    out[obs == _REF_NEG] = NEGATIVE
    return out


def to_reference_observed(labels: np.ndarray) -> np.ndarray:
    """Our labels (1 pos, 0 neg, -1 unknown) -> reference observed labels as float64 +1/-1/0."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, _REF_UNK, dtype=REFERENCE_LABEL_DTYPE)
    out[labels == POSITIVE] = _REF_POS
    out[labels == NEGATIVE] = _REF_NEG
    return out


def read_cole(
    root: Path,
    split: str,
    images_root: Path | None = None,
    *,
    class_names: Sequence[str] | Path | None = None,
    obs_variant: str | None = None,
    check_images: bool = True,
    allow_pickle: bool = False,
) -> Catalog:
    """Read `formatted_<split>_*.npy` under `root` into a `Catalog`.

    Args:
        root: folder holding the arrays.
        split: "train" or "val" (the reference repos' "val" files are the test split).
        images_root: folder the image paths are relative to; default `root`.
        class_names: C names in column order, as a list or a text file (a `str` is a file path).
            Default: `class_names.txt` or `classes.txt` beside the arrays, else generic names
            "class_000", ... (recorded in the provenance as `class_names_source: "generic"`).
        obs_variant: read `formatted_<split>_<obs_variant>_labels_obs.npy` instead (required).
        check_images: raise `DataError` if an image file does not exist.
        allow_pickle: let `np.load` read object arrays (only for files you trust).

    Returns:
        With an observed-label file: `labels` = observed labels (N, C) converted to our
        convention and `true_labels` = the 0/1 ground truth. Without: `labels` = ground truth.
    """
    return _read(Path(root), split, images_root, dataset="cole", class_names=class_names,
                 obs_variant=obs_variant, check_images=check_images, allow_pickle=allow_pickle)


def read_nuswide(
    root: Path,
    split: str,
    version: str = "cole2020",
    images_root: Path | None = None,
    *,
    class_names: Sequence[str] | Path | None = None,
    obs_variant: str | None = None,
    check_images: bool = True,
    allow_pickle: bool = False,
) -> Catalog:
    """Read NUS-WIDE (81 classes) from the formatted arrays of either public version.

    `version` is "cole2020" or "em_apl" (the two sets are not interchangeable; see
    `NUSWIDE_VERSIONS`) and is recorded in the provenance. `images_root` defaults to
    `root/Flickr` when that folder exists (the reference layout), else `root`. Rows without a
    positive (about 22% of NUS-WIDE images) are kept. Other arguments as in `read_cole`.
    """
    if version not in NUSWIDE_VERSIONS:
        raise ConfigError(f"unknown NUS-WIDE version {version!r}; valid choices: "
                          f"{', '.join(NUSWIDE_VERSIONS)}")
    root = Path(root)
    if images_root is None and (root / "Flickr").is_dir():
        images_root = root / "Flickr"
    catalog = _read(root, split, images_root, dataset="nuswide", class_names=class_names,
                    obs_variant=obs_variant, check_images=check_images,
                    allow_pickle=allow_pickle,
                    extra={"version": version, "version_description": NUSWIDE_VERSIONS[version]})
    if catalog.n_classes != NUSWIDE_CLASSES:
        raise DataError(f"NUS-WIDE has {NUSWIDE_CLASSES} classes but the label arrays have "
                        f"{catalog.n_classes} columns", str(cole_files(root, split)["labels"]))
    expected = _EM_APL_SIZES.get(split)
    if version == "em_apl" and catalog.n_images != expected:
        warnings.warn(f"NUS-WIDE version 'em_apl' has {expected} {split} images but "
                      f"{root} holds {catalog.n_images}; is this the 'cole2020' version?",
                      stacklevel=2)
    return catalog


def write_cole(root: Path, train: Catalog, val: Catalog) -> None:
    """Write `train` and `val` as the six reference arrays plus `class_names.txt` under `root`.

    Dtypes match the reference scripts: images `<U` unicode (N,), labels float64 0/1 (N, C),
    labels_obs float64 +1/-1/0 (N, C). The ground truth written is `true_labels`, or `labels`
    when they have no unknowns; a catalog with neither raises `DataError`. Image paths are
    written as stored (relative to the catalogs' shared `root`): read them back with
    `images_root=` that folder unless it is `root`. Every check runs before the first file is
    written, and each file is written atomically.
    """
    root = Path(root)
    if train.class_names != val.class_names:
        raise DataError(f"train and val catalogs have different class names "
                        f"({train.n_classes} vs {val.n_classes} classes); the format stores "
                        "one class list", "write_cole")
    if train.root != val.root:
        raise DataError(f"train and val images resolve against different folders "
                        f"({train.root!r} vs {val.root!r}); the format has one images folder",
                        "write_cole")
    bad = [n for n in train.class_names if "\n" in n or "\r" in n]
    if bad:
        raise DataError(f"class names with line breaks cannot go in class_names.txt: {bad}",
                        "write_cole")
    arrays: dict[Path, np.ndarray] = {}
    for split, cat in (("train", train), ("val", val)):
        truth = cat.ground_truth
        if truth is None:
            raise DataError(f"the {split} catalog has unknown labels and no true_labels; the "
                            "format needs the full 0/1 ground truth", f"write_cole {split}")
        where = f"write_cole {split}"
        _check_agreement(cat.labels, truth, where)
        files = cole_files(root, split)
        arrays[files["images"]] = np.array(cat.image_paths, dtype=np.str_)
        arrays[files["labels"]] = truth.astype(REFERENCE_LABEL_DTYPE)
        arrays[files["labels_obs"]] = to_reference_observed(cat.labels)
    for path, array in arrays.items():
        save_npy_atomic(path, array)
    write_text_atomic(root / CLASS_FILE_NAMES[0], "".join(f"{n}\n" for n in train.class_names))


# ---- reading --------------------------------------------------------------------------------
def _read(root: Path, split: str, images_root: Path | None, *, dataset: str,
          class_names: Sequence[str] | Path | None, obs_variant: str | None,
          check_images: bool, allow_pickle: bool,
          extra: dict[str, Any] | None = None) -> Catalog:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for the formatted arrays; valid choices: "
                          f"{', '.join(SPLITS)} (the 'val' files are the test split)")
    if not root.is_dir():
        raise DataError("folder of formatted arrays not found", str(root))
    files = cole_files(root, split, obs_variant)
    for key in ("images", "labels") + (("labels_obs",) if obs_variant else ()):
        if not files[key].is_file():
            raise DataError(f"missing {key} array for split {split!r}", str(files[key]))

    paths = _image_paths(_load(files["images"], allow_pickle), files["images"])
    truth_raw = _load(files["labels"], allow_pickle)
    _check_matrix(truth_raw, len(paths), None, files["labels"], files["images"])
    _check_values(truth_raw, (1.0, 0.0), files["labels"])
    truth = truth_raw.astype(LABEL_DTYPE)

    has_obs = files["labels_obs"].is_file()
    if has_obs:
        obs_raw = _load(files["labels_obs"], allow_pickle)
        _check_matrix(obs_raw, len(paths), truth.shape[1], files["labels_obs"], files["labels"])
        try:
            labels = from_reference_observed(obs_raw)
        except DataError as e:
            raise DataError(f"{e} (reference convention: +1 observed positive, -1 observed "
                            "negative, 0 unknown)", str(files["labels_obs"])) from None
        _check_agreement(labels, truth, str(files["labels_obs"]))
        true_labels: np.ndarray | None = truth
    else:
        labels, true_labels = truth, None

    names, names_source = _class_names(root, truth.shape[1], class_names)
    images_root = root if images_root is None else Path(images_root)
    if check_images:
        _check_exist(images_root, paths, files["images"])
    step: dict[str, Any] = {
        "step": "read", "dataset": dataset, "root": str(root.absolute()), "split": split,
        **(extra or {}),
        "images_root": str(images_root.absolute()), "observed_labels": has_obs,
        "obs_variant": obs_variant, "class_names_source": names_source,
        "n_images": len(paths), "n_classes": len(names), LABELS_KEY: LABELS_GROUND_TRUTH,
    }
    return Catalog(image_paths=paths, class_names=names, labels=labels, true_labels=true_labels,
                   root=str(images_root.absolute()), split=split, provenance=(step,))


def _load(path: Path, allow_pickle: bool) -> np.ndarray:
    with open(path, "rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if is_npy and "allow_pickle" in str(e):
            raise DataError("holds a pickled object array; re-save it as a unicode/number "
                            "array, or pass allow_pickle=True if you trust the file",
                            str(path)) from None
        raise DataError(f"not a readable .npy array ({e})", str(path)) from None
    except (OSError, EOFError) as e:
        raise DataError(f"not a readable .npy array ({e})", str(path)) from None


def _image_paths(arr: np.ndarray, path: Path) -> tuple[str, ...]:
    if arr.ndim != 1:
        raise DataError(f"expected a 1-D array of image paths, got shape {arr.shape}", str(path))
    if arr.dtype.kind == "S":
        try:
            values = [v.decode("utf-8") for v in arr.tolist()]
        except UnicodeDecodeError as e:
            raise DataError(f"image path is not UTF-8 ({e})", str(path)) from None
    elif arr.dtype.kind in "UO":
        values = arr.tolist()
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise DataError(f"entry {bad} is {values[bad]!r}, not a path string", str(path))
    else:
        raise DataError(f"expected a unicode string array of image paths, got dtype "
                        f"{arr.dtype}", str(path))
    empty = next((i for i, v in enumerate(values) if not v.strip()), None)
    if empty is not None:
        raise DataError(f"entry {empty} is an empty image path", str(path))
    return tuple(values)


def _check_matrix(arr: np.ndarray, n_rows: int, n_cols: int | None, path: Path,
                  other: Path) -> None:
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected a numeric label array, got dtype {arr.dtype}", str(path))
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D (images, classes) array, got shape {arr.shape}",
                        str(path))
    if arr.shape[0] != n_rows:
        raise DataError(f"has {arr.shape[0]} rows but {other.name} has {n_rows} entries",
                        str(path))
    if n_cols is not None and arr.shape[1] != n_cols:
        raise DataError(f"has {arr.shape[1]} columns but {other.name} has {n_cols}", str(path))
    if arr.shape[1] == 0:
        raise DataError("has no columns (classes)", str(path))


def _check_values(arr: np.ndarray, allowed: tuple[float, ...], path: Path | None) -> None:
    bad = ~np.isin(arr, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        allowed_text = ", ".join(f"{v:+g}" if v > 0 and len(allowed) > 2 else f"{v:g}"
                                 for v in sorted(allowed, reverse=True))
        raise DataError(f"value {arr[r, c].item()!r} at row {r}, column {c} (bad entries: "
                        f"{int(bad.sum())}); expected one of {{{allowed_text}}}",
                        None if path is None else str(path))


def _check_agreement(observed: np.ndarray, truth: np.ndarray, where: str) -> None:
    """Observed entries must equal the ground truth: observed labels are a subset of it."""
    bad = (observed != UNKNOWN) & (observed != truth)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"observed label contradicts the ground truth at row {r}, column {c} "
                        f"({int(bad.sum())} entries); observed labels must be a subset of the "
                        "ground truth (were the files written from different image lists?)",
                        where)


def _class_names(root: Path, n_classes: int,
                 given: Sequence[str] | Path | None) -> tuple[tuple[str, ...], str]:
    if isinstance(given, (str, os.PathLike)):
        names, source = read_class_list(Path(given)), f"file:{Path(given).absolute()}"
    elif given is not None:
        names, source = tuple(str(n) for n in given), "argument"
    else:
        found = next((root / f for f in CLASS_FILE_NAMES if (root / f).is_file()), None)
        if found is None:
            return tuple(f"class_{i:03d}" for i in range(n_classes)), "generic"
        names, source = read_class_list(found), f"file:{found.absolute()}"
    if len(names) != n_classes:
        where = source[len("file:"):] if source.startswith("file:") else "class_names"
        raise DataError(f"{len(names)} class names for label arrays with {n_classes} columns",
                        where)
    return names, source


def _check_exist(images_root: Path, paths: tuple[str, ...], images_file: Path) -> None:
    missing = [i for i, p in enumerate(paths) if not (images_root / p).is_file()]
    if missing:
        i = missing[0]
        raise DataError(f"image file not found: {images_root / paths[i]} (entry {i}; "
                        f"{len(missing)} of {len(paths)} images are missing; pass images_root= "
                        "for the folder the paths are relative to, or check_images=False)",
                        str(images_file))
