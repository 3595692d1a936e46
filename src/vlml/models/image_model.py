"""Every trained run (and zero-shot CLIP) as one module from preprocessed pixels to per-class
probabilities: what tagging (`vlml.predict`) and export (`vlml.export`) run.

A run scores its test set from cached features; an `ImageModel` recomputes the same numbers
from images: the frozen encoder's forward, then the run's head, in the precision the cache
stored (CBSA's dense tokens are float16 in the cache, so they are rounded to float16 here too).
The modules hold no Python-side state that depends on the input, so `torch.onnx.export` and
`torch.jit.trace` see one graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("clip_head", "backbone_head", "net", "cbsa", "zero_shot")


@dataclass
class ImageModel:
    """Pixels to probabilities, and how pixels are made.

    Attributes:
        module: forward((B, 3, H, W) float32 preprocessed images) -> (B, C) float32 in [0, 1].
        preprocess: PIL image -> (3, H, W) float32 tensor (the run's eval transform).
        preprocess_spec: JSON-ready: size [H, W], mean, std, interpolation, resize mode.
        kind: one of `KINDS`.
        image_size: (H, W) the module expects.
    """

    module: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    preprocess_spec: dict[str, Any]
    kind: str

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.preprocess_spec["size"]
        return int(h), int(w)


def _first(out: Any) -> torch.Tensor:
    """Class logits from a forward that returns logits or (logits, context logits)."""
    return out[0] if isinstance(out, tuple) else out


class ClipEmbedding(nn.Module):
    """open_clip image tower -> (B, D) unit float32 embeddings (`Encoder.encode_images`)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x).float(), dim=-1)


class FeatureHead(nn.Module):
    """features(x) -> head -> sigmoid. `features`: a `ClipEmbedding` or a timm backbone."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(_first(self.head(self.features(x).float())).float())


class NetProbs(nn.Module):
    """A model on images (end to end) -> sigmoid of its class logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(_first(self.net(x)).float())


class TokenHead(nn.Module):
    """Dense tokens of an open_clip image tower -> CBSA's alignment head -> sigmoid.

    `text`: the class text features, computed once from the trained prompts (a tuple (pos,
    neg or None) held as buffers). `token_dtype`: float16 when the run trained on cached
    tokens (the cache stores float16), else float32.
    """

    def __init__(self, visual: nn.Module, net: nn.Module, text: tuple[torch.Tensor, Any],
                 token_dtype: torch.dtype) -> None:
        super().__init__()
        from vlml.encoders import dense

        self.visual, self.net, self.token_dtype = visual, net, token_dtype
        self._dense = dense.dense_tokens
        pos, neg = text
        self.register_buffer("text_pos", pos.detach().float().clone())
        self.register_buffer("text_neg", None if neg is None else neg.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._dense(self.visual, x).float().to(self.token_dtype).float()
        return torch.sigmoid(_first(self.net(tokens, (self.text_pos, self.text_neg))).float())


class ZeroShot(nn.Module):
    """CLIP zero-shot: softmax over classes of cosine(image, class text) / tau."""

    def __init__(self, visual: nn.Module, text: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.embed = ClipEmbedding(visual)
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1).clone())
        self.tau = float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.embed(x) @ self.text.T / self.tau, dim=-1)


def clip_spec(encoder: Any) -> dict[str, Any]:
    """The preprocessing of an `encoders.Encoder` (its identity's preprocess settings)."""
    return dict(encoder.identity["preprocess"])


def imagenet_spec(size: int) -> dict[str, Any]:
    """`data.torch_dataset.image_transform(size)`: squash-resize, bilinear, ImageNet stats."""
    from vlml.data.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    return {"size": [size, size], "resize_mode": "squash", "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def from_clip_head(encoder: Any, head: nn.Module) -> ImageModel:
    """A head on CLIP embeddings (SPML/CAP `linear` with `features: clip`)."""
    module = FeatureHead(ClipEmbedding(encoder.model.visual), head)
    return ImageModel(module.eval(), encoder.preprocess, clip_spec(encoder), "clip_head")


def from_backbone_head(frozen: Any, head: nn.Module, size: int) -> ImageModel:
    """A head on a frozen timm backbone's pooled features (`models.backbone.FrozenBackbone`)."""
    module = FeatureHead(frozen.model, head)
    return ImageModel(module.eval(), frozen.preprocess, imagenet_spec(size), "backbone_head")


def from_net(net: nn.Module, size: int) -> ImageModel:
    """A model trained end to end on images of `size` (ImageNet preprocessing)."""
    from vlml.data.torch_dataset import image_transform

    return ImageModel(NetProbs(net).eval(), image_transform(size), imagenet_spec(size), "net")


def from_cbsa(encoder: Any, net: nn.Module, cached_tokens: bool) -> ImageModel:
    """CBSA's head on the encoder's dense tokens; `net.prepare_eval()` gives the text."""
    with torch.no_grad():
        text = net.prepare_eval()["text"]
    dtype = torch.float16 if cached_tokens else torch.float32
    module = TokenHead(encoder.model.visual, net, text, dtype)
    return ImageModel(module.eval(), encoder.preprocess, clip_spec(encoder), "cbsa")


def zero_shot(encoder: Any, class_names: list[str], templates: list[str] | None = None,
              tau: float = 0.03) -> ImageModel:
    """Open-vocabulary scores: softmax(cos / tau) over `class_names` (template ensemble)."""
    from vlml.encoders import prompts

    text = encoder.encode_classes(class_names, templates or prompts.DEFAULT_TEMPLATES)
    module = ZeroShot(encoder.model.visual, text.clone(), tau)
    return ImageModel(module.eval(), encoder.preprocess, clip_spec(encoder), "zero_shot")
