"""The label convention and the `Catalog`, the library's only dataset currency.

Label matrices are `int8` of shape (N, C) with values (docs/methods.md section 0):
`POSITIVE = 1` observed positive, `NEGATIVE = 0` observed negative, `UNKNOWN = -1` not annotated.
Ground truth holds only 0/1.

Where labels come from is part of a catalog's provenance: a reader's step records
`"labels": "ground_truth"` (a benchmark's annotations: voc, coco, cub, nuswide, cole, toy) or
`"labels": "given"` (a user's own tags: manifest, folder, images). See `Catalog.ground_truth`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlml.errors import DataError
from vlml.fileio import atomic_open

POSITIVE, NEGATIVE, UNKNOWN = 1, 0, -1
LABEL_DTYPE = np.int8
CATALOG_FORMAT = "vlml-catalog"
CATALOG_VERSION = 1
# The provenance key that says where a catalog's labels come from, and its values.
LABELS_KEY = "labels"
LABELS_GROUND_TRUTH = "ground_truth"
LABELS_GIVEN = "given"
LABEL_SOURCES = (LABELS_GROUND_TRUTH, LABELS_GIVEN)


def validate_labels(
    labels: np.ndarray,
    n_images: int | None = None,
    n_classes: int | None = None,
    *,
    allow_unknown: bool = True,
    what: str = "labels",
) -> np.ndarray:
    """Check a label matrix against the convention and return it unchanged.

    Raises `DataError` naming `what` if it is not 2-D int8 of the expected shape with values
    in {1, 0, -1} ({1, 0} when `allow_unknown` is False).
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 2:
        raise DataError(f"expected a 2-D array (N, C), got {type(labels).__name__} "
                        f"with shape {np.shape(labels)}", what)
    if labels.dtype != LABEL_DTYPE:
        raise DataError(f"expected dtype int8, got {labels.dtype}", what)
    if n_images is not None and labels.shape[0] != n_images:
        raise DataError(f"expected {n_images} rows (one per image), got {labels.shape[0]}", what)
    if n_classes is not None and labels.shape[1] != n_classes:
        raise DataError(f"expected {n_classes} columns (one per class), got {labels.shape[1]}",
                        what)
    allowed = (UNKNOWN, NEGATIVE, POSITIVE) if allow_unknown else (NEGATIVE, POSITIVE)
    bad = ~np.isin(labels, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"value {int(labels[r, c])} at row {r}, column {c}; "
                        f"expected one of {sorted(allowed)}", what)
    return labels


def as_labels(values: Any) -> np.ndarray:
    """Cast a 0/1/-1 array of any numeric dtype to the int8 convention, checking it is exact."""
    arr = np.asarray(values)
    out = arr.astype(LABEL_DTYPE)
    if not np.array_equal(out, arr):
        raise DataError("label values must be integers in {1, 0, -1}")
    return out


