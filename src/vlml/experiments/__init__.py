"""A paper's table in one command: grids of runs over seeds (`vlml sweep`), and their tables
with mean +/- std and the published numbers (`vlml table`).

- `grid.py`: grid files (base config, axes, seeds, table layout, SLURM resources); shipped
  grids in `vlml/grids/` (`list_shipped()`); torch-free.
- `plan.py`: every cell's config built and validated before anything runs.
- `world.py`: the demo's toy world, generated once for a grid that asks for it.
- `readiness.py`, `caches.py`: weights and data checked; every feature cache the cells read
  extracted once, before any cell starts.
- `executors.py`, `worker.py`, `slurm.py`: where cells run (this process, N processes,
  submitit/SLURM).
- `record.py`: `<out>/sweep.json`; `sweep.py`: `run_sweep`, the whole order of work.
- `table.py`, `plots.py`, `published.py`: tables (Markdown, LaTeX, CSV), plots, and the
  published numbers of methods.md section 6 (`vlml/published/`).

>>> from vlml import experiments
>>> grid = experiments.load_grid("toy")
>>> [p.name for p in grid.parts]
['spml', 'ssmll']
>>> report = experiments.run_sweep(grid, "sweeps/toy", jobs=2)        # doctest: +SKIP
>>> print(experiments.render(experiments.build_tables("sweeps/toy")[0]))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from vlml.experiments.grid import Grid, list_shipped
from vlml.experiments.grid import load as load_grid

_LAZY = {
    "run_sweep": "sweep", "SweepReport": "sweep", "plan": "plan", "PlannedCell": "plan",
    "build_tables": "table", "render": "table", "Table": "table", "plot": "plots",
    "load_published": ("published", "load"), "SweepRecord": "record",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        target = _LAZY[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        return getattr(importlib.import_module(f"vlml.experiments.{module}"), attr)
    raise AttributeError(f"module 'vlml.experiments' has no attribute {name!r}")


__all__ = ["Grid", "load_grid", "list_shipped", *_LAZY]
