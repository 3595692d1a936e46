"""The SPML recipe: VLPL (methods.md 3) and every baseline loss, by name.

single-positive catalog -> frozen CLIP embeddings, cached once (plain and flipped views) ->
pseudo-labels per view -> train with the configured loss (the flipped view of an image uses the
pseudo-labels of the flipped image's embedding) -> best epoch by clean-val mAP. The run
lifecycle around it (run folder, test scores, results) is `vlml.runs.run`.

>>> from vlml import config, runs
>>> from vlml.recipes import spml
>>> cfg = config.load(spml.Config, "spml/voc2007/vlpl", ["data.root=~/datasets"])  # doctest: +SKIP
>>> result = runs.run(cfg)                                                      # doctest: +SKIP

Under torchrun (`torchrun --nproc_per_node W -m vlml train ...`) every mode trains with DDP
(`vlml.engine.trainer`): `optim.batch_size` is the global batch, each rank taking 1/W of it
(a batch size W does not divide is refused), validation scores are gathered over ranks, only
rank 0 writes. Losses that average per-sample terms over the batch (AN, VLPL, EM, ... and the
stateless ones of `vlml.losses`) then train exactly as one process with the same batch does
(up to float rounding). Losses with a term over the whole batch do not: EPR (and ROLE, which
adds it) takes its expected-positive regulariser over each rank's part, and the large-loss
family (LL-R, LL-Ct, LL-Cp) rejects the k largest losses of each rank's part; they train, but
as with a W times smaller batch for that term. LL-Cp's permanent corrections are merged over
ranks at the end of every epoch (all ranks then hold the same label state), the APL soft
negatives come from gathered scores, and ROLE's label estimates get averaged gradients.
`optim.sync_bn` (end-to-end modes on GPUs) makes BatchNorm use the global batch's statistics.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlml import distributed, encoders, losses, metrics, pseudo
from vlml.engine import BEST, LoopConfig, Trainer, load_weights, predict, seeded
from vlml.fileio import save_npy_atomic, write_json_atomic
from vlml.models import FrozenBackbone, MultiLabelNet, image_model, make_head
from vlml.models.backbone import sync_batchnorm
from vlml.pseudo.base import to_jsonable
from vlml.pseudo.clip_scores import catalog_embeddings, similarities
from vlml.recipes import base, selection
from vlml.recipes.selection import Selection
from vlml.recipes.spml.config import SPMLConfig, needs_clip, needs_pseudo_labels, validate
from vlml.recipes.spml.data import SPMLSplits, load_splits
from vlml.recipes.spml.inputs import FeatureInputs, ImageInputs
from vlml.types import Catalog

_VLPL_PAPER_KEYS = {"voc": "voc", "coco": "coco", "nuswide": "nus", "cub": "cub"}

Config = SPMLConfig  # every recipe module names its config `Config`

__all__ = ["Config", "SPMLConfig", "validate", "load_splits", "fit", "load_model",
           "make_pseudo_labeler", "clip_pseudo_labels", "create_net"]


# ---- pseudo-labels ---------------------------------------------------------------------
def make_pseudo_labeler(cfg: SPMLConfig) -> pseudo.PseudoLabeler:
    """The configured labeller; VLPL without params takes the paper's per-dataset setting."""
    if cfg.pseudo.method == "vlpl" and not cfg.pseudo.params:
        family = losses.dataset_family(cfg.data.dataset)
        if family is None:
            from vlml.errors import ConfigError

            raise ConfigError(f"pseudo.params: dataset {cfg.data.dataset!r} has no published "
                              "VLPL setting; give pseudo.params.tau and pseudo.params.theta")
        return pseudo.VLPLThreshold.from_paper(_VLPL_PAPER_KEYS[family])
    return pseudo.create(cfg.pseudo.method, **cfg.pseudo.params)


