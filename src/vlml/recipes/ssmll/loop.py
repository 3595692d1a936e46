"""The semi-supervised loop shared by the SSMLL recipes (CBSA, CAP; methods.md 1.2, 4, 5.5, 5.7).

The loop takes parts, not a config: the model, its views, the loss, the pseudo-labeller, an
optional context task and zero-shot prior, and small frozen settings per phase. A recipe
builds the parts (`vlml.recipes.ssmll.parts.build_loop` from an SSMLL config) and calls
`SemiSupervisedLoop(...).run()`.

Two `Trainer` phases in sub-folders of the run, each resumable from its own `last.pt`:

1. `warmup/`: `WarmupSettings.epochs` on the labeled images only (strong view with the
   warm-up's `cutout`, batch `batch_size`): `L_l` (+ `lambda_ctx L_ctx` on their context
   targets). No EMA; the regular model at the last warm-up epoch starts phase 2 (as the CAP
   reference code).
2. `semi/`: `SemiSettings.epochs`, a fresh AdamW + one-cycle and an EMA copy of the warm-up
   model. At the start of every epoch the EMA model scores all unlabeled images on their weak
   view (fused with a zero-shot prior when one is given, `Prior`); the pseudo-labeller, fitted
   as its registry entry asks (`needs_targets`: the labeled images' labels, never the
   unlabeled or test labels; `needs_labeled_scores`: the same teacher's scores of the labeled
   images), turns the scores into pseudo-labels and a loss mask. Each step takes
   `labeled_batch_size` labeled and `unlabeled_batch_size` unlabeled images (strong views,
   one forward pass) and minimises
       L_l + w_u L_u + lambda_ctx (L_ctx,l + L_ctx,u)
   with L_u the loss against the pseudo-labels (entries outside the mask ignored); an epoch is
   one pass over the unlabeled images, the labeled ones cycle.

Model selection never reads the test split: `select` is the epoch number ("last") or the mAP on
the held-out labeled images ("labeled_val"). Each epoch's record (`metrics.jsonl` of its phase)
holds the loss terms and, in phase 2, the pseudo-label quality against the true labels of the
unlabeled images when the catalog keeps them. Zero semi-supervised epochs is the labeled-only
baseline.

Under torchrun (DDP, W processes; `vlml.engine.trainer`): every batch size of the settings is
the global batch, split in W equal parts (a size W does not divide is a `ConfigError`; the views
yield each rank's part, `vlml.recipes.ssmll.data`). The teacher scores each rank's shard of the
unlabeled images and the scores are gathered, so every rank makes the same pseudo-labels and
masks; the EMA teacher is updated from the same weights on every rank; validation and test
scores are gathered; the logged loss terms are means over ranks; only rank 0 writes. A `Loss`
that sums over the batch must come scaled by W (`vlml.recipes.ssmll.parts.class_loss` does it
for `reduction: sum`), so that DDP's averaging of the ranks' gradients gives one process's sum.
`RunSettings.sync_bn` turns the model's BatchNorm layers into SyncBatchNorm (CUDA).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlml import distributed, metrics, pseudo
from vlml.contexts import ContextClustering, context_known, context_targets
from vlml.engine import (
    BEST,
    LAST,
    LoopConfig,
    Trainer,
    load_checkpoint,
    one_cycle,
    predict,
)
from vlml.engine.predict import local_rows
from vlml.errors import ConfigError, DataError
from vlml.fileio import atomic_open
from vlml.metrics import pseudo_quality
from vlml.models.backbone import sync_batchnorm
from vlml.pseudo import NO_PSEUDO, PseudoLabeler
from vlml.pseudo.prior import fuse_prior
from vlml.recipes.base import evaluation_labels
from vlml.recipes.selection import LAST_EPOCH, Selection
from vlml.recipes.ssmll.data import SSMLLSplits, Views

PHASES = ("warmup", "semi")
SAVE_PSEUDO = ("last", "all", "none")

Loss = Callable[[Tensor, Tensor], Tensor]
"""(logits (B, C), targets (B, C) int in {1, 0, -1}) -> scalar; -1 entries contribute 0
(e.g. `functools.partial(vlml.losses.masked_asl, reduction="sum", gamma_neg=4.0)`)."""


# ---- pseudo-labels ---------------------------------------------------------------------------
def fit_and_label(labeller: PseudoLabeler, scores: np.ndarray,
                  labeled_scores: np.ndarray | None = None,
                  labeled_targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit `labeller` with what its registry entry asks for (`needs_labeled_scores`: the
    labeled images' (n_l, C) `labeled_scores`; `needs_targets`: their (n_l, C) 0/1
    `labeled_targets`), then label the (n, C) `scores`.

    Returns (labels (n, C) int8 in {1, 0, -1}, mask (n, C) bool): the entries the loss uses,
    the labeller's mask (all entries when it has none) without the -1 entries.
    """
    entry = pseudo.entry(labeller.name)
    if entry.needs_labeled_scores and labeled_scores is None:
        raise ConfigError(f"pseudo-labeller {labeller.name!r} needs the labeled images' scores")
    if entry.needs_targets and labeled_targets is None:
        raise ConfigError(f"pseudo-labeller {labeller.name!r} needs the labeled images' labels")
    out = labeller.fit(labeled_scores if entry.needs_labeled_scores else None,
                       labeled_targets if entry.needs_targets else None).transform(scores)
    labeled = out.labels != NO_PSEUDO
    return out.labels, labeled if out.mask is None else out.mask & labeled


