"""PyTorch datasets over a `Catalog`: images from disk, or rows of cached feature arrays.

Augmentation randomness is a pure function of (seed, epoch, index), so data order and flips do
not depend on worker count and a resumed run sees exactly what an uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlml.errors import DataError
from vlml.types import Catalog

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flip_flags(seed: int, epoch: int, n: int, p: float = 0.5) -> np.ndarray:
    """(n,) bool: which images are horizontally flipped in `epoch` (p = 0 disables flips)."""
    if p <= 0:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed, epoch, 0xF11F]).random(n) < p


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """(n,) int64 permutation used as the data order of `epoch`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def image_transform(size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to size x size, to tensor, normalise (the SPML recipe's eval transform)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean, std)])


class ImageDataset(Dataset):
    """Item i -> {"x": (3, H, W) float image, "rows": i, "flipped": bool}.

    Call `set_epoch(e)` before each epoch; the flip of image i in epoch e is
    `flip_flags(seed, e, N)[i]`.
    """

    def __init__(self, catalog: Catalog, transform: Callable[[Image.Image], torch.Tensor],
                 flip_p: float = 0.0, seed: int = 0) -> None:
        self.paths = catalog.full_paths()
        self.transform, self.flip_p, self.seed = transform, flip_p, seed
        self.flips = np.zeros(len(self.paths), dtype=bool)

    def set_epoch(self, epoch: int) -> None:
        self.flips = flip_flags(self.seed, epoch, len(self.paths), self.flip_p)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image ({e})", str(path)) from e
        flipped = bool(self.flips[i])
        if flipped:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"x": self.transform(image), "rows": i, "flipped": flipped}
