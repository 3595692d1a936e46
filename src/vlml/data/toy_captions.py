"""Captions for toy scenes, used to pre-train the tiny CLIP.

Half of the captions name every object of the scene, the other half a random non-empty subset,
so that the single-class zero-shot prompt ("a photo of a red circle.") looks like a training
caption (docs/design.md, "The embedded toy world": naming all objects always gave zero-shot
mAP 0.47, naming subsets half of the time 0.72-0.77).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlml.errors import ConfigError

# Every template starts like the zero-shot prompt so that a one-object caption is that prompt.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
)
SUBSET_PROBABILITY = 0.5


def _with_article(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def join_names(names: Sequence[str]) -> str:
    """'a red circle', 'a red circle and a blue square', 'a x, a y and a z'."""
    parts = [_with_article(n) for n in names]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_for(objects: Sequence[str], rng: np.random.Generator,
                subset_probability: float = SUBSET_PROBABILITY) -> str:
    """A caption naming the objects of one scene (class names such as "red circle").

    With probability `subset_probability` the caption names a random non-empty subset of
    `objects`, otherwise all of them; the order of the names is shuffled either way.
    """
    names = list(dict.fromkeys(objects))
    if not names:
        raise ConfigError("caption_for needs at least one object name, got none")
    if rng.random() < subset_probability:
        k = int(rng.integers(1, len(names) + 1))
        names = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
    else:
        names = [names[i] for i in rng.permutation(len(names))]
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return template.format(join_names(names))
