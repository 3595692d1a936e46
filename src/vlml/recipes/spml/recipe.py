"""The SPML recipe: VLPL (methods.md 3) and every baseline loss, by name.

single-positive catalog -> frozen CLIP embeddings, cached once (plain and flipped views) ->
pseudo-labels per view -> train with the configured loss (the flipped view of an image uses the
pseudo-labels of the flipped image's embedding) -> best epoch by clean-val mAP -> test mAP.

>>> from vlml import config
>>> from vlml.recipes.spml import recipe as vlpl
>>> cfg = config.load(vlpl.SPMLConfig, "configs/spml/voc2007/vlpl.yaml")   # doctest: +SKIP
>>> result = vlpl.train(cfg)                                              # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlml import config, encoders, losses, metrics, pseudo
from vlml.engine import BEST, LoopConfig, Trainer, load_weights, resolve_device
from vlml.fileio import save_npy_atomic, write_json_atomic
from vlml.models import FrozenBackbone, MultiLabelNet, make_head
from vlml.pseudo.clip_scores import catalog_embeddings, similarities
from vlml.recipes.spml.config import (
    SPMLConfig,
    needs_clip,
    needs_pseudo_labels,
    validate,
)
from vlml.recipes.spml.data import SPMLSplits, load_splits
from vlml.recipes.spml.inputs import FeatureInputs, ImageInputs, predict
from vlml.types import Catalog

_VLPL_PAPER_KEYS = {"voc": "voc", "coco": "coco", "nuswide": "nus", "cub": "cub"}

Config = SPMLConfig  # every recipe module names its config `Config`

__all__ = ["Config", "SPMLConfig", "train", "evaluate_run", "RunResult"]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    test_map: float
    val_map: float
    best_epoch: int
    history: list[dict[str, Any]]


# ---- pseudo-labels ---------------------------------------------------------------------
def make_pseudo_labeler(cfg: SPMLConfig) -> pseudo.PseudoLabeler:
    """The configured labeller; VLPL without params takes the paper's per-dataset setting."""
    if cfg.pseudo.method == "vlpl" and not cfg.pseudo.params:
        family = losses.dataset_family(cfg.data.dataset)
        if family is None:
            raise pseudo_params_error(cfg)
        return pseudo.VLPLThreshold.from_paper(_VLPL_PAPER_KEYS[family])
    return pseudo.create(cfg.pseudo.method, **cfg.pseudo.params)


def pseudo_params_error(cfg: SPMLConfig) -> Exception:
    from vlml.errors import ConfigError

    return ConfigError(f"pseudo.params: dataset {cfg.data.dataset!r} has no published VLPL "
                       "setting; give pseudo.params.tau and pseudo.params.theta")


def clip_pseudo_labels(cfg: SPMLConfig, encoder: encoders.Encoder,
                       views: dict[str, np.ndarray], train: Catalog) -> dict[str, np.ndarray]:
    """Per view, (N, C) int8 pseudo-labels on the entries `train.labels` leaves unknown."""
    text = encoder.encode_classes(train.class_names, cfg.encoder.templates).cpu().numpy()
    labeller = make_pseudo_labeler(cfg)
    out = {}
    for view, emb in views.items():
        sims = similarities(emb, text)
        out[view] = pseudo.combine_with_observed(train.labels, labeller.fit(sims).transform(sims))
    return out


def _pseudo_report(run_dir: Path, train: Catalog, labels: dict[str, np.ndarray]) -> dict:
    for view, y in labels.items():
        save_npy_atomic(run_dir / f"pseudo_{view}.npy", y)
    truth = train.ground_truth
    if truth is None:
        return {}
    quality = metrics.pseudo_label_quality(labels["plain"], truth, train.class_names,
                                           mask=train.labels == -1)
    summary = {k: float(v) if isinstance(v, (float, np.floating)) else v
               for k, v in quality["overall"].items()}
    write_json_atomic(run_dir / "pseudo_quality.json", summary)
    return summary


# ---- inputs and model ------------------------------------------------------------------
def _split_features(cfg: SPMLConfig, encoder: Any, splits: SPMLSplits, cache: Path,
                    batch_size: int) -> dict[str, dict[str, np.ndarray]]:
    """{split: {view: (N, D) features}} of a frozen encoder (CLIP or `FrozenBackbone`), cached;
    train gets the plain and flipped views, val and test the plain one."""
    kw = {"batch_size": batch_size, "progress": cfg.progress}
    return {"train": catalog_embeddings(splits.train, encoder, cache, ("plain", "flip"), **kw),
            "val": catalog_embeddings(splits.val, encoder, cache, **kw),
            "test": catalog_embeddings(splits.test, encoder, cache, **kw)}


