"""Files shipped with vlml: the tiny CLIP of the toy world (open_clip config + weights).

The weights are produced by `scripts/train_tiny_clip.py` and load through open_clip's normal
local-checkpoint path:

>>> import open_clip
>>> name = register_tiny_clip()
>>> model, _, preprocess = open_clip.create_model_and_transforms(
...     name, pretrained=str(TINY_CLIP_WEIGHTS))  # doctest: +SKIP
>>> model = model.eval()  # a reloaded model is in training mode (BatchNorm)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
TINY_CLIP_NAME = "tiny_clip"  # open_clip names a config after its file's stem
TINY_CLIP_CONFIG = ASSETS_DIR / f"{TINY_CLIP_NAME}.json"
TINY_CLIP_WEIGHTS = ASSETS_DIR / f"{TINY_CLIP_NAME}.safetensors"


def register_tiny_clip() -> str:
    """Add the tiny CLIP config to open_clip's model registry (idempotent); return its name."""
    import open_clip

    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(TINY_CLIP_CONFIG)
    return TINY_CLIP_NAME