def clip_pseudo_labels(cfg: SPMLConfig, encoder: encoders.Encoder,
                       views: dict[str, np.ndarray], train: Catalog
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per view, (N, C) int8 pseudo-labels on the entries `train.labels` leaves unknown; and
    the labeller's settings as used."""
    text = encoder.encode_classes(train.class_names, cfg.encoder.templates).cpu().numpy()
    labeller = make_pseudo_labeler(cfg)
    out = {}
    for view, emb in views.items():
        sims = similarities(emb, text)
        out[view] = pseudo.combine_with_observed(train.labels, labeller.fit(sims).transform(sims))
    return out, {"method": labeller.name, "params": to_jsonable(labeller.get_params())}


def _pseudo_report(run_dir: Path, train: Catalog, labels: dict[str, np.ndarray]) -> dict:
    """Saves the pseudo-labels (rank 0) and returns their quality (every rank)."""
    main = distributed.is_main()
    if main:
        for view, y in labels.items():
            save_npy_atomic(run_dir / f"pseudo_{view}.npy", y)
    truth = train.ground_truth
    if truth is None:
        return {}
    quality = metrics.pseudo_label_quality(labels["plain"], truth, train.class_names,
                                           mask=train.labels == -1)
    summary = {k: float(v) if isinstance(v, (float, np.floating)) else v
               for k, v in quality["overall"].items()}
    if main:
        write_json_atomic(run_dir / "pseudo_quality.json", summary)
    return summary


# ---- inputs and model ------------------------------------------------------------------
def _features(cfg: SPMLConfig, encoder: Any, catalog: Catalog, views: tuple[str, ...],
              batch_size: int) -> dict[str, np.ndarray]:
    return catalog_embeddings(catalog, encoder, cfg.cache_dir, views, batch_size=batch_size,
                              progress=cfg.progress)


def _split_features(cfg: SPMLConfig, encoder: Any, splits: SPMLSplits, batch_size: int
                    ) -> dict[str, dict[str, np.ndarray]]:
    """{split: {view: (N, D) features}} of a frozen encoder (CLIP or `FrozenBackbone`), cached;
    train gets the plain and flipped views, val and test the plain one."""
    out = {"train": _features(cfg, encoder, splits.train, ("plain", "flip"), batch_size),
           "val": _features(cfg, encoder, splits.val, ("plain",), batch_size)}
    if splits.test is not None:
        out["test"] = _features(cfg, encoder, splits.test, ("plain",), batch_size)
    return out


def _feature_inputs(cfg: SPMLConfig, feats: dict[str, dict[str, np.ndarray]]
                    ) -> dict[str, FeatureInputs]:
    o = cfg.optim
    return {name: FeatureInputs(v["plain"], v.get("flip"), o.batch_size, o.eval_batch_size,
                                cfg.seed) for name, v in feats.items()}


def _image_inputs(cfg: SPMLConfig, catalog: Catalog) -> ImageInputs:
    o = cfg.optim
    return ImageInputs(catalog, cfg.model.image_size, o.batch_size, o.eval_batch_size,
                       o.num_workers, cfg.seed)


def _optimizer(cfg: SPMLConfig, params: list, lr: float) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=o.weight_decay)


def preflight(cfg: SPMLConfig) -> None:
    """Before any work: the weights this config needs can be had (no download tried): the
    CLIP encoder when pseudo-labels or CLIP features are used, the backbone unless the model
    is a head on CLIP features. `WeightsUnavailableError` says where it looked and the ways out.
    Under DDP, `ConfigError` when the world size does not divide `optim.batch_size`."""
    from vlml.models.backbone import check_backbone_weights

    distributed.per_rank_batch(cfg.optim.batch_size, "optim.batch_size")
    if needs_clip(cfg):
        encoders.check_weights(cfg.encoder.name, cfg.encoder.pretrained)
    if not (cfg.model.mode == "linear" and cfg.model.features == "clip"):
        check_backbone_weights(cfg.model.backbone, cfg.model.pretrained)


def create_net(cfg: SPMLConfig, n_classes: int) -> MultiLabelNet:
    """Backbone + head, seeded so a random-init backbone is the same in train and reload."""
    with seeded(cfg.seed):
        return MultiLabelNet.create(cfg.model.backbone, n_classes, cfg.model.pretrained)


def _frozen_backbone(cfg: SPMLConfig, net: MultiLabelNet, device: torch.device
                     ) -> FrozenBackbone:
    return FrozenBackbone(net.backbone, cfg.model.backbone, cfg.model.image_size, device)


# ---- one training phase ----------------------------------------------------------------
def _scores(model: torch.nn.Module, inputs: Any, device: torch.device) -> np.ndarray:
    """(N, C) scores of every row of `inputs`: under DDP each rank scores its shard and the
    shards are gathered, so every rank holds the same array."""
    return predict(model, inputs.eval_batches(shard=True), device, gather=True).probs


