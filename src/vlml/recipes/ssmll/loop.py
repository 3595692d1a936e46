"""The semi-supervised loop shared by the CBSA and CAP recipes (methods.md 1.2, 4, 5.5, 5.7).

Two `Trainer` phases in sub-folders of the run, each resumable from its own `last.pt`:

1. `warmup/`: `optim.warmup_epochs` epochs on the labeled images only (strong view, batch
   `warmup_batch_size`): `L_l` (+ `lambda_ctx L_ctx` on their context targets). No EMA; the
   regular model at the last warm-up epoch starts phase 2 (as the CAP reference code).
2. `semi/`: `optim.epochs` epochs, a fresh AdamW + one-cycle and an EMA copy of the warm-up
   model. At the start of every epoch the EMA model scores all unlabeled images on their weak
   view (fused with a zero-shot prior when one is given, `pseudo.prior_weight`); the
   pseudo-labeler fitted on the labeled images (CAP: their class frequencies, never
   the unlabeled or test labels) turns the scores into pseudo-labels and a loss mask. Each
   step takes `labeled_batch_size` labeled and `unlabeled_batch_size` unlabeled images (strong
   views, one forward pass) and minimises
       L_l + w_u L_u + lambda_ctx (L_ctx,l + L_ctx,u)
   with L_u the masked ASL against the pseudo-labels; an epoch is one pass over the unlabeled
   images, the labeled ones cycle.

Model selection never reads the test split: `select` is the epoch number ("last") or the mAP on
the held-out labeled images ("labeled_val"). Each epoch's record (`metrics.jsonl` of its phase)
holds the loss terms and, in phase 2, the pseudo-label quality against the true labels of the
unlabeled images when the catalog keeps them. `optim.epochs: 0` is the labeled-only baseline.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vlml import metrics
from vlml.engine import BEST, LAST, LoopConfig, Trainer, load_checkpoint, load_weights
from vlml.errors import ConfigError, DataError
from vlml.fileio import atomic_open, save_npy_atomic, write_json_atomic
from vlml.losses.basic import asl
from vlml.models.context import ContextClustering, context_known, context_targets
from vlml.pseudo import CAPThreshold, MATThreshold
from vlml.pseudo.prior import fuse_prior
from vlml.recipes.ssmll.config import CAPConfig, CBSAConfig
from vlml.recipes.ssmll.data import SSMLLSplits, Views
from vlml.report.ssmll_run import write_ssmll_run_report
from vlml.types import Catalog

SSMLLConfig = CBSAConfig | CAPConfig
PHASES = ("warmup", "semi")


# ---- schedule ------------------------------------------------------------------------------
def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, steps: int, pct_start: float
              ) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's one-cycle schedule over `steps` steps; a rise of at most one step is skipped.

    torch divides by zero when `pct_start * steps == 1` (e.g. 5 steps at 0.2, a short warm-up
    on few labelled images), so such short rises start at the peak instead.
    """
    pct = pct_start if pct_start * steps > 1 else 0.0
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps,
                                               pct_start=pct)


# ---- losses ----------------------------------------------------------------------------------
def masked_asl(logits: Tensor, targets: Tensor, mask: Tensor | None = None, *,
               reduction: str = "sum", gamma_pos: float = 0.0, gamma_neg: float = 4.0,
               clip: float = 0.05) -> Tensor:
    """sum (or mean) over entries of m * ASL(logit, y) (methods.md 5.5).

    logits (B, C); targets (B, C) int in {1, 0, -1}; mask (B, C) bool or None. Entries with
    mask False or target -1 contribute 0. "sum" adds the entries (the reference code's
    `criterion(...).sum()`); "mean" divides that sum by B * C, masked entries included.
    """
    obs = targets if mask is None else torch.where(mask, targets, torch.full_like(targets, -1))
    mean = asl(logits.float(), obs, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip,
               unknown="ignore")
    if reduction == "sum":
        return mean * logits.numel()
    if reduction == "mean":
        return mean
    raise ConfigError(f"reduction {reduction!r}; expected 'sum' or 'mean'")


