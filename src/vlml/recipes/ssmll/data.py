"""Data of the SSMLL recipes: the semi-supervised splits, and weak/strong views of their rows.

Splits (methods.md 1.2, or a user's own labels as given): the train catalog with its labeled
rows (known labels; partly observed rows have their unknowns masked) and its unlabeled rows (all
-1), plus `true_labels` when known; optional validation and test catalogs (clean); and the row
sets the loop uses: `labeled` (training), `unlabeled`, `holdout` (labeled rows kept out for
model selection).

Views yield dict batches {"x": (B, ...) float tensor, "rows": (B,) int64 train rows}:
- `plain(rows)`: the unaugmented view, rows in the given order (evaluation).
- `weak(rows, epoch)`: the plain or horizontally flipped view; the flip of row r in epoch e is
  `flip_flags(seed, e, N)[r]`, so every pass of an epoch sees the same weak view.
- `strong(rows, epoch, batch_size, stream)`: rows in an order drawn from (seed, epoch, stream),
  with the strong augmentation drawn from (seed, epoch, stream, row or batch).
Everything random is a pure function of those seeds, so a resumed run replays an epoch exactly.

Under DDP (`vlml.distributed`, W processes) `batch_size` of `strong` stays the global batch:
each rank yields the r-th contiguous 1/W of every global batch (a short last batch drops its
last len % W rows, `vlml.distributed.batch_parts`), so the ranks' parts of a step are together
one process's batch with the same augmentation: `ArrayViews` draws the augmentation of the whole
global batch (its draws depend on the batch) and keeps the rank's rows, `ImageViews` draws per
row and reads only the rank's images. `plain` and `weak` are not split (pass a rank's rows,
`vlml.engine.predict.local_rows`, to score a shard).

`ArrayViews` serves cached arrays (dense tokens (N, L + 1, D) or features (N, D), plain and
flipped); its strong view is token dropout + Gaussian noise, a documented stand-in for
RandAugment + cutout, which need pixels. `ImageViews` reads images; its strong view is flip +
cutout + RandAugment (torchvision) before the model's resize/normalise transform, and an
optional `encode` (the frozen CLIP's dense tokens) runs on each batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlml import data, distributed, regimes
from vlml.data.torch_dataset import flip_flags
from vlml.data.transforms import cutout
from vlml.errors import DataError
from vlml.recipes.base import evaluation_labels
from vlml.recipes.ssmll.config import (
    AugmentConfig,
    DataConfig,
    effective_regime,
    effective_selection,
)
from vlml.types import Catalog

Batch = dict[str, torch.Tensor]
_STRONG_SALT = 0x5757


# ---- splits ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSMLLSplits:
    """train: the labels learnt from (`labeled` rows have known labels, possibly some -1;
    `unlabeled` rows are all -1); val: a fully labelled validation catalog or None; test: a
    clean test catalog or None. Row sets are sorted int64 train rows; `holdout` = labelled rows
    kept out for model selection."""

    train: Catalog
    test: Catalog | None
    labeled: np.ndarray
    unlabeled: np.ndarray
    holdout: np.ndarray
    val: Catalog | None = None

    @property
    def labeled_targets(self) -> np.ndarray:
        """(n_l, C) labels of the labelled training rows in {1, 0, -1} (the class priors come
        from their known entries)."""
        return self.train.labels[self.labeled]


def _train_catalog(cfg: DataConfig) -> tuple[Catalog, str]:
    if cfg.train_catalog is not None:
        train, where = Catalog.load(cfg.train_catalog), cfg.train_catalog
    else:
        train = data.load(cfg.dataset, cfg.root, cfg.train_split, **cfg.options)
        where = f"{cfg.dataset}:{cfg.train_split}"
    if effective_regime(cfg) == "semi_supervised":
        train = regimes.semi_supervised(train, cfg.p, seed=cfg.label_seed)
    return train, where


def _clean(catalog: Catalog, what: str, where: str, train: Catalog) -> Catalog:
    if evaluation_labels(catalog) is None:
        raise DataError(f"the {what} catalog needs fully known labels (no unknown entries, or "
                        "true_labels kept)", where)
    if catalog.class_names != train.class_names:
        raise DataError(f"{what} classes differ from the training classes "
                        f"{list(train.class_names)[:5]}...", where)
    return catalog


def _other_catalogs(cfg: DataConfig, train: Catalog) -> tuple[Catalog | None, Catalog | None]:
    """(validation, test) catalogs, each checked clean and with the training classes."""
    val = None if cfg.val_catalog is None else _clean(
        Catalog.load(cfg.val_catalog), "validation", cfg.val_catalog, train)
    if cfg.test_catalog is not None:
        test = Catalog.load(cfg.test_catalog)
    elif cfg.train_catalog is None:
        test = data.load(cfg.dataset, cfg.root, cfg.test_split, **cfg.options)
    else:
        return val, None
    where = cfg.test_catalog or f"{cfg.dataset}:{cfg.test_split}"
    return val, _clean(test, "test", where, train)


def _holdout(labeled: np.ndarray, cfg: DataConfig, where: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) labelled rows for `selection: labeled_val`."""
    n_val = int(np.round(cfg.val_frac * labeled.size))
    if n_val < 1 or n_val >= labeled.size:
        raise DataError(f"data.val_frac={cfg.val_frac} of {labeled.size} labeled images "
                        "leaves no held-out or no training image", where)
    perm = np.random.RandomState(cfg.split_seed).permutation(labeled.size)
    return np.sort(labeled[perm[n_val:]]), np.sort(labeled[perm[:n_val]])


