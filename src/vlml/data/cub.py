"""CUB-200-2011 attribute labels -> `Catalog` (312 binary attributes per image).

Files read (official layout, docs/methods.md 1.1):
- `CUB_200_2011/images.txt`: "<image_id> <relative path under images/>"
- `CUB_200_2011/train_test_split.txt`: "<image_id> <is_training_image 1|0>"
- `CUB_200_2011/attributes/image_attribute_labels.txt`:
  "<image_id> <attribute_id> <is_present> <certainty_id> <time>" (3.7M lines; a few lines of the
  real file carry an extra trailing field, so only the first three fields are used)
- `attributes.txt` ("<attribute_id> <name>"), which the official tarball puts beside
  `CUB_200_2011/`; `CUB_200_2011/attributes/attributes.txt` is also accepted.

Rows follow `images.txt` order (as Cole et al.'s `format_cub.py`); labels are `is_present`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vlml.data.images import require_dir, require_file
from vlml.errors import DataError
from vlml.types import LABEL_DTYPE, LABELS_GROUND_TRUTH, LABELS_KEY, Catalog

CUB_SPLITS = {"train": 1, "test": 0}
_FOLDER = "CUB_200_2011"


def read_cub(root: Path, split: str) -> Catalog:
    """Read split "train" (is_training_image = 1) or "test" (= 0) of CUB-200-2011.

    Args:
        root: the `CUB_200_2011` folder or its parent.
        split: "train" or "test".

    Returns:
        Catalog with image paths `images/<path>` relative to `root` = the `CUB_200_2011` folder,
        labels (N, A) int8 in {0, 1} (A = 312 attributes), true_labels None.
    """
    if split not in CUB_SPLITS:
        raise DataError(f"unknown split {split!r} for CUB; valid splits: "
                        f"{', '.join(CUB_SPLITS)}", "cub")
    base = find_cub_dir(Path(root))
    require_dir(base / "images", "CUB images")
    image_ids, image_paths = _read_images(require_file(base / "images.txt", "CUB image list"))
    row = {image_id: r for r, image_id in enumerate(image_ids)}
    is_train = _read_split(require_file(base / "train_test_split.txt", "CUB split"), row)
    names = _read_attribute_names(base)
    labels = _read_attribute_labels(
        require_file(base / "attributes" / "image_attribute_labels.txt", "CUB attribute label"),
        np.asarray(image_ids, dtype=np.int64), len(names))

    keep = np.flatnonzero(is_train == CUB_SPLITS[split])
    return Catalog(
        image_paths=tuple(f"images/{image_paths[i]}" for i in keep),
        class_names=names,
        labels=labels[keep],
        root=str(base.absolute()),
        split=split,
        provenance=({"step": "read", "dataset": "cub", "split": split,
                     LABELS_KEY: LABELS_GROUND_TRUTH},),
    )


def find_cub_dir(root: Path) -> Path:
    """The `CUB_200_2011` folder (the one holding `images.txt`), given it or its parent."""
    candidates = (root / _FOLDER, root)
    for cand in candidates:
        if (cand / "images.txt").is_file():
            return cand
    looked = ", ".join(str(c / "images.txt") for c in candidates)
    raise DataError(f"no CUB-200-2011 folder found; looked for {looked}. Pass the "
                    f"{_FOLDER} folder or its parent", str(root))


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read as UTF-8 text ({e})", str(path)) from e


def _int_field(text: str, path: Path, n: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{what} {text!r} is not an integer", f"{path}:line {n}") from None


def _id_text_lines(path: Path, id_name: str, text_name: str) -> Iterator[tuple[int, int, str]]:
    """(line number from 1, integer id, stripped text) of each "<id> <text>" line of `path`;
    blank lines are skipped, any other line without both fields is a `DataError`."""
    for n, line in enumerate(_text_lines(path), start=1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"expected '<{id_name}> <{text_name}>', got {line.strip()!r}",
                            f"{path}:line {n}")
        yield n, _int_field(fields[0], path, n, id_name), fields[1].strip()


def _read_images(path: Path) -> tuple[list[int], list[str]]:
    """Image ids and relative paths from `images.txt`, in file order."""
    ids: list[int] = []
    paths: list[str] = []
    seen: set[int] = set()
    for n, image_id, image_path in _id_text_lines(path, "image_id", "path"):
        if image_id in seen:
            raise DataError(f"image_id {image_id} listed twice", f"{path}:line {n}")
        seen.add(image_id)
        ids.append(image_id)
        paths.append(image_path)
    if not ids:
        raise DataError("no images listed", str(path))
    return ids, paths


def _read_split(path: Path, row: dict[int, int]) -> np.ndarray:
    """is_training_image (N,) int8 aligned with `images.txt` rows."""
    is_train = np.full(len(row), -1, dtype=np.int8)
    for n, line in enumerate(_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise DataError(f"expected '<image_id> <1|0>', got {line.strip()!r}",
                            f"{path}:line {n}")
        image_id = _int_field(fields[0], path, n, "image_id")
        if image_id not in row:
            raise DataError(f"image_id {image_id} is not in images.txt", f"{path}:line {n}")
        if is_train[row[image_id]] != -1:
            raise DataError(f"image_id {image_id} listed twice", f"{path}:line {n}")
        is_train[row[image_id]] = int(fields[1])
    if (is_train == -1).any():
        missing = [i for i, r in row.items() if is_train[r] == -1][0]
        raise DataError(f"image_id {missing} of images.txt has no train/test entry",
                        f"{path} id {missing}")
    return is_train


def _read_attribute_names(base: Path) -> tuple[str, ...]:
    """Attribute names ordered by attribute_id, which must run 1..A."""
    candidates = (base.parent / "attributes.txt", base / "attributes" / "attributes.txt",
                  base / "attributes.txt")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError("missing attributes.txt; looked for "
                        + ", ".join(str(p) for p in candidates), str(base))
    names: list[str] = []
    for n, attr_id, name in _id_text_lines(path, "attribute_id", "name"):
        if attr_id != len(names) + 1:
            raise DataError(f"attribute_id {attr_id}; expected {len(names) + 1} (ids must run "
                            "1, 2, ... in order)", f"{path}:line {n}")
        names.append(name)
    if not names:
        raise DataError("no attributes listed", str(path))
    return tuple(names)


def _read_attribute_labels(path: Path, image_ids: np.ndarray, n_attributes: int) -> np.ndarray:
    """is_present as an (N, A) int8 matrix, rows aligned with `image_ids` (images.txt order).

    Every (image, attribute) pair must appear exactly once.
    """
    try:
        # The C parser of numpy>=1.23 reads the real 3.7M-line file in about half a second;
        # usecols makes it ignore the extra trailing field some lines carry.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2), ndmin=2,
                               comments=None)
    except ValueError as e:
        raise _first_bad_line(path) or DataError(f"unreadable ({e})", str(path)) from e
    if table.size == 0:
        raise DataError("no attribute labels (empty file)", str(path))
    img, attr, present = table[:, 0], table[:, 1], table[:, 2]

    sorter = np.argsort(image_ids, kind="stable")
    pos = np.minimum(np.searchsorted(image_ids, img, sorter=sorter), image_ids.size - 1)
    rows = sorter[pos]
    checks = (
        (image_ids[rows] != img, "image_id {img} is not in images.txt"),
        ((attr < 1) | (attr > n_attributes),
         "attribute_id {attr}; expected 1.." + str(n_attributes) + " (attributes.txt)"),
        ((present != 0) & (present != 1), "is_present {present}; expected 0 or 1"),
    )
    for bad, message in checks:
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataError(message.format(img=img[r], attr=attr[r], present=present[r]),
                            f"{path}:line {_line_of_row(path, r)}")

    flat = rows * n_attributes + (attr - 1)
    counts = np.bincount(flat, minlength=image_ids.size * n_attributes)
    if (counts > 1).any():
        dup = int(np.flatnonzero(counts > 1)[0])
        r = int(np.flatnonzero(flat == dup)[1])
        raise DataError(f"image_id {img[r]} attribute_id {attr[r]} listed twice",
                        f"{path}:line {_line_of_row(path, r)}")
    if (counts == 0).any():
        gap = int(np.flatnonzero(counts == 0)[0])
        image_id, attr_id = image_ids[gap // n_attributes], gap % n_attributes + 1
        raise DataError(f"no label for image_id {image_id} attribute_id {attr_id}; expected one "
                        "line per image and attribute", f"{path} id {image_id}")
    labels = np.empty(image_ids.size * n_attributes, dtype=LABEL_DTYPE)
    labels[flat] = present
    return labels.reshape(image_ids.size, n_attributes)


def _first_bad_line(path: Path) -> DataError | None:
    """Slow exact scan, used only after the fast parser failed: the first malformed line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3:
                return DataError(f"expected '<image_id> <attribute_id> <is_present> ...', got "
                                 f"{line.strip()!r}", f"{path}:line {n}")
            for text, what in zip(fields[:3], ("image_id", "attribute_id", "is_present"),
                                  strict=True):
                try:
                    int(text)
                except ValueError:
                    return DataError(f"{what} {text!r} is not an integer", f"{path}:line {n}")
    return None


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of the `row`-th non-blank line (np.loadtxt skips blank lines)."""
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return n
    return -1
