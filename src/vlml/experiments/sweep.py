"""`run_sweep(grid, out)`: every cell of a grid x seeds, each in its own run folder.

Order of work (nothing runs until every cell is known to be valid):
1. plan: build and validate every cell's config (`plan.py`); a cell whose run folder holds
   another config's run stops the sweep here, naming the folders and the keys that differ;
2. record the plan in `<out>/sweep.json`; cells whose run folder already holds `results.json`
   for the same config are done and skipped (a re-run of a finished sweep does no work);
3. for the cells left: generate the grid's toy world (if any), check their weights and data,
   and extract every feature cache they read, once (`caches.py`);
4. run them with the executor (`executors.py`); each cell's end is recorded at once, a
   failing cell with its error, and the others go on. A killed sweep leaves each unfinished
   cell resumable: the next run finishes only those, with the numbers an uninterrupted sweep
   gives.

Only one sweep at a time may write into one folder (a lock file, `.sweep/lock`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlml import progress
from vlml.errors import ConfigError, VlmlError
from vlml.experiments import plan as planning
from vlml.experiments.executors import Outcome, Task, make_executor
from vlml.experiments.grid import Grid
from vlml.experiments.record import SweepRecord, now, test_map

STATE = ".sweep"


class SweepLockedError(VlmlError):
    """Another sweep is writing into the same folder."""


@dataclass
class SweepReport:
    """What a sweep did: cells planned, finished before, run now, failed (id -> error)."""

    out: Path
    cells: int
    finished_before: int
    ran: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    feature_seconds: float = 0.0
    wall_seconds: float = 0.0
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        done = self.finished_before + self.ran
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (f"sweep: {done} of {self.cells} cells done ({self.finished_before} finished "
                f"before, {self.ran} run now{failed}) in {self.wall_seconds:.0f} s; "
                f"record: {self.out / 'sweep.json'}")


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold `<out>/.sweep/lock` for the block; `SweepLockedError` if another sweep holds it."""
    path = Path(out) / STATE / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepLockedError(f"{out}: another `vlml sweep` is writing into this folder "
                                   "(its lock is .sweep/lock); wait for it or use another "
                                   "--out") from None
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _safe(cell_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "__", cell_id)


def _check_conflicts(planned: list[planning.PlannedCell]) -> None:
    """No run folder of the plan holds another config's run (before anything runs)."""
    from vlml.runs.folder import plan as folder_plan

    problems = []
    for p in planned:
        try:
            folder_plan(p.run_dir, p.cfg)
        except VlmlError as e:
            problems.append(f"cell {p.id}: {e}")
    if problems:
        more = f"\n... and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ConfigError("run folders of this sweep hold runs of another config (was the grid "
                          "changed?); use another --out, or delete those folders:\n"
                          + "\n".join(problems[:3]) + more)


def default_threads(grid: Grid, executor: str, jobs: int) -> int | None:
    """torch threads per cell: the grid's `threads`, else 1 when cells share the machine
    (`--jobs N > 1`), the SLURM `cpus` on a cluster, else torch's default."""
    if grid.threads is not None:
        return grid.threads
    if executor == "slurm":
        return int(grid.slurm["cpus"]) if "cpus" in grid.slurm else None
    return 1 if jobs > 1 else None


