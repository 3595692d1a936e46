"""`<out>/sweep.json`: what a sweep planned and how each cell ended; `vlml table` reads it.

    {"format": 1, "grid": {"name", "title", "source", "parts": {part: {"title", "rows",
     "columns", "labels", "published", "plot", "x", "axes": {axis: [value, ...]}}}},
     "cells": {cell id: {"part", "values": {axis: value}, "seed", "run_dir" (relative to
               <out>), "x" (the table's x key in the cell's config, e.g. data.p), "status":
               "done" | "failed" | "pending" | "running" | "interrupted", "error", "test_map",
               "wall_seconds", "job_id", "log"}},
     "last": {"cells", "finished_before", "ran", "failed", "executor", "jobs", "seeds",
              "feature_seconds", "wall_seconds", "started", "ended"}}

Only the sweep's own process writes it (atomically), after every cell. Cells of earlier sweeps
into the same folder (other seeds, `--only` subsets) are kept, so a grid can be filled in
several passes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlml.errors import DataError
from vlml.experiments.grid import Grid
from vlml.fileio import write_json_atomic

FILE = "sweep.json"
FORMAT = 1
STATUSES = ("done", "failed", "pending", "running", "interrupted")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def grid_meta(grid: Grid) -> dict[str, Any]:
    """What `vlml table` needs of the grid: titles, axes (value order) and table specs."""
    parts = {}
    for part in grid.parts:
        parts[part.name] = {**asdict(part.table), "title": part.title,
                            "axes": {a.name: a.names() for a in part.axes}}
    return {"name": grid.name, "title": grid.title, "source": grid.source, "parts": parts}


def _lookup(cfg_dict: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg_dict
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class SweepRecord:
    """The in-memory `sweep.json` of one output folder."""

    def __init__(self, out: Path, data: dict[str, Any] | None = None) -> None:
        self.out = Path(out)
        self.data = data or {"format": FORMAT, "grid": None, "cells": {}, "last": {}}

    @classmethod
    def load(cls, out: str | Path, required: bool = False) -> SweepRecord:
        """The folder's record (a fresh one when there is none, unless `required`)."""
        out = Path(out)
        path = out / FILE
        if not path.is_file():
            if required:
                raise DataError(f"no {FILE}: not a sweep folder (run `vlml sweep GRID --out "
                                f"{out}` first)", str(out))
            return cls(out)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"unreadable sweep record ({e})", str(path)) from e
        if data.get("format") != FORMAT:
            raise DataError(f"expected format {FORMAT}, got {data.get('format')!r}", str(path))
        return cls(out, data)

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        return self.data["cells"]

    def set_plan(self, grid: Grid, planned: list[Any], x_keys: dict[str, str]) -> None:
        """Record the grid and every planned cell (finished ones as done, others pending);
        cells already recorded from earlier sweeps stay."""
        from vlml import config

        self.data["grid"] = grid_meta(grid)
        for p in planned:
            cfg = config._plain(config.to_dict(p.cfg))
            entry = self.cells.get(p.id, {})
            finished = p.finished()
            entry.update({
                "part": p.cell.part, "values": dict(p.cell.values), "seed": p.cell.seed,
                "run_dir": p.run_dir.relative_to(self.out).as_posix()
                if p.run_dir.is_relative_to(self.out) else str(p.run_dir),
                "x": _lookup(cfg, x_keys.get(p.cell.part, "data.p")),
                "status": "done" if finished else "pending",
            })
            if finished:
                entry["error"] = None
                entry["test_map"] = test_map(p.run_dir)
            self.cells[p.id] = entry

    def update(self, cell_id: str, **fields: Any) -> None:
        self.cells[cell_id].update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        write_json_atomic(self.out / FILE, self.data)


def test_map(run_dir: Path) -> float | None:
    """The run's test mAP from its `results.json` (None when absent)."""
    path = Path(run_dir) / "results.json"
    try:
        value = json.loads(path.read_text()).get("test_map")
    except (OSError, json.JSONDecodeError):
        return None
    return None if value is None else float(value)


__all__ = ["SweepRecord", "FILE", "STATUSES", "grid_meta", "test_map"]