# ---- the loop's parts ------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseSettings:
    """One `Trainer` phase: `epochs` of AdamW (`lr`, `weight_decay`) under a one-cycle
    schedule rising for `pct_start` of the steps; an EMA copy of the model (`ema_decay`, None =
    none), evaluated instead of the model when `eval_ema`; `amp` autocast."""

    epochs: int
    lr: float = 1e-4
    weight_decay: float = 1e-4
    pct_start: float = 0.2
    ema_decay: float | None = None
    eval_ema: bool = True
    amp: bool = False


@dataclass(frozen=True)
class WarmupSettings(PhaseSettings):
    """Phase 1, labeled images only: batches of `batch_size` strong views with `cutout` (share
    of the side, 0 = none; the reference warm-up uses none)."""

    batch_size: int = 16
    cutout: float = 0.0


@dataclass(frozen=True)
class SemiSettings(PhaseSettings):
    """Phase 2: every step `labeled_batch_size` labeled and `unlabeled_batch_size` unlabeled
    images; the unlabeled term weighs `unlabeled_weight`."""

    labeled_batch_size: int = 4
    unlabeled_batch_size: int = 60
    unlabeled_weight: float = 1.0


@dataclass(frozen=True)
class RunSettings:
    """Shared by both phases: `seed` (data order, augmentation), `progress` bars,
    `eval_batch_size`, the pseudo-labels kept in `semi/` (`save_pseudo`: "last" ->
    `pseudo_last.npz`, "all" -> `pseudo/epoch_NNN.npz`, "none"), and `sync_bn`
    (SyncBatchNorm under DDP, CUDA only)."""

    seed: int = 0
    progress: bool = False
    eval_batch_size: int = 64
    save_pseudo: str = "last"
    sync_bn: bool = False


@dataclass(frozen=True, eq=False)
class Validation:
    """What selects the epoch: `views` over the validation images (the train views with the
    held-out labelled `rows`, or views of a validation catalog with all its rows), their
    `targets` (len(rows), C) in {1, 0, -1}, and the `select` rule whose score is kept best."""

    views: Views
    rows: np.ndarray
    targets: np.ndarray
    select: Selection


@dataclass(frozen=True, eq=False)
class Prior:
    """(N, C) zero-shot softmax `scores` of every train row (rows sum to 1), fused into the
    teacher's scores with `weight` before the pseudo-labels (`vlml.pseudo.prior.fuse_prior`)."""

    scores: np.ndarray
    weight: float


@dataclass(frozen=True)
class ContextTask:
    """The context identification task (methods.md 5.6) as the loop runs it.

    Attributes:
        clustering: the classes' contexts (K clusters).
        loss: the context loss, a `Loss` on (B, K) context logits and targets.
        weight: lambda_ctx.
        unlabeled: also train it on the unlabeled images (False = labeled images only).
        labeller: how unlabeled images get context targets: None = derived from their class
            pseudo-labels; else this pseudo-labeller on the context head's scores, fitted as
            its registry entry asks on the labeled images' context targets (e.g. CAP).
    """

    clustering: ContextClustering
    loss: Loss
    weight: float = 1.0
    unlabeled: bool = True
    labeller: PseudoLabeler | None = None