BCE_PARAMS = {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}  # ASL with these is BCE


# ---- pseudo-labels ---------------------------------------------------------------------------
class PseudoLabelMaker:
    """Class pseudo-labels of the unlabeled images from the teacher's scores.

    `fit(labeled_targets)` once (CAP's class priors, from the labeled images only);
    `transform(scores_u, scores_l)` each epoch -> (labels (n_u, C) int8 in {1, 0},
    mask (n_u, C) bool). "fixed": score >= threshold, every entry used; "mat": D2L's
    thresholds fitted on the labeled images' scores of the same teacher, every entry used.
    """

    def __init__(self, method: str, a: float = 1.0, b: float = 0.998, threshold: float = 0.5,
                 beta: float = 0.5) -> None:
        self.method, self.a, self.b, self.threshold, self.beta = method, a, b, threshold, beta
        self.needs_labeled_scores = method == "mat"

    def fit(self, labeled_targets: np.ndarray) -> PseudoLabelMaker:
        self.labeled_targets_ = np.asarray(labeled_targets)
        if self.method == "cap":
            self.cap_ = CAPThreshold(self.a, self.b).fit(self.labeled_targets_)
        return self

    def transform(self, scores_u: np.ndarray, scores_l: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "cap":
            out = self.cap_.transform(scores_u)
            return out.labels, out.mask
        if self.method == "fixed":
            labels = (scores_u >= self.threshold).astype(np.int8)
        elif self.method == "mat":
            if scores_l is None:
                raise ConfigError("pseudo.method 'mat' needs the labeled images' scores")
            labels = MATThreshold(self.beta).fit(scores_l, self.labeled_targets_) \
                .transform(scores_u).labels
        else:
            raise ConfigError(f"pseudo.method {self.method!r}; expected cap, fixed or mat")
        return labels, np.ones(labels.shape, dtype=bool)


def pseudo_quality(labels: np.ndarray, mask: np.ndarray, truth: np.ndarray | None,
                   scores: np.ndarray | None = None) -> dict[str, float | None]:
    """Precision/recall of pseudo-positives and -negatives against the true labels, over all
    entries (`pl_*`) and over the entries the loss uses (`pl_used_*`); plus the used share and,
    given the scores behind the labels, their mAP in percent over the unlabeled images
    (`pl_score_map`: how well they rank, whatever the thresholds)."""
    out: dict[str, float | None] = {"pl_used_fraction": float(mask.mean()),
                                    "pl_positive_rate": float((labels == 1).mean())}
    if truth is None:
        return out
    for prefix, m in (("pl_", None), ("pl_used_", mask)):
        q = metrics.pseudo_label_quality(labels, truth, mask=m)["overall"]
        for key in ("pos_precision", "pos_recall", "neg_precision", "neg_recall"):
            out[prefix + key] = _finite(q[key])
    if scores is not None:
        out["pl_score_map"] = _finite(metrics.map_report(scores, truth, empty="skip").map)
    return out


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ---- prediction ------------------------------------------------------------------------------
@dataclass
class Predictions:
    """Sigmoid scores in batch order: rows (N,), probs (N, C), context probs (N, K) or None."""

    rows: np.ndarray
    probs: np.ndarray
    context: np.ndarray | None


@torch.no_grad()
def predict(model: nn.Module, batches: Any, device: torch.device, desc: str | None = None,
            progress: bool = False) -> Predictions:
    """Scores of `model` (forward(x, **extra) -> (logits, context logits or None)) over
    `batches`; `model.prepare_eval()`, when defined, gives `extra` once (e.g. text features)."""
    was_training = model.training
    model.eval()
    extra = model.prepare_eval() if hasattr(model, "prepare_eval") else {}
    rows, probs, ctx = [], [], []
    for b in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        logits, c = model(b["x"].to(device, non_blocking=True), **extra)
        rows.append(b["rows"].cpu().numpy())
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        if c is not None:
            ctx.append(torch.sigmoid(c.float()).cpu().numpy())
    model.train(was_training)
    if not rows:
        raise DataError("nothing to score: the row set is empty", "predict")
    return Predictions(np.concatenate(rows), np.concatenate(probs),
                       np.concatenate(ctx) if ctx else None)


# ---- the loop --------------------------------------------------------------------------------
@dataclass
class ContextTask:
    """The context identification task as the loop runs it."""

    clustering: ContextClustering
    weight: float = 1.0
    unlabeled: bool = True
    targets: str = "pseudo_labels"
    loss: str = "bce"


@dataclass
class LoopResult:
    """What the loop reports: the phase whose model is the result, its selected epoch and
    record, both phases' histories, and the selected weights."""

    phase: str
    best_epoch: int
    best: dict[str, Any]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    weights: Path | None = None


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
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


class SemiSupervisedLoop:
    """Runs the two phases (module docstring) for a model whose forward(x) returns
    (class logits (B, C), context logits (B, K) or None).

    Args:
        cfg: a CBSA or CAP config (optim, loss, pseudo, augment, data.selection, seed, ...).
        model: the trainable model, on `device`.
        views: views over the train catalog's rows (`ArrayViews` or `ImageViews`).
        splits: the semi-supervised splits.
        run_dir: the run folder (`warmup/` and `semi/` go inside).
        context: the context task, or None.
        test_views: views of the test catalog, only for `optim.log_test_map` (monitoring; never
            used for selection).
        prior: (N, C) zero-shot softmax scores of every train row, fused into the teacher's
            scores before the pseudo-labels (`pseudo.prior_weight`); None = the teacher alone.
    """

    def __init__(self, cfg: SSMLLConfig, model: nn.Module, views: Views, splits: SSMLLSplits,
                 run_dir: str | Path, device: torch.device, context: ContextTask | None = None,
                 test_views: Views | None = None, prior: np.ndarray | None = None) -> None:
        self.cfg, self.model, self.views, self.splits = cfg, model, views, splits
        self.run_dir, self.device, self.context = Path(run_dir), device, context
        self.test_views, self.prior = test_views, prior
        if prior is not None and prior.shape != splits.train.labels.shape:
            raise DataError(f"prior has shape {prior.shape}, expected one row per train image "
                            f"{splits.train.labels.shape}", "pseudo-label prior")
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("the model has no trainable parameter")
        train = splits.train
        self.truth = train.true_labels
        self.labels = torch.from_numpy(train.labels).to(device)              # (N, C), -1 unlabeled
        self.pseudo = torch.full_like(self.labels, -1)                        # (N, C) masked
        self.loss_params = {"reduction": cfg.loss.reduction, "gamma_pos": cfg.loss.gamma_pos,
                            "gamma_neg": cfg.loss.gamma_neg, "clip": cfg.loss.clip}
        self.ctx_labels = self.ctx_pseudo = None
        if context is not None:
            k = context.clustering.k
            ctx = np.full((train.n_images, k), -1, dtype=np.int8)
            ctx[splits.labeled] = context_targets(train.labels[splits.labeled],
                                                  context.clustering.clusters, k)
            self.ctx_labels = torch.from_numpy(ctx).to(device)
            self.ctx_pseudo = torch.full_like(self.ctx_labels, -1)
            params = BCE_PARAMS if context.loss == "bce" else {
                k: v for k, v in self.loss_params.items() if k != "reduction"}
            self.ctx_params = {"reduction": cfg.loss.reduction, **params}
        self.meters = _Meters()
        self.epoch_info: dict[str, Any] = {}
        self.trainer: Trainer | None = None

    # ---- pieces shared by both phases --------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)

    def _scheduler(self, optimizer: torch.optim.Optimizer, steps: int) -> Any:
        return one_cycle(optimizer, self.cfg.optim.lr, steps, self.cfg.optim.pct_start)

    def _loop_config(self, epochs: int, ema: bool) -> LoopConfig:
        o = self.cfg.optim
        return LoopConfig(epochs=epochs, amp=o.amp, ema_decay=o.ema_decay if ema else None,
                          eval_ema=o.eval_ema, select_metric="select", seed=self.cfg.seed,
                          progress=self.cfg.progress)

    def _terms(self, logits: Tensor, ctx: Tensor | None, rows: Tensor,
               pseudo: bool) -> dict[str, Tensor]:
        """Loss terms of one forward pass; `pseudo` marks the rows of unlabeled images."""
        if not pseudo:
            terms = {"loss_l": masked_asl(logits, self.labels[rows], **self.loss_params)}
        else:
            terms = {"loss_u": self.cfg.loss.unlabeled_weight * masked_asl(
                logits, self.pseudo[rows], **self.loss_params)}
        if ctx is not None and self.context is not None:
            w = self.context.weight
            if not pseudo:
                terms["loss_ctx_l"] = w * masked_asl(ctx, self.ctx_labels[rows], **self.ctx_params)
            elif self.context.unlabeled:
                terms["loss_ctx_u"] = w * masked_asl(ctx, self.ctx_pseudo[rows], **self.ctx_params)
            else:
                terms["loss_ctx_u"] = ctx.sum() * 0.0
        return terms

    def _total(self, terms: dict[str, Tensor]) -> Tensor:
        self.meters.add(terms)
        return sum(terms.values())

    def _evaluate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        rec: dict[str, Any] = dict(self.meters.means())
        bs = self.cfg.optim.eval_batch_size
        holdout = self.splits.holdout
        if holdout.size:
            pred = predict(model, self.views.plain(holdout, bs), self.device)
            rec["val_map"] = _finite(metrics.map_report(
                pred.probs, self.splits.train.labels[holdout], empty="skip",
                class_names=list(self.splits.train.class_names)).map)
        if self.cfg.optim.log_test_map and self.test_views is not None:
            test = self.splits.test
            pred = predict(model, self.test_views.plain(np.arange(test.n_images), bs),
                           self.device)
            rec["test_map_monitor"] = metrics.map_report(
                pred.probs, test.ground_truth, empty="skip",
                class_names=list(test.class_names)).map
        if self.cfg.data.selection == "labeled_val":
            rec["select"] = rec["val_map"] if rec.get("val_map") is not None else -1.0
        else:
            rec["select"] = float(epoch)
        rec.update(self.epoch_info)
        return rec

    # ---- phase 1 ---------------------------------------------------------------------------
    def warmup(self) -> Any:
        o = self.cfg.optim
        rows = self.splits.labeled
        bs = o.warmup_batch_size
        cut = self.cfg.augment.warmup_cutout
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, o.warmup_epochs * math.ceil(rows.size / bs))

        def batches(epoch: int) -> Iterator[dict[str, Tensor]]:
            return self.views.strong(rows, epoch, bs, stream=0, cutout=cut)

        def step(m: nn.Module, batch: dict[str, Tensor], epoch: int) -> Tensor:
            logits, ctx = m(batch["x"].to(self.device, non_blocking=True))
            return self._total(self._terms(logits, ctx, batch["rows"].to(self.device), False))

        def start(m: nn.Module, epoch: int) -> None:
            self.meters.reset()
            self.epoch_info = {}

        trainer = Trainer(self.model, optimizer, batches, step, self._evaluate,
                          self.run_dir / "warmup", self._loop_config(o.warmup_epochs, ema=False),
                          scheduler=scheduler, on_epoch_start=start)
        return trainer.fit()

    # ---- phase 2 ---------------------------------------------------------------------------
    def _labeled_stream(self, epoch: int, batch_size: int) -> Iterator[dict[str, Tensor]]:
        for j in itertools.count():  # the labeled images cycle, a new order per pass
            yield from self.views.strong(self.splits.labeled, epoch, batch_size, stream=2 + j)

    def refresh_pseudo_labels(self, teacher: nn.Module, epoch: int) -> dict[str, Any]:
        """Score the unlabeled images' weak view with `teacher`, make the pseudo-labels and
        loss mask (and the unlabeled context targets), store them for this epoch's steps."""
        t0 = time.perf_counter()
        bs = self.cfg.optim.eval_batch_size
        u = self.splits.unlabeled
        pred = predict(teacher, self.views.weak(u, epoch, bs), self.device,
                       desc=f"pseudo-labels {epoch}", progress=self.cfg.progress)
        scores_l = None
        if self.labeler.needs_labeled_scores:
            scores_l = predict(teacher, self.views.weak(self.splits.labeled, epoch, bs),
                               self.device).probs
        truth = None if self.truth is None else self.truth[u]  # pred.rows == u: weak keeps order
        scores_u, info = pred.probs, {}
        if self.prior is not None:
            if truth is not None:  # the teacher alone, to show what the prior changes
                alone = pseudo_quality(*self.labeler.transform(scores_u, scores_l), truth,
                                       scores_u)
                info = {f"teacher_{k}": v for k, v in alone.items() if "_pos_" in k or "map" in k}
            scores_u = self._with_prior(scores_u, u)
            if scores_l is not None:
                scores_l = self._with_prior(scores_l, self.splits.labeled)
        labels, mask = self.labeler.transform(scores_u, scores_l)
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
        return fuse_prior(scores, self.prior[rows], self.cfg.pseudo.prior_weight)

    def _refresh_context(self, used: np.ndarray, ctx_probs: np.ndarray | None) -> None:
        ctx = self.context
        k, clusters = ctx.clustering.k, ctx.clustering.clusters
        if ctx.targets == "cap":
            if ctx_probs is None:
                raise ConfigError("context.targets 'cap' needs the context head's scores")
            out = CAPThreshold(self.cfg.pseudo.a, self.cfg.pseudo.b).fit(
                context_targets(self.splits.train.labels[self.splits.labeled], clusters, k)
            ).transform(ctx_probs)
            target, known = out.labels, out.mask
        else:
            target, known = context_targets(used, clusters, k), context_known(used, clusters, k)
        values = np.where(known, target, np.int8(-1)).astype(np.int8)
        rows = torch.from_numpy(self.splits.unlabeled).to(self.device)
        self.ctx_pseudo[rows] = torch.from_numpy(values).to(self.device)

    def _save_pseudo(self, epoch: int, scores: np.ndarray, labels: np.ndarray,
                     mask: np.ndarray) -> None:
        mode = self.cfg.save_pseudo
        if mode == "none":
            return
        name = f"pseudo/epoch_{epoch:03d}.npz" if mode == "all" else "pseudo_last.npz"
        path = self.run_dir / "semi" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(f, epoch=epoch, rows=self.splits.unlabeled, scores=scores.astype(np.float32),
                     labels=labels, mask=mask)

    def semi(self) -> Any:
        o = self.cfg.optim
        u = self.splits.unlabeled
        if u.size == 0:
            raise DataError("no unlabeled image: the semi-supervised phase needs some (set "
                            "optim.epochs: 0 for the labeled-only baseline)", "train catalog")
        warm_last = self.run_dir / "warmup" / LAST
        if warm_last.exists():  # phase 2 starts from the warm-up's last regular model
            self.model.load_state_dict(load_checkpoint(warm_last, self.device)["model"])
        p = self.cfg.pseudo
        self.labeler = PseudoLabelMaker(p.method, p.a, p.b, p.threshold, p.beta).fit(
            self.splits.labeled_targets)
        optimizer = self._optimizer()
        steps = math.ceil(u.size / o.unlabeled_batch_size)
        scheduler = self._scheduler(optimizer, o.epochs * steps)

        def batches(epoch: int) -> Iterator[dict[str, Any]]:
            labeled = self._labeled_stream(epoch, o.labeled_batch_size)
            for ub in self.views.strong(u, epoch, o.unlabeled_batch_size, stream=1):
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
                               self.run_dir / "semi", self._loop_config(o.epochs, ema=True),
                               scheduler=scheduler, on_epoch_start=start)
        return self.trainer.fit()

    # ---- both ------------------------------------------------------------------------------
    def run(self) -> LoopResult:
        o = self.cfg.optim
        histories: dict[str, list] = {}
        fit = None
        if o.warmup_epochs > 0:
            fit = self.warmup()
            histories["warmup"] = fit.history
        phase = "warmup"
        if o.epochs > 0:
            fit = self.semi()
            histories["semi"] = fit.history
            phase = "semi"
        return LoopResult(phase, fit.best_epoch, fit.best, histories,
                          self.run_dir / phase / BEST)


