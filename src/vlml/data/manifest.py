r"""Your own images listed in a manifest file: one row per image, labels given by class name.

A manifest is a UTF-8 text file, CSV (.csv) or JSON lines (.jsonl, .json-lines, .ndjson).

CSV: a header row, then one row per image. Columns, in any order (others are ignored):
  image      required  the image's path, relative to the manifest's folder (the dataset root)
  positives  required  classes present in the image (may be empty)
  negatives  optional  classes confirmed absent
  unknowns   optional  classes explicitly not known
  split      optional  the row's split name, e.g. train, val or test
Several class names in one cell are separated by | or ; (spaces around names are dropped):
  image,positives,negatives,split
  photos/001.jpg,cat,,train
  photos/002.jpg,dog|person,cat,train
  photos/003.jpg,,,test

JSON lines: one object per line with the same keys, class names as lists of strings; blank
lines are skipped and other keys ignored:
  {"image": "photos/001.jpg", "positives": ["cat"], "split": "train"}

Image paths: relative to the manifest's folder; an absolute path must lie under that folder
too. A path that leaves it (../x.jpg, /elsewhere/x.jpg) is refused unless
allow_outside_root=true. Each image is listed once: two spellings of one file (img/a.jpg,
./img/a.jpg, img/b/../a.jpg, its absolute path) are an error naming both lines.

Classes (the label matrix's columns, in this order): classes= a list or a classes file (one name
per line, UTF-8, no blank line between names, no name twice; --classes-file FILE in the CLI),
else classes.txt beside the manifest, else the sorted names the manifest mentions. With a class
list, a row naming a class it lacks is an error.

Split: split=NAME keeps the rows whose split column is NAME (every row then needs one); no
split (or "any") keeps every row. `vlml data prepare manifest` reads every row into
all.catalog.zip unless --split NAME is given (repeatable: one catalog per split).

Unlisted classes (unlisted=), what a class a row does not name becomes:
  unknown   -1 (default): the row's tags are all that is known, as with one quick tag per
            photo; nothing is assumed absent.
  negative  0: the row names every class present and all others are confirmed absent; only
            for catalogs that really are fully tagged.
`vlml data prepare` prints the policy used and the resulting share of unknown entries. The
labels are recorded as given by the user (provenance "labels": "given"), not as ground truth.

Example:
  vlml data prepare manifest --root photos/labels.csv --classes-file photos/classes.txt \
      --split train --split test --out catalogs/photos
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlml.data.images import read_utf8
from vlml.errors import ConfigError, DataError
from vlml.types import (
    LABEL_DTYPE,
    LABELS_GIVEN,
    LABELS_KEY,
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    Catalog,
)

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".json-lines", ".ndjson")
UNLISTED_CHOICES = ("unknown", "negative")  # the first is the default
UNLISTED_MEANING = {"unknown": "unknown (-1)", "negative": "negative (0)"}
ALL_SPLITS = (None, "any")
CLASS_FILE_NAMES = ("classes.txt",)
_SEPARATORS = re.compile(r"[|;]")


@dataclass(frozen=True)
class ManifestRow:
    """One manifest entry: where it was read (line) and the class names it gives."""

    line: int
    image: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    unknowns: tuple[str, ...]
    split: str | None


def read_class_list(path: Path) -> tuple[str, ...]:
    """Class names from a UTF-8 text file, one per line (surrounding spaces dropped; blank lines
    at the end of the file are ignored).

    Raises `DataError` naming the file (and line) if it is missing, not UTF-8, empty, has a
    blank line between names or repeats a name.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder; expected a class list file (one class name per line)",
                        str(path))
    if not path.is_file():
        raise DataError("class list file not found (expected one class name per line)", str(path))
    lines = [raw.strip() for raw in io.StringIO(read_utf8(path, "class list file"))]
    while lines and not lines[-1]:
        lines.pop()
    first_line: dict[str, int] = {}
    for lineno, name in enumerate(lines, start=1):
        if not name:
            raise DataError("blank line between class names; expected one class name per line "
                            "(line k names column k)", f"{path}:line {lineno}")
        if name in first_line:
            raise DataError(f"class {name!r} repeats the name on line {first_line[name]}",
                            f"{path}:line {lineno}")
        first_line[name] = lineno
    if not lines:
        raise DataError("class list file holds no class names", str(path))
    return tuple(lines)