def _merge_state(state: Any) -> None:
    """Under DDP, LL-Cp's permanent corrections (unknown -> positive) made by each rank on its
    rows, merged (elementwise max over ranks) so every rank, and the checkpoint, holds all of
    them; a row is seen once per epoch, so merging at the epoch's end is what one process
    does. Other states need no merge (APL: gathered scores; ROLE: averaged gradients)."""
    if not distributed.is_initialized() or state is None:
        return
    if isinstance(state, losses.LLCpState):
        distributed.all_reduce_tensor_(state.labels, "max")


def _train_phase(cfg: SPMLConfig, model: torch.nn.Module, inputs: dict[str, Any],
                 splits: SPMLSplits, pseudo_views: dict[str, np.ndarray] | None, run_dir: Path,
                 epochs: int, lr: float, device: torch.device, select: Selection) -> Any:
    entry = losses.get(cfg.loss.name)
    observed = torch.from_numpy(splits.train.labels).to(device)
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
    val = splits.val
    val_targets = base.evaluation_labels(val) if splits.val_clean else val.labels

    def step_loss(m: torch.nn.Module, batch: dict[str, Any], epoch: int) -> torch.Tensor:
        idx = batch["rows"].to(device)
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

    def evaluate(m: torch.nn.Module, epoch: int) -> dict[str, float | None]:
        scores = _scores(m, inputs["val"], device)
        value = select.score(scores, val_targets, list(val.class_names))
        return {select.metric: value, "select": -1.0 if value is None else value}

    def on_epoch_start(m: torch.nn.Module, epoch: int) -> None:
        if hasattr(state, "update") and epoch > 1:  # APL: soft negatives from last epoch's model
            state.update(_scores(m, inputs["train"], device), epoch - 1)
            m.train()

    def on_epoch_end(m: torch.nn.Module, epoch: int) -> None:
        _merge_state(state)

    loop = LoopConfig(epochs=epochs, grad_accum=cfg.optim.grad_accum, amp=cfg.optim.amp,
                      ema_decay=cfg.optim.ema_decay,
                      early_stop_patience=cfg.optim.early_stop_patience, seed=cfg.seed,
                      progress=cfg.progress, select_metric="select")
    trainer = Trainer(model, optimizer, inputs["train"].train_batches, step_loss, evaluate,
                      run_dir, loop, states={"loss_state": state} if state is not None else None,
                      on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end)
    return trainer.fit()


def _effective_loss(cfg: SPMLConfig) -> dict[str, Any]:
    entry = losses.get(cfg.loss.name)
    params = {**entry.params(cfg.data.dataset), **cfg.loss.params}
    return {"name": cfg.loss.name, "params": to_jsonable(params),
            "state_params": dict(cfg.loss.state_params)}


