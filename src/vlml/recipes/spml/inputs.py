"""Model inputs for the SPML recipe: cached feature rows or images, as dict batches.

A batch is {"x": (B, ...) float tensor, "rows": (B,) int64 rows of the catalog,
"flipped": (B,) bool}. Train order and flips are pure functions of (seed, epoch), so a resumed
run replays an epoch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vlml.data.torch_dataset import ImageDataset, epoch_order, flip_flags, image_transform
from vlml.types import Catalog


class FeatureInputs:
    """Rows of cached features: `plain` (N, D) and optional `flip` (N, D), e.g. memmaps."""

    def __init__(self, plain: np.ndarray, flip: np.ndarray | None, batch_size: int,
                 eval_batch_size: int, seed: int = 0) -> None:
        self.plain, self.flip = plain, flip
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def __len__(self) -> int:
        return len(self.plain)

    def train_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        n = len(self.plain)
        order = epoch_order(self.seed, epoch, n)
        flips = flip_flags(self.seed, epoch, n, 0.5 if self.flip is not None else 0.0)
        for start in range(0, n, self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])  # sorted: faster memmap reads
            f = flips[idx]
            x = np.asarray(self.plain[idx], dtype=np.float32)
            if f.any():
                x[f] = self.flip[idx[f]]
            yield {"x": torch.from_numpy(x), "rows": torch.from_numpy(idx),
                   "flipped": torch.from_numpy(f)}

    def eval_batches(self) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self.plain), self.eval_batch_size):
            idx = np.arange(start, min(start + self.eval_batch_size, len(self.plain)))
            yield {"x": torch.from_numpy(np.asarray(self.plain[idx], dtype=np.float32)),
                   "rows": torch.from_numpy(idx),
                   "flipped": torch.zeros(len(idx), dtype=torch.bool)}


class ImageInputs:
    """Images of a catalog, resized to `image_size`, ImageNet-normalised, flipped at random."""

    def __init__(self, catalog: Catalog, image_size: int, batch_size: int,
                 eval_batch_size: int, num_workers: int = 0, seed: int = 0,
                 flip_p: float = 0.5) -> None:
        transform = image_transform(image_size)
        self.train_set = ImageDataset(catalog, transform, flip_p=flip_p, seed=seed)
        self.eval_set = ImageDataset(catalog, transform)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed

    def __len__(self) -> int:
        return len(self.eval_set)

    def _loader(self, dataset: ImageDataset, sampler: Any, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=self.num_workers,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())

    def train_batches(self, epoch: int) -> DataLoader:
        self.train_set.set_epoch(epoch)
        order = epoch_order(self.seed, epoch, len(self.train_set)).tolist()
        return self._loader(self.train_set, order, self.batch_size)

    def eval_batches(self) -> DataLoader:
        return self._loader(self.eval_set, range(len(self.eval_set)), self.eval_batch_size)
