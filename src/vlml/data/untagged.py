"""A folder of untagged images: every image under a folder, every label unknown.

For an unlabelled pool (the untagged part of a semi-supervised run) or images to tag.

Images: every file with an image suffix (.jpg, .jpeg, .png, .bmp, .gif, .webp, .tif, .tiff;
any case) anywhere under the folder, one row each, sorted by the path relative to the folder.
Hidden files and folders (names starting with ".") are skipped and links to folders are not
followed. With split=NAME the folder read is <root>/NAME.

Classes (the label matrix's columns, in this order): classes= a list or a classes file (one name
per line, UTF-8, no blank line between names, no name twice; --classes-file FILE in the CLI),
or none at all: the catalog then has zero classes (an (N, 0) label matrix), enough for features
and for tagging with a class list chosen later. Every label is unknown (-1), recorded as given
by the user (provenance "labels": "given"), not as ground truth.

Example:
  vlml data prepare images --root ~/photos/new --classes-file classes.txt --out catalogs/new
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlml.data.images import IMAGE_SUFFIXES
from vlml.data.manifest import class_names_from
from vlml.errors import DataError
from vlml.types import LABEL_DTYPE, LABELS_GIVEN, LABELS_KEY, UNKNOWN, Catalog

ALL_SPLITS = (None, "any")


def read_images(root: Path, split: str | None = None,
                classes: Sequence[str] | str | os.PathLike | None = None) -> Catalog:
    """Every image under `root` as a catalog whose labels are all unknown.

    Args:
        root: the folder of images (searched recursively).
        split: read `root/<split>/` instead; None or "any" reads `root` itself.
        classes: class names in column order, as a list or a classes file (a `str` is a file
            path); None or an empty list gives a catalog with zero classes.

    Returns:
        Catalog with N = the images found (paths relative to `root`, sorted), labels (N, C)
        int8 all -1, `root` = the folder read (absolute), `split` = `split` or "all".
    """
    root = Path(root)
    if not root.is_dir():
        what = "a file was given; pass the folder that holds the images" if root.exists() \
            else "expected a folder of images"
        raise DataError(f"image folder not found ({what})", str(root))
    folder = root if split in ALL_SPLITS else root / str(split)
    if not folder.is_dir():
        present = sorted(d.name for d in root.iterdir() if d.is_dir()
                         and not d.name.startswith("."))
        raise DataError(f"no folder for split {split!r}; the sub-folders are {present}",
                        str(folder))
    folder = Path(os.path.normpath(folder.absolute()))
    class_names, source = (class_names_from(classes, allow_empty=True) if classes is not None
                           else ((), "none"))
    paths = find_images(folder)
    if not paths:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under this folder "
                        "(hidden files and folders are skipped)", str(folder))
    step: dict[str, Any] = {
        "step": "read", "dataset": "images", "root": str(folder), "split": split,
        "classes_source": source, "n_images": len(paths), "n_classes": len(class_names),
        LABELS_KEY: LABELS_GIVEN,
    }
    return Catalog(image_paths=tuple(paths), class_names=class_names,
                   labels=np.full((len(paths), len(class_names)), UNKNOWN, dtype=LABEL_DTYPE),
                   root=str(folder), split="all" if split in ALL_SPLITS else str(split),
                   provenance=(step,))


def find_images(folder: Path) -> list[str]:
    """Paths (POSIX, relative to `folder`, sorted) of the image files under it; hidden files and
    folders skipped, links to folders not followed."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if (base / name).is_file():
                found.append((base / name).relative_to(folder).as_posix())
    return sorted(found)