# ---- the recipe ------------------------------------------------------------------------
def fit(cfg: SPMLConfig, splits: SPMLSplits, run_dir: Path, device: torch.device) -> base.Fitted:
    """Train in the claimed `run_dir`; resumable. Returns the selected model and its record."""
    encoder, clip_feats, pseudo_views = None, None, None
    results: dict[str, Any] = {"loss": cfg.loss.name, "mode": cfg.model.mode,
                               "pseudo_quality": {}, "n_train": splits.train.n_images,
                               "n_val": splits.val.n_images}
    effective: dict[str, Any] = {"loss": _effective_loss(cfg)}
    if needs_pseudo_labels(cfg) and cfg.pseudo.method == "vlpl":  # before any extraction
        pseudo.vlpl.check_softmax_classes(splits.train.n_classes, "VLPL pseudo-labels",
                                          "Use pseudo.method: class_threshold instead.")
    if needs_clip(cfg):
        encoder = encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
        clip_feats = _split_features(cfg, encoder, splits, cfg.encoder.batch_size)
        if needs_pseudo_labels(cfg):
            pseudo_views, effective["pseudo"] = clip_pseudo_labels(
                cfg, encoder, clip_feats["train"], splits.train)
            results["pseudo_quality"] = _pseudo_report(run_dir, splits.train, pseudo_views)
    select = selection.for_validation(splits.val.labels, splits.val_clean, cfg.data.recall_k)
    n_classes, mode, m = splits.train.n_classes, cfg.model.mode, cfg.model
    lr, epochs = cfg.optim.lr, cfg.optim.epochs
    enc_record = None
    if mode == "linear" and m.features == "clip":
        inputs = _feature_inputs(cfg, clip_feats)
        dim = clip_feats["train"]["plain"].shape[1]
        with seeded(cfg.seed):
            model = make_head(dim, n_classes, m.hidden)
        spec = {"kind": "head", "features": "clip", "in_features": int(dim),
                "hidden": m.hidden, "n_classes": n_classes}
        enc_record = base.encoder_record(encoder, cfg.encoder.name, cfg.encoder.pretrained)
    else:
        net = create_net(cfg, n_classes)
        spec = {"kind": "net", "backbone": m.backbone, "n_classes": n_classes,
                "image_size": m.image_size}
        if mode in ("linear", "linear_init"):
            frozen = _frozen_backbone(cfg, net, device)
            inputs = _feature_inputs(cfg, _split_features(cfg, frozen, splits,
                                                          cfg.optim.eval_batch_size))
            with seeded(cfg.seed):
                model = make_head(net.backbone.num_features, n_classes, m.hidden) \
                    if m.hidden else net.head
            if mode == "linear":
                spec = {"kind": "head", "features": "backbone", "hidden": m.hidden,
                        "in_features": int(net.backbone.num_features), "n_classes": n_classes,
                        "backbone": m.backbone, "image_size": m.image_size,
                        "backbone_identity": frozen.identity}
            else:
                model.to(device)
                _train_phase(cfg, model, inputs, splits, pseudo_views, run_dir / "linear_phase",
                             m.linear_epochs, m.linear_lr, device, select)
                net.head.load_state_dict(load_weights(run_dir / "linear_phase" / BEST))
        if mode in ("end_to_end", "linear_init"):
            inputs = {name: _image_inputs(cfg, getattr(splits, name))
                      for name in ("train", "val", "test") if getattr(splits, name) is not None}
            model = sync_batchnorm(net, cfg.optim.sync_bn, device)
            net.backbone.requires_grad_(True)
    model.to(device)
    result = _train_phase(cfg, model, inputs, splits, pseudo_views, run_dir, epochs, lr, device,
                          select)
    model.load_state_dict(load_weights(run_dir / BEST, device))
    results["selection"] = {**select.describe(), "value": result.best.get(select.metric),
                            "n_images": splits.val.n_images}
    test = inputs["test"].eval_batches if "test" in inputs else None
    val_scores = _scores(model, inputs["val"], device)
    val_targets = base.evaluation_labels(splits.val) if splits.val_clean else splits.val.labels
    return base.Fitted(model, test, result.best_epoch, result.best.get("val_map"),
                       result.history, spec, BEST, enc_record, effective, results,
                       val_scores=val_scores, val_targets=val_targets)


def load_model(cfg: SPMLConfig, record: dict[str, Any], device: torch.device) -> base.Inference:
    """The run's model rebuilt from its record (weights not loaded) and its catalog reader."""
    spec = record["model"]
    bs = cfg.optim.eval_batch_size
    if spec["kind"] == "net":
        model = MultiLabelNet.create(spec["backbone"], spec["n_classes"], pretrained=False)
        return base.Inference(model, lambda cat: _image_inputs(cfg, cat).eval_batches(),
                              lambda: image_model.from_net(model, spec["image_size"]))
    if spec["features"] == "clip":
        encoder: Any = base.load_recorded_encoder(record, device)
    else:
        encoder = _frozen_backbone(cfg, create_net(cfg, spec["n_classes"]), device)
        base.check_identity(encoder.identity, spec["backbone_identity"], "frozen backbone")
    model = make_head(spec["in_features"], spec["n_classes"], spec["hidden"])

    def batches(catalog: Catalog) -> Any:
        plain = _features(cfg, encoder, catalog, ("plain",), bs)["plain"]
        return FeatureInputs(plain, None, 1, bs).eval_batches()

    def pixels() -> image_model.ImageModel:
        if spec["features"] == "clip":
            return image_model.from_clip_head(encoder, model)
        return image_model.from_backbone_head(encoder, model, spec["image_size"])
    return base.Inference(model, batches, pixels)