# ---- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """What `train` returns (the CLI prints test_map, best_epoch and val_map)."""

    run_dir: Path
    test_map: float
    val_map: float
    best_epoch: int
    phase: str
    history: list[dict[str, Any]]


def finish_run(cfg: SSMLLConfig, model: nn.Module, test_views: Views, splits: SSMLLSplits,
               loop: LoopResult, run_dir: Path, device: torch.device, started: float,
               extra: dict[str, Any] | None = None) -> RunResult:
    """Load the selected weights, score the test split, write `test_scores.npy` and
    `results.json` (test mAP, per-class AP, CF1/OF1 at 0.5, pseudo-label quality per epoch)."""
    from vlml.recipes.spml.recipe import evaluate_scores

    test = splits.test
    probs = _test_probs(model, loop.weights, cfg, test_views, test, device)
    save_npy_atomic(run_dir / "test_scores.npy", probs)
    scores = evaluate_scores(probs, test)
    semi_hist = loop.histories.get("semi", [])
    quality = [{k: v for k, v in rec.items()
                if k == "epoch" or k.startswith(("pl_", "teacher_pl_"))}
               for rec in semi_hist]
    seconds = {ph: [rec.get("train_seconds", 0.0) + rec.get("pseudo_seconds", 0.0)
                    for rec in hist] for ph, hist in loop.histories.items()}
    val_map = loop.best.get("val_map")
    result = {
        "name": cfg.name, "dataset": cfg.data.dataset, "p": cfg.data.p,
        "n_labeled": int(splits.labeled.size), "n_unlabeled": int(splits.unlabeled.size),
        "n_holdout": int(splits.holdout.size), "n_test": test.n_images,
        "selection": cfg.data.selection, "phase": loop.phase, "best_epoch": loop.best_epoch,
        "val_map": val_map, **scores, "pseudo_quality": quality,
        "epoch_seconds": {ph: float(np.mean(s)) if s else None for ph, s in seconds.items()},
        "wall_seconds": time.perf_counter() - started, **(extra or {}),
    }
    write_json_atomic(run_dir / "results.json", result)
    write_ssmll_run_report(run_dir, result)
    return RunResult(run_dir, scores["test_map"],
                     float("nan") if val_map is None else float(val_map),
                     loop.best_epoch, loop.phase, loop.histories.get(loop.phase, []))


