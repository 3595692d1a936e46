"""PASCAL VOC 2007 / 2012 classification labels -> `Catalog`.

Two label sources give the same catalog on consistent data:
- `source="txt"`: the per-class files `ImageSets/Main/<cls>_<split>.txt` ("<id> <value>", value
  1 = present, 0 = present but only as "difficult" objects, -1 = absent).
- `source="xml"`: the id list `ImageSets/Main/<split>.txt` and `Annotations/<id>.xml`.

As in Cole et al.'s `format_pascal.py` (docs/methods.md 1.1): only images with at least one positive
are kept, rows are ordered by sorted image file name, columns follow the official class order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vlml.data.images import require_dir, require_file
from vlml.errors import ConfigError, DataError
from vlml.types import (
    LABEL_DTYPE,
    LABELS_GROUND_TRUTH,
    LABELS_KEY,
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    Catalog,
)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_SPLITS: dict[str, tuple[str, ...]] = {
    "2007": ("train", "val", "trainval", "test"),
    "2012": ("train", "val", "trainval"),
}
DIFFICULT_POLICIES = ("negative", "ignore")
SOURCES = ("txt", "xml")

# Raw per-class states, as written in the VOC class files.
_RAW_POS, _RAW_DIFFICULT, _RAW_NEG = 1, 0, -1
_RAW_VALUES = {"1": _RAW_POS, "0": _RAW_DIFFICULT, "-1": _RAW_NEG}


def read_voc2007(root: Path, split: str, difficult: str = "negative",
                 source: str = "txt") -> Catalog:
    """PASCAL VOC 2007, split in train/val/trainval/test. See `read_voc`."""
    return read_voc("2007", root, split, difficult, source)


def read_voc2012(root: Path, split: str, difficult: str = "negative",
                 source: str = "txt") -> Catalog:
    """PASCAL VOC 2012, split in train/val/trainval. See `read_voc`."""
    return read_voc("2012", root, split, difficult, source)


def read_voc(year: str, root: Path, split: str, difficult: str = "negative",
             source: str = "txt") -> Catalog:
    """Read one split of VOC `year` ("2007" or "2012") into a catalog of N images x 20 classes.

    Args:
        root: the folder holding `VOCdevkit`, `VOCdevkit` itself, or `VOC<year>` itself.
        split: "train", "val", "trainval" (and "test" for 2007).
        difficult: "negative" (Cole parity: a class present only as difficult objects is a
            negative, 0) or "ignore" (it is unknown, -1).
        source: "txt" (per-class files) or "xml" (Annotations/<id>.xml).

    Returns:
        Catalog with image paths `JPEGImages/<id>.jpg` relative to `root` = the VOC<year> folder,
        labels (N, 20) int8 in {1, 0} (and -1 for ignored difficult classes), true_labels None.
    """
    if year not in VOC_SPLITS:
        raise ConfigError(f"unknown VOC year {year!r}; expected one of {sorted(VOC_SPLITS)}")
    valid = VOC_SPLITS[year]
    if split not in valid:
        raise DataError(f"unknown split {split!r} for VOC{year}; valid splits: "
                        f"{', '.join(valid)}", f"voc{year}")
    if difficult not in DIFFICULT_POLICIES:
        raise ConfigError(f"difficult={difficult!r}; expected one of {DIFFICULT_POLICIES}")
    if source not in SOURCES:
        raise ConfigError(f"source={source!r}; expected one of {SOURCES}")

    voc_dir = find_voc_dir(Path(root), year)
    main = require_dir(voc_dir / "ImageSets" / "Main", "ImageSets/Main")
    require_dir(voc_dir / "JPEGImages", "JPEGImages")
    if source == "txt":
        ids, raw = _raw_from_class_files(main, split)
    else:
        ids = _read_id_list(require_file(main / f"{split}.txt", f"VOC{year} {split} id list"))
        raw = _raw_from_xml(voc_dir / "Annotations", ids)

    if not ids:
        listed = (f"every class file {main}/<class>_{split}.txt is empty" if source == "txt"
                  else f"the id list {main / (split + '.txt')} is empty")
        raise DataError(f"split {split!r} lists no image: {listed}; expected one line per "
                        "image", str(main))
    keep = np.flatnonzero((raw == _RAW_POS).any(axis=1))
    if not keep.size:
        raise DataError(f"no image of split {split!r} has a positive (non-difficult) object, so "
                        "the split holds no usable image; expected VOC class files with 1 "
                        "entries", str(main))
    file_names = [ids[i] + ".jpg" for i in keep]
    order = sorted(range(len(keep)), key=file_names.__getitem__)
    raw = raw[keep[order]]
    labels = np.full(raw.shape, NEGATIVE, dtype=LABEL_DTYPE)
    labels[raw == _RAW_POS] = POSITIVE
    if difficult == "ignore":
        labels[raw == _RAW_DIFFICULT] = UNKNOWN
    return Catalog(
        image_paths=tuple(f"JPEGImages/{file_names[i]}" for i in order),
        class_names=VOC_CLASSES,
        labels=labels,
        root=str(voc_dir.absolute()),
        split=split,
        provenance=({"step": "read", "dataset": f"voc{year}", "split": split,
                     "difficult": difficult, "source": source,
                     LABELS_KEY: LABELS_GROUND_TRUTH},),
    )


def find_voc_dir(root: Path, year: str) -> Path:
    """The `VOC<year>` folder (the one holding `ImageSets/Main`) for any of the accepted roots."""
    name = f"VOC{year}"
    if root.name.upper().startswith("VOC20") and root.name != name \
            and (root / "ImageSets" / "Main").is_dir():
        raise DataError(f"this looks like {root.name}, but {name} was asked for", str(root))
    candidates = (root / "VOCdevkit" / name, root / name, root)
    for cand in candidates:
        if (cand / "ImageSets" / "Main").is_dir():
            return cand
    looked = ", ".join(str(c / "ImageSets" / "Main") for c in candidates)
    raise DataError(f"no {name} folder found; looked for {looked}. Pass the folder holding "
                    f"VOCdevkit, VOCdevkit itself, or {name} itself", str(root))


def _read_lines(path: Path) -> list[str]:
    """Lines of a text file (LF or CRLF), raising `DataError` if it is missing or not text."""
    require_file(path, "VOC list")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read as UTF-8 text ({e})", str(path)) from e


def _read_id_list(path: Path) -> list[str]:
    """Image ids of `ImageSets/Main/<split>.txt`, one per line."""
    ids: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(f"expected one image id per line, got {len(fields)} fields "
                            f"{line.strip()!r}", f"{path}:line {n}")
        if fields[0] in seen:
            raise DataError(f"image id {fields[0]!r} listed twice", f"{path}:line {n}")
        seen.add(fields[0])
        ids.append(fields[0])
    return ids


def _read_class_file(path: Path) -> dict[str, int]:
    """{image id: raw value in {1, 0, -1}} of one `<cls>_<split>.txt`, in file order."""
    values: dict[str, int] = {}
    for n, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in _RAW_VALUES:
            raise DataError(f"expected '<image id> <1|0|-1>', got {line.strip()!r}",
                            f"{path}:line {n}")
        if fields[0] in values:
            raise DataError(f"image id {fields[0]!r} listed twice", f"{path}:line {n}")
        values[fields[0]] = _RAW_VALUES[fields[1]]
    return values


def _raw_from_class_files(main: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Ids (order of the first class file) and the raw (N, 20) matrix of 1/0/-1."""
    first_path = main / f"{VOC_CLASSES[0]}_{split}.txt"
    first = _read_class_file(first_path)
    ids = list(first)
    raw = np.empty((len(ids), len(VOC_CLASSES)), dtype=np.int8)
    raw[:, 0] = list(first.values())
    for c, cls in enumerate(VOC_CLASSES[1:], start=1):
        path = main / f"{cls}_{split}.txt"
        values = _read_class_file(path)
        if len(values) != len(ids) or values.keys() != first.keys():
            extra = next((i for i in values if i not in first), None)
            if extra is not None:
                raise DataError(f"image id {extra!r} is not in {first_path.name}; every class "
                                f"file of a split must list the same images", f"{path} id {extra}")
            missing = next(i for i in ids if i not in values)
            raise DataError(f"image id {missing!r} (listed in {first_path.name}) is missing; "
                            "every class file of a split must list the same images",
                            f"{path} id {missing}")
        raw[:, c] = [values[i] for i in ids]
    return ids, raw


