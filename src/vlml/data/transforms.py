"""Strong-view augmentations of the semi-supervised recipes (docs/methods.md 5.7), on numpy and PIL.

Every transform draws from an explicit `numpy.random.Generator`, so a batch's augmentation is a
pure function of the seed the caller builds it from (a resumed run replays it exactly).

- On images: `cutout` (CAP's cutout), used before RandAugment by the image views.
- On cached arrays, a documented stand-in for pixel augmentations (docs/methods.md 5.7):
  `token_dropout` (drop a share of the spatial tokens of (B, L + 1, D) dense tokens) and
  `feature_noise` (x + s rms(x) N(0, 1)); `strong_tokens` and `strong_features` compose them
  into the `augment(x, rng)` callables of the array views.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

ArrayAugment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def token_dropout(x: np.ndarray, drop: float, rng: np.random.Generator) -> np.ndarray:
    """Keep token 0 and a random `1 - drop` share (at least one) of the spatial tokens.

    x (B, L + 1, D) -> (B, 1 + L_keep, D), L_keep = max(1, round((1 - drop) L)); the kept
    tokens stay in their original order. The same L_keep for every image of the batch.
    """
    n_spatial = x.shape[1] - 1
    if drop <= 0 or n_spatial < 2:
        return x
    keep = max(1, int(round((1.0 - drop) * n_spatial)))
    idx = np.sort(np.argsort(rng.random((x.shape[0], n_spatial)), axis=1)[:, :keep], axis=1)
    kept = np.take_along_axis(x, (idx + 1)[..., None], axis=1)
    return np.concatenate([x[:, :1], kept], axis=1)


def feature_noise(x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """x + scale * rms(x) * N(0, 1), the RMS taken over the last axis of each vector.

    x (..., D) float32 -> same shape; `scale <= 0` returns `x` unchanged.
    """
    if scale <= 0:
        return x
    rms = np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True))
    return x + scale * rms * rng.standard_normal(x.shape, dtype=np.float32)


def strong_tokens(token_drop: float, noise: float) -> ArrayAugment:
    """The cached-token strong view: `token_dropout(token_drop)`, then `feature_noise(noise)`.

    Returns `augment(x (B, L + 1, D), rng) -> (B, 1 + L_keep, D)`.
    """
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return feature_noise(token_dropout(x, token_drop, rng), noise, rng)
    return apply


def strong_features(noise: float) -> ArrayAugment:
    """The cached-feature strong view: `feature_noise(noise)`; `augment(x (B, D), rng)`."""
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return feature_noise(x, noise, rng)
    return apply


def cutout(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Paint a random-colour rectangle of `factor` x the image's width and height, centred at a
    uniform random pixel and clipped to the image (CAP's cutout); a new image, `factor <= 0`
    returns `image` itself."""
    if factor <= 0:
        return image
    w, h = image.size
    cw, ch = int(factor * w + 0.5), int(factor * h + 0.5)
    cx, cy = int(rng.integers(w)), int(rng.integers(h))
    box = (max(cx - cw // 2, 0), max(cy - ch // 2, 0), min(cx + cw // 2, w), min(cy + ch // 2, h))
    out = image.copy()
    ImageDraw.Draw(out).rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return out


__all__ = ["token_dropout", "feature_noise", "strong_tokens", "strong_features", "cutout",
           "ArrayAugment"]