def load_splits(cfg: DataConfig) -> SSMLLSplits:
    """The training catalog with its labelled / unlabelled / held-out rows, and the validation
    and test catalogs (see `DataConfig`). Rows with any known label are labelled (partly
    observed rows too: their unknown entries are masked, never read as negatives)."""
    train, where = _train_catalog(cfg)
    val, test = _other_catalogs(cfg, train)
    mask = regimes.labeled_mask(train)
    labeled, unlabeled = np.flatnonzero(mask), np.flatnonzero(~mask)
    if labeled.size == 0:
        raise DataError("no labelled image in the train catalog (every label is -1); expected "
                        "some images with known labels", where)
    holdout = np.zeros(0, dtype=np.int64)
    if effective_selection(cfg) == "labeled_val":
        labeled, holdout = _holdout(labeled, cfg, where)
    return SSMLLSplits(train, test, labeled.astype(np.int64), unlabeled.astype(np.int64),
                       holdout.astype(np.int64), val)


# ---- strong views of cached arrays ------------------------------------------------------------
def _strong_order(seed: int, epoch: int, stream: int, rows: np.ndarray) -> np.ndarray:
    return rows[np.random.default_rng([seed, epoch, stream, _STRONG_SALT]).permutation(rows.size)]


class ArrayViews:
    """Views over cached rows: `plain` (N, ...) and optional `flip` (N, ...) arrays (memmaps
    welcome; float16 is read as float32). `augment(x, rng)` makes the strong view."""

    def __init__(self, plain: np.ndarray, flip: np.ndarray | None, seed: int,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
                 ) -> None:
        if flip is not None and flip.shape != plain.shape:
            raise DataError(f"flipped view has shape {flip.shape}, plain view {plain.shape}",
                            "feature cache")
        self.plain_array, self.flip_array = plain, flip
        self.seed, self.augment = seed, augment

    def __len__(self) -> int:
        return len(self.plain_array)

    def _read(self, rows: np.ndarray, flipped: np.ndarray | None) -> np.ndarray:
        x = np.asarray(self.plain_array[rows], dtype=np.float32)
        if flipped is not None and self.flip_array is not None and flipped.any():
            x[flipped] = self.flip_array[rows[flipped]]
        return x

    def _flips(self, epoch: int) -> np.ndarray | None:
        if self.flip_array is None:
            return None
        return flip_flags(self.seed, epoch, len(self))

    def plain(self, rows: np.ndarray, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(rows), batch_size):
            r = np.asarray(rows[start:start + batch_size], dtype=np.int64)
            yield {"x": torch.from_numpy(self._read(r, None)), "rows": torch.from_numpy(r)}

    def weak(self, rows: np.ndarray, epoch: int, batch_size: int) -> Iterator[Batch]:
        flips = self._flips(epoch)
        for start in range(0, len(rows), batch_size):
            r = np.asarray(rows[start:start + batch_size], dtype=np.int64)
            f = None if flips is None else flips[r]
            yield {"x": torch.from_numpy(self._read(r, f)), "rows": torch.from_numpy(r)}

    def strong(self, rows: np.ndarray, epoch: int, batch_size: int, stream: int,
               cutout: float | None = None) -> Iterator[Batch]:
        """`cutout` is accepted for interface parity with `ImageViews` and ignored. Under DDP
        the rank's part of each global batch (module docstring)."""
        order = _strong_order(self.seed, epoch, stream, np.asarray(rows, dtype=np.int64))
        split = distributed.world_size() > 1
        for b, start in enumerate(range(0, len(order), batch_size)):
            r = np.sort(order[start:start + batch_size])  # sorted: faster memmap reads
            part = distributed.part_of_batch(r.size) if split else slice(None)
            if not r[part].size:
                continue  # a last batch smaller than the world
            rng = np.random.default_rng([self.seed, epoch, stream, b, _STRONG_SALT])
            f = rng.random(r.size) < 0.5 if self.flip_array is not None else None
            if self.augment is None:
                x = self._read(r[part], None if f is None else f[part])
            else:  # the draws are the global batch's: augment it all, keep the part
                x = np.ascontiguousarray(self.augment(self._read(r, f), rng),
                                         dtype=np.float32)[part]
            yield {"x": torch.from_numpy(np.ascontiguousarray(x)),
                   "rows": torch.from_numpy(np.ascontiguousarray(r[part]))}


