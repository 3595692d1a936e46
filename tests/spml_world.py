"""A tiny SPML world shared by the recipe and run tests: 4 classes lighting up image quadrants,
single-positive train labels, a clean test catalog, a random-init tiny CLIP; and the pieces the
SSMLL recipe tests build their own worlds and configs from."""

import numpy as np
from PIL import Image

from vlml import config, regimes
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.recipes.spml.config import SPMLConfig
from vlml.types import Catalog

C = 4


def quadrant_image(row, rng):
    """A 32 x 32 RGB PIL image in which class c of the 0/1 row (C <= 4 classes) lights up
    quadrant c, plus noise in [0, 60) drawn from `rng`."""
    img = np.zeros((32, 32, 3), np.uint8)
    for c in np.flatnonzero(row):
        img[(c // 2) * 16:(c // 2 + 1) * 16, (c % 2) * 16:(c % 2 + 1) * 16] = 255
    return Image.fromarray(np.clip(img + rng.integers(0, 60, img.shape), 0, 255).astype(np.uint8))


def _catalog(folder, n, seed, split):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, C)) < 0.4).astype(np.int8)
    truth[truth.sum(1) == 0, 0] = 1
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        quadrant_image(truth[i], rng).save(folder / f"{i}.png")
    return Catalog([f"{i}.png" for i in range(n)], [f"c{c}" for c in range(C)], truth,
                   root=str(folder), split=split)


def make_world(root):
    train = regimes.single_positive(_catalog(root / "train", 40, 0, "train"))
    paths = {"train": train.save(root / "train.zip"),
             "test": _catalog(root / "test", 16, 1, "test").save(root / "test.zip")}
    arch, ckpt = make_tiny_checkpoint(root / "clip", "vit", 32)
    return root, paths, arch, ckpt


def make_cfg(world, tmp_path, *overrides):
    root, paths, arch, ckpt = world
    base = {"data": {"dataset": "toy", "train_catalog": str(paths["train"]),
                     "test_catalog": str(paths["test"])},
            "encoder": {"name": arch, "pretrained": str(ckpt), "batch_size": 16},
            "pseudo": {"params": {"tau": 0.03, "theta": 0.3}},
            "model": {"backbone": "test_resnet", "pretrained": False, "image_size": 32,
                      "mode": "linear", "features": "clip"},
            "loss": {"params": {"alpha": 0.1}},
            "optim": {"lr": 0.01, "batch_size": 8, "epochs": 2, "num_workers": 0},
            "out_dir": str(tmp_path / "run"), "cache_dir": str(root / "cache"),
            "progress": False}
    return config.build(SPMLConfig, base, list(overrides))


def ssmll_base(world, out):
    """The config mapping the SSMLL recipe tests share, without `model`: the `world`'s toy
    catalogs, semi-supervised with 25 % labeled, 2 warm-up + 2 epochs of small batches, run
    folder `out`."""
    root, paths, arch, ckpt = world
    return {"data": {"dataset": "toy", "train_catalog": str(paths["train"]),
                     "test_catalog": str(paths["test"]), "p": 0.25,
                     "regime": "semi_supervised"},
            "encoder": {"name": arch, "pretrained": str(ckpt), "batch_size": 16},
            "optim": {"warmup_epochs": 2, "epochs": 2, "warmup_batch_size": 4,
                      "labeled_batch_size": 4, "unlabeled_batch_size": 12, "lr": 1e-2,
                      "ema_decay": 0.5, "num_workers": 0},
            "out_dir": str(out), "cache_dir": str(root / "cache"), "progress": False}


def interrupt_semi_epoch(monkeypatch, epoch):
    """Make `Trainer.train_epoch` raise `KeyboardInterrupt` as a run's "semi" phase starts
    `epoch`; returns the unpatched method, to put back with `monkeypatch.setattr`."""
    from vlml.engine import Trainer

    original = Trainer.train_epoch

    def killed(self, e):
        if self.run_dir.name == "semi" and e == epoch:
            raise KeyboardInterrupt
        return original(self, e)

    monkeypatch.setattr(Trainer, "train_epoch", killed)
    return original