@dataclass(frozen=True, eq=False)
class Catalog:
    """Image list + class names + label matrix + provenance.

    Attributes:
        image_paths: N paths, relative to `root` (or absolute when `root` is empty).
        class_names: C unique class names; column c of `labels` is `class_names[c]`. C may be 0
            (images with no class list yet: an unlabelled pool, images to tag); `labels` is
            then (N, 0).
        labels: (N, C) int8 observed labels in {1, 0, -1}.
        true_labels: optional (N, C) int8 ground truth in {1, 0}, kept aside for evaluation and
            pseudo-label quality; never used as supervision.
        root: folder that relative image paths resolve against (the readers store it absolute).
        split: the split's name (e.g. "trainval", "train2014", "train").
        provenance: ordered list of steps (dicts) that produced this catalog: reader, regime, ...

    Label provenance: a reader's step says where `labels` come from with the key `"labels"`:
    `"ground_truth"` (a benchmark dataset's annotations: voc, coco, cub, nuswide, cole, toy) or
    `"given"` (a user's own tags: the manifest, folder and images readers). Steps appended later
    (regimes, subsets) keep it; the last step that has the key decides (`labels_source`).
    `ground_truth` -- what evaluation and pseudo-label quality compare against -- is
    `true_labels` when kept; else `labels` when they have no unknown entry, unless the labels
    are "given": a user's tags with no unknowns are complete, not verified truth
    (`complete_labels` returns them). A catalog built in code without that key keeps the old
    rule (labels with no unknowns are ground truth).
    """

    image_paths: tuple[str, ...]
    class_names: tuple[str, ...]
    labels: np.ndarray
    true_labels: np.ndarray | None = None
    root: str = ""
    split: str = ""
    provenance: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_paths", tuple(str(p) for p in self.image_paths))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "provenance", tuple(dict(p) for p in self.provenance))
        object.__setattr__(self, "root", str(self.root))
        self.validate()

    def validate(self) -> None:
        """Raise `DataError` unless names are unique and the matrices fit the convention."""
        seen: set[str] = set()
        for name in self.class_names:
            if not name.strip():
                raise DataError("empty class name", "class_names")
            if name in seen:
                raise DataError(f"class name {name!r} appears twice; names must be unique",
                                "class_names")
            seen.add(name)
        validate_labels(self.labels, len(self.image_paths), len(self.class_names))
        if self.true_labels is not None:
            validate_labels(self.true_labels, len(self.image_paths), len(self.class_names),
                            allow_unknown=False, what="true_labels")
        for i, step in enumerate(self.provenance):
            if LABELS_KEY in step and step[LABELS_KEY] not in LABEL_SOURCES:
                raise DataError(f"{LABELS_KEY}={step[LABELS_KEY]!r}; expected one of "
                                f"{list(LABEL_SOURCES)}", f"provenance step {i}")

    # ---- shape and lookup -------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.n_images

    def class_index(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise DataError(f"unknown class {name!r}; classes are {list(self.class_names)}",
                            "class_names") from None

    def full_paths(self) -> list[Path]:
        """Image paths resolved against `root`."""
        root = Path(self.root) if self.root else None
        return [root / p if root is not None else Path(p) for p in self.image_paths]

    @property
    def labels_source(self) -> str | None:
        """Where `labels` come from: "ground_truth", "given", or None (no step says)."""
        for step in reversed(self.provenance):
            if LABELS_KEY in step:
                return str(step[LABELS_KEY])
        return None

    @property
    def complete_labels(self) -> np.ndarray | None:
        """`labels` when every entry is known (0/1), whatever their source; else None."""
        return None if (self.labels == UNKNOWN).any() else self.labels

    @property
    def ground_truth(self) -> np.ndarray | None:
        """Clean 0/1 labels: `true_labels` if kept, else `labels` when they have no unknowns and
        their provenance does not say "given" (see the class docstring); else None."""
        if self.true_labels is not None:
            return self.true_labels
        if self.labels_source == LABELS_GIVEN:
            return None
        return self.complete_labels

    # ---- derived catalogs -----------------------------------------------------------
    def with_step(self, step: dict[str, Any], **changes: Any) -> Catalog:
        """A copy with `changes` applied and `step` appended to the provenance."""
        return replace(self, provenance=(*self.provenance, step), **changes)

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None,
               step: dict[str, Any] | None = None) -> Catalog:
        """Rows `indices` (in that order) as a new catalog."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -self.n_images or idx.max() >= self.n_images):
            raise IndexError(f"subset index out of range for {self.n_images} images")
        return self.with_step(
            step or {"step": "subset", "n": int(idx.size)},
            image_paths=tuple(self.image_paths[i] for i in idx),
            labels=self.labels[idx],
            true_labels=None if self.true_labels is None else self.true_labels[idx],
            split=self.split if split is None else split,
        )

    # ---- persistence ------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": CATALOG_FORMAT,
            "version": CATALOG_VERSION,
            "class_names": list(self.class_names),
            "root": self.root,
            "split": self.split,
            "n_images": self.n_images,
            "provenance": list(self.provenance),
        }

    def save(self, path: str | Path) -> Path:
        """Write a zip holding `catalog.json` plus `.npy` arrays, atomically. Returns the path."""
        path = Path(path)
        arrays = {"labels": self.labels,
                  "image_paths": np.asarray(self.image_paths, dtype=np.str_)}
        if self.true_labels is not None:
            arrays["true_labels"] = self.true_labels
        with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("catalog.json", json.dumps(self.header(), indent=1))
            for name, arr in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: str | Path, *, require_images: bool = False) -> Catalog:
        """Read a catalog written by `save`; raises `DataError` naming the file (and the member
        or header field) if it is missing, a folder, not a catalog zip, damaged or malformed,
        and with `require_images` (what a command that works on images asks) if it holds no
        image."""
        path = Path(path)
        if path.is_dir():
            raise DataError("is a folder; expected a catalog file (<split>.catalog.zip, written "
                            "by `vlml data prepare`)", str(path))
        if not path.is_file():
            raise DataError("catalog file not found", str(path))
        header, arrays = _read_catalog_zip(path)
        _check_header(header, path)
        missing = [f"{n}.npy" for n in ("labels", "image_paths") if n not in arrays]
        if missing:
            raise DataError(f"catalog lacks {' and '.join(missing)}", str(path))
        paths = arrays["image_paths"]
        if paths.ndim != 1 or paths.dtype.kind not in "U":
            raise DataError(f"image_paths.npy holds a {paths.dtype} array of shape {paths.shape}; "
                            "expected a 1-D array of strings", str(path))
        if header["n_images"] != len(paths):
            raise DataError(f"the header says n_images={header['n_images']} but image_paths.npy "
                            f"lists {len(paths)}; the file is inconsistent (re-create it)",
                            str(path))
        if not len(paths) and require_images:
            raise DataError("the catalog holds no image; expected at least one (re-create it "
                            "from a dataset or manifest that lists images)", str(path))
        try:
            return cls(image_paths=tuple(paths.tolist()),
                       class_names=tuple(header["class_names"]),
                       labels=arrays["labels"],
                       true_labels=arrays.get("true_labels"),
                       root=header["root"],
                       split=header["split"],
                       provenance=tuple(header["provenance"]))
        except DataError as e:
            raise DataError(str(e), str(path)) from e


# ---- reading a catalog file --------------------------------------------------------------
_MEMBERS = ("labels", "image_paths", "true_labels")
_HEADER_TYPES: dict[str, tuple[type, str]] = {
    "class_names": (list, "a list of class-name strings"),
    "root": (str, "a string (a folder path, or empty)"),
    "split": (str, "a string"),
    "n_images": (int, "an integer"),
    "provenance": (list, "a list of objects"),
}


def _read_catalog_zip(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """(the parsed catalog.json, the arrays) of a catalog file; `DataError` naming the file
    and member for anything a damaged or foreign file can raise (bad zip, bad CRC, corrupt
    compressed data, truncated or pickled arrays, bad JSON)."""
    member = "catalog.json"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if member not in names:
                raise DataError("the zip holds no catalog.json; expected a vlml catalog (written "
                                "by `vlml data prepare` or Catalog.save)", str(path))
            text = z.read(member)
            arrays = {}
            for n in _MEMBERS:
                member = f"{n}.npy"
                if member in names:
                    with z.open(member) as f:
                        arrays[n] = np.lib.format.read_array(f, allow_pickle=False)
            member = "catalog.json"
            header = json.loads(text)
    except DataError:
        raise
    except zipfile.BadZipFile as e:
        raise DataError(f"not a readable vlml catalog: not a zip file or a damaged one ({e})",
                        str(path)) from None
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise DataError(f"cannot read this file ({e.strerror or e})", str(path)) from None
        raise DataError(f"member {member} cannot be read ({e}); expected a vlml catalog written "
                        "by `vlml data prepare` (re-create it)", str(path)) from None
    except Exception as e:  # zlib.error, EOFError, ValueError, OSError, JSON errors, ...
        raise DataError(f"member {member} is damaged or malformed ({type(e).__name__}: {e}); "
                        "expected a vlml catalog written by `vlml data prepare` (re-create it)",
                        str(path)) from None
    return header, arrays


def _check_header(header: Any, path: Path) -> None:
    """`DataError` naming the field unless catalog.json is this format's header."""
    where = f"{path}: catalog.json"
    if not isinstance(header, dict):
        raise DataError(f"holds a JSON {type(header).__name__}; expected an object with the "
                        "catalog's format, version, class_names, root, split, n_images and "
                        "provenance", where)
    if header.get("format") != CATALOG_FORMAT or header.get("version") != CATALOG_VERSION:
        raise DataError(f"expected format {CATALOG_FORMAT!r} version {CATALOG_VERSION}, got "
                        f"{header.get('format')!r} version {header.get('version')!r}",
                        str(path))
    for key, (kind, expected) in _HEADER_TYPES.items():
        if key not in header:
            raise DataError(f"lacks the field {key!r}; expected {expected}", where)
        value = header[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"field {key!r} is {value!r:.80}; expected {expected}", where)
    bad = next((c for c in header["class_names"] if not isinstance(c, str)), None)
    if bad is not None:
        raise DataError(f"field 'class_names' holds {bad!r}; expected class-name strings", where)
    bad = next((s for s in header["provenance"] if not isinstance(s, dict)), None)
    if bad is not None:
        raise DataError(f"field 'provenance' holds {bad!r:.80}; expected objects (one per step)",
                        where)