# ---- views of images --------------------------------------------------------------------------
class _ViewImages(Dataset):
    """Row r -> {"x": tensor, "rows": r} for one kind of view, set before each pass."""

    def __init__(self, catalog: Catalog, to_tensor: Callable[[Image.Image], torch.Tensor],
                 resize: Callable[[Image.Image], Image.Image] | None, aug: AugmentConfig,
                 seed: int) -> None:
        self.paths = catalog.full_paths()
        self.to_tensor, self.resize, self.aug, self.seed = to_tensor, resize, aug, seed
        self.kind, self.epoch, self.stream, self.cutout = "plain", 0, 0, aug.cutout
        self.flips = np.zeros(len(self.paths), dtype=bool)
        self._randaugment = None
        if aug.randaugment_ops > 0:
            from torchvision.transforms import RandAugment

            self._randaugment = RandAugment(num_ops=aug.randaugment_ops,
                                            magnitude=aug.randaugment_magnitude)

    def for_pass(self, kind: str, epoch: int = 0, stream: int = 0,
                 cutout_factor: float | None = None) -> _ViewImages:
        """A copy set up for one pass (passes may interleave, e.g. two strong streams)."""
        out = copy.copy(self)
        out.kind, out.epoch, out.stream = kind, epoch, stream
        out.cutout = self.aug.cutout if cutout_factor is None else cutout_factor
        out.flips = flip_flags(self.seed, epoch, len(self.paths)) if kind == "weak" else \
            np.zeros(len(self.paths), dtype=bool)
        return out

    def __len__(self) -> int:
        return len(self.paths)

    def _open(self, r: int) -> Image.Image:
        try:
            with Image.open(self.paths[r]) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image ({e})", str(self.paths[r])) from e

    def __getitem__(self, r: int) -> dict[str, Any]:
        image = self._open(r)
        if self.kind == "strong":
            rng = np.random.default_rng([self.seed, self.epoch, self.stream, r, _STRONG_SALT])
            flip = bool(rng.random() < 0.5)
        else:
            flip = bool(self.flips[r])
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.resize is not None:
            image = self.resize(image)
        if self.kind == "strong":
            image = cutout(image, self.cutout, rng)
            if self._randaugment is not None:
                with torch.random.fork_rng(devices=[]):  # RandAugment draws from torch's RNG
                    torch.manual_seed(int(rng.integers(2**62)))
                    image = self._randaugment(image)
        return {"x": self.to_tensor(image), "rows": r}


class ImageViews:
    """Views over the images of a catalog.

    Args:
        catalog: rows are its images.
        to_tensor: PIL -> (3, H, W) tensor (e.g. the CLIP encoder's own preprocessing, which
            resizes, or ToTensor + Normalize).
        resize: PIL -> PIL applied before the augmentations (None when `to_tensor` resizes).
        aug: cutout and RandAugment settings of the strong view.
        seed: seeds the flips, the order and the augmentations.
        encode: run on each collated batch (e.g. the frozen CLIP's dense tokens); None = pixels.
        num_workers: DataLoader workers (the results do not depend on it).
    """

    def __init__(self, catalog: Catalog, to_tensor: Callable[[Image.Image], torch.Tensor],
                 resize: Callable[[Image.Image], Image.Image] | None, aug: AugmentConfig,
                 seed: int, encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_workers: int = 0) -> None:
        self.dataset = _ViewImages(catalog, to_tensor, resize, aug, seed)
        self.seed, self.encode, self.num_workers = seed, encode, num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def _batches(self, dataset: _ViewImages, parts: list[np.ndarray]) -> Iterator[Batch]:
        """Batches of the row arrays `parts`, one batch each."""
        loader = DataLoader(dataset, batch_sampler=[p.tolist() for p in parts],
                            num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        for b in loader:
            x = b["x"]
            if self.encode is not None:
                x = self.encode(x)
            yield {"x": x, "rows": b["rows"].to(torch.int64)}

    def plain(self, rows: np.ndarray, batch_size: int) -> Iterator[Batch]:
        return self._batches(self.dataset.for_pass("plain"), _in_batches(rows, batch_size))

    def weak(self, rows: np.ndarray, epoch: int, batch_size: int) -> Iterator[Batch]:
        return self._batches(self.dataset.for_pass("weak", epoch), _in_batches(rows, batch_size))

    def strong(self, rows: np.ndarray, epoch: int, batch_size: int, stream: int,
               cutout: float | None = None) -> Iterator[Batch]:
        """`cutout` overrides `aug.cutout` for this pass (the warm-up uses none). Under DDP
        the rank's part of each global batch (module docstring)."""
        order = _strong_order(self.seed, epoch, stream, np.asarray(rows, dtype=np.int64))
        return self._batches(self.dataset.for_pass("strong", epoch, stream, cutout),
                             distributed.batch_parts(order, batch_size))


def _in_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    rows = np.asarray(rows, dtype=np.int64)
    return [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]


Views = ArrayViews | ImageViews

__all__ = ["SSMLLSplits", "load_splits", "ArrayViews", "ImageViews", "Views"]
