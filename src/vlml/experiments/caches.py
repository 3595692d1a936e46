"""The feature caches a sweep's cells read, extracted once before any cell starts.

A cell's recipe reads frozen-encoder outputs from the feature cache (`vlml.encoders`), keyed by
the encoder's identity and the image list. `feature_needs(cfg, splits)` says which ones a
config reads, the way its recipe does:

    recipe       reads (train: plain + flip views; validation and test: plain)
    spml         CLIP embeddings when the loss needs pseudo-labels or the head is trained on
                 CLIP features (`model.features: clip`); frozen-backbone features in modes
                 `linear` (features: backbone) and `linear_init`
    cbsa         CLIP dense tokens (with embeddings) when `model.inputs: cache`; CLIP
                 embeddings of the train split for the zero-shot prior (`pseudo.prior_weight`)
    cap          CLIP embeddings (mode linear, features clip) or frozen-backbone features
                 (mode linear, features backbone); nothing end to end

`prefetch` groups the needs of all cells by encoder, loads each encoder once and extracts
each image list once with the union of its views (and dense tokens if any cell wants them),
in one process. The cells then only read: no two processes ever write one cache. A recipe this
table does not know (a plugin) extracts its own caches when its cell runs (safe with
`--jobs 1`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlml.types import Catalog

TRAIN_VIEWS = ("plain", "flip")
EVAL_VIEWS = ("plain",)


@dataclass(frozen=True)
class EncoderRef:
    """Which frozen encoder: a CLIP (`kind` "clip": name, pretrained) or a timm backbone
    (`kind` "backbone": name, pretrained, image size, and the seed of a random init)."""

    kind: str
    name: str
    pretrained: Any
    image_size: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Need:
    """One cached read: an encoder over a catalog's images, in `views`, with dense tokens or
    not, into `cache_dir`."""

    encoder: EncoderRef
    catalog: Catalog
    views: tuple[str, ...]
    dense: bool
    cache_dir: str
    batch_size: int
    device: str


@dataclass
class Job:
    """The union of the needs of one (encoder, cache folder, image list)."""

    encoder: EncoderRef
    catalog: Catalog
    cache_dir: str
    views: set[str] = field(default_factory=set)
    dense: bool = False
    batch_size: int = 64
    device: str = "auto"


def _split_needs(ref: EncoderRef, cats: dict[str, Catalog | None], dense: bool, cfg: Any,
                 batch_size: int) -> list[Need]:
    out = []
    for name, cat in cats.items():
        if cat is None:
            continue
        views = TRAIN_VIEWS if name == "train" else EVAL_VIEWS
        out.append(Need(ref, cat, views, dense, str(cfg.cache_dir), batch_size, cfg.device))
    return out


def _clip(cfg: Any) -> EncoderRef:
    return EncoderRef("clip", cfg.encoder.name, cfg.encoder.pretrained)


def _backbone(cfg: Any) -> EncoderRef:
    return EncoderRef("backbone", cfg.model.backbone, cfg.model.pretrained,
                      cfg.model.image_size, cfg.seed)


def _spml_needs(cfg: Any, splits: Any) -> list[Need]:
    from vlml.recipes.spml.config import needs_clip

    cats = {"train": splits.train, "val": splits.val, "test": splits.test}
    out = []
    if needs_clip(cfg):
        out += _split_needs(_clip(cfg), cats, False, cfg, cfg.encoder.batch_size)
    m = cfg.model
    if (m.mode == "linear" and m.features == "backbone") or m.mode == "linear_init":
        out += _split_needs(_backbone(cfg), cats, False, cfg, cfg.optim.eval_batch_size)
    return out


def _cbsa_needs(cfg: Any, splits: Any) -> list[Need]:
    out = []
    if cfg.model.inputs == "cache":
        cats = {"train": splits.train, "val": splits.val, "test": splits.test}
        out += _split_needs(_clip(cfg), cats, True, cfg, cfg.encoder.batch_size)
    if cfg.pseudo.prior_weight > 0 and cfg.optim.epochs > 0:
        out += _split_needs(_clip(cfg), {"train": splits.train}, False, cfg,
                            cfg.encoder.batch_size)
    return out


def _cap_needs(cfg: Any, splits: Any) -> list[Need]:
    if cfg.model.mode != "linear":
        return []
    cats = {"train": splits.train, "val": splits.val, "test": splits.test}
    if cfg.model.features == "clip":
        return _split_needs(_clip(cfg), cats, False, cfg, cfg.encoder.batch_size)
    return _split_needs(_backbone(cfg), cats, False, cfg, cfg.optim.eval_batch_size)


NEEDS: dict[str, Callable[[Any, Any], list[Need]]] = {
    "spml": _spml_needs, "vlpl": _spml_needs, "cbsa": _cbsa_needs, "cap": _cap_needs}


def feature_needs(cfg: Any, splits: Any) -> list[Need]:
    """The cached reads of a validated config over its loaded splits (module docstring);
    empty for a recipe this module does not know."""
    fn = NEEDS.get(cfg.recipe)
    return fn(cfg, splits) if fn is not None else []


def plan_jobs(needs: list[Need]) -> list[Job]:
    """Needs grouped by (encoder, cache folder, image list): views united, dense if any."""
    from vlml.encoders import image_list_hash

    jobs: dict[tuple[Any, ...], Job] = {}
    for n in needs:
        paths = [os.path.abspath(p) for p in n.catalog.full_paths()]
        key = (n.encoder, os.path.abspath(n.cache_dir), image_list_hash(paths))
        job = jobs.setdefault(key, Job(n.encoder, n.catalog, n.cache_dir,
                                       batch_size=n.batch_size, device=n.device))
        job.views.update(n.views)
        job.dense = job.dense or n.dense
    return list(jobs.values())


def _load_encoder(ref: EncoderRef, device: Any) -> Any:
    if ref.kind == "clip":
        from vlml import encoders

        return encoders.load(ref.name, ref.pretrained, device=device)
    from vlml.engine import seeded
    from vlml.models import FrozenBackbone
    from vlml.models.backbone import create_backbone

    with seeded(ref.seed):  # as the recipes create it: the same random init for one seed
        backbone = create_backbone(ref.name, ref.pretrained)
    return FrozenBackbone(backbone, ref.name, ref.image_size, device)


def extract(jobs: list[Job], progress: bool = True,
            report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every job, one encoder loaded at a time; returns {"jobs", "seconds"}."""
    from vlml import encoders
    from vlml.device import resolve_device

    t0 = time.perf_counter()
    by_encoder: dict[tuple[EncoderRef, str], list[Job]] = {}
    for job in jobs:
        by_encoder.setdefault((job.encoder, job.device), []).append(job)
    for (ref, device), group in by_encoder.items():
        enc = _load_encoder(ref, resolve_device(device))
        for job in group:
            if report is not None:
                report(f"features: {ref.name} over {job.catalog.n_images} images "
                       f"({', '.join(sorted(job.views))}{', dense' if job.dense else ''})")
            encoders.extract_features(job.catalog, enc, Path(job.cache_dir),
                                      views=tuple(sorted(job.views)), dense=job.dense,
                                      batch_size=job.batch_size, progress=progress)
        del enc
    return {"jobs": len(jobs), "seconds": time.perf_counter() - t0}


__all__ = ["EncoderRef", "Need", "Job", "feature_needs", "plan_jobs", "extract", "NEEDS"]
