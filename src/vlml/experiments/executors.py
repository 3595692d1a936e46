"""Where a sweep's cells run: this process, child processes on this machine, or submitit jobs.

Every executor runs `vlml.experiments.worker.run_cell(spec)` per cell and reports each cell's
`Outcome` to the sweep as it ends, so a failing cell is recorded and the others go on.

- `InProcess` (`--executor local --jobs 1`): cells one after another in the sweep's process,
  their output into `<out>/.sweep/logs/<cell>.log`.
- `Processes` (`--executor local --jobs N`): N cells at once in N child Python processes
  (`python -m vlml.experiments.worker --serve`), each running the cells it is handed one after
  another (torch is imported once per child, not once per cell: that costs seconds), torch (and
  OpenMP) limited to the grid's `threads` (default 1) per child; a child that dies fails only
  its cell, and a child stops itself if the sweep dies.
- `Submitit` (`--executor slurm`): each cell a SLURM job through submitit (an array, at most
  `slurm.array_parallelism` at once), resources from the grid's `slurm:` section; a job that
  reaches its time limit is requeued and resumes from its checkpoint. `submitit-local` runs the
  same code path with submitit's `LocalExecutor` on this machine (N jobs at once).

Feature caches are extracted before any cell (`prefetch`): in this process for the local
executors, as one job of its own for submitit ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml.errors import ConfigError
from vlml.experiments import caches, worker

EXECUTORS = ("local", "slurm", "submitit-local")
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Task:
    """One cell to run: its id, spec file and log file."""

    id: str
    spec: Path
    log: Path


@dataclass(frozen=True)
class Outcome:
    """How a cell ended: `ok`, its wall time, the error (one line) and, on SLURM, the job."""

    ok: bool
    wall_seconds: float
    error: str | None = None
    job_id: str | None = None


Started = Callable[[Task, str | None], None]
Done = Callable[[Task, Outcome], None]


def one_line(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class InProcess:
    """Cells one at a time in this process (`--jobs 1`)."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def prefetch(self, jobs: list[caches.Job], specs: list[Path],
                 report: Callable[[str], None]) -> dict[str, Any]:
        return caches.extract(jobs, progress=False, report=report)

    def run(self, tasks: list[Task], started: Started, done: Done) -> None:
        for task in tasks:
            started(task, None)
            out = worker.run_logged(task.spec, task.log)
            done(task, Outcome(out["ok"], out["wall_seconds"],
                               None if out["ok"] else one_line(out["error"])))


class _Server:
    """One serving child process (`python -m vlml.experiments.worker --serve`)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(log, "a")  # closed in `close`
        self.log = log
        cmd = [sys.executable, "-m", "vlml.experiments.worker", "--serve", "--parent",
               str(os.getpid())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_file, env=env, text=True, bufsize=1)
        self.task: Task | None = None
        self.t0 = 0.0

    def hand(self, task: Task) -> None:
        self.task, self.t0 = task, time.perf_counter()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{task.spec}\t{task.log}\n")
        self.proc.stdin.flush()

    def close(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if kill and self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


class Processes:
    """N cells at once (`--jobs N`), in N child processes that each run the cells they are
    handed one after another (the imports are paid once per process, not per cell); a child
    that dies fails its cell only, and a new one takes its place."""

    name = "local"

    def __init__(self, jobs: int, threads: int | None = 1, logs: Path | None = None) -> None:
        self.jobs, self.threads = jobs, threads
        self.logs = logs

    def prefetch(self, jobs: list[caches.Job], specs: list[Path],
                 report: Callable[[str], None]) -> dict[str, Any]:
        return caches.extract(jobs, progress=False, report=report)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(self.threads)
        return env

    def run(self, tasks: list[Task], started: Started, done: Done) -> None:
        import selectors

        queue = list(tasks)
        if not queue:
            return
        logs = self.logs or queue[0].log.parent
        servers: list[_Server] = []
        sel = selectors.DefaultSelector()
        n_started = 0

        def spawn() -> _Server:
            nonlocal n_started
            n_started += 1
            server = _Server(self._env(), logs / f"worker-{n_started}.log")
            assert server.proc.stdout is not None
            sel.register(server.proc.stdout, selectors.EVENT_READ, server)
            servers.append(server)
            return server

        def hand(server: _Server) -> None:
            task = queue.pop(0)
            server.hand(task)
            started(task, str(server.proc.pid))

        try:
            for _ in range(min(self.jobs, len(queue))):
                hand(spawn())
            while any(s.task is not None for s in servers):
                for key, _ in sel.select(timeout=1.0):
                    server: _Server = key.data
                    line = server.proc.stdout.readline() if server.proc.stdout else ""
                    task = server.task
                    if task is None:
                        continue
                    server.task = None
                    if line:
                        out = json.loads(line)
                        done(task, Outcome(out["ok"], out["wall_seconds"],
                                           None if out["ok"] else one_line(out["error"])))
                    else:  # the child died with the cell
                        sel.unregister(key.fileobj)
                        server.close()
                        servers.remove(server)
                        rc = server.proc.returncode
                        how = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
                        done(task, Outcome(False, time.perf_counter() - server.t0,
                                           f"the worker process died ({how}; see "
                                           f"{task.log} and {server.log})"))
                        if queue:
                            server = spawn()
                    if queue:
                        hand(server)
        finally:
            interrupted = bool(queue) or any(s.task is not None for s in servers)
            for server in servers:
                server.close(kill=interrupted)
            sel.close()


# ---- submitit --------------------------------------------------------------------------------
def _minutes(value: Any) -> int:
    """SLURM time ("90", "HH:MM:SS", "MM:SS", "D-HH[:MM[:SS]]", or minutes) -> minutes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(1, int(value))
    text = str(value).strip()
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if "-" in str(value):
        h, m, s = (parts + [0, 0, 0])[:3]
    elif len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = 0, parts[0], 0
    return max(1, days * 1440 + h * 60 + m + (1 if s else 0))


