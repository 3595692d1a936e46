"""Dataset readers: each turns a dataset's real on-disk layout into a `Catalog` per split.

>>> from vlml import data
>>> cat = data.load("voc2007", root="~/datasets", split="trainval")   # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import inspect
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml.data import coco, cole, cub, folder, manifest, toy, untagged, voc
from vlml.errors import ConfigError, DataError
from vlml.registry import Registry
from vlml.types import Catalog

_OPTION_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: how to read it, which splits it names, and (for the readers of a
    user's own files) the format it reads, shown by `vlml data prepare NAME --help`."""

    name: str
    reader: Callable[..., Catalog]
    splits: tuple[str, ...]
    description: str
    format_help: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """The reader's keyword options besides `root` and `split` (`--option KEY=VALUE`)."""
        params = inspect.signature(self.reader).parameters.values()
        return tuple(p.name for p in params
                     if p.kind in _OPTION_KINDS and p.name not in ("root", "split"))

    def check_options(self, options: dict[str, Any]) -> None:
        """`ConfigError` naming the unknown keys of `options` and listing the valid ones."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            close = difflib.get_close_matches(unknown[0], self.options, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(self.options) or "none"
            raise ConfigError(f"unknown option(s) {unknown} for dataset {self.name!r}{hint}; "
                              f"valid options: {valid}")
        hints = typing.get_type_hints(self.reader)
        for key, value in options.items():
            hint = hints.get(key)
            if hint is not None and not _option_ok(hint, value):
                raise ConfigError(f"option {key}={value!r} for dataset {self.name!r}: expected "
                                  f"{_option_type(hint)}")


def _option_ok(hint: Any, value: Any) -> bool:
    """Whether `value` fits a reader option's annotation (bool, int, str, paths, lists of
    strings, None and unions of them; other annotations accept anything)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_option_ok(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple, Sequence):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return True


def _option_type(hint: Any) -> str:
    """An annotation in words: "a file path or a list of strings or null"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_option_type(a) for a in typing.get_args(hint)))
    words = {type(None): "null", bool: "true or false", int: "an integer", float: "a number",
             str: "a string", Path: "a file path", os.PathLike: "a file path"}
    return words.get(hint, "a list of strings" if typing.get_origin(hint) in (
        list, tuple, Sequence) else str(hint))


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def _register(name: str, reader: Callable[..., Catalog], splits: tuple[str, ...],
              description: str, format_help: str | None = None) -> None:
    DATASETS.register(name, DatasetEntry(name, reader, splits, description,
                                         inspect.cleandoc(format_help or "")))


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
          "your own images: a CSV or JSONL manifest of image path + labels by class name",
          manifest.__doc__)
_register("folder", folder.read_folder, ("any",),
          "your own images: one sub-folder per class (optionally under a split folder)",
          folder.__doc__)
_register("images", untagged.read_images, ("any",),
          "your own images, untagged: every image under a folder, every label unknown "
          "(class names from a file, or none)", untagged.__doc__)
_register("toy", toy.read_toy, tuple(toy.TOY_SPLITS),
          "embedded toy world: procedural 64x64 scenes, 16 colour-shape classes "
          "(generated on first use)")


def check_source_options(dataset: str, options: Any, key: str = "data.options") -> None:
    """A config's reader options: a mapping, and when `dataset` is registered, only keys (and
    value types) its reader takes. `ConfigError` naming `key` otherwise."""
    if not isinstance(options, dict):
        raise ConfigError(f"{key}: expected a mapping of reader options, got {options!r}")
    if dataset in DATASETS and options:
        try:
            DATASETS.get(dataset).check_options(options)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None


def check_catalog_settings(source: Any, keys: tuple[str, ...] = (
        "train_catalog", "val_catalog", "test_catalog"), section: str = "data") -> None:
    """The catalog files a config names (`source.<key>`), checked before any work: a folder,
    an unreadable file or one that holds no image is a `DataError` naming the key and the
    file. A path that does not exist is left to the reader (it says so when the run starts)."""
    for key in keys:
        value = getattr(source, key, None)
        if value is None:
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            continue
        try:
            Catalog.load(path, require_images=True)
        except DataError as e:
            raise DataError(f"{section}.{key}: {e}") from None


def list_datasets() -> list[str]:
    """Names accepted by `load`."""
    return DATASETS.names()


def load(name: str, root: str | Path, split: str, **options: Any) -> Catalog:
    """Read split `split` of dataset `name` stored under `root` into a `Catalog`.

    `options` go to the reader (e.g. `difficult="ignore"` for VOC, `version=` for NUS-WIDE);
    an unknown key (or a value of the wrong type) is a `ConfigError` listing the reader's
    options. A split that holds no image is a `DataError`: no command can use it.
    """
    entry = DATASETS.get(name)
    entry.check_options(options)
    catalog = entry.reader(Path(root).expanduser(), split, **options)
    if catalog.n_images == 0:
        raise DataError(f"split {split!r} of dataset {name!r} holds no image (nothing to "
                        "write or train on); expected at least one listed, labelled image",
                        str(root))
    return catalog


__all__ = ["load", "list_datasets", "check_source_options", "check_catalog_settings",
           "DATASETS", "DatasetEntry"]
