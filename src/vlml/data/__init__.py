"""Dataset readers: each turns a dataset's real on-disk layout into a `Catalog` per split.

>>> from vlml import data
>>> cat = data.load("voc2007", root="~/datasets", split="trainval")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml.data import coco, cole, cub, folder, manifest, toy, voc
from vlml.registry import Registry
from vlml.types import Catalog


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: how to read it and which splits it names."""

    name: str
    reader: Callable[..., Catalog]
    splits: tuple[str, ...]
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def _register(name: str, reader: Callable[..., Catalog], splits: tuple[str, ...],
              description: str) -> None:
    DATASETS.register(name, DatasetEntry(name, reader, splits, description))


_register("voc2007", voc.read_voc2007, ("train", "val", "trainval", "test"),
          "PASCAL VOC 2007 (VOCdevkit/VOC2007/ImageSets/Main/<cls>_<split>.txt)")
_register("voc2012", voc.read_voc2012, ("train", "val", "trainval"),
          "PASCAL VOC 2012 (VOCdevkit/VOC2012/ImageSets/Main/<cls>_<split>.txt)")
_register("coco", coco.read_coco, ("train2014", "val2014", "train2017", "val2017"),
          "MS-COCO (annotations/instances_<split>.json, any year)")
_register("cub", cub.read_cub, ("train", "test"),
          "CUB-200-2011, 312 attribute labels (train_test_split.txt)")
_register("nuswide", cole.read_nuswide, ("train", "val"),
          "NUS-WIDE through the formatted arrays (either public version)")
_register("cole", cole.read_cole, ("train", "val"),
          "Cole et al. formatted arrays (formatted_<split>_{images,labels,labels_obs}.npy)")
_register("manifest", manifest.read_manifest, ("any",),
          "your own images: a CSV or JSONL manifest of image path + labels by class name")
_register("folder", folder.read_folder, ("any",),
          "your own images: one sub-folder per class (optionally under a split folder)")
_register("toy", toy.read_toy, tuple(toy.TOY_SPLITS),
          "embedded toy world: procedural 64x64 scenes, 16 colour-shape classes "
          "(generated on first use)")


def list_datasets() -> list[str]:
    """Names accepted by `load`."""
    return DATASETS.names()


def load(name: str, root: str | Path, split: str, **options: Any) -> Catalog:
    """Read split `split` of dataset `name` stored under `root` into a `Catalog`.

    `options` go to the reader (e.g. `difficult="ignore"` for VOC, `version=` for NUS-WIDE).
    """
    entry = DATASETS.get(name)
    return entry.reader(Path(root).expanduser(), split, **options)


__all__ = ["load", "list_datasets", "DATASETS", "DatasetEntry"]
