"""Your own images sorted into one sub-folder per class: `root/<class>/<image>`.

With a split, the layout is `root/<split>/<class>/<image>`. An image is identified by its file
name: the same file name in several class folders is one image with several positives (the path
kept is the one in the first class folder by sorted name). Only files with an image suffix count;
other files and hidden folders (names starting with ".") are ignored.

Unlisted classes (unlisted=), what a class whose folder lacks the image becomes:
  unknown   -1 (default): an image's folders are all that is known about it; nothing is
            assumed absent (a photo filed under "cat" may show a dog too).
  negative  0: every image is filed under every class it shows; only for collections that
            really are fully tagged.
`vlml data prepare` prints the policy used and the resulting share of unknown entries. The
labels are recorded as given by the user (provenance "labels": "given"), not as ground truth.

Example:
  vlml data prepare folder --root photos --split train --split test --out catalogs/photos
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlml.data.images import IMAGE_SUFFIXES
from vlml.data.manifest import UNLISTED_CHOICES, UNLISTED_MEANING
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

ALL_SPLITS = (None, "any")


def read_folder(root: Path, split: str | None = None, unlisted: str = "unknown") -> Catalog:
    """Read a class-per-folder image collection into a `Catalog`.

    Args:
        root: the folder holding one sub-folder per class (or one per split, see `split`).
        split: read `root/<split>/`; None or "any" reads `root` itself.
        unlisted: what a class whose folder lacks the image becomes: "unknown" (-1, the
            default) or "negative" (0: the collection is fully tagged).

    Returns:
        Catalog with C = number of class folders (sorted names), N = distinct image file names
        (rows sorted by file name), `root` = the folder read, `split` = `split` or "all".
    """
    if unlisted not in UNLISTED_CHOICES:
        raise ConfigError(f"unlisted={unlisted!r}; expected one of {list(UNLISTED_CHOICES)} "
                          f"(what a class whose folder lacks the image becomes: "
                          f"{', '.join(f'{k} = {v}' for k, v in UNLISTED_MEANING.items())})")
    root = Path(root)
    if not root.is_dir():
        raise DataError("image folder not found (expected one sub-folder per class)", str(root))
    folder = root
    if split not in ALL_SPLITS:
        folder = root / str(split)
        if not folder.is_dir():
            present = sorted(d.name for d in _subdirs(root))
            raise DataError(f"no folder for split {split!r}; the sub-folders are {present}",
                            str(folder))

    class_dirs = _subdirs(folder)
    if not class_dirs:
        raise DataError("no class sub-folders (expected <class>/<image> inside)", str(folder))
    class_names = tuple(d.name for d in class_dirs)

    first_path: dict[str, str] = {}
    positives: dict[str, list[int]] = {}
    n_files = 0
    for c, class_dir in enumerate(class_dirs):
        for f in sorted(class_dir.iterdir()):
            if not (f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()):
                continue
            n_files += 1
            rel = f"{class_dir.name}/{f.name}"
            first_path.setdefault(f.name, rel)
            positives.setdefault(f.name, []).append(c)
    if not positives:
        nested = any(_subdirs(d) for d in class_dirs)
        hint = (f"; the sub-folders hold folders, so if the layout is <split>/<class>/<image> "
                f"pass split= one of {list(class_names)}") if nested and split in ALL_SPLITS \
            else ""
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the "
                        f"{len(class_dirs)} class folders{hint}", str(folder))

    names = sorted(positives)
    fill = NEGATIVE if unlisted == "negative" else UNKNOWN
    labels = np.full((len(names), len(class_names)), fill, dtype=LABEL_DTYPE)
    for r, name in enumerate(names):
        labels[r, positives[name]] = POSITIVE
    step: dict[str, Any] = {
        "step": "read", "dataset": "folder", "root": str(folder.absolute()), "split": split,
        "unlisted": unlisted, "n_images": len(names), "n_files": n_files,
        "n_classes": len(class_names),
        "empty_classes": [class_names[c] for c in np.flatnonzero(~(labels == POSITIVE).any(0))],
        LABELS_KEY: LABELS_GIVEN,
    }
    return Catalog(image_paths=tuple(first_path[n] for n in names), class_names=class_names,
                   labels=labels, root=str(folder.absolute()),
                   split="all" if split in ALL_SPLITS else str(split), provenance=(step,))


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of `folder`, sorted by name."""
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)
