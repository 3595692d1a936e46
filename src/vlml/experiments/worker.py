"""What runs one cell, wherever it runs: in the sweep's process, in a child process
(`python -m vlml.experiments.worker SPEC.json`, or a serving child that runs the cells it is
handed one after another, `--serve`), or as a submitit job on SLURM.

A cell spec is a JSON file (`<out>/.sweep/cells/<id>.json`): the cell id, its recipe, its
resolved config and the torch thread count. `run_cell(spec_path)` runs it with
`vlml.runs.run` (which claims the run folder and resumes a killed run) and returns
`{"test_map", "wall_seconds"}`; an error propagates. `prefetch(spec_paths)` extracts the
feature caches of a list of cells (the sweep's first SLURM job).

A child process started by a local sweep stops itself when that sweep dies (it watches its
parent), so a killed sweep leaves no orphan writing into a run folder.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from vlml.fileio import write_json_atomic

ERROR_PREFIX = "vlml-sweep-error: "


def write_spec(path: Path, cell_id: str, recipe: str, cfg: Any, threads: int | None) -> Path:
    """Write the spec of one cell (atomically); returns its path."""
    from vlml import config

    write_json_atomic(path, {"id": cell_id, "recipe": recipe, "threads": threads,
                             "config": config._plain(config.to_dict(cfg))})
    return path


def load_spec(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(the spec, its config as the recipe's `Config`)."""
    from vlml import config, recipes

    spec = json.loads(Path(path).read_text())
    cfg = config.build(recipes.get(spec["recipe"]).Config, spec["config"])
    return spec, cfg


class _Threads:
    """torch's intra-op thread count set for a block (unchanged when `n` is None)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.before = n, None

    def __enter__(self) -> None:
        if self.n is not None:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


def run_cell(spec_path: str | Path) -> dict[str, Any]:
    """Run (or resume) one cell; `{"test_map": float | None, "wall_seconds": float}`."""
    from vlml import runs

    t0 = time.perf_counter()
    spec, cfg = load_spec(spec_path)
    with _Threads(spec.get("threads")):
        result = runs.run(cfg)
    return {"test_map": result.test_map, "wall_seconds": time.perf_counter() - t0}


def prefetch(spec_paths: list[str], progress: bool = False) -> dict[str, Any]:
    """Extract every feature cache the given cells read (`vlml.experiments.caches`)."""
    from vlml.experiments import caches
    from vlml.experiments.readiness import load_splits_once

    needs = []
    splits = load_splits_once()
    for path in spec_paths:
        _, cfg = load_spec(path)
        needs += caches.feature_needs(cfg, splits(cfg))
    return caches.extract(caches.plan_jobs(needs), progress=progress)


def run_logged(spec_path: str | Path, log_path: str | Path) -> dict[str, Any]:
    """Run one cell with its output (Python's stdout and stderr) appended to `log_path`;
    `{"ok", "wall_seconds", "error"}`, never raising for the cell's own errors."""
    import contextlib

    t0 = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            run_cell(spec_path)
            return {"ok": True, "wall_seconds": time.perf_counter() - t0, "error": None}
        except Exception as e:  # recorded by the sweep, which goes on
            traceback.print_exc()
            message = " ".join(f"{type(e).__name__}: {e}".split())
            return {"ok": False, "wall_seconds": time.perf_counter() - t0, "error": message}


def serve(stdin: Any = None, stdout: Any = None) -> int:
    """Run cells handed over one per line as `SPEC_PATH<TAB>LOG_PATH` on stdin, answering
    each with one JSON line (`run_logged`) on stdout; stop at the end of stdin. Imports are
    paid once per process instead of once per cell."""
    if stdout is None:  # answers on a private copy of fd 1; anything else printed goes to stderr
        answers = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        stdout = answers
    stdin = stdin or sys.stdin
    for line in stdin:
        if not line.strip():
            continue
        spec_path, _, log_path = line.rstrip("\n").partition("\t")
        stdout.write(json.dumps(run_logged(spec_path, log_path)) + "\n")
        stdout.flush()
    return 0


def _watch_parent(parent: int) -> None:
    """Exit at once when the process that started this one is gone."""
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(143)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """`python -m vlml.experiments.worker SPEC.json [--parent PID]`: run one cell; on an error
    the last line of stderr is `vlml-sweep-error: <type>: <message>` and the exit status 1.
    `--serve [--parent PID]`: run cells handed over on stdin (`serve`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--parent" in argv:
        i = argv.index("--parent")
        _watch_parent(int(argv[i + 1]))
        del argv[i:i + 2]
    if argv == ["--serve"]:
        return serve()
    try:
        out = run_cell(argv[0])
    except BaseException as e:  # reported to the sweep, which goes on
        traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{ERROR_PREFIX}{type(e).__name__}: {message}", file=sys.stderr, flush=True)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
