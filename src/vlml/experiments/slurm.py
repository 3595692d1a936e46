"""The callable a submitit job runs for one cell (imports submitit: only the submitit
executors import this module).

`CellJob` is `submitit.helpers.Checkpointable`: when SLURM stops a job at its time limit (or
preempts it), submitit requeues the same call, and `vlml.runs.run` resumes the cell from its
last checkpoint in the same run folder.
"""

from __future__ import annotations

from typing import Any

import submitit

from vlml.experiments import worker


class CellJob(submitit.helpers.Checkpointable):
    """`CellJob()(spec_path)` runs one cell (`worker.run_cell`)."""

    def __call__(self, spec_path: str) -> dict[str, Any]:
        return worker.run_cell(spec_path)


__all__ = ["CellJob"]