def class_names_from(classes: Sequence[str] | str | os.PathLike, *,
                     allow_empty: bool = False) -> tuple[tuple[str, ...], str]:
    """Class names from a list or a class list file (a `str` is a file path), and their source:
    "argument" or "file:<absolute path>". Raises `ConfigError` for an empty or repeated name
    (or no name at all, unless `allow_empty`)."""
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(Path(classes)), f"file:{Path(classes).absolute()}"
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"classes={classes!r}; expected a list of class-name strings or the "
                          "path of a class list file (one name per line)")
    names = tuple(str(c).strip() for c in classes)
    if (not names and not allow_empty) or not all(names):
        raise ConfigError(f"classes must be non-empty class names, got {list(classes)!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"classes repeats the name(s) {dup}")
    return names, "argument"


def read_manifest(
    root: Path,
    split: str | None = None,
    classes: Sequence[str] | Path | None = None,
    unlisted: str = "unknown",
    *,
    check_images: bool = True,
    allow_outside_root: bool = False,
) -> Catalog:
    """Read a CSV or JSONL manifest into a `Catalog` with (N, C) int8 labels (the format: module
    docstring).

    Args:
        root: the manifest file (`.csv`, or `.jsonl` / `.json-lines` / `.ndjson`).
        split: keep only rows whose `split` equals this; None or "any" keeps every row.
        classes: class names in column order, as a list or a text file (a `str` is taken as a
            file path). Default: `classes.txt` beside the manifest, else the sorted union of all
            names the manifest mentions.
        unlisted: what a class a row does not name becomes: "unknown" (-1, the default: a
            row's tags are all that is known) or "negative" (0: the manifest is fully tagged).
        check_images: raise `DataError` if a selected image file does not exist.
        allow_outside_root: accept image paths outside the manifest's folder (stored absolute).

    Returns:
        Catalog with `root` = the manifest's folder (absolute), image paths relative to it
        (normalised: "./a/../b.jpg" -> "b.jpg"; absolute for allowed paths outside it),
        `split` = `split`, or "all", and the labels recorded as given (not ground truth).
    """
    path = Path(root)
    if unlisted not in UNLISTED_CHOICES:
        raise ConfigError(f"unlisted={unlisted!r}; expected one of {list(UNLISTED_CHOICES)} "
                          f"(what a class a row does not name becomes: "
                          f"{', '.join(f'{k} = {v}' for k, v in UNLISTED_MEANING.items())})")
    if not path.is_file():
        hint = " (a folder was given; pass the manifest file itself)" if path.is_dir() else ""
        raise DataError(f"manifest file not found{hint}", str(path))
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows, has_split = _read_csv(path)
    elif suffix in JSONL_SUFFIXES:
        rows, has_split = _read_jsonl(path)
    else:
        raise DataError(f"unrecognised manifest suffix {path.suffix!r}; expected one of "
                        f"{list(CSV_SUFFIXES + JSONL_SUFFIXES)}", str(path))
    if not rows:
        what = "only a header row" if suffix in CSV_SUFFIXES else "no JSON object"
        raise DataError(f"the manifest lists no image ({what}); expected one row per image "
                        "(see `vlml data prepare manifest --help`)", str(path))

    class_names, classes_source = _resolve_classes(path, classes, rows)
    folder = Path(os.path.normpath(path.parent.absolute()))
    rows = _check_rows(path, rows, class_names, explicit=classes_source != "union",
                       folder=folder, allow_outside_root=bool(allow_outside_root))
    selected = _select_split(path, rows, split, has_split)

    labels = _label_matrix(selected, class_names, unlisted)
    image_paths = tuple(row.image for row in selected)
    if check_images:
        _check_exist(folder, selected, path)
    step: dict[str, Any] = {
        "step": "read", "dataset": "manifest", "manifest": str(path.absolute()),
        "split": split, "classes_source": classes_source, "unlisted": unlisted,
        "allow_outside_root": bool(allow_outside_root),
        "n_images": len(selected), "n_rows_in_file": len(rows), LABELS_KEY: LABELS_GIVEN,
    }
    return Catalog(image_paths=image_paths, class_names=class_names, labels=labels,
                   root=str(folder), split="all" if split in ALL_SPLITS else str(split),
                   provenance=(step,))


# ---- parsing ------------------------------------------------------------------------------
def _split_names(cell: str | None) -> tuple[str, ...]:
    if not cell:
        return ()
    return tuple(n for n in (s.strip() for s in _SEPARATORS.split(cell)) if n)


def _read_csv(path: Path) -> tuple[list[ManifestRow], bool]:
    rows: list[ManifestRow] = []
    with io.StringIO(read_utf8(path, "manifest"), newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError("empty CSV manifest; expected a header row with columns "
                            "'image' and 'positives'", str(path)) from None
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if h and header.count(h) > 1})
        if repeated:
            raise DataError(f"column(s) {repeated} appear twice in the header", f"{path}:line 1")
        missing = [c for c in ("image", "positives") if c not in header]
        if missing:
            raise DataError(f"missing required column(s) {missing}; the header has {header}",
                            f"{path}:line 1")
        col = {name: i for i, name in enumerate(header)}
        has_split = "split" in col

        def cell(values: list[str], name: str) -> str | None:
            i = col.get(name)
            return values[i].strip() if i is not None and i < len(values) else None

        for values in reader:
            where = f"{path}:line {reader.line_num}"
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise DataError(f"row has {len(values)} fields but the header has "
                                f"{len(header)}", where)
            split_cell = cell(values, "split") if has_split else None
            rows.append(ManifestRow(
                line=reader.line_num,
                image=cell(values, "image") or "",
                positives=_split_names(cell(values, "positives")),
                negatives=_split_names(cell(values, "negatives")),
                unknowns=_split_names(cell(values, "unknowns")),
                split=split_cell or None,
            ))
    return rows, has_split


