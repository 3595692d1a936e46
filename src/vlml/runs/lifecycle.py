"""The run lifecycle every recipe goes through, once:

validate the config -> load the splits -> claim the run folder (saving the resolved config) ->
resolve the device -> fit (the recipe's part) -> score the test split -> write `test_scores.npy`,
fit per-class decision thresholds on the validation scores the recipe hands back
(`thresholds.json`, config key `calibrate`), write `run.json` (what rebuilds the model),
`results.json` and `report.md`.

Under torchrun every rank runs the lifecycle (the recipe's `fit` is a collective): rank 0 alone
claims the folder (`vlml.runs.folder.claim_once`) and writes every file named here; the test
split is scored by all ranks, each its shard, gathered.

What a recipe module provides is said in `vlml.recipes.base`. Library code returns values;
only the CLI prints.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlml import __version__, calibrate, distributed, metrics, recipes, thresholds
from vlml.device import resolve_device
from vlml.engine.predict import predict
from vlml.errors import ConfigError, DataError
from vlml.fileio import save_npy_atomic, write_json_atomic
from vlml.recipes.base import Fitted, evaluation_labels
from vlml.runs.folder import CONFIG_FILE, claim_once
from vlml.thresholds import Thresholds
from vlml.types import Catalog

RECORD_FILE, RESULTS_FILE, TEST_SCORES_FILE = "run.json", "results.json", "test_scores.npy"
STATUS_FILE = "status.json"
RECORD_FORMAT = 1
CALIBRATION_OFF = "none"


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


def calibration_target(cfg: Any) -> calibrate.Target | None:
    """The config's `calibrate` target, None when it is "none"; `ConfigError` naming the key
    for an unknown target."""
    text = getattr(cfg, "calibrate", "f1")
    if str(text).strip().lower() == CALIBRATION_OFF:
        return None
    try:
        return calibrate.parse_target(text)
    except ConfigError as e:
        raise ConfigError(f"calibrate: {e}; or {CALIBRATION_OFF} to fit no thresholds") from None


def _kept_from_calibrate(run_dir: Path) -> Thresholds | None:
    """Thresholds that `vlml calibrate` fitted on a catalog for this run (a resumed run keeps
    them: the model is the same); None when there are none, or they came from validation."""
    try:
        found = thresholds.load(run_dir)
    except DataError:
        return None  # an unreadable file is replaced
    kept = found is not None and found.source.startswith(thresholds.CATALOG_SOURCE)
    return found if kept else None


def validation_thresholds(fitted: Fitted, class_names: list[str], target: calibrate.Target
                          ) -> Thresholds:
    """Thresholds fitted on the recipe's validation scores (`Fitted.val_scores`), source
    "validation: <selection rule>, <n> images"; every class uncalibrated, with the reason,
    without validation scores (no validation images, or a recipe that does not hand them)."""
    rule = (fitted.results.get("selection") or {}).get("rule", "validation")
    if fitted.val_scores is None or fitted.val_targets is None:
        n = len(class_names)
        why = ("the run has no validation images" if rule == "last" else
               "the recipe handed back no validation scores")
        stats = tuple({"precision": None, "recall": None, "f1": None, "n_pos": 0, "n_neg": 0,
                       "reason": why} for _ in range(n))
        return Thresholds(tuple(class_names), np.full(n, thresholds.DEFAULT), np.zeros(n, bool),
                          str(target), f"{thresholds.VALIDATION_SOURCE}none",
                          thresholds.DEFAULT, stats)
    source = f"{thresholds.VALIDATION_SOURCE}{rule}, {len(fitted.val_scores)} images"
    return calibrate.fit_thresholds(fitted.val_scores, fitted.val_targets, class_names, target,
                                    source=source)


def thresholds_on_test(scores: np.ndarray, catalog: Catalog, fitted: Thresholds
                       ) -> dict[str, Any] | None:
    """The test split at the per-class thresholds: per-class precision, recall and F1, their
    mean F1 beside the mean F1 at 0.5, and which thresholds (target, source, values) they are
    (the report shows them only while `thresholds.json` still holds those)."""
    truth = evaluation_labels(catalog)
    if truth is None:
        return None
    per_class = calibrate.evaluate_thresholds(scores, truth, fitted.values)
    at_half = calibrate.evaluate_thresholds(scores, truth, 0.5)
    return {"target": fitted.target, "source": fitted.source,
            "thresholds": [float(v) for v in fitted.values],
            "mean_f1": calibrate.mean_f1(per_class),
            "mean_f1_at_0.5": calibrate.mean_f1(at_half),
            "per_class": {name: {k: p[k] for k in ("precision", "recall", "f1")}
                          for name, p in zip(catalog.class_names, per_class, strict=True)}}


def _record(cfg: Any, class_names: list[str], fitted: Fitted) -> dict[str, Any]:
    return {"format": RECORD_FORMAT, "vlml_version": __version__,
            "torch_version": torch.__version__, "python": platform.python_version(),
            "created": _now(),
            "recipe": cfg.recipe, "class_names": class_names, "encoder": fitted.encoder,
            "model": fitted.model_spec, "weights": fitted.weights,
            "effective": fitted.effective}


def run(cfg: Any, *, new: bool = False, overwrite: bool = False) -> RunResult:
    """Run the recipe named by `cfg.recipe` end to end; resumable (the same config in the same
    folder continues the run). `new`/`overwrite`: see `vlml.runs.folder.claim`."""
    t0 = time.perf_counter()
    recipe = recipes.get(cfg.recipe)
    cfg = recipe.validate(cfg)
    target = calibration_target(cfg)
    if hasattr(recipe, "preflight"):
        recipe.preflight(cfg)  # the weights it needs can be had, before any work
    splits = recipe.load_splits(cfg.data)  # before the folder exists: bad data leaves nothing
    run_dir, cfg = claim_once(cfg.out_dir, cfg, new=new, overwrite=overwrite)
    main = distributed.is_main()
    fresh = main and _holds_only_its_config(run_dir)
    try:
        result = _fit_and_record(recipe, cfg, splits, run_dir, target, t0)
    except BaseException as e:
        if main:
            _mark_stopped(run_dir, fresh, e)
        raise
    if main:
        write_json_atomic(run_dir / STATUS_FILE, {"status": "finished", "at": _now()})
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _holds_only_its_config(run_dir: Path) -> bool:
    return {p.name for p in run_dir.iterdir()} <= {CONFIG_FILE, STATUS_FILE}


def _mark_stopped(run_dir: Path, fresh: bool, error: BaseException) -> None:
    """A run that stopped before it saved anything leaves no folder (when this call made it);
    one that stopped later says so in `status.json` (and resumes when run again), so a
    half-run never looks finished: `run.json` and `results.json` are written only at the end."""
    if fresh and _holds_only_its_config(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    write_json_atomic(run_dir / STATUS_FILE, {
        "status": status, "at": _now(), "error": f"{type(error).__name__}: {error}",
        "resume": "run the same command again: it continues from the last finished epoch"})


def _fit_and_record(recipe: Any, cfg: Any, splits: Any, run_dir: Path, target: Any,
                    t0: float) -> RunResult:
    """The run's work once its folder is claimed: fit, thresholds, test scores, records
    (written by rank 0; every rank computes them)."""
    device = resolve_device(cfg.device)
    kept = _kept_from_calibrate(run_dir) if target is not None else None  # before any write
    fitted = recipe.fit(cfg, splits, run_dir, device)
    class_names = list(splits.train.class_names)
    main = distributed.is_main()
    fitted_thresholds, calibration = None, {"target": CALIBRATION_OFF}
    if target is not None:
        fitted_thresholds = kept or validation_thresholds(fitted, class_names, target)
        if main:
            fitted_thresholds.save(run_dir)
        calibration = {"target": fitted_thresholds.target, "source": fitted_thresholds.source,
                       "n_calibrated": int(fitted_thresholds.calibrated.sum()),
                       "n_classes": len(class_names)}
    test = _test_results(fitted, splits.test, device, fitted_thresholds, run_dir if main else None)
    results = {"name": cfg.name, "recipe": cfg.recipe, "dataset": cfg.data.dataset,
               "phase": fitted.phase, "best_epoch": fitted.best_epoch,
               "val_map": fitted.val_map, **test, **fitted.results, "calibration": calibration,
               "wall_seconds": time.perf_counter() - t0}
    if main:
        write_json_atomic(run_dir / RECORD_FILE, _record(cfg, class_names, fitted))
        write_json_atomic(run_dir / RESULTS_FILE, results)
        from vlml.report.run_report import write_run_report  # matplotlib: once a run ends

        write_run_report(run_dir, results)
    return RunResult(run_dir, test["test_map"], fitted.val_map, fitted.best_epoch,
                     fitted.history, fitted.phase, results.get("selection"))


def _test_results(fitted: Fitted, test_catalog: Catalog | None, device: torch.device,
                  fitted_thresholds: Thresholds | None, save_to: Path | None
                  ) -> dict[str, Any]:
    """Test mAP and the rest (`evaluate_scores`; at the thresholds too) of the fitted model;
    the scores saved in `save_to` (None: not saved). Under DDP each rank scores its shard of
    the test images and every rank gets all the scores."""
    if test_catalog is None or fitted.test_batches is None:
        return {"test_map": None, "n_test": 0}
    multi = distributed.is_initialized()
    probs = predict(fitted.model, fitted.test_batches(multi), device, gather=multi).probs
    if save_to is not None:
        save_npy_atomic(save_to / TEST_SCORES_FILE, probs)
    test = {**evaluate_scores(probs, test_catalog), "n_test": test_catalog.n_images}
    if fitted_thresholds is not None:
        test["test_at_thresholds"] = thresholds_on_test(probs, test_catalog, fitted_thresholds)
    return test
