"""What the SSMLL recipes hand to the run lifecycle after the loop: the selected model, its
test views, and the semi-supervised entries of `results.json` (split sizes, model selection,
pseudo-label quality per epoch, seconds per epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlml import config
from vlml.engine import load_weights, predict
from vlml.engine.predict import local_rows
from vlml.pseudo.base import to_jsonable
from vlml.recipes.base import Fitted
from vlml.recipes.ssmll.config import effective_regime, make_labeller
from vlml.recipes.ssmll.data import SSMLLSplits, Views
from vlml.recipes.ssmll.loop import LoopResult, Validation


def _quality(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in rec.items() if k == "epoch" or k.startswith(("pl_", "teacher_pl_"))}
            for rec in history]


def _epoch_seconds(histories: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    out = {}
    for phase, hist in histories.items():
        s = [rec.get("train_seconds", 0.0) + rec.get("pseudo_seconds", 0.0) for rec in hist]
        out[phase] = float(np.mean(s)) if s else None
    return out


def _selection(loop: LoopResult, splits: SSMLLSplits) -> dict[str, Any]:
    n = {"clean_val_map": splits.val.n_images if splits.val is not None else 0,
         "labeled_val": int(splits.holdout.size)}.get(loop.selection.rule, 0)
    return {**loop.selection.describe(), "value": loop.best.get(loop.selection.metric),
            "n_images": n}


def loop_fitted(cfg: Any, model: nn.Module, test_views: Views | None, splits: SSMLLSplits,
                loop: LoopResult, run_dir: Path, device: torch.device,
                spec: dict[str, Any], encoder: dict[str, Any] | None,
                extra: dict[str, Any], validation: Validation | None = None) -> Fitted:
    """The `Fitted` of a finished loop: its selected weights loaded into `model`; with the
    loop's `validation`, the selected model's scores on its images and their targets (what the
    lifecycle fits the decision thresholds on)."""
    model.load_state_dict(load_weights(loop.weights, device))
    bs = cfg.optim.eval_batch_size
    regime = effective_regime(cfg.data)
    results = {
        "regime": regime, "p": cfg.data.p if regime == "semi_supervised" else None,
        "n_labeled": int(splits.labeled.size), "n_unlabeled": int(splits.unlabeled.size),
        "n_holdout": int(splits.holdout.size), "selection": _selection(loop, splits), **extra,
        "pseudo_quality": _quality(loop.histories.get("semi", [])),
        "epoch_seconds": _epoch_seconds(loop.histories)}
    labeller = make_labeller(cfg.pseudo)
    effective = {"loss": config.to_dict(cfg.loss),
                 "pseudo": {**config.to_dict(cfg.pseudo), "method": labeller.name,
                            "params": to_jsonable(labeller.get_params())}}
    val = loop.best.get("val_map")
    test = None if test_views is None or splits.test is None else (
        lambda shard=False: test_views.plain(_rows(splits.test.n_images, bs, shard), bs))
    val_scores = None if validation is None else predict(
        model, validation.views.plain(validation.rows, bs), device).probs
    return Fitted(model, test,
                  loop.best_epoch, None if val is None else float(val),
                  loop.histories.get(loop.phase, []), spec,
                  str(Path(loop.weights).relative_to(run_dir)), encoder, effective, results,
                  loop.phase, val_scores=val_scores,
                  val_targets=None if validation is None else validation.targets)


def _rows(n: int, batch_size: int, shard: bool) -> np.ndarray:
    """Rows 0..n-1, or this rank's shard of them (`local_rows`)."""
    rows = np.arange(n)
    return local_rows(rows, batch_size) if shard else rows
