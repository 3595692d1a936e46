"""Model inputs for the SPML recipe: cached feature rows or images, as dict batches.

A batch is {"x": (B, ...) float tensor, "rows": (B,) int64 rows of the catalog,
"flipped": (B,) bool}. Train order and flips are pure functions of (seed, epoch), so a resumed
run replays an epoch exactly.

Under DDP (`vlml.distributed`) `batch_size` stays the global batch: `train_batches(e)` yields
this rank's contiguous 1/W part of each global batch of the (seed, epoch) order
(`vlml.engine.seeding.epoch_batches`; a short last batch drops its last len % W rows), so the
ranks' batches of a step are together one process's batch. `eval_batches(shard=True)` yields
this rank's contiguous shard of whole eval batches, for `predict(..., gather=True)`; without
`shard` every row (what a caller outside the training loop needs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vlml import distributed
from vlml.data.torch_dataset import ImageDataset, flip_flags, image_transform
from vlml.engine.seeding import epoch_batches
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
        flips = flip_flags(self.seed, epoch, n, 0.5 if self.flip is not None else 0.0)
        for part in epoch_batches(self.seed, epoch, n, self.batch_size):
            idx = np.sort(part)  # sorted: faster memmap reads
            f = flips[idx]
            x = np.asarray(self.plain[idx], dtype=np.float32)
            if f.any():
                x[f] = self.flip[idx[f]]
            yield {"x": torch.from_numpy(x), "rows": torch.from_numpy(idx),
                   "flipped": torch.from_numpy(f)}

    def eval_batches(self, shard: bool = False) -> Iterator[dict[str, Any]]:
        n = len(self.plain)
        rows = distributed.shard(n, self.eval_batch_size) if shard else range(n)
        for start in range(rows.start, rows.stop, self.eval_batch_size):
            idx = np.arange(start, min(start + self.eval_batch_size, rows.stop))
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

    def _loader(self, dataset: ImageDataset, batch_sampler: Any) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.num_workers,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())

    def train_batches(self, epoch: int) -> DataLoader:
        self.train_set.set_epoch(epoch)
        parts = epoch_batches(self.seed, epoch, len(self.train_set), self.batch_size)
        return self._loader(self.train_set, [p.tolist() for p in parts])

    def eval_batches(self, shard: bool = False) -> DataLoader:
        n = len(self.eval_set)
        rows = distributed.shard(n, self.eval_batch_size) if shard else range(n)
        bs = self.eval_batch_size
        return self._loader(self.eval_set, [list(range(s, min(s + bs, rows.stop)))
                                            for s in range(rows.start, rows.stop, bs)])