def _feature_inputs(cfg: SPMLConfig, feats: dict[str, dict[str, np.ndarray]]
                    ) -> dict[str, FeatureInputs]:
    o = cfg.optim
    return {name: FeatureInputs(v["plain"], v.get("flip"), o.batch_size, o.eval_batch_size,
                                cfg.seed) for name, v in feats.items()}


def _image_inputs(cfg: SPMLConfig, splits: SPMLSplits) -> dict[str, ImageInputs]:
    o = cfg.optim
    return {name: ImageInputs(getattr(splits, name), cfg.model.image_size, o.batch_size,
                              o.eval_batch_size, o.num_workers, cfg.seed)
            for name in ("train", "val", "test")}


def _optimizer(cfg: SPMLConfig, params: list, lr: float) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=o.weight_decay)


# ---- one training phase ----------------------------------------------------------------
def _fit(cfg: SPMLConfig, model: torch.nn.Module, inputs: dict[str, Any], train: Catalog,
         val: Catalog, pseudo_views: dict[str, np.ndarray] | None, run_dir: Path,
         epochs: int, lr: float, device: torch.device) -> tuple[Trainer, Any]:
    entry = losses.get(cfg.loss.name)
    observed = torch.from_numpy(train.labels).to(device)
    views = {k: torch.from_numpy(v).to(device) for k, v in (pseudo_views or {}).items()}
    state = None
    if entry.state is not None:
        state_params = dict(cfg.loss.state_params)
        if "seed" in inspect.signature(entry.state).parameters:
            state_params.setdefault("seed", cfg.seed)
        state = entry.make_state(observed, dataset=cfg.data.dataset, **state_params)
        if isinstance(state, torch.nn.Module):
            state.to(device)
    params: list = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if hasattr(state, "param_group"):
        params.append(state.param_group(lr))
    optimizer = _optimizer(cfg, params, lr)
    val_truth = val.ground_truth

    def step_loss(m: torch.nn.Module, batch: dict[str, Any], epoch: int) -> torch.Tensor:
        idx = batch["index"].to(device)
        logits = m(batch["x"].to(device, non_blocking=True)).float()
        extra: dict[str, Any] = {}
        if "pseudo" in entry.batch_inputs:
            flipped = batch["flipped"].to(device)[:, None]
            extra["pseudo"] = torch.where(flipped, views["flip"][idx], views["plain"][idx])
        if "epoch" in entry.batch_inputs:
            extra["epoch"] = epoch
        if "indices" in entry.batch_inputs:
            extra["indices"] = idx
        if "state" in entry.batch_inputs:
            extra["state"] = state
        return entry(logits, observed[idx], dataset=cfg.data.dataset, **cfg.loss.params,
                     **extra)

    def evaluate(m: torch.nn.Module, epoch: int) -> dict[str, float]:
        scores = predict(m, inputs["val"].eval_batches(), device)
        report = metrics.map_report(scores, val_truth, empty="skip",
                                    class_names=list(val.class_names))
        return {"val_map": report.map}

    def on_epoch_start(m: torch.nn.Module, epoch: int) -> None:
        if hasattr(state, "update") and epoch > 1:  # APL: soft negatives from last epoch's model
            state.update(predict(m, inputs["train"].eval_batches(), device), epoch - 1)
            m.train()

    loop = LoopConfig(epochs=epochs, grad_accum=cfg.optim.grad_accum, amp=cfg.optim.amp,
                      ema_decay=cfg.optim.ema_decay,
                      early_stop_patience=cfg.optim.early_stop_patience, seed=cfg.seed,
                      progress=cfg.progress)
    trainer = Trainer(model, optimizer, inputs["train"].train_batches, step_loss, evaluate,
                      run_dir, loop, states={"loss_state": state} if state is not None else None,
                      on_epoch_start=on_epoch_start)
    return trainer, trainer.fit()


# ---- the recipe ------------------------------------------------------------------------
def create_net(cfg: SPMLConfig, n_classes: int) -> MultiLabelNet:
    """Backbone + head, seeded so a random-init backbone is the same in train and eval."""
    torch.manual_seed(cfg.seed)
    return MultiLabelNet.create(cfg.model.backbone, n_classes, cfg.model.pretrained)


def prepare(cfg: SPMLConfig) -> tuple[SPMLSplits, torch.device, Path]:
    validate(cfg)
    splits = load_splits(cfg.data)  # before the run folder exists: bad data leaves nothing
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    return splits, resolve_device(cfg.device), run_dir