def _gigabytes(value: Any) -> float:
    """SLURM memory ("64G", "64GB", "512M", "1T", or a number of GB) -> GB."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)B?\s*", str(value), flags=re.I)
    if not m:
        raise ConfigError(f"slurm.mem: expected e.g. 64G, 512M or a number of GB, got {value!r}")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1.0}
    return float(m.group(1)) * scale[m.group(2).upper()]


def submitit_parameters(slurm: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """The grid's `slurm:` section as submitit `update_parameters` keywords.

    partition -> slurm_partition, gpus -> gpus_per_node, cpus -> cpus_per_task, time ->
    timeout_min, mem -> mem_gb, account/qos/constraint -> slurm_*, array_parallelism ->
    slurm_array_parallelism, setup (shell lines run first in each job) -> slurm_setup,
    additional (any other sbatch option) -> slurm_additional_parameters. The local kind keeps
    the keys submitit's LocalExecutor knows (gpus, cpus, time, mem)."""
    out: dict[str, Any] = {"name": name}
    if "gpus" in slurm:
        out["gpus_per_node"] = int(slurm["gpus"])
    if "cpus" in slurm:
        out["cpus_per_task"] = int(slurm["cpus"])
    if "time" in slurm:
        out["timeout_min"] = _minutes(slurm["time"])
    if "mem" in slurm:
        out["mem_gb"] = _gigabytes(slurm["mem"])
    if kind != "slurm":
        return out
    for key in ("partition", "account", "qos", "constraint", "array_parallelism", "setup"):
        if key in slurm:
            out[f"slurm_{key}"] = slurm[key]
    if "additional" in slurm:
        out["slurm_additional_parameters"] = dict(slurm["additional"])
    return out


class Submitit:
    """Cells as submitit jobs: `kind` "slurm" (a cluster) or "local" (submitit's
    LocalExecutor on this machine, at most `jobs` at once)."""

    def __init__(self, kind: str, folder: Path, slurm: dict[str, Any], jobs: int = 1,
                 name: str = "vlml-sweep") -> None:
        self.kind, self.folder, self.slurm, self.jobs = kind, Path(folder), slurm, jobs
        self.name = "slurm" if kind == "slurm" else "submitit-local"
        self.params = submitit_parameters(slurm, kind, name)

    def _executor(self, name: str) -> Any:
        try:
            import submitit
        except ImportError:
            raise ConfigError(f"--executor {self.name} needs submitit: pip install 'vlml[slurm]'"
                              ) from None
        if self.kind == "slurm":
            ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
        else:
            ex = submitit.LocalExecutor(folder=self.folder)
        ex.update_parameters(**{**self.params, "name": name})
        return ex

    def prefetch(self, jobs: list[caches.Job], specs: list[Path],
                 report: Callable[[str], None]) -> dict[str, Any]:
        if not jobs:
            return {"jobs": 0, "seconds": 0.0}
        report(f"features: {len(jobs)} cache(s), one {self.name} job")
        job = self._executor("vlml-features").submit(worker.prefetch,
                                                     [str(s) for s in specs])
        return job.result()

    def run(self, tasks: list[Task], started: Started, done: Done) -> None:
        from vlml.experiments.slurm import CellJob

        ex = self._executor(self.params["name"])
        window = len(tasks) if self.kind == "slurm" else max(1, self.jobs)
        queue = list(tasks)
        running: dict[Any, tuple[Task, float]] = {}
        while queue or running:
            batch = []
            while queue and len(running) + len(batch) < window:
                batch.append(queue.pop(0))
            if batch:
                if self.kind == "slurm":
                    with ex.batch():
                        jobs = [ex.submit(CellJob(), str(t.spec)) for t in batch]
                else:
                    jobs = [ex.submit(CellJob(), str(t.spec)) for t in batch]
                for task, job in zip(batch, jobs, strict=True):
                    running[job] = (task, time.perf_counter())
                    started(task, str(job.job_id))
            for job in [j for j in running if j.done()]:
                task, t0 = running.pop(job)
                try:
                    job.result()
                    outcome = Outcome(True, time.perf_counter() - t0, job_id=str(job.job_id))
                except Exception as e:  # submitit's FailedJobError holds the traceback
                    lines = [ln for ln in str(e).splitlines() if ln.strip()]
                    outcome = Outcome(False, time.perf_counter() - t0,
                                      one_line(lines[-1] if lines else type(e).__name__),
                                      str(job.job_id))
                done(task, outcome)
            time.sleep(POLL_SECONDS if self.kind != "slurm" else 10 * POLL_SECONDS)


def make_executor(kind: str, jobs: int, threads: int | None, folder: Path,
                  slurm: dict[str, Any], name: str) -> Any:
    """The executor for `--executor kind --jobs N`."""
    if kind not in EXECUTORS:
        from vlml.experiments.grid import unknown_message

        raise ConfigError(f"--executor: {unknown_message('executor', kind, list(EXECUTORS))}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if kind == "local":
        return InProcess(threads) if jobs == 1 else Processes(jobs, threads)
    return Submitit("slurm" if kind == "slurm" else "local", folder, slurm, jobs, name)


__all__ = ["EXECUTORS", "Task", "Outcome", "InProcess", "Processes", "Submitit",
           "make_executor", "submitit_parameters"]