# ---- the loop --------------------------------------------------------------------------------


@dataclass
class LoopResult:
    """What the loop reports: the phase whose model is the result, its selected epoch and
    record, both phases' histories, the selected weights and the rule that selected them."""

    phase: str
    best_epoch: int
    best: dict[str, Any]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    weights: Path | None = None
    selection: Selection = LAST_EPOCH


class _Meters:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def reset(self) -> None:
        self.sums, self.n = {}, 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.n += 1

    def means(self) -> dict[str, float]:
        """Per-step means of the terms; under DDP the means over ranks (every rank took the
        same steps and adds the same terms)."""
        keys = list(self.sums)  # the same order on every rank: the same terms, in order
        sums = distributed.all_reduce_floats([self.sums[k] for k in keys], "mean")
        return {k: v / max(self.n, 1) for k, v in zip(keys, sums, strict=True)}


class SemiSupervisedLoop:
    """Runs the two phases (module docstring) for a model whose forward(x) returns
    (class logits (B, C), context logits (B, K) or None).

    Args:
        model: the trainable model, on `device`.
        views: views over the train catalog's rows (`ArrayViews` or `ImageViews`).
        splits: the semi-supervised splits.
        run_dir: the run folder (`warmup/` and `semi/` go inside).
        device: where the model runs.
        loss: the class `Loss` of labeled and pseudo-labeled entries.
        labeller: the pseudo-labeller (`vlml.pseudo.create(name, **params)`); the loop reads
            its registry entry's flags to fit it (`fit_and_label`).
        warmup, semi: the settings of phase 1 and phase 2 (0 epochs skips the phase).
        settings: what both phases share (seed, progress, selection, ...).
        context: the context task, or None.
        prior: a zero-shot prior fused into the teacher's scores, or None (the teacher alone).
        validation: the images and rule that select the epoch; None = the last epoch.
        test_views: views of the test catalog whose mAP is logged every epoch as
            `test_map_monitor` (monitoring; never used for selection); None = not logged.
    """

    def __init__(self, model: nn.Module, views: Views, splits: SSMLLSplits,
                 run_dir: str | Path, device: torch.device, *, loss: Loss,
                 labeller: PseudoLabeler, warmup: WarmupSettings, semi: SemiSettings,
                 settings: RunSettings = RunSettings(), context: ContextTask | None = None,
                 prior: Prior | None = None, test_views: Views | None = None,
                 validation: Validation | None = None) -> None:
        train = splits.train
        if prior is not None and prior.scores.shape != train.labels.shape:
            raise DataError(f"prior has shape {prior.scores.shape}, expected one row per train "
                            f"image {train.labels.shape}", "pseudo-label prior")
        _check_settings(settings, labeller, context)
        _check_batch_sizes(warmup, semi)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("the model has no trainable parameter")
        model = sync_batchnorm(model, settings.sync_bn, device)
        self.model, self.views, self.splits = model, views, splits
        self.run_dir, self.device = Path(run_dir), device
        self.loss, self.labeller, self.context, self.prior = loss, labeller, context, prior
        self.warmup_settings, self.semi_settings, self.settings = warmup, semi, settings
        self.test_views, self.validation = test_views, validation
        self.truth = train.true_labels
        self.labels = torch.from_numpy(train.labels).to(device)              # (N, C), -1 unlabeled
        self.pseudo = torch.full_like(self.labels, -1)                        # (N, C) masked
        self.ctx_labels = self.ctx_pseudo = None
        if context is not None:
            k = context.clustering.k
            ctx = np.full((train.n_images, k), -1, dtype=np.int8)
            ctx[splits.labeled] = context_targets(train.labels[splits.labeled],
                                                  context.clustering.clusters, k)
            self.ctx_labels = torch.from_numpy(ctx).to(device)
            self.ctx_pseudo = torch.full_like(self.ctx_labels, -1)
        self.meters = _Meters()
        self.epoch_info: dict[str, Any] = {}
        self.trainer: Trainer | None = None

    # ---- pieces shared by both phases --------------------------------------------------------
    def _optimizer(self, phase: PhaseSettings) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)

    def _loop_config(self, phase: PhaseSettings) -> LoopConfig:
        return LoopConfig(epochs=phase.epochs, amp=phase.amp, ema_decay=phase.ema_decay,
                          eval_ema=phase.eval_ema, select_metric="select",
                          seed=self.settings.seed, progress=self.settings.progress)

    def _terms(self, logits: Tensor, ctx: Tensor | None, rows: Tensor,
               pseudo: bool) -> dict[str, Tensor]:
        """Loss terms of one forward pass; `pseudo` marks the rows of unlabeled images."""
        if not pseudo:
            terms = {"loss_l": self.loss(logits, self.labels[rows])}
        else:
            terms = {"loss_u": self.semi_settings.unlabeled_weight * self.loss(
                logits, self.pseudo[rows])}
        if ctx is not None and self.context is not None:
            w, ctx_loss = self.context.weight, self.context.loss
            if not pseudo:
                terms["loss_ctx_l"] = w * ctx_loss(ctx, self.ctx_labels[rows])
            elif self.context.unlabeled:
                terms["loss_ctx_u"] = w * ctx_loss(ctx, self.ctx_pseudo[rows])
            else:
                terms["loss_ctx_u"] = ctx.sum() * 0.0
        return terms

    def _total(self, terms: dict[str, Tensor]) -> Tensor:
        self.meters.add(terms)
        return sum(terms.values())

    def _evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        rec: dict[str, Any] = dict(self.meters.means())
        bs = self.settings.eval_batch_size
        val = self.validation
        if val is not None:
            pred = predict(model, val.views.plain(local_rows(val.rows, bs), bs), self.device,
                           gather=True)
            rec[val.select.metric] = val.select.score(
                pred.probs, val.targets, list(self.splits.train.class_names))
        if self.test_views is not None and self.splits.test is not None:
            test = self.splits.test
            rows = local_rows(np.arange(test.n_images), bs)
            pred = predict(model, self.test_views.plain(rows, bs), self.device, gather=True)
            rec["test_map_monitor"] = metrics.map_report(
                pred.probs, evaluation_labels(test), empty="skip",
                class_names=list(test.class_names)).map
        if val is not None:
            value = rec[val.select.metric]
            rec["select"] = -1.0 if value is None else value
        else:
            rec["select"] = float(epoch)
        rec.update(self.epoch_info)
        return rec

    # ---- phase 1 ---------------------------------------------------------------------------
    def warmup(self) -> Any:
        w = self.warmup_settings
        rows = self.splits.labeled
        optimizer = self._optimizer(w)
        scheduler = one_cycle(optimizer, w.lr, w.epochs * math.ceil(rows.size / w.batch_size),
                              w.pct_start)

        def batches(epoch: int) -> Iterator[dict[str, Tensor]]:
            return self.views.strong(rows, epoch, w.batch_size, stream=0, cutout=w.cutout)

        def step(m: nn.Module, batch: dict[str, Tensor], epoch: int) -> Tensor:
            logits, ctx = m(batch["x"].to(self.device, non_blocking=True))
            return self._total(self._terms(logits, ctx, batch["rows"].to(self.device), False))

        def start(m: nn.Module, epoch: int) -> None:
            self.meters.reset()
            self.epoch_info = {}

        trainer = Trainer(self.model, optimizer, batches, step, self._evaluate,
                          self.run_dir / "warmup", self._loop_config(w),
                          scheduler=scheduler, on_epoch_start=start)
        return trainer.fit()

    # ---- phase 2 ---------------------------------------------------------------------------
    def _labeled_stream(self, epoch: int, batch_size: int) -> Iterator[dict[str, Tensor]]:
        for j in itertools.count():  # the labeled images cycle, a new order per pass
            n = 0
            for b in self.views.strong(self.splits.labeled, epoch, batch_size, stream=2 + j):
                n += 1
                yield b
            if n == 0:  # under DDP: fewer labeled images than processes
                raise DataError(f"{self.splits.labeled.size} labeled image(s) cannot be split "
                                f"over {distributed.world_size()} processes; expected at least "
                                "one per process", "train catalog")

    def _pseudo_labels(self, scores_u: np.ndarray, scores_l: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, mask) of the unlabeled images' (n_u, C) scores (`fit_and_label`)."""
        return fit_and_label(self.labeller, scores_u, scores_l, self.splits.labeled_targets)

    def refresh_pseudo_labels(self, teacher: nn.Module, epoch: int) -> dict[str, Any]:
        """Score the unlabeled images' weak view with `teacher`, make the pseudo-labels and
        loss mask (and the unlabeled context targets), store them for this epoch's steps."""
        t0 = time.perf_counter()
        bs = self.settings.eval_batch_size
        u = self.splits.unlabeled
        pred = predict(teacher, self.views.weak(local_rows(u, bs), epoch, bs), self.device,
                       desc=f"pseudo-labels {epoch}", progress=self.settings.progress,
                       gather=True)  # every rank: the scores of all unlabeled images
        scores_l = None
        if pseudo.entry(self.labeller.name).needs_labeled_scores:
            labeled = local_rows(self.splits.labeled, bs)
            scores_l = predict(teacher, self.views.weak(labeled, epoch, bs), self.device,
                               gather=True).probs
        truth = None if self.truth is None else self.truth[u]  # pred.rows == u: weak keeps order
        scores_u, info = pred.probs, {}
        if self.prior is not None:
            if truth is not None:  # the teacher alone, to show what the prior changes
                alone = pseudo_quality(*self._pseudo_labels(scores_u, scores_l), truth,
                                       scores_u)
                info = {f"teacher_{k}": v for k, v in alone.items() if "_pos_" in k or "map" in k}
            scores_u = self._with_prior(scores_u, u)
            if scores_l is not None:
                scores_l = self._with_prior(scores_l, self.splits.labeled)
        labels, mask = self._pseudo_labels(scores_u, scores_l)
        used = np.where(mask, labels, np.int8(-1)).astype(np.int8)
        self.pseudo[torch.from_numpy(u).to(self.device)] = torch.from_numpy(used).to(self.device)
        if self.context is not None and self.context.unlabeled:
            self._refresh_context(used, pred.context)
        info = {**pseudo_quality(labels, mask, truth, scores_u), **info,
                "pseudo_seconds": time.perf_counter() - t0}
        self._save_pseudo(epoch, scores_u, labels, mask)
        return info

    def _with_prior(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Teacher scores of `rows` (in that order) fused with their zero-shot prior."""
        return fuse_prior(scores, self.prior.scores[rows], self.prior.weight)

    def _refresh_context(self, used: np.ndarray, ctx_probs: np.ndarray | None) -> None:
        ctx = self.context
        k, clusters = ctx.clustering.k, ctx.clustering.clusters
        if ctx.labeller is not None:
            if ctx_probs is None:
                raise ConfigError("context targets from a pseudo-labeller need the context "
                                  "head's scores")
            labeled = context_targets(self.splits.train.labels[self.splits.labeled], clusters, k)
            target, known = fit_and_label(ctx.labeller, ctx_probs, labeled_targets=labeled)
        else:
            target, known = context_targets(used, clusters, k), context_known(used, clusters, k)
        values = np.where(known, target, np.int8(-1)).astype(np.int8)
        rows = torch.from_numpy(self.splits.unlabeled).to(self.device)
        self.ctx_pseudo[rows] = torch.from_numpy(values).to(self.device)

    def _save_pseudo(self, epoch: int, scores: np.ndarray, labels: np.ndarray,
                     mask: np.ndarray) -> None:
        mode = self.settings.save_pseudo
        if mode == "none" or not distributed.is_main():
            return
        name = f"pseudo/epoch_{epoch:03d}.npz" if mode == "all" else "pseudo_last.npz"
        path = self.run_dir / "semi" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(f, epoch=epoch, rows=self.splits.unlabeled, scores=scores.astype(np.float32),
                     labels=labels, mask=mask)

    def semi(self) -> Any:
        s = self.semi_settings
        u = self.splits.unlabeled
        if u.size == 0:
            raise DataError("no unlabeled image: the semi-supervised phase needs some (set "
                            "its epochs to 0 for the labeled-only baseline)", "train catalog")
        warm_last = self.run_dir / "warmup" / LAST
        if warm_last.exists():  # phase 2 starts from the warm-up's last regular model
            self.model.load_state_dict(load_checkpoint(warm_last, self.device)["model"])
        optimizer = self._optimizer(s)
        steps = math.ceil(u.size / s.unlabeled_batch_size)
        scheduler = one_cycle(optimizer, s.lr, s.epochs * steps, s.pct_start)

        def batches(epoch: int) -> Iterator[dict[str, Any]]:
            labeled = self._labeled_stream(epoch, s.labeled_batch_size)
            for ub in self.views.strong(u, epoch, s.unlabeled_batch_size, stream=1):
                yield {"ub": ub, "lb": next(labeled)}

        def step(m: nn.Module, batch: dict[str, Any], epoch: int) -> Tensor:
            lb, ub = batch["lb"], batch["ub"]
            n = lb["x"].shape[0]
            x = torch.cat([lb["x"], ub["x"]]).to(self.device, non_blocking=True)
            logits, ctx = m(x)
            rows_l, rows_u = lb["rows"].to(self.device), ub["rows"].to(self.device)
            terms = self._terms(logits[:n], None if ctx is None else ctx[:n], rows_l, False)
            terms.update(self._terms(logits[n:], None if ctx is None else ctx[n:], rows_u, True))
            return self._total(terms)

        def start(m: nn.Module, epoch: int) -> None:
            self.meters.reset()
            teacher = self.trainer.ema.module if self.trainer.ema is not None else m
            self.epoch_info = self.refresh_pseudo_labels(teacher, epoch)

        self.trainer = Trainer(self.model, optimizer, batches, step, self._evaluate,
                               self.run_dir / "semi", self._loop_config(s),
                               scheduler=scheduler, on_epoch_start=start)
        return self.trainer.fit()

    # ---- both ------------------------------------------------------------------------------
    def run(self) -> LoopResult:
        histories: dict[str, list] = {}
        fit = None
        if self.warmup_settings.epochs > 0:
            fit = self.warmup()
            histories["warmup"] = fit.history
        phase = "warmup"
        if self.semi_settings.epochs > 0:
            fit = self.semi()
            histories["semi"] = fit.history
            phase = "semi"
        if fit is None:
            raise ConfigError("both phases have 0 epochs: nothing to train")
        select = self.validation.select if self.validation is not None else LAST_EPOCH
        return LoopResult(phase, fit.best_epoch, fit.best, histories,
                          self.run_dir / phase / BEST, select)


def _check_batch_sizes(warmup: WarmupSettings, semi: SemiSettings) -> None:
    """`ConfigError` when the world size (torchrun) does not divide a batch size of a phase
    that runs (each is the global batch, split evenly over the processes)."""
    if warmup.epochs > 0:
        distributed.per_rank_batch(warmup.batch_size, "optim.warmup_batch_size")
    if semi.epochs > 0:
        distributed.per_rank_batch(semi.labeled_batch_size, "optim.labeled_batch_size")
        distributed.per_rank_batch(semi.unlabeled_batch_size, "optim.unlabeled_batch_size")


def _check_settings(settings: RunSettings, labeller: PseudoLabeler,
                    context: ContextTask | None) -> None:
    """`ConfigError` for a setting the loop cannot run."""
    if settings.save_pseudo not in SAVE_PSEUDO:
        raise ConfigError(f"save_pseudo {settings.save_pseudo!r}; expected one of "
                          f"{', '.join(SAVE_PSEUDO)}")
    pseudo.entry(labeller.name)  # a registered labeller
    if context is not None and context.labeller is not None and \
            pseudo.entry(context.labeller.name).needs_labeled_scores:
        raise ConfigError(f"context pseudo-labeller {context.labeller.name!r} needs the labeled "
                          "images' context scores, which the loop does not compute")


__all__ = ["fit_and_label", "Loss", "PhaseSettings", "WarmupSettings", "SemiSettings",
           "RunSettings", "Validation", "Prior", "ContextTask", "SemiSupervisedLoop",
           "LoopResult", "PHASES"]