def _names_field(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{key!r} must be a list of class-name strings, got {value!r}", where)
    return tuple(v.strip() for v in value if v.strip())


def _read_jsonl(path: Path) -> tuple[list[ManifestRow], bool]:
    rows: list[ManifestRow] = []
    has_split = False
    with io.StringIO(read_utf8(path, "manifest")) as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}:line {lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", where) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object per line, got {type(obj).__name__}",
                                where)
            missing = [k for k in ("image", "positives") if k not in obj]
            if missing:
                raise DataError(f"missing required key(s) {missing}; the row has "
                                f"{sorted(obj)}", where)
            image = obj["image"]
            if image is not None and not isinstance(image, str):
                raise DataError(f"'image' must be a string path, got {image!r}", where)
            split = obj.get("split")
            if split is not None and not isinstance(split, str):
                raise DataError(f"'split' must be a string, got {split!r}", where)
            has_split = has_split or "split" in obj
            rows.append(ManifestRow(
                line=lineno,
                image=(image or "").strip(),
                positives=_names_field(obj, "positives", where),
                negatives=_names_field(obj, "negatives", where),
                unknowns=_names_field(obj, "unknowns", where),
                split=(split.strip() or None) if split is not None else None,
            ))
    return rows, has_split


# ---- checks and assembly ----------------------------------------------------------------
def _resolve_classes(path: Path, classes: Sequence[str] | Path | None,
                     rows: list[ManifestRow]) -> tuple[tuple[str, ...], str]:
    """Class names in column order and where they came from ("argument", "file:...", "union")."""
    if classes is not None:
        return class_names_from(classes)
    for file_name in CLASS_FILE_NAMES:
        beside = path.parent / file_name
        if beside.is_file():
            return read_class_list(beside), f"file:{beside.absolute()}"
    union = sorted({n for r in rows for n in (*r.positives, *r.negatives, *r.unknowns)})
    if not union:
        raise DataError("the manifest names no class; give classes= or a classes.txt beside it",
                        str(path))
    return tuple(union), "union"


