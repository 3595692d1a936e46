"""Checks shared by the readers: required folders and files exist, text is UTF-8, images
decode."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
from PIL import Image

from vlml.errors import DataError
from vlml.progress import bar
from vlml.types import Catalog

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a folder, else raise `DataError` saying which folder was expected."""
    if not path.is_dir():
        raise DataError(f"missing {what} folder (expected a directory here)", str(path))
    return path


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise `DataError` saying which file was expected."""
    if not path.is_file():
        raise DataError(f"missing {what} file", str(path))
    return path


def read_utf8(path: Path, what: str) -> str:
    """The text of file `path` decoded as UTF-8 (a leading byte-order mark dropped).

    Raises `DataError` naming the file and the line of the first byte that is not UTF-8, so a
    file saved in another encoding (Latin-1, UTF-16, ...) is pointed at, not half read.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the {what} ({e.strerror or e})", str(path)) from None
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[offset:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = offset + e.start
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise DataError(f"{what} is not UTF-8 text: byte 0x{raw[start]:02x} at column {column} "
                        "cannot be decoded; expected UTF-8 (re-save the file as UTF-8, e.g. "
                        "`iconv -f latin1 -t utf-8`)", f"{path}:line {line}") from None


def check_image(path: Path) -> str | None:
    """None if `path` decodes as an image, else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.verify()
    except FileNotFoundError:
        return "file not found"
    except Exception as e:  # PIL raises many types for corrupt data
        return f"not a readable image ({type(e).__name__}: {e})"
    return None


def verify_images(catalog: Catalog, skip_bad: bool = False,
                  progress: bool = True) -> tuple[Catalog, list[tuple[str, str]]]:
    """Open every image of `catalog` (header + structure check, no full decode).

    Returns the catalog (without the bad rows when `skip_bad`) and the list of
    (path, reason) for bad images. Without `skip_bad`, any bad image raises `DataError`
    naming the first one and the count.
    """
    bad: list[tuple[str, str]] = []
    keep = np.ones(catalog.n_images, dtype=bool)
    paths = catalog.full_paths()
    for i, path in enumerate(bar(paths, enabled=progress, desc="checking images", unit="img")):
        reason = check_image(path)
        if reason is not None:
            bad.append((str(path), reason))
            keep[i] = False
    if bad and skip_bad and len(bad) == catalog.n_images:
        raise DataError(f"none of the {catalog.n_images} images is readable ({bad[0][1]}, "
                        f"first: {bad[0][0]}); nothing is left to use, even with skip_bad / "
                        "--skip-bad-images; expected image files PIL can open", catalog.root or
                        catalog.split or "catalog")
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0][1]}{more}; fix the file or pass skip_bad=True / "
                        "--skip-bad-images to drop and list bad images", bad[0][0])
    if bad:
        catalog = catalog.subset(np.flatnonzero(keep), step={
            "step": "skip_bad_images", "n_skipped": len(bad),
            "skipped": [p for p, _ in bad][:1000]})
    return catalog, bad
