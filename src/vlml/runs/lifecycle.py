"""The run lifecycle every recipe goes through, once:

validate the config -> load the splits -> claim the run folder (saving the resolved config) ->
resolve the device -> fit (the recipe's part) -> score the test split -> write `test_scores.npy`,
`run.json` (what rebuilds the model) and `results.json`.

What a recipe module provides is said in `vlml.recipes.base`. Library code returns values;
only the CLI prints.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlml import __version__, metrics, recipes
from vlml.device import resolve_device
from vlml.engine.predict import predict
from vlml.fileio import save_npy_atomic, write_json_atomic
from vlml.recipes.base import Fitted, evaluation_labels
from vlml.runs.folder import claim
from vlml.types import Catalog

RECORD_FILE, RESULTS_FILE, TEST_SCORES_FILE = "run.json", "results.json", "test_scores.npy"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class RunResult:
    """What `run` returns. `test_map` is None without a test catalog, `val_map` None when the
    model was not selected on clean validation labels; `selection` says how it was selected
    (`vlml.recipes.selection`: rule, metric, description, value)."""

    run_dir: Path
    test_map: float | None
    val_map: float | None
    best_epoch: int
    history: list[dict[str, Any]]
    phase: str | None = None
    selection: dict[str, Any] | None = None


def evaluate_scores(scores: np.ndarray, catalog: Catalog) -> dict[str, Any]:
    """Test mAP (percent), per-class AP, and CF1/OF1 at threshold 0.5 of sigmoid scores."""
    truth = evaluation_labels(catalog)
    report = metrics.map_report(scores, truth, class_names=list(catalog.class_names))
    at_half = metrics.threshold_metrics(scores, truth, threshold=0.5)
    return {"test_map": metrics.finite_or_none(report.map),
            "test_n_skipped_classes": report.n_skipped,
            "test_per_class_ap": dict(zip(catalog.class_names,
                                          map(float, report.per_class_ap), strict=True)),
            "test_at_0.5": {k: float(v) for k, v in at_half.items()}}


def _record(cfg: Any, class_names: list[str], fitted: Fitted) -> dict[str, Any]:
    return {"format": RECORD_FORMAT, "vlml_version": __version__,
            "torch_version": torch.__version__, "python": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "recipe": cfg.recipe, "class_names": class_names, "encoder": fitted.encoder,
            "model": fitted.model_spec, "weights": fitted.weights,
            "effective": fitted.effective}


def run(cfg: Any, *, new: bool = False, overwrite: bool = False) -> RunResult:
    """Run the recipe named by `cfg.recipe` end to end; resumable (the same config in the same
    folder continues the run). `new`/`overwrite`: see `vlml.runs.folder.claim`."""
    t0 = time.perf_counter()
    recipe = recipes.get(cfg.recipe)
    cfg = recipe.validate(cfg)
    if hasattr(recipe, "preflight"):
        recipe.preflight(cfg)  # the weights it needs can be had, before any work
    splits = recipe.load_splits(cfg.data)  # before the folder exists: bad data leaves nothing
    run_dir, cfg = claim(cfg.out_dir, cfg, new=new, overwrite=overwrite)
    device = resolve_device(cfg.device)
    fitted = recipe.fit(cfg, splits, run_dir, device)
    test: dict[str, Any] = {"test_map": None, "n_test": 0}
    if splits.test is not None and fitted.test_batches is not None:
        probs = predict(fitted.model, fitted.test_batches(), device).probs
        save_npy_atomic(run_dir / TEST_SCORES_FILE, probs)
        test = {**evaluate_scores(probs, splits.test), "n_test": splits.test.n_images}
    write_json_atomic(run_dir / RECORD_FILE,
                      _record(cfg, list(splits.train.class_names), fitted))
    results = {"name": cfg.name, "recipe": cfg.recipe, "dataset": cfg.data.dataset,
               "phase": fitted.phase, "best_epoch": fitted.best_epoch,
               "val_map": fitted.val_map, **test, **fitted.results,
               "wall_seconds": time.perf_counter() - t0}
    write_json_atomic(run_dir / RESULTS_FILE, results)
    from vlml.report.run_report import write_run_report  # matplotlib: only once a run ends

    write_run_report(run_dir, results)
    return RunResult(run_dir, test["test_map"], fitted.val_map, fitted.best_epoch,
                     fitted.history, fitted.phase, results.get("selection"))