def _image_path(row: ManifestRow, folder: Path, allow_outside_root: bool,
                where: str) -> tuple[str, str]:
    """(the path to store, the normalised absolute path) of a row's image; `DataError` if it
    leaves `folder` and that is not allowed."""
    given = Path(row.image)
    full = os.path.normpath(given if given.is_absolute() else folder / given)
    rel = os.path.relpath(full, folder)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        if not allow_outside_root:
            raise DataError(f"image path {row.image!r} resolves to {full}, outside the "
                            f"manifest's folder {folder} (the dataset root); expected a path "
                            "under it: move the manifest up or the image in, or pass "
                            "allow_outside_root=true (--option allow_outside_root=true)", where)
        return full, full
    return Path(rel).as_posix(), full


def _check_rows(path: Path, rows: list[ManifestRow], class_names: tuple[str, ...],
                explicit: bool, folder: Path, allow_outside_root: bool) -> list[ManifestRow]:
    """Check every row; return them with image paths normalised (`_image_path`)."""
    known = set(class_names)
    seen: dict[str, ManifestRow] = {}
    out: list[ManifestRow] = []
    for row in rows:
        where = f"{path}:line {row.line}"
        if not row.image:
            raise DataError("empty image field", where)
        stored, full = _image_path(row, folder, allow_outside_root, where)
        if full in seen:
            first = seen[full]
            same = "" if first.image == row.image else f" as {first.image!r}; both name {full}"
            raise DataError(f"image {row.image!r} is listed again (first on line {first.line}"
                            f"{same}); give each image one row with all its labels", where)
        seen[full] = row
        out.append(dataclasses.replace(row, image=stored))
        if explicit:
            for name in (*row.positives, *row.negatives, *row.unknowns):
                if name not in known:
                    close = difflib.get_close_matches(name, class_names, n=3, cutoff=0.6)
                    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise DataError(f"unknown class {name!r}{hint} (the class list has "
                                    f"{len(class_names)} names)", where)
        groups = {"positive": set(row.positives), "negative": set(row.negatives),
                  "unknown": set(row.unknowns)}
        for a, b in (("positive", "negative"), ("positive", "unknown"), ("negative", "unknown")):
            both = sorted(groups[a] & groups[b])
            if both:
                raise DataError(f"class(es) {both} named both {a} and {b} for image "
                                f"{row.image!r}", where)
    return out


def _select_split(path: Path, rows: list[ManifestRow], split: str | None,
                  has_split: bool) -> list[ManifestRow]:
    if split in ALL_SPLITS:
        return rows
    if not has_split:
        raise DataError(f"split={split!r} was asked for but the manifest has no split column; "
                        "pass split=None (or 'any') to read every row", str(path))
    for row in rows:
        if row.split is None:
            raise DataError(f"row has no split value; with split={split!r} every row needs one",
                            f"{path}:line {row.line}")
    selected = [r for r in rows if r.split == split]
    if not selected:
        present = sorted({r.split for r in rows if r.split is not None})
        raise DataError(f"no row has split {split!r}; the manifest's splits are {present}",
                        str(path))
    return selected


def _label_matrix(rows: list[ManifestRow], class_names: tuple[str, ...],
                  unlisted: str) -> np.ndarray:
    """(N, C) int8 matrix: named classes as given, the rest `unlisted`."""
    fill = NEGATIVE if unlisted == "negative" else UNKNOWN
    labels = np.full((len(rows), len(class_names)), fill, dtype=LABEL_DTYPE)
    index = {name: i for i, name in enumerate(class_names)}
    for r, row in enumerate(rows):
        for names, value in ((row.positives, POSITIVE), (row.negatives, NEGATIVE),
                             (row.unknowns, UNKNOWN)):
            labels[r, [index[n] for n in names]] = value
    return labels


def _check_exist(folder: Path, rows: list[ManifestRow], path: Path) -> None:
    missing = [r for r in rows if not (folder / r.image).is_file()]
    if missing:
        first = missing[0]
        raise DataError(f"image file not found: {folder / first.image} ({len(missing)} of "
                        f"{len(rows)} listed images are missing)", f"{path}:line {first.line}")
