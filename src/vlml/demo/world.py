"""The demo's toy world: generated train and test scenes for one `--seed`.

World seed `s` uses toy seeds `3s+1` (train pool) and `3s+3` (test), so seed 0 is the default
toy `train`/`test` splits, and no seed reaches the scenes the tiny CLIP was pre-trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlml.data import toy
from vlml.errors import ConfigError
from vlml.types import Catalog


@dataclass(frozen=True)
class ToyWorld:
    """Fully labelled toy catalogs: `pool` (train + val images) and `test`."""

    seed: int
    pool: Catalog
    test: Catalog


def world_seeds(seed: int) -> tuple[int, int]:
    """(pool, test) toy seeds of demo world `seed`."""
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    seeds = (3 * seed + 1, 3 * seed + 3)
    if max(seeds) >= toy.PRETRAIN_SEED:
        raise ConfigError(f"--seed {seed} reaches the tiny CLIP's pre-training scenes (toy seed "
                          f"{toy.PRETRAIN_SEED}); use a seed below {(toy.PRETRAIN_SEED - 3) // 3}")
    return seeds


def make_world(root: Path, seed: int, n_pool: int, n_test: int, progress: bool = True
               ) -> ToyWorld:
    """Generate (or reuse, if already on disk with these settings) the world under `root`."""
    pool_seed, test_seed = world_seeds(seed)
    pool = toy.read_toy(root, "train", n_images=n_pool, seed=pool_seed, progress=progress)
    test = toy.read_toy(root, "test", n_images=n_test, seed=test_seed, progress=progress)
    return ToyWorld(seed, pool, test)
