"""The CAP recipe: class-distribution-aware pseudo-labels for SSMLL (docs/methods.md 4, 5.9).

A timm backbone (ResNet-50, ImageNet weights; `pretrained: random` offline) + linear head,
trained with ASL: warm-up on the labeled images, then semi-supervised epochs with CAP
pseudo-labels from the EMA model's weak-view scores and the masked ASL on strong views
(`recipes/ssmll/loop.py`). Modes (`model.mode`):

- "end_to_end": from images. Weak view = flip + resize; strong = flip + resize + cutout +
  RandAugment (torchvision's, the reference uses the `randaugment` package); ImageNet
  normalisation (the reference feeds unnormalised [0, 1] tensors to an ImageNet model).
- "linear": a head (linear, or an MLP with `model.hidden` units) on cached frozen features,
  `model.features: backbone` (the frozen timm backbone) or `clip` (the CLIP global embeddings
  of `encoder`: "CAP from the same features" as CBSA). Strong view = feature noise.

`optim.epochs: 0` is the labeled-only baseline (the published "BCE/ASL labeled only" row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlml import encoders
from vlml.data.transforms import strong_features
from vlml.engine import seeded
from vlml.models import FrozenBackbone, MLPHead, MultiLabelNet, image_model, make_head
from vlml.pseudo.clip_scores import catalog_embeddings
from vlml.recipes.base import (
    Fitted,
    Inference,
    check_identity,
    encoder_record,
    load_recorded_encoder,
)
from vlml.recipes.ssmll.config import CAPConfig, validate_cap
from vlml.recipes.ssmll.data import (
    ArrayViews,
    ImageViews,
    SSMLLSplits,
    Views,
    load_splits,
)
from vlml.recipes.ssmll.parts import build_loop, check_batch_sizes
from vlml.recipes.ssmll.results import loop_fitted
from vlml.types import Catalog

Config = CAPConfig  # every recipe module names its config `Config`

validate = validate_cap

__all__ = ["Config", "CAPConfig", "CAPNet", "MLPHead", "validate", "load_splits", "fit",
           "load_model"]


class CAPNet(nn.Module):
    """forward(x) -> (logits (B, C), None): any classifier in the loop's interface."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.net(x), None


def preflight(cfg: CAPConfig) -> None:
    """Before any work: under torchrun the world size divides every batch size, and the
    weights this config needs can be had (no download tried): the CLIP encoder for
    `features: clip` in mode linear, else the backbone."""
    from vlml.models.backbone import check_backbone_weights

    check_batch_sizes(cfg)
    if cfg.model.mode == "linear" and cfg.model.features == "clip":
        encoders.check_weights(cfg.encoder.name, cfg.encoder.pretrained)
    else:
        check_backbone_weights(cfg.model.backbone, cfg.model.pretrained)


def _timm_net(cfg: CAPConfig, n_classes: int) -> MultiLabelNet:
    with seeded(cfg.seed):  # a random-init backbone is the same in train and reload
        return MultiLabelNet.create(cfg.model.backbone, n_classes, cfg.model.pretrained)


def _feature_encoder(cfg: CAPConfig, n_classes: int, device: torch.device) -> Any:
    if cfg.model.features == "clip":
        return encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
    net = _timm_net(cfg, n_classes)
    return FrozenBackbone(net.backbone, cfg.model.backbone, cfg.model.image_size, device)


def _embeddings(cfg: CAPConfig, enc: Any, catalog: Catalog, views: tuple[str, ...]
                ) -> dict[str, np.ndarray]:
    bs = cfg.encoder.batch_size if cfg.model.features == "clip" else cfg.optim.eval_batch_size
    return catalog_embeddings(catalog, enc, cfg.cache_dir, views, batch_size=bs,
                              progress=cfg.progress)


def _image_views(cfg: CAPConfig, catalog: Catalog) -> ImageViews:
    from torchvision import transforms as T

    from vlml.data.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    size = cfg.model.image_size
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return ImageViews(catalog, to_tensor, T.Resize((size, size)), cfg.augment, cfg.seed,
                      num_workers=cfg.optim.num_workers)