def _raw_from_xml(annotations: Path, ids: list[str]) -> np.ndarray:
    """The raw (N, 20) 1/0/-1 matrix derived from object annotations, as the devkit does."""
    require_dir(annotations, "Annotations")
    index = {name: c for c, name in enumerate(VOC_CLASSES)}
    raw = np.full((len(ids), len(VOC_CLASSES)), _RAW_NEG, dtype=np.int8)
    for r, image_id in enumerate(ids):
        path = require_file(annotations / f"{image_id}.xml", "annotation")
        try:
            tree = ET.parse(path)
        except ET.ParseError as e:
            line, _ = e.position
            raise DataError(f"malformed XML ({e}); expected a VOC <annotation> document",
                            f"{path}:line {line}") from e
        # Direct children only: person <part> elements also carry a <name>.
        for obj in tree.getroot().findall("object"):
            name_el = obj.find("name")
            name = (name_el.text or "").strip() if name_el is not None else ""
            if name not in index:
                raise DataError(f"object class {name!r}; expected one of {list(VOC_CLASSES)}",
                                str(path))
            diff_el = obj.find("difficult")
            diff_text = (diff_el.text or "").strip() if diff_el is not None else "0"
            if diff_text not in ("0", "1"):
                raise DataError(f"<difficult> is {diff_text!r} for a {name!r} object; "
                                "expected 0 or 1", str(path))
            c = index[name]
            if diff_text == "0":
                raw[r, c] = _RAW_POS
            elif raw[r, c] != _RAW_POS:
                raw[r, c] = _RAW_DIFFICULT
    return raw