def train(cfg: SPMLConfig) -> RunResult:
    """Run the whole recipe; resumable (re-running the same config continues the run)."""
    t0 = time.perf_counter()
    splits, device, run_dir = prepare(cfg)
    cache = Path(cfg.cache_dir)
    clip_feats, pseudo_views, pseudo_summary = None, None, {}
    if needs_clip(cfg):
        encoder = encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
        clip_feats = _split_features(cfg, encoder, splits, cache, cfg.encoder.batch_size)
        if needs_pseudo_labels(cfg):
            pseudo_views = clip_pseudo_labels(cfg, encoder, clip_feats["train"], splits.train)
            pseudo_summary = _pseudo_report(run_dir, splits.train, pseudo_views)
    n_classes = splits.train.n_classes
    mode = cfg.model.mode
    if mode == "linear" and cfg.model.features == "clip":
        inputs = _feature_inputs(cfg, clip_feats)
        model = make_head(clip_feats["train"]["plain"].shape[1], n_classes, cfg.model.hidden)
        lr, epochs = cfg.optim.lr, cfg.optim.epochs
    else:
        net = create_net(cfg, n_classes)
        if mode in ("linear", "linear_init"):
            frozen = FrozenBackbone(net.backbone, cfg.model.backbone, cfg.model.image_size,
                                    device)
            feats = _split_features(cfg, frozen, splits, cache, cfg.optim.eval_batch_size)
            inputs = _feature_inputs(cfg, feats)
            model = (make_head(net.backbone.num_features, n_classes, cfg.model.hidden)
                     if cfg.model.hidden else net.head)
            lr = cfg.optim.lr if mode == "linear" else cfg.model.linear_lr
            epochs = cfg.optim.epochs if mode == "linear" else cfg.model.linear_epochs
        if mode == "linear_init":
            model.to(device)
            _fit(cfg, model, inputs, splits.train, splits.val, pseudo_views,
                 run_dir / "linear_phase", epochs, lr, device)
            net.head.load_state_dict(load_weights(run_dir / "linear_phase" / BEST))
        if mode in ("end_to_end", "linear_init"):
            inputs, model = _image_inputs(cfg, splits), net
            net.backbone.requires_grad_(True)
            lr, epochs = cfg.optim.lr, cfg.optim.epochs
    model.to(device)
    trainer, fit = _fit(cfg, model, inputs, splits.train, splits.val, pseudo_views, run_dir,
                        epochs, lr, device)
    model.load_state_dict(load_weights(run_dir / BEST, device))
    test_scores = predict(model, inputs["test"].eval_batches(), device)
    save_npy_atomic(run_dir / "test_scores.npy", test_scores)
    test = evaluate_scores(test_scores, splits.test)
    result = {
        "name": cfg.name, "loss": cfg.loss.name, "mode": mode, "dataset": cfg.data.dataset,
        "best_epoch": fit.best_epoch, "val_map": fit.best["val_map"], **test,
        "pseudo_quality": pseudo_summary, "wall_seconds": time.perf_counter() - t0,
        "n_train": splits.train.n_images, "n_val": splits.val.n_images,
        "n_test": splits.test.n_images,
    }
    write_json_atomic(run_dir / "results.json", result)
    return RunResult(run_dir, test["test_map"], fit.best["val_map"], fit.best_epoch,
                     fit.history)


def evaluate_scores(scores: np.ndarray, catalog: Catalog) -> dict[str, Any]:
    """Test mAP (percent), per-class AP, and CF1/OF1 at threshold 0.5 of sigmoid scores."""
    truth = catalog.ground_truth
    report = metrics.map_report(scores, truth, class_names=list(catalog.class_names))
    at_half = metrics.threshold_metrics(scores, truth, threshold=0.5)
    return {"test_map": report.map, "test_n_skipped_classes": report.n_skipped,
            "test_per_class_ap": dict(zip(catalog.class_names,
                                          map(float, report.per_class_ap), strict=True)),
            "test_at_0.5": {k: float(v) for k, v in at_half.items()}}


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-evaluate a finished run from its saved config and best weights."""
    run_dir = Path(run_dir)
    cfg = config.load(SPMLConfig, run_dir / "config.yaml")
    cfg.progress = False
    splits, device = load_splits(cfg.data), resolve_device(cfg.device)
    weights = load_weights(run_dir / BEST, device)
    n_classes = splits.test.n_classes
    if cfg.model.mode == "linear":
        if cfg.model.features == "clip":
            encoder = encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
        else:
            encoder = FrozenBackbone(create_net(cfg, n_classes).backbone, cfg.model.backbone,
                                     cfg.model.image_size, device)
        plain = catalog_embeddings(splits.test, encoder, cfg.cache_dir, progress=False)["plain"]
        model = make_head(plain.shape[1], n_classes, cfg.model.hidden)
        batches = FeatureInputs(plain, None, 1, cfg.optim.eval_batch_size).eval_batches()
    else:
        model = MultiLabelNet.create(cfg.model.backbone, n_classes, pretrained=False)
        batches = ImageInputs(splits.test, cfg.model.image_size, 1, cfg.optim.eval_batch_size,
                              cfg.optim.num_workers).eval_batches()
    model.load_state_dict(weights)
    model.to(device)
    result = evaluate_scores(predict(model, batches, device), splits.test)
    print(json.dumps({"run": str(run_dir), "test_map": result["test_map"]}))
    return result
