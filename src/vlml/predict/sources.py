"""What a tagger reads: images given as files, folders, glob patterns, catalogs or in memory,
resolved once into one ordered list, and a dataset that loads them without raising.

Accepted forms (`resolve_images`), alone or in a list that mixes them:

- a path to an image file (any suffix: a file named on purpose is read, and reported as a bad
  image when it does not decode);
- a folder: every image under it, recursively, sorted by path (suffixes .jpg, .jpeg, .png,
  .bmp, .gif, .webp, .tif, .tiff in any case; hidden files and folders skipped);
- a glob pattern (`*`, `?`, `[`; `**` recurses): the matching files with an image suffix,
  sorted;
- a `Catalog`, or a catalog file (a `.zip`, e.g. `x.catalog.zip`): its images in catalog order;
- in-memory images: a PIL image, or a torch tensor (3, H, W) uint8 in [0, 255] or float in
  [0, 1] (raw pixels, not preprocessed; a (B, 3, H, W) tensor is B images). They are turned into
  PIL images and go through the model's own preprocessing, like files. Their row name is
  `<image i>`, i their position in the resolved list.

Paths keep the form they were given in (relative stays relative), so output rows name images
the way the user did; the inputs' fingerprint uses absolute paths.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlml.errors import DataError

GLOB_CHARS = ("*", "?", "[")


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL is a dependency
        return False
    return isinstance(obj, Image.Image)


def _is_tensor(obj: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    return torch is not None and isinstance(obj, torch.Tensor)


class ImageSources:
    """N images in order: each a path (str) or an in-memory image (PIL image, (3, H, W) tensor).

    Build with `resolve_images`; `Tagger.tag` and `write_predictions` accept it as is (resolve
    once, e.g. to fail on "no images" before loading a model).
    """

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        n_mem = sum(not isinstance(x, str) for x in self.items)
        return f"ImageSources({len(self)} images, {n_mem} in memory)"

    def name(self, i: int) -> str:
        """Row name of image i: its path, or `<image i>` for an in-memory image."""
        item = self.items[i]
        return item if isinstance(item, str) else f"<image {i}>"

    def fingerprint(self) -> str:
        """sha256 (hex) of the image list: absolute paths in order (contents not read), and the
        pixels of in-memory images."""
        h = hashlib.sha256()
        for item in self.items:
            if isinstance(item, str):
                h.update(b"p" + os.path.abspath(item).encode("utf-8", "surrogateescape"))
            elif _is_tensor(item):
                h.update(f"t{item.dtype}{tuple(item.shape)}".encode())
                h.update(item.detach().cpu().contiguous().numpy().tobytes())
            else:
                h.update(f"i{item.mode}{item.size}".encode() + item.tobytes())
            h.update(b"\0")
        return h.hexdigest()


def resolve_images(images: Any) -> ImageSources:
    """Every image named by `images` (the forms in the module docstring), in order.

    Raises:
        DataError: a path that does not exist, a malformed catalog or tensor, an unsupported
            object, or no image at all.
    """
    if isinstance(images, ImageSources):
        sources, where = images, "images"
    else:
        items: list[Any] = []
        parts = images if isinstance(images, (list, tuple)) else [images]
        for k, part in enumerate(parts):
            items.extend(_expand(part, f"images[{k}]" if parts is images else "images"))
        sources = ImageSources(items)
        named = [os.fspath(p) for p in parts if isinstance(p, (str, os.PathLike))]
        where = ", ".join(named[:5]) + (" ..." if len(named) > 5 else "") if named else "images"
    if not len(sources):
        raise DataError("no images found in the inputs (expected image files, folders holding "
                        "images, glob patterns, catalogs or in-memory images)", where)
    return sources


def _expand(part: Any, where: str) -> Iterable[Any]:
    from vlml.types import Catalog

    if isinstance(part, Catalog):
        return [str(p) for p in part.full_paths()]
    if isinstance(part, (str, os.PathLike)):
        return _expand_path(os.fspath(part))
    if _is_pil(part):
        return [part]
    if _is_tensor(part):
        return _tensor_images(part, where)
    raise DataError(f"unsupported input {type(part).__name__}; expected a path, folder, glob "
                    "pattern, Catalog, PIL image or image tensor", where)


def _expand_path(text: str) -> list[str]:
    from vlml.data.images import IMAGE_SUFFIXES
    from vlml.data.untagged import find_images
    from vlml.types import Catalog

    path = Path(text)
    if path.is_dir():
        return [os.path.join(text, rel) for rel in find_images(path)]
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return [str(p) for p in Catalog.load(path).full_paths()]
        return [text]
    if any(c in text for c in GLOB_CHARS):
        return sorted(p for p in glob.glob(text, recursive=True)
                      if Path(p).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(p))
    raise DataError("no such file or folder (expected an image, a folder of images, a glob "
                    "pattern or a catalog file)", text)


def _tensor_images(t: Any, where: str) -> list[Any]:
    """A (3, H, W) or (B, 3, H, W) image tensor -> its (3, H, W) images, checked."""
    import torch

    if t.ndim == 4:
        out: list[Any] = []
        for k, image in enumerate(t):
            out.extend(_tensor_images(image, f"{where}[{k}]"))
        return out
    if t.ndim != 3 or t.shape[0] != 3:
        raise DataError(f"expected an image tensor of shape (3, H, W), got {tuple(t.shape)}",
                        where)
    if t.dtype == torch.uint8:
        return [t]
    if not t.is_floating_point():
        raise DataError(f"expected a uint8 or float image tensor, got {t.dtype}", where)
    lo, hi = float(t.min()), float(t.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise DataError(f"float image values must lie in [0, 1] (raw pixels, not a "
                        f"preprocessed/normalised tensor), got [{lo:.3g}, {hi:.3g}]", where)
    return [t]


def to_pil(item: Any) -> Any:
    """An in-memory image as an RGB PIL image (tensors: float [0, 1] scaled to 0-255 and
    rounded)."""
    from PIL import Image

    if _is_tensor(item):
        import torch

        t = item.detach().cpu()
        if t.dtype != torch.uint8:
            t = (t.float() * 255).round().clamp(0, 255).to(torch.uint8)
        return Image.fromarray(t.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return item.convert("RGB")
