"""SPML classifiers: a timm backbone with a linear multi-label head, or the head alone.

Training modes (SPML literature): `end_to_end` (images -> backbone -> head, all trained),
`linear` (cached frozen features -> head), `linear_init` (train the head on cached features
first, then copy it into the end-to-end model and train everything).

A backbone's `pretrained` (config `model.pretrained`) is one of:
- `True`: timm's default pretrained weights for the name (ImageNet), from the local caches
  (Hugging Face hub cache, torch hub `checkpoints/`) or downloaded;
- `False` or `"random"` (the same): timm's random initialisation, drawn from the caller's torch
  RNG (the recipes draw it inside `vlml.engine.seeded(cfg.seed)`, so it is the same model in
  training and in a reloaded run; a frozen backbone's identity is the hash of its weights);
- a local checkpoint file (`.safetensors`, `.pth`, `.bin`): a timm state dict for the name,
  loaded with `weights_only=True`; a classifier in it is dropped.
`check_backbone_weights(name, pretrained)` says in about a second, without downloading, whether
they can be had (a run's preflight).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vlml.encoders.weights import (
    WeightsUnavailableError,
    host_reachable,
    hub_cache_dir,
    hub_cached,
    offline,
)
from vlml.engine.checkpoint import check_checkpoint_file, describe_load_error
from vlml.errors import ConfigError, DataError, UnknownNameError, VlmlError

TRAINING_MODES = ("end_to_end", "linear", "linear_init")
RANDOM = "random"
Pretrained = bool | str  # True (timm's weights), False / "random" (random init), or a file
CHECKPOINT_EXPECTED = ("a timm state dict of the backbone (a .safetensors, .pth or .bin file, "
                       "tensors only)")


def check_backbone_name(name: str) -> str:
    """Return `name` if timm knows it, else raise with the close matches."""
    if timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown backbone {name!r}.{hint} Any timm model name works "
                           "(see timm.list_models()), e.g. 'resnet50', 'convnext_tiny'.")


def backbone_weights(pretrained: Pretrained) -> bool | Path:
    """`pretrained` as the loader reads it: True (timm's weights), False (random init), or the
    resolved path of a local checkpoint file; `DataError` for a file that is not there."""
    if isinstance(pretrained, bool):
        return pretrained
    if not isinstance(pretrained, str) or not pretrained.strip():
        raise ConfigError(f"model.pretrained: expected true, false, random or the path of a "
                          f"local checkpoint file, got {pretrained!r}")
    if pretrained.strip().lower() == RANDOM:
        return False
    path = Path(pretrained).expanduser()
    if path.is_dir():
        raise DataError(f"model.pretrained is a folder; expected {CHECKPOINT_EXPECTED}",
                        str(path))
    if not path.is_file():
        raise DataError("backbone checkpoint file not found; model.pretrained takes true "
                        "(timm's ImageNet weights), false or random (random init), or the path "
                        "of a local checkpoint file (.safetensors, .pth, .bin)", str(path))
    return check_checkpoint_file(path, CHECKPOINT_EXPECTED).resolve()


def _weights_sources(name: str) -> tuple[str, Any]:
    """(kind, location) timm would load `name`'s pretrained weights from: "hf-hub" (repo id,
    or (repo id, filename)), "url", "file", ... as timm's own resolution; ("", None) if none."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return "", None
    cfg_dict = cfg.to_dict()
    try:
        from timm.models._builder import _resolve_pretrained_source
    except ImportError:  # timm moved its private helper: the usual order
        if cfg_dict.get("hf_hub_id"):
            return "hf-hub", cfg_dict["hf_hub_id"]
        return ("url", cfg_dict["url"]) if cfg_dict.get("url") else ("", None)
    return _resolve_pretrained_source(cfg_dict)


def _hub_names(filename: str | None) -> list[str]:
    """The files timm tries in a hub repo, in its order (safetensors alternatives first)."""
    filename = filename or "pytorch_model.bin"
    if filename.endswith(".safetensors"):
        return [filename]
    if filename == "pytorch_model.bin":
        return ["model.safetensors", filename]
    if filename.endswith(".bin"):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _unavailable(name: str, reason: str, looked: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for backbone {name!r} are not available ({reason}; no network?). "
        f"Looked in {looked}. Either download them where there is internet access (into that "
        f"cache, or as a file), then point to the local checkpoint file: "
        f"`model.pretrained=/path/to/{name}.safetensors` (create_backbone({name!r}, "
        f"pretrained='/path/to/file') in Python); or train without pretrained weights: "
        f"`model.pretrained=random` (a seeded random init).")