def _plain_views(cfg: CAPConfig, enc: Any, catalog: Catalog | None) -> Views | None:
    """Unaugmented views of a catalog (validation, test, tagging): images end to end, else the
    frozen encoder's cached features; None for no catalog."""
    if catalog is None:
        return None
    if cfg.model.mode == "end_to_end":
        return _image_views(cfg, catalog)
    return ArrayViews(_embeddings(cfg, enc, catalog, ("plain",))["plain"], None, cfg.seed)


def build(cfg: CAPConfig, splits: SSMLLSplits, device: torch.device
          ) -> tuple[CAPNet, Views, dict[str, Any], Any]:
    """The model, the train views of the configured mode, the model spec and the frozen
    encoder (None end to end)."""
    n_classes = splits.train.n_classes
    spec: dict[str, Any] = {"kind": "cap", "mode": cfg.model.mode, "n_classes": n_classes,
                            "backbone": cfg.model.backbone, "features": cfg.model.features,
                            "hidden": cfg.model.hidden}
    if cfg.model.mode == "end_to_end":
        return CAPNet(_timm_net(cfg, n_classes)).to(device), _image_views(cfg, splits.train), \
            spec, None
    enc = _feature_encoder(cfg, n_classes, device)
    train = _embeddings(cfg, enc, splits.train, ("plain", "flip"))
    spec["in_features"] = int(train["plain"].shape[1])
    if cfg.model.features == "backbone":
        spec["backbone_identity"] = enc.identity
    with seeded(cfg.seed):
        model = CAPNet(make_head(spec["in_features"], n_classes, cfg.model.hidden))
    views = ArrayViews(train["plain"], train["flip"], cfg.seed, strong_features(cfg.augment.noise))
    return model.to(device), views, spec, enc


def fit(cfg: CAPConfig, splits: SSMLLSplits, run_dir: Path, device: torch.device) -> Fitted:
    """Warm-up + semi-supervised phases in the claimed `run_dir`; resumable."""
    model, train_views, spec, enc = build(cfg, splits, device)
    val_views, test_views = (_plain_views(cfg, enc, c) for c in (splits.val, splits.test))
    built = build_loop(cfg, model, train_views, splits, run_dir, device,
                       test_views=test_views, val_views=val_views)
    loop = built.run()
    clip = (encoder_record(enc, cfg.encoder.name, cfg.encoder.pretrained)
            if spec["features"] == "clip" and enc is not None else None)
    extra = {"mode": cfg.model.mode, "features": cfg.model.features}
    return loop_fitted(cfg, model, test_views, splits, loop, run_dir, device, spec, clip, extra,
                       validation=built.validation)


def load_model(cfg: CAPConfig, record: dict[str, Any], device: torch.device) -> Inference:
    """The run's model rebuilt from its record (weights not loaded) and its catalog reader."""
    spec, bs = record["model"], cfg.optim.eval_batch_size
    enc: Any = None
    if spec["mode"] == "end_to_end":
        model = CAPNet(MultiLabelNet.create(spec["backbone"], spec["n_classes"], False))
    else:
        if spec["features"] == "clip":
            enc = load_recorded_encoder(record, device)
        else:
            enc = _feature_encoder(cfg, spec["n_classes"], device)
            check_identity(enc.identity, spec["backbone_identity"], "frozen backbone")
        model = CAPNet(make_head(spec["in_features"], spec["n_classes"], spec["hidden"]))

    def pixels() -> image_model.ImageModel:
        if spec["mode"] == "end_to_end":
            return image_model.from_net(model, cfg.model.image_size)
        if spec["features"] == "clip":
            return image_model.from_clip_head(enc, model)
        return image_model.from_backbone_head(enc, model, cfg.model.image_size)
    return Inference(model, lambda cat: _plain_views(cfg, enc, cat).plain(
        np.arange(cat.n_images), bs), pixels)