def _test_probs(model: nn.Module, weights: Path, cfg: SSMLLConfig, test_views: Views,
                test: Catalog, device: torch.device) -> np.ndarray:
    """(N, C) test probabilities of `model` with the weights file `weights` loaded."""
    model.load_state_dict(load_weights(weights, device))
    return predict(model, test_views.plain(np.arange(test.n_images), cfg.optim.eval_batch_size),
                   device).probs


def final_weights(run_dir: str | Path, cfg: SSMLLConfig) -> Path:
    """The weights file a finished run reports (its last phase's selected model)."""
    path = Path(run_dir) / ("semi" if cfg.optim.epochs > 0 else "warmup") / BEST
    if not path.is_file():
        raise DataError("no selected weights; has this run finished?", str(path))
    return path


def evaluate_saved(model: nn.Module, run_dir: str | Path, cfg: SSMLLConfig, test_views: Views,
                   test: Catalog, device: torch.device) -> dict[str, Any]:
    """Load a finished run's selected weights into `model` and score the test split."""
    from vlml.recipes.spml.recipe import evaluate_scores

    probs = _test_probs(model, final_weights(run_dir, cfg), cfg, test_views, test, device)
    result = evaluate_scores(probs, test)
    print(json.dumps({"run": str(run_dir), "test_map": result["test_map"]}))
    return result


__all__ = ["masked_asl", "one_cycle", "PseudoLabelMaker", "pseudo_quality", "predict",
           "Predictions", "ContextTask", "SemiSupervisedLoop", "LoopResult", "RunResult",
           "finish_run", "final_weights", "evaluate_saved", "BCE_PARAMS", "PHASES"]