def check_backbone_weights(name: str, pretrained: Pretrained = True) -> str:
    """Whether `create_backbone(name, pretrained)` will find its weights, checked without
    downloading (a run's preflight): a one-line description of where they come from.

    timm's weights are looked up in the Hugging Face hub cache (or the torch hub
    `checkpoints/` folder for a URL); when not there, the download host is probed with a short
    timeout (none with `HF_HUB_OFFLINE=1`).

    Raises:
        UnknownNameError: not a timm model name.
        DataError: a checkpoint file that is not there.
        WeightsUnavailableError: not cached and not downloadable; the message names the
            weights, where they were looked for and the two ways out (a local file, `random`).
    """
    check_backbone_name(name)
    weights = backbone_weights(pretrained)
    if weights is False:
        return f"{name}: random init"
    if isinstance(weights, Path):
        return f"{name}: checkpoint file {weights}"
    kind, loc = _weights_sources(name)
    if kind == "hf-hub":
        repo, filename = loc if isinstance(loc, (tuple, list)) else (loc, None)
        repo, _, revision = repo.partition("@")
        names = _hub_names(filename)
        cached = hub_cached(repo, names, revision=revision or None)
        looked = f"the Hugging Face hub cache {hub_cache_dir()} ({repo}: {', '.join(names)})"
        host = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    elif kind == "url":
        from urllib.parse import urlsplit

        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(loc).path)
        cached = str(target) if target.is_file() else None
        looked = str(target)
        parts = urlsplit(loc)
        host = f"{parts.scheme}://{parts.netloc}"
    elif kind == "file":
        return f"{name}: checkpoint file {loc}"
    elif kind:
        return f"{name}: timm's {kind} weights"
    else:
        raise ConfigError(f"timm has no pretrained weights for backbone {name!r}; use "
                          "model.pretrained=random (random init) or the path of a local "
                          "checkpoint file")
    if cached:
        return f"{name}: cached at {cached}"
    if offline():
        raise _unavailable(name, "not in the local cache and HF_HUB_OFFLINE is set", looked)
    ok, why = host_reachable(host)
    if not ok:
        raise _unavailable(name, f"{host} is unreachable: {why}", looked)
    return f"{name}: not cached, will be downloaded from {host}"


def create_backbone(name: str, pretrained: Pretrained = False) -> nn.Module:
    """A timm model without its classifier: forward(images (B,3,H,W)) -> features (B, F).

    `pretrained`: True loads timm's ImageNet weights (cached, or downloaded on first use;
    `WeightsUnavailableError` at once when neither is possible), False or "random" gives timm's
    random init from the torch RNG, a path loads that local checkpoint file.
    """
    check_backbone_name(name)
    weights = backbone_weights(pretrained)
    if weights is True:
        check_backbone_weights(name, True)
    if isinstance(weights, Path):
        kwargs: dict[str, Any] = {"pretrained": True,
                                  "pretrained_cfg_overlay": {"file": str(weights)}}
    else:
        kwargs = {"pretrained": weights}
    try:
        return timm.create_model(name, num_classes=0, **kwargs)
    except VlmlError:
        raise
    except Exception as e:  # timm and torch raise many types for a foreign or damaged file
        if weights is False:
            raise
        why = describe_load_error(e)
        if isinstance(weights, Path):
            raise DataError(f"could not load this checkpoint into backbone {name!r}: {why}; "
                            f"expected {CHECKPOINT_EXPECTED}", str(weights)) from None
        raise VlmlError(f"could not load pretrained weights for backbone {name!r} ({why}). "
                        "Without network access use model.pretrained=random, or point "
                        "model.pretrained to a local checkpoint file.") from None


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
    def create(cls, backbone: str, num_classes: int,
               pretrained: Pretrained = False) -> MultiLabelNet:
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


def sync_batchnorm(model: nn.Module, enabled: bool, device: torch.device,
                   key: str = "optim.sync_bn") -> nn.Module:
    """The SyncBatchNorm option of end-to-end training under DDP (`key`).

    When `enabled` and this process is one of several (`vlml.distributed`), every BatchNorm
    layer of `model` (timm's BatchNormAct too) becomes a SyncBatchNorm, in place, so the batch
    statistics are those of the global batch (what one process with the same batch computes)
    rather than of each rank's part; otherwise `model` as is. Its state dict keeps the same
    keys, so the weights load into the plain model. torch runs SyncBatchNorm on GPUs only:
    `ConfigError` naming `key` on any other device.
    """
    from vlml import distributed

    if not enabled or distributed.world_size() <= 1:
        return model
    if device.type != "cuda":
        raise ConfigError(f"{key}: torch's SyncBatchNorm runs on CUDA devices only and this run "
                          f"trains on {device.type}; set {key}: false (each rank then "
                          "normalises with the statistics of its own part of the batch)")
    try:
        from timm.layers import convert_sync_batchnorm
    except ImportError:  # pragma: no cover - older timm
        convert_sync_batchnorm = nn.SyncBatchNorm.convert_sync_batchnorm
    converted = convert_sync_batchnorm(model)
    if converted is not model:  # a bare BatchNorm module: nothing to change in place
        raise ConfigError(f"{key}: the model is a single BatchNorm layer; expected a network")
    return model
