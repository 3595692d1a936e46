"""The CAP recipe: class-distribution-aware pseudo-labels for SSMLL (methods.md 4, 5.9).

A timm backbone (ResNet-50, ImageNet weights; `pretrained: false` offline) + linear head,
trained with ASL: warm-up on the labeled images, then semi-supervised epochs with CAP
pseudo-labels from the EMA model's weak-view scores and the masked ASL on strong views
(`ssmll_loop`). Modes (`model.mode`):

- "end_to_end": from images. Weak view = flip + resize; strong = flip + resize + cutout +
  RandAugment (torchvision's, the reference uses the `randaugment` package); ImageNet
  normalisation (the reference feeds unnormalised [0, 1] tensors to an ImageNet model).
- "features": a head (linear, or an MLP with `model.hidden` units) on cached frozen features,
  `model.features: backbone` (the frozen timm backbone) or `clip` (the CLIP global embeddings
  of `encoder`: "CAP from the same features" as CBSA). Strong view = feature noise.

`optim.epochs: 0` is the labeled-only baseline (the published "BCE/ASL labeled only" row).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlml import config, encoders
from vlml.engine import resolve_device
from vlml.models import FrozenBackbone, MLPHead, MultiLabelNet, make_head
from vlml.pseudo.clip_scores import catalog_embeddings
from vlml.recipes.ssmll.config import CAPConfig, validate_cap
from vlml.recipes.ssmll.data import (
    ArrayViews,
    ImageViews,
    SSMLLSplits,
    Views,
    load_splits,
    strong_features,
)
from vlml.recipes.ssmll.loop import (
    RunResult,
    SemiSupervisedLoop,
    evaluate_saved,
    finish_run,
)

Config = CAPConfig  # every recipe module names its config `Config`

__all__ = ["Config", "CAPConfig", "CAPNet", "MLPHead", "train", "evaluate_run", "RunResult"]


class CAPNet(nn.Module):
    """forward(x) -> (logits (B, C), None): any classifier in the loop's interface."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.net(x), None


def _timm_net(cfg: CAPConfig, n_classes: int) -> MultiLabelNet:
    torch.manual_seed(cfg.seed)  # a random-init backbone is the same in train and eval
    return MultiLabelNet.create(cfg.model.backbone, n_classes, cfg.model.pretrained)


def _head(cfg: CAPConfig, in_features: int, n_classes: int) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return make_head(in_features, n_classes, cfg.model.hidden)


def _feature_encoder(cfg: CAPConfig, n_classes: int, device: torch.device) -> Any:
    if cfg.model.features == "clip":
        return encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
    net = _timm_net(cfg, n_classes)
    return FrozenBackbone(net.backbone, cfg.model.backbone, cfg.model.image_size, device)


def build(cfg: CAPConfig, splits: SSMLLSplits, device: torch.device
          ) -> tuple[CAPNet, Views, Views]:
    """The model and the (train, test) views of the configured mode."""
    n_classes = splits.train.n_classes
    if cfg.model.mode == "features":
        enc = _feature_encoder(cfg, n_classes, device)
        bs = cfg.encoder.batch_size if cfg.model.features == "clip" else cfg.optim.eval_batch_size
        kw = {"batch_size": bs, "progress": cfg.progress}
        train = catalog_embeddings(splits.train, enc, cfg.cache_dir, ("plain", "flip"), **kw)
        test = catalog_embeddings(splits.test, enc, cfg.cache_dir, **kw)["plain"]
        model = CAPNet(_head(cfg, train["plain"].shape[1], n_classes))
        views = (ArrayViews(train["plain"], train["flip"], cfg.seed,
                            strong_features(cfg.augment)),
                 ArrayViews(test, None, cfg.seed))
        return model.to(device), *views
    from torchvision import transforms as T

    from vlml.data.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    size = cfg.model.image_size
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    resize = T.Resize((size, size))
    model = CAPNet(_timm_net(cfg, n_classes))

    def views(catalog: Any) -> ImageViews:
        return ImageViews(catalog, to_tensor, resize, cfg.augment, cfg.seed,
                          num_workers=cfg.optim.num_workers)
    return model.to(device), views(splits.train), views(splits.test)


def train(cfg: CAPConfig) -> RunResult:
    """Run the whole recipe; resumable (re-running the same config continues the run)."""
    t0 = time.perf_counter()
    validate_cap(cfg)
    run_dir = Path(cfg.out_dir)
    splits = load_splits(cfg.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run_dir / "config.yaml")
    device = resolve_device(cfg.device)
    model, train_views, test_views = build(cfg, splits, device)
    loop = SemiSupervisedLoop(cfg, model, train_views, splits, run_dir, device,
                              test_views=test_views).run()
    extra = {"recipe": "cap", "mode": cfg.model.mode, "features": cfg.model.features,
             "pseudo_method": cfg.pseudo.method}
    return finish_run(cfg, model, test_views, splits, loop, run_dir, device, t0, extra)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-evaluate a finished run from its saved config and selected weights."""
    run_dir = Path(run_dir)
    cfg = config.load(CAPConfig, run_dir / "config.yaml")
    cfg.progress = False
    splits = load_splits(cfg.data)
    device = resolve_device(cfg.device)
    model, _, test_views = build(cfg, splits, device)
    return evaluate_saved(model, run_dir, cfg, test_views, splits.test, device)
