"""Config sections every recipe shares (torch-free): where the data comes from and which frozen
encoder reads it. A recipe's own sections subclass these and add their keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlml.config import setting


@dataclass(frozen=True)
class DataSource:
    """A registered dataset read from `root`, or prepared catalog files."""

    dataset: str = setting("voc2007", help="registered dataset read from root (with catalogs: "
                                           "any name; picks per-dataset hyper-parameters)")
    root: str = setting("", help="dataset folder (unused with train_catalog)")
    train_split: str = setting("trainval", help="split read for training")
    test_split: str = setting("test", help="split read for the test set")
    options: dict[str, Any] = setting({}, help="reader options, e.g. {version: cole2020}")
    train_catalog: str | None = setting(None, help="prepared train catalog instead of root")
    test_catalog: str | None = setting(None, help="prepared clean test catalog")


@dataclass(frozen=True)
class FrozenEncoder:
    """The frozen vision-language model (open_clip) a recipe reads images through."""

    name: str = setting("ViT-B-16", help="open_clip architecture or registered encoder")
    pretrained: str | None = setting("openai", help="open_clip weights tag, checkpoint file, "
                                     "random (random init, seed 0; random:SEED), or null (the "
                                     "default weights)")
    batch_size: int = setting(64, low=1, affects_results=False,
                              help="images per encoder batch when extracting features")


def resolve_regime(regime: str, train_catalog: str | None, simulated: str) -> str:
    """`regime` with "auto" resolved: "given" (labels as they are) when a train catalog is
    named, else the recipe's `simulated` benchmark regime."""
    if regime != "auto":
        return regime
    return "given" if train_catalog is not None else simulated

