"""The CAP recipe end to end (images and cached features), and the per-epoch CAP pseudo-labels:
EMA teacher, weak view, class priors from the labeled images only."""

import json

import numpy as np
import pytest
import torch

from spml_world import interrupt_semi_epoch, quadrant_image, ssmll_base
from vlml import config, recipes, runs
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.engine import LAST, Trainer, load_checkpoint, predict
from vlml.pseudo import CAPThreshold
from vlml.recipes.ssmll import cap
from vlml.recipes.ssmll.data import load_splits
from vlml.types import Catalog

C = 4
TIMING = ("train_seconds", "train_items_per_s", "pseudo_seconds")


pytestmark = pytest.mark.usefixtures("one_thread")


def write_catalog(folder, truth, seed, split, labels=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(truth):
        quadrant_image(row, rng).save(folder / f"{i}.png")
    return Catalog([f"{i}.png" for i in range(len(truth))], [f"c{c}" for c in range(C)],
                   truth if labels is None else labels,
                   true_labels=None if labels is None else truth, root=str(folder), split=split)


def random_truth(n, seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, C)) < 0.4).astype(np.int8)
    truth[truth.sum(1) == 0, 0] = 1
    return truth


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cap_world")
    train_truth = random_truth(48, 0)
    # Prepared semi-supervised labels whose labeled part is skewed (class 0 in every labeled
    # image), so priors from the labeled part differ from the unlabeled part's true ones.
    labeled = np.flatnonzero(train_truth[:, 0] == 1)[:12]
    labels = np.full_like(train_truth, -1)
    labels[labeled] = train_truth[labeled]
    paths = {
        "train": write_catalog(root / "train", train_truth, 0, "train").save(root / "train.zip"),
        "prepared": write_catalog(root / "train", train_truth, 0, "train", labels).save(
            root / "prepared.zip"),
        "test": write_catalog(root / "test", random_truth(16, 1), 1, "test").save(
            root / "test.zip")}
    arch, ckpt = make_tiny_checkpoint(root / "clip", "vit", 32)
    return root, paths, arch, ckpt


def make_cfg(world, tmp_path, *overrides, run="run"):
    base = {**ssmll_base(world, tmp_path / run),
            "model": {"mode": "linear", "features": "clip", "backbone": "test_resnet",
                      "pretrained": False, "image_size": 32}}
    return config.build(cap.Config, base, list(overrides))


def results(tmp_path, run="run"):
    return json.loads((tmp_path / run / "results.json").read_text())


@pytest.mark.parametrize("overrides", [
    ("model.mode=end_to_end",),                           # timm backbone from images
    ("model.features=backbone",),                         # head on cached backbone features
    (),                                                   # head on cached CLIP embeddings
    ("model.hidden=8", "pseudo.method=mat"),              # MLP head, D2L thresholds
])
def test_recipe_runs_every_mode(world, tmp_path, overrides):
    result = runs.run(make_cfg(world, tmp_path, *overrides))
    saved = results(tmp_path)
    assert 0 <= result.test_map <= 100 and saved["test_map"] == pytest.approx(result.test_map)
    assert result.phase == "semi" and len(result.history) == 2
    assert [q["epoch"] for q in saved["pseudo_quality"]] == [1, 2]
    assert {"CF1", "OF1"} <= set(saved["test_at_0.5"])
    again = runs.evaluate_run(tmp_path / "run")
    assert again["test_map"] == pytest.approx(result.test_map, abs=1e-6)


def test_labeled_only_baseline_is_the_warmup(world, tmp_path):
    result = runs.run(make_cfg(world, tmp_path, "optim.epochs=0"))
    assert result.phase == "warmup" and not (tmp_path / "run" / "semi").exists()
    assert results(tmp_path)["pseudo_quality"] == []


def test_pseudo_labels_come_from_the_ema_teacher_and_labeled_priors(world, tmp_path,
                                                                     monkeypatch):
    """Kill after semi epoch 1, check epoch 2's pseudo-labels against the checkpointed EMA
    model's weak-view scores and CAP fitted on the labeled images only; the resumed run
    matches an uninterrupted one."""
    paths = world[1]
    args = (f"data.train_catalog={paths['prepared']}", "data.regime=given", "save_pseudo=all")
    full = runs.run(make_cfg(world, tmp_path, *args, run="full"))
    original = interrupt_semi_epoch(monkeypatch, 2)
    cfg = make_cfg(world, tmp_path, *args)
    with pytest.raises(KeyboardInterrupt):
        runs.run(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "semi" / LAST)
    assert ckpt["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = runs.run(cfg)
    assert resumed.test_map == full.test_map
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in resumed.history]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in full.history]

    splits = load_splits(cfg.data)
    model, views, *_ = cap.build(cfg, splits, torch.device("cpu"))
    saved = np.load(tmp_path / "run" / "semi" / "pseudo" / "epoch_002.npz")
    np.testing.assert_array_equal(saved["rows"], splits.unlabeled)

    def weak_scores(state):
        model.load_state_dict(state)
        return predict(model, views.weak(splits.unlabeled, 2, 64), torch.device("cpu")).probs

    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items()}
    np.testing.assert_allclose(saved["scores"], weak_scores(ema), rtol=1e-5, atol=1e-6)
    assert not np.allclose(saved["scores"], weak_scores(ckpt["model"]), atol=1e-4)

    truth = splits.train.true_labels
    expected = CAPThreshold(1.0, 0.998).fit(None, truth[splits.labeled]).transform(saved["scores"])
    np.testing.assert_array_equal(saved["labels"], expected.labels)
    np.testing.assert_array_equal(saved["mask"], expected.mask)
    assert expected.labels[:, 0].all()  # class 0 is in every labeled image
    other = CAPThreshold(1.0, 0.998).fit(None, truth[splits.unlabeled]).transform(saved["scores"])
    assert not np.array_equal(other.labels, saved["labels"])


def test_recipe_is_registered():
    assert recipes.get("cap") is cap and recipes.get("cap").Config is cap.CAPConfig
