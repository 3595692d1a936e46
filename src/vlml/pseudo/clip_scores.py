"""Image-class similarities from a frozen CLIP: the input of zero-shot scoring and labellers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlml.encoders import Encoder, extract_features
from vlml.errors import ConfigError
from vlml.pseudo.vlpl import check_softmax_classes, temperature_softmax
from vlml.types import Catalog

SCORE_MODES = ("softmax", "cosine")


def catalog_embeddings(catalog: Catalog, encoder: Encoder, cache_dir: str | Path,
                       views: Sequence[str] = ("plain",), batch_size: int = 64,
                       progress: bool = True, skip_bad: bool = False
                       ) -> dict[str, np.ndarray]:
    """{view: (N, D) float32 unit image embeddings}, from the feature cache (extracted once)."""
    caches = extract_features(catalog, encoder, cache_dir, views=views, batch_size=batch_size,
                              progress=progress, skip_bad=skip_bad)
    return {view: cache.embeddings for view, cache in caches.items()}


def similarities(embeddings: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(N, D) unit image embeddings x (C, D) unit class embeddings -> (N, C) cosines in [-1, 1]."""
    sims = np.asarray(embeddings, dtype=np.float32) @ np.asarray(text, dtype=np.float32).T
    return np.clip(sims, -1.0, 1.0)


def zero_shot_scores(sims: np.ndarray, mode: str = "softmax", tau: float = 0.01) -> np.ndarray:
    """Scores (N, C) from cosine similarities: softmax(sims / tau) over classes, or the cosines.

    The softmax needs C >= 2: over one class it is 1 for every image, so a one-class catalog
    is refused in that mode (the cosines rank its images)."""
    if mode == "softmax":
        check_softmax_classes(np.shape(sims)[-1], "zero-shot softmax scores",
                              "For one class use mode 'cosine' (the image-text similarity).")
        if tau <= 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        return temperature_softmax(sims, tau).astype(np.float32)
    if mode == "cosine":
        return np.asarray(sims, dtype=np.float32)
    raise ConfigError(f"zero-shot mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
