"""Vision-language encoders: open_clip adapter, prompts, dense tokens and the feature cache.

>>> enc = load("ViT-B-32", pretrained="openai")          # doctest: +SKIP
>>> text = enc.encode_classes(["cat", "dog"])            # doctest: +SKIP
>>> enc = load("ViT-B-32", pretrained="random")          # doctest: +SKIP  (no weights needed)
"""

from __future__ import annotations

from vlml._lazy import lazy_attributes

# The registry is torch-free (`list_architectures()` lists names instantly); everything else
# imports torch and open_clip, so it is imported on first access.
from vlml.encoders.registry import (
    EncoderSpec,
    add_model_config,
    get_spec,
    list_architectures,
    list_encoders,
)

_LAZY = {
    "CacheMissError": "cache", "FeatureCache": "cache", "FeatureKey": "cache",
    "extract_features": "cache", "image_list_hash": "cache", "PeerStoppedError": "cache",
    "Encoder": "clip", "load": "clip", "check_weights": "clip",
    "DEFAULT_TEMPLATES": "prompts", "list_template_sets": "prompts",
    "resolve_templates": "prompts",
    "WeightsUnavailableError": "weights",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "Encoder", "load", "check_weights", "list_encoders", "list_architectures", "get_spec",
    "EncoderSpec", "add_model_config",
    "DEFAULT_TEMPLATES", "list_template_sets", "resolve_templates",
    "WeightsUnavailableError", "extract_features", "FeatureCache", "FeatureKey",
    "CacheMissError", "image_list_hash", "PeerStoppedError",
]
