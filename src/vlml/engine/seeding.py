"""Random draws of a run come from its seed, whatever ran before in the process.

Model construction draws from torch's global generator (layer init). `seeded(seed)` gives it a
known state inside the block and restores the previous state after it, so a model is the same
whether the feature cache was cold (extraction may draw) or warm, and nothing after the block
sees a changed generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generators (CPU and every CUDA device) seeded with `seed` inside."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
