"""The toy world of a grid (`world:`): the demo's scenes, generated once under `<out>/world`.

`${world}/pool.catalog.zip` is the fully labelled training pool (the recipes draw the single
positives or the labelled part from it, seeded by the config's `data.label_seed`), and
`${world}/test.catalog.zip` the clean test scenes. The world depends on `world.seed` and
`world.size` only, never on a cell's training seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from vlml.errors import ConfigError
from vlml.experiments.grid import World
from vlml.experiments.plan import WORLD
from vlml.fileio import write_json_atomic

POOL_FILE, TEST_FILE, STAMP = "pool.catalog.zip", "test.catalog.zip", "world.json"


def prepare_world(world: World, out: Path, progress: bool = True) -> Path:
    """Generate (or reuse) the world under `out/world` and save its two catalogs; returns the
    folder. Scenes are written once; a second call reads them back."""
    from vlml.demo import FULL, QUICK
    from vlml.demo.world import make_world

    folder = Path(out) / WORLD
    stamp = folder / STAMP
    if stamp.is_file():
        found = json.loads(stamp.read_text())
        if found != asdict(world):
            raise ConfigError(f"{folder} holds the toy world {found}, the grid asks for "
                              f"{asdict(world)}; use another --out")
        return folder
    size = QUICK if world.size == "quick" else FULL
    made = make_world(folder / "scenes", world.seed, size.n_pool, size.n_test, progress)
    made.pool.save(folder / POOL_FILE)
    made.test.save(folder / TEST_FILE)
    write_json_atomic(stamp, asdict(world))  # last: the world is complete
    return folder


__all__ = ["prepare_world", "POOL_FILE", "TEST_FILE"]