def run_sweep(grid: Grid, out: str | Path, *, seeds: list[int] | None = None,
              executor: str = "local", jobs: int = 1, overrides: list[str] | None = None,
              roots: dict[str, str] | None = None, only: dict[str, list[str]] | None = None,
              dry_run: bool = False) -> SweepReport:
    """Plan, validate and run the grid into `out` (module docstring). Progress lines go
    through `vlml.progress.summary`; returns the `SweepReport` (failed cells included)."""
    t0 = time.perf_counter()
    out = Path(out).absolute()
    planned = planning.plan(grid, out, seeds=seeds, overrides=overrides, roots=roots,
                            only=only)
    _check_conflicts(planned)
    pending = [p for p in planned if not p.finished()]
    report = SweepReport(out, len(planned), len(planned) - len(pending),
                         pending=[p.id for p in pending])
    if dry_run:
        report.wall_seconds = time.perf_counter() - t0
        return report
    threads = default_threads(grid, executor, jobs)
    ex = make_executor(executor, jobs, threads, out / STATE / "submitit",
                       grid.slurm, f"vlml-{grid.name}")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        record = SweepRecord.load(out)
        record.set_plan(grid, planned, {p.name: p.table.x for p in grid.parts})
        record.data["last"] = {"cells": len(planned), "finished_before": report.finished_before,
                               "executor": executor, "jobs": jobs,
                               "seeds": sorted({p.cell.seed for p in planned}),
                               "started": now()}
        record.save()
        progress.summary(f"sweep {grid.name}: {len(planned)} cells, "
                         f"{report.finished_before} finished before, {len(pending)} to run "
                         f"({executor}, {jobs} at once)")
        if pending:
            _run_pending(grid, out, pending, ex, threads, record, report)
        report.wall_seconds = time.perf_counter() - t0
        record.data["last"].update({"ran": report.ran, "failed": len(report.failed),
                                    "feature_seconds": report.feature_seconds,
                                    "wall_seconds": report.wall_seconds, "ended": now()})
        record.save()
    return report


def _run_pending(grid: Grid, out: Path, pending: list[planning.PlannedCell], ex: Any,
                 threads: int | None, record: SweepRecord, report: SweepReport) -> None:
    from vlml.experiments import caches, worker
    from vlml.experiments.readiness import check_ready

    if grid.world is not None:
        from vlml.experiments.world import prepare_world

        progress.summary(f"toy world (seed {grid.world.seed}, {grid.world.size}) -> "
                         f"{out / planning.WORLD}")
        prepare_world(grid.world, out, progress=progress.mode() != "none")
    needs = check_ready(pending, f"{grid.source}: ")
    specs = {p.id: worker.write_spec(out / STATE / "cells" / f"{_safe(p.id)}.json", p.id,
                                     p.recipe, p.cfg, threads) for p in pending}
    jobs = caches.plan_jobs(needs)
    if jobs:
        progress.summary(f"features: {len(jobs)} cache(s) for {len(pending)} cells, extracted "
                         "once before any cell")
    feats = ex.prefetch(jobs, list(specs.values()), progress.summary)
    report.feature_seconds = float(feats.get("seconds", 0.0))
    by_id = {p.id: p for p in pending}
    tasks = [Task(p.id, specs[p.id], out / STATE / "logs" / f"{_safe(p.id)}.log")
             for p in pending]
    t_run = time.perf_counter()
    finished = [0]

    def started(task: Task, job_id: str | None) -> None:
        record.update(task.id, status="running", job_id=job_id, error=None,
                      log=task.log.relative_to(out).as_posix())

    def done(task: Task, outcome: Outcome) -> None:
        finished[0] += 1
        k, n = finished[0], len(tasks)
        value = test_map(by_id[task.id].run_dir) if outcome.ok else None
        record.update(task.id, status="done" if outcome.ok else "failed", error=outcome.error,
                      test_map=value, wall_seconds=round(outcome.wall_seconds, 2))
        if outcome.ok:
            report.ran += 1
            what = "no test mAP" if value is None else f"test mAP {value:.2f}"
        else:
            report.failed[task.id] = outcome.error or "failed"
            what = f"FAILED: {outcome.error}"
        elapsed = time.perf_counter() - t_run
        eta = f", ETA {elapsed / k * (n - k):.0f} s" if k < n else ""
        progress.summary(f"[{k}/{n}] {task.id}: {what} ({outcome.wall_seconds:.1f} s{eta})")

    try:
        ex.run(tasks, started, done)
    except BaseException:
        for entry in record.cells.values():
            if entry.get("status") == "running":
                entry["status"] = "interrupted"
        record.save()
        raise


__all__ = ["run_sweep", "SweepReport", "SweepLockedError", "default_threads"]
