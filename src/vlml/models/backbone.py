"""SPML classifiers: a timm backbone with a linear multi-label head, or the head alone.

Training modes (SPML literature): `end_to_end` (images -> backbone -> head, all trained),
`linear` (cached frozen features -> head), `linear_init` (train the head on cached features
first, then copy it into the end-to-end model and train everything).
"""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from vlml.errors import ConfigError, UnknownNameError, VlmlError

TRAINING_MODES = ("end_to_end", "linear", "linear_init")


def check_backbone_name(name: str) -> str:
    """Return `name` if timm knows it, else raise with the close matches."""
    if timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown backbone {name!r}.{hint} Any timm model name works "
                           "(see timm.list_models()), e.g. 'resnet50', 'convnext_tiny'.")


def create_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """A timm model without its classifier: forward(images (B,3,H,W)) -> features (B, F).

    `pretrained=True` loads timm's ImageNet weights (downloaded on first use).
    """
    check_backbone_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError, ValueError) as e:
        if not pretrained:
            raise
        raise VlmlError(f"could not load pretrained weights for backbone {name!r} ({e}). "
                        "Without network access use pretrained=False, or download the weights "
                        "elsewhere into the Hugging Face cache (HF_HOME).") from e


class LinearHead(nn.Module):
    """forward(features (B, F)) -> logits (B, C)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.float())


class MLPHead(nn.Module):
    """forward(features (B, F)) -> logits (B, C) through one hidden ReLU layer of `hidden` units."""

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float())


def make_head(in_features: int, num_classes: int, hidden: int = 0) -> nn.Module:
    """A head on frozen features: linear when `hidden` is 0, else an `MLPHead`."""
    if hidden < 0:
        raise ConfigError(f"model.hidden must be >= 0 (0 = linear head), got {hidden}")
    if hidden == 0:
        return LinearHead(in_features, num_classes)
    return MLPHead(in_features, hidden, num_classes)


class MultiLabelNet(nn.Module):
    """Backbone + linear head: forward(images (B, 3, H, W)) -> logits (B, C)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = LinearHead(backbone.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @classmethod
    def create(cls, backbone: str, num_classes: int, pretrained: bool = False) -> MultiLabelNet:
        return cls(create_backbone(backbone, pretrained), num_classes)


class FrozenBackbone:
    """A frozen timm backbone exposing what the feature cache needs (like `encoders.Encoder`).

    `encode_images` returns raw pooled features (B, F) float32, not normalised, so a head
    trained on them transfers unchanged to `MultiLabelNet` (the `linear_init` mode). The
    weights' identity in the cache key is the sha256 of the state dict, so random-init
    backbones with different seeds never share a cache.
    """

    supports_dense = False

    def __init__(self, backbone: nn.Module, name: str, image_size: int,
                 device: torch.device) -> None:
        from vlml.data.torch_dataset import IMAGENET_MEAN, IMAGENET_STD, image_transform

        self.model = backbone.to(device).eval().requires_grad_(False)
        self.name = name
        self.architecture = f"timm-{name}"
        self.device = device
        self.embed_dim = int(backbone.num_features)
        self.weights_file = ""
        self.image_size = (image_size, image_size)
        self.preprocess = image_transform(image_size)
        self.identity = {
            "architecture": self.architecture, "weights": f"sha256:{_state_hash(backbone)}",
            "preprocess": {"size": [image_size, image_size], "resize": "squash",
                           "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "precision": "fp32"}

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.device)).float()


def _state_hash(module: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]
