"""Runs: claim a folder, run a recipe's lifecycle, record what ran, load a finished run back.

- `run(cfg)`: the lifecycle every recipe shares (`lifecycle.py`).
- `claim(out_dir, cfg)`: a folder belongs to one config (`folder.py`).
- `load(path)`: a finished run with its model ready for inference (`load.py`).
"""

from vlml.recipes.base import Fitted, Inference, encoder_record
from vlml.runs.folder import RunFolderError, claim
from vlml.runs.lifecycle import RunResult, evaluate_scores, run
from vlml.runs.load import Run, evaluate_run, load

__all__ = ["run", "claim", "load", "evaluate_run", "evaluate_scores", "encoder_record", "Fitted",
           "RunResult", "Run", "Inference", "RunFolderError"]
