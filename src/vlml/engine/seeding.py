"""Random draws of a run come from its seed, whatever ran before in the process.

Model construction draws from torch's global generator (layer init). `seeded(seed)` gives it a
known state inside the block and restores the previous state after it, so a model is the same
whether the feature cache was cold (extraction may draw) or warm, and nothing after the block
sees a changed generator.

`epoch_batches(seed, epoch, n, batch_size)` is the training sampler: a data order that depends
only on (seed, epoch), cut into global batches, each process taking its part of every global
batch under DDP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generators (CPU and every CUDA device) seeded with `seed` inside."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int,
                  rank: int | None = None, world: int | None = None) -> list[np.ndarray]:
    """This process's batches of `epoch`: the seeded sampler of training under DDP.

    The order is `epoch_order(seed, epoch, n)`, a pure function of (seed, epoch) (not of the
    rank, the world size or anything run before); it is cut into global batches of
    `batch_size` (the configured batch, what one process takes), and rank r takes the r-th
    contiguous 1/world of each (`vlml.distributed.batch_parts`: a short last batch drops its
    last len % world rows). In one process: the global batches themselves. Returns (b,) int64
    row arrays, one per step, for a DataLoader's `batch_sampler` or direct reads.
    """
    from vlml import distributed
    from vlml.data.torch_dataset import epoch_order

    order = epoch_order(seed, epoch, n).astype(np.int64)
    return distributed.batch_parts(order, batch_size, rank, world)
