"""An SSMLL config -> the parts of the semi-supervised loop, shared by every SSMLL recipe.

`SemiSupervisedLoop` takes parts, not a config. This module is the one translation of the
sections every SSMLL config shares (optim, loss, pseudo, augment.warmup_cutout,
data.selection, seed, progress, save_pseudo) into those parts:

    loss     = partial(vlml.losses "masked_asl", reduction, gamma_pos, gamma_neg, clip)
    labeller = vlml.pseudo.create(pseudo.method, **pseudo.params)
    warmup, semi, settings = the frozen phase settings

A recipe builds its own model and views (and, when it has them, a context task and zero-shot
prior scores) and calls

    loop = build_loop(cfg, model, train_views, splits, run_dir, device, context=..., prior=...)
    result = loop.run()

so a new SSMLL method is one recipe file, with no change to the loop.

Under torchrun (DDP, W processes) a loss with `reduction: sum` is multiplied by W: each rank
sums over its 1/W of the global batch and DDP averages the ranks' gradients, so the scaled
loss has one process's gradient (and its logged value, a mean over ranks, one process's sum).
`reduction: mean` (per-sample means over equal parts) needs no scaling.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from vlml import distributed, losses, pseudo
from vlml.contexts import ContextClustering
from vlml.errors import ConfigError
from vlml.recipes.base import evaluation_labels
from vlml.recipes.selection import Selection
from vlml.recipes.ssmll.config import (
    AugmentConfig,
    ContextConfig,
    DataConfig,
    LossConfig,
    OptimConfig,
    PseudoConfig,
    make_labeller,
)
from vlml.recipes.ssmll.data import SSMLLSplits, Views
from vlml.recipes.ssmll.loop import (
    ContextTask,
    Loss,
    Prior,
    RunSettings,
    SemiSettings,
    SemiSupervisedLoop,
    Validation,
    WarmupSettings,
)


class SSMLLSections(Protocol):
    """The config sections every SSMLL recipe shares (`CBSAConfig`, `CAPConfig`, ...)."""

    data: DataConfig
    pseudo: PseudoConfig
    loss: LossConfig
    augment: AugmentConfig
    optim: OptimConfig
    seed: int
    progress: bool
    save_pseudo: str


def _scaled(fn: Loss, scale: float, logits: torch.Tensor, targets: torch.Tensor,
            **params: object) -> torch.Tensor:
    return fn(logits, targets, **params) * scale


def world_scale(reduction: str) -> int:
    """What a loss of `reduction` is multiplied by under DDP (module docstring): the world
    size for "sum", 1 for "mean" (and 1 in one process)."""
    return distributed.world_size() if reduction == "sum" else 1


def _masked_asl(reduction: str, **params: float) -> Loss:
    fn = partial(losses.get("masked_asl").fn, reduction=reduction, **params)
    scale = world_scale(reduction)
    return fn if scale == 1 else partial(_scaled, fn, float(scale))


def class_loss(loss: LossConfig) -> Loss:
    """The masked ASL (`vlml.losses` "masked_asl") with the configured gammas, clip and
    reduction: (logits (B, C), targets (B, C) in {1, 0, -1}) -> scalar (a sum scaled by the
    world size under DDP, module docstring)."""
    return _masked_asl(loss.reduction, gamma_pos=loss.gamma_pos, gamma_neg=loss.gamma_neg,
                       clip=loss.clip)


def context_loss(loss: LossConfig, kind: str) -> Loss:
    """The context loss: "bce" (the masked ASL with `losses.BCE_PARAMS`) or "asl" (the class
    loss's gammas and clip), with the class loss's reduction."""
    if kind == "bce":
        return _masked_asl(loss.reduction, **losses.BCE_PARAMS)
    if kind == "asl":
        return class_loss(loss)
    raise ConfigError(f"context.loss: {kind!r} is not one of bce, asl")


def context_task(context: ContextConfig, loss: LossConfig, p: PseudoConfig,
                 clustering: ContextClustering) -> ContextTask:
    """The context task of `clustering`. `context.targets` "pseudo_labels" derives the
    unlabeled images' context targets from their class pseudo-labels; any other value names a
    pseudo-labeller (e.g. "cap") applied to the context head's scores, with `pseudo.params`
    when it is also the class labeller `pseudo.method`, else its defaults."""
    labeller = None
    if context.targets != "pseudo_labels":
        params = p.params if context.targets == p.method else {}
        labeller = pseudo.create(context.targets, **params)
    return ContextTask(clustering, context_loss(loss, context.loss), context.weight,
                       context.unlabeled, labeller)


def phase_settings(cfg: SSMLLSections) -> tuple[WarmupSettings, SemiSettings, RunSettings]:
    """(warm-up, semi-supervised, shared) settings of the loop from the config's sections."""
    o = cfg.optim
    common = {"lr": o.lr, "weight_decay": o.weight_decay, "pct_start": o.pct_start,
              "eval_ema": o.eval_ema, "amp": o.amp}
    warmup = WarmupSettings(epochs=o.warmup_epochs, ema_decay=None, **common,
                            batch_size=o.warmup_batch_size, cutout=cfg.augment.warmup_cutout)
    semi = SemiSettings(epochs=o.epochs, ema_decay=o.ema_decay, **common,
                        labeled_batch_size=o.labeled_batch_size,
                        unlabeled_batch_size=o.unlabeled_batch_size,
                        unlabeled_weight=cfg.loss.unlabeled_weight)
    settings = RunSettings(seed=cfg.seed, progress=cfg.progress,
                           eval_batch_size=o.eval_batch_size, save_pseudo=cfg.save_pseudo,
                           sync_bn=o.sync_bn)
    return warmup, semi, settings


def check_batch_sizes(cfg: SSMLLSections) -> None:
    """Under DDP, `ConfigError` when the world size does not divide a batch size of a phase
    that runs (each is the global batch); for a recipe's `preflight`, before any work."""
    o = cfg.optim
    keys = [("warmup_batch_size", o.warmup_epochs)] + [
        (k, o.epochs) for k in ("labeled_batch_size", "unlabeled_batch_size")]
    for key, epochs in keys:
        if epochs > 0:
            distributed.per_rank_batch(getattr(o, key), f"optim.{key}")


def validation(splits: SSMLLSplits, views: Views, val_views: Views | None
               ) -> Validation | None:
    """What selects the epoch: a validation catalog (`val_views` over it, clean mAP), else
    the held-out labelled rows of the train views (mAP over their observed entries), else
    nothing (the last epoch)."""
    if splits.val is not None and val_views is not None:
        return Validation(val_views, np.arange(splits.val.n_images), evaluation_labels(splits.val),
                          Selection("clean_val_map", "val_map"))
    if splits.holdout.size:
        return Validation(views, splits.holdout, splits.train.labels[splits.holdout],
                          Selection("labeled_val", "val_map"))
    return None


def build_loop(cfg: SSMLLSections, model: nn.Module, views: Views, splits: SSMLLSplits,
               run_dir: str | Path, device: torch.device, *,
               context: ContextTask | None = None, prior: np.ndarray | None = None,
               test_views: Views | None = None, val_views: Views | None = None
               ) -> SemiSupervisedLoop:
    """The loop of an SSMLL recipe: its loss, labeller and settings from `cfg`, plus the
    recipe's model, views, optional context task and optional (N, C) zero-shot `prior` scores
    (fused with weight `pseudo.prior_weight`). `val_views` (over `splits.val`) select the
    epoch when a validation catalog is given; `test_views` are monitored only with
    `optim.log_test_map`."""
    warmup, semi, settings = phase_settings(cfg)
    return SemiSupervisedLoop(
        model, views, splits, run_dir, device, loss=class_loss(cfg.loss),
        labeller=make_labeller(cfg.pseudo), warmup=warmup, semi=semi, settings=settings,
        context=context,
        prior=None if prior is None else Prior(prior, cfg.pseudo.prior_weight),
        test_views=test_views if cfg.optim.log_test_map else None,
        validation=validation(splits, views, val_views))


__all__ = ["SSMLLSections", "class_loss", "context_loss", "context_task", "phase_settings",
           "validation", "build_loop", "check_batch_sizes", "world_scale"]
