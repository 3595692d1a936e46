"""The demo's single-positive part: tiny-CLIP zero-shot, VLPL pseudo-labels, AN / EM / VLPL.

Protocol (docs/methods.md 1.1 on the toy world): one observed positive per pool image (seed 1200),
80/20 train/val split (seed 1200), clean test scenes. Every method trains the same head on the
same cached tiny-CLIP embeddings (plain and flipped views) through the SPML recipe; only the
loss differs. The head is a one-hidden-layer MLP: with a purely linear probe on strong frozen
features, assume-negative loses little to its false negatives, which hides what the SPML losses
are for (measured: see the README's demo section).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlml import config, encoders, metrics, pseudo, regimes, runs
from vlml.demo.world import ToyWorld
from vlml.pseudo.clip_scores import catalog_embeddings, similarities, zero_shot_scores
from vlml.recipes.spml import recipe as vlpl
from vlml.types import UNKNOWN, Catalog

ENCODER = "toy-clip"
TEMPLATES = ("a photo of a {name}.",)
TAU = 0.03
THETA = 0.1
THETA_SWEEP = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
# name in the report -> (loss, labels the loss trains on)
METHODS: dict[str, tuple[str, str]] = {
    "AN": ("an", "single_positive"),
    "EM": ("em", "single_positive"),
    "VLPL": ("vlpl", "single_positive"),
    "full labels (BCE)": ("bce", "full"),
}
LOSS_PARAMS: dict[str, dict[str, float]] = {"em": {"alpha": 0.2}, "vlpl": {"alpha": 0.2}}


@dataclass(frozen=True)
class SPMLSettings:
    """Training budget of the demo's SPML runs."""

    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    hidden: int = 512


@dataclass(frozen=True)
class Catalogs:
    """Saved catalogs of the protocol: single-positive train, its full-label twin, val, test."""

    train: Path
    train_full: Path
    val: Path
    test: Path


def save_catalogs(world: ToyWorld, work: Path) -> Catalogs:
    """Draw single positives, split 80/20, and save the four catalogs under `work`."""
    observed = regimes.single_positive(world.pool, seed=1200)
    train, val = regimes.train_val_split(observed, 0.2, seed=1200)
    full_train, _ = regimes.train_val_split(regimes.full(world.pool), 0.2, seed=1200)
    paths = Catalogs(*(work / f"{n}.catalog.zip" for n in ("train", "train_full", "val", "test")))
    for cat, path in ((train, paths.train), (full_train, paths.train_full), (val, paths.val),
                      (world.test, paths.test)):
        cat.save(path)
    return paths


def clip_stage(cats: Catalogs, cache: Path, progress: bool) -> dict[str, Any]:
    """Embed every image once (train: plain + flip), score the test set zero-shot, and sweep
    the VLPL threshold theta on the train set's unknown entries."""
    encoder = encoders.load(ENCODER, device="cpu")
    train, val, test = (Catalog.load(p) for p in (cats.train, cats.val, cats.test))
    text = encoder.encode_classes(list(test.class_names), list(TEMPLATES)).cpu().numpy()
    emb = {name: catalog_embeddings(cat, encoder, cache, views, batch_size=256,
                                    progress=progress)
           for name, cat, views in (("train", train, ("plain", "flip")),
                                    ("val", val, ("plain",)), ("test", test, ("plain",)))}
    sims_test = similarities(emb["test"]["plain"], text)
    zero_shot = {mode: metrics.map_report(zero_shot_scores(sims_test, mode, TAU),
                                          test.ground_truth).map
                 for mode in ("softmax", "cosine")}
    sims_train = similarities(emb["train"]["plain"], text)
    sweep = [_pseudo_quality(train, sims_train, theta) for theta in THETA_SWEEP]
    chance = float(test.ground_truth.mean()) * 100
    world = {"n_train": train.n_images, "n_val": val.n_images, "n_test": test.n_images,
             "n_classes": test.n_classes}
    return {"world": world, "zero_shot_map": zero_shot["softmax"],
            "zero_shot_map_cosine": zero_shot["cosine"], "chance_map": chance, "tau": TAU,
            "theta": THETA, "theta_sweep": sweep,
            "pseudo_label": next(s for s in sweep if s["theta"] == THETA)}


def _pseudo_quality(train: Catalog, sims: np.ndarray, theta: float) -> dict[str, float]:
    labels = pseudo.VLPLThreshold(TAU, theta).fit(sims).transform(sims)
    merged = pseudo.combine_with_observed(train.labels, labels)
    overall = metrics.pseudo_label_quality(merged, train.ground_truth,
                                           mask=train.labels == UNKNOWN)["overall"]
    return {"theta": theta, "precision": metrics.finite_or_none(overall["pos_precision"]),
            "recall": metrics.finite_or_none(overall["pos_recall"]),
            "per_image": float(overall["n_pseudo_pos"]) / train.n_images}


def method_config(method: str, cats: Catalogs, work: Path, cache: Path, seed: int,
                  settings: SPMLSettings, progress: bool) -> vlpl.Config:
    """The SPML recipe config of one demo method."""
    loss, labels = METHODS[method]
    data = {"dataset": "toy", "val_catalog": str(cats.val), "test_catalog": str(cats.test),
            "train_catalog": str(cats.train_full if labels == "full" else cats.train)}
    return config.build(vlpl.Config, {
        "name": f"demo-{loss}", "data": data, "seed": seed, "device": "cpu",
        "encoder": {"name": ENCODER, "pretrained": None, "templates": list(TEMPLATES),
                    "batch_size": 256},
        "pseudo": {"method": "vlpl", "params": {"tau": TAU, "theta": THETA}},
        "model": {"mode": "linear", "features": "clip", "hidden": settings.hidden},
        "loss": {"name": loss, "params": LOSS_PARAMS.get(loss, {})},
        "optim": {"lr": settings.lr, "batch_size": settings.batch_size,
                  "epochs": settings.epochs, "eval_batch_size": 1024, "num_workers": 0},
        "out_dir": str(work / "runs" / loss), "cache_dir": str(cache), "progress": progress,
    })


def train_methods(cats: Catalogs, work: Path, cache: Path, seed: int, settings: SPMLSettings,
                  progress: bool) -> dict[str, dict[str, Any]]:
    """Train every method of `METHODS`; per method: test mAP, per-class AP, val-mAP curve."""
    out = {}
    for method in METHODS:
        if progress:
            print(f"  training {method} ...", flush=True)
        t0 = time.perf_counter()
        cfg = method_config(method, cats, work, cache, seed, settings, progress)
        result = runs.run(cfg)
        saved = json.loads((result.run_dir / "results.json").read_text())
        out[method] = {"loss": METHODS[method][0], "test_map": result.test_map,
                       "val_map": result.val_map, "best_epoch": result.best_epoch,
                       "per_class_ap": saved["test_per_class_ap"],
                       "val_curve": [h["val_map"] for h in result.history],
                       "wall_seconds": time.perf_counter() - t0}
    return out
