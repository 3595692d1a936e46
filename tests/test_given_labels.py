"""A user's own labels used as given (`data.regime: given`), model selection without clean
labels, optional validation/test catalogs (issue "labels that really are incomplete")."""

import json

import numpy as np
import pytest

from spml_world import make_cfg, make_world
from vlml import config, metrics, recipes, regimes, runs
from vlml.errors import ConfigError, DataError
from vlml.recipes.selection import for_validation
from vlml.types import Catalog


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root, paths, arch, ckpt = make_world(tmp_path_factory.mktemp("given"))
    simulated = Catalog.load(paths["train"])
    # what a user has: the single tags only, no ground truth anywhere
    tags = Catalog(simulated.image_paths, simulated.class_names, simulated.labels,
                   root=simulated.root, split="train")
    paths = {**paths, "tags": tags.save(root / "tags.zip")}
    return root, paths, arch, ckpt


def test_observed_recall_at_k_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7], [0.3, 0.2, 0.1]])
    observed = np.array([[-1, -1, 1], [1, -1, -1], [-1, -1, -1]], dtype=np.int8)
    # image 0: class 2 ranks 2nd; image 1: class 0 ranks 3rd
    assert metrics.observed_recall_at_k(scores, observed, 1) == 0.0
    assert metrics.observed_recall_at_k(scores, observed, 2) == 50.0
    assert metrics.observed_recall_at_k(scores, observed, 3) == 100.0
    assert metrics.observed_recall_at_k(scores, -np.ones((3, 3), np.int8), 2) is None


def test_selection_follows_what_the_labels_support():
    tags = np.array([[1, -1], [-1, 1]], dtype=np.int8)
    assert for_validation(tags, clean=True, k=3).rule == "clean_val_map"
    assert for_validation(tags, clean=False, k=3).describe()["metric"] == \
        "val_observed_recall_at_3"
    partial = np.array([[1, 0], [-1, 1]], dtype=np.int8)
    assert for_validation(partial, clean=False, k=3).rule == "observed_map"


def test_simulators_point_to_the_given_regime():
    cat = Catalog(["a.jpg"], ["x", "y"], np.array([[1, -1]], dtype=np.int8))
    for draw in (lambda c: regimes.single_positive(c), lambda c: regimes.semi_supervised(c, 0.5),
                 lambda c: regimes.partial(c, 0.5, seed=0)):
        with pytest.raises(DataError, match="regime: given"):
            draw(cat)


def test_spml_on_single_tags_selects_on_observed_recall(world, tmp_path):
    cfg = make_cfg(world, tmp_path, f"data.train_catalog={world[1]['tags']}")
    result = runs.run(cfg)
    saved = json.loads((result.run_dir / "results.json").read_text())
    sel = saved["selection"]
    assert sel["rule"] == "observed_recall_at_k" and sel["k"] == 3
    assert sel["metric"] == "val_observed_recall_at_3" and 0 <= sel["value"] <= 100
    assert "recall@3" in sel["description"] and sel["n_images"] == 8
    assert result.val_map is None and saved["test_map"] is not None
    log = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("val_observed_recall_at_3" in r and "val_map" not in r for r in log)
    # no ground truth: no pseudo-label quality computed against the given tags
    assert saved["pseudo_quality"] == {}


def test_spml_without_test_catalog_trains_and_says_so(world, tmp_path, capsys):
    from vlml.cli.main import main

    cfg = make_cfg(world, tmp_path, f"data.train_catalog={world[1]['tags']}",
                   "data.test_catalog=null")
    path = tmp_path / "cfg.yaml"
    config.save(cfg, path)
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no test catalog, so no test mAP" in out and "val_observed_recall_at_3" in out
    assert "nan" not in out
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_map"] is None and not (tmp_path / "run" / "test_scores.npy").exists()


def test_spml_val_catalog_selects_on_clean_map(world, tmp_path):
    root = world[0]
    val = Catalog.load(world[1]["test"])
    cfg = make_cfg(world, tmp_path, f"data.train_catalog={world[1]['tags']}",
                   f"data.val_catalog={val.save(root / 'val.zip')}")
    result = runs.run(cfg)
    assert result.selection["rule"] == "clean_val_map" and result.val_map is not None
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["n_train"] == 40  # nothing held out of the training images


def test_simulated_regime_needs_a_test_catalog(world, tmp_path):
    cfg = make_cfg(world, tmp_path, "data.regime=single_positive", "data.test_catalog=null")
    with pytest.raises(DataError, match="test_catalog is required"):
        runs.run(cfg)
    assert not (tmp_path / "run").exists()


# ---- SSMLL -------------------------------------------------------------------------------------
def _ssmll_catalog(world, n_full=8, n_partial=4):
    """The world's train images: n_full fully tagged, n_partial with half their tags known,
    the rest untagged; no ground truth kept."""
    sim = Catalog.load(world[1]["train"])
    truth = sim.ground_truth
    labels = np.full_like(truth, -1)
    labels[:n_full] = truth[:n_full]
    part = slice(n_full, n_full + n_partial)
    labels[part, :2] = truth[part, :2]
    return Catalog(sim.image_paths, sim.class_names, labels, root=sim.root, split="train")


def _ssmll_cfg(world, tmp_path, train, *overrides, recipe="cbsa"):
    root, paths, arch, ckpt = world
    base = {"recipe": recipe,
            "data": {"dataset": "toy", "train_catalog": str(train),
                     "test_catalog": str(paths["test"])},
            "encoder": {"name": arch, "pretrained": str(ckpt), "batch_size": 16},
            "optim": {"warmup_epochs": 1, "epochs": 1, "warmup_batch_size": 4,
                      "labeled_batch_size": 4, "unlabeled_batch_size": 12, "lr": 1e-2,
                      "ema_decay": 0.5, "num_workers": 0},
            "out_dir": str(tmp_path / "run"), "cache_dir": str(root / "cache"),
            "progress": False}
    if recipe == "cbsa":
        base["model"] = {"n_ctx": 4}
        base["context"] = {"k": 2}
    else:
        base["model"] = {"mode": "linear", "features": "clip", "backbone": "test_resnet",
                         "pretrained": False}
    return config.build(recipes.get(recipe).Config, base, list(overrides))


@pytest.mark.parametrize("recipe", ["cbsa", "cap"])
def test_ssmll_partly_observed_rows_are_labelled_with_unknowns_masked(world, tmp_path, recipe):
    cat = _ssmll_catalog(world)
    train = cat.save(tmp_path / "train.zip")
    splits = recipes.get(recipe).load_splits(_ssmll_cfg(world, tmp_path, train).data)
    assert splits.labeled.tolist() == list(range(12))
    assert splits.unlabeled.tolist() == list(range(12, 40))
    assert (splits.labeled_targets[8:, 2:] == -1).all()  # kept unknown, never negative
    result = runs.run(_ssmll_cfg(world, tmp_path, train, recipe=recipe))
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["regime"] == "given" and saved["p"] is None
    assert saved["n_labeled"] == 12 and saved["n_unlabeled"] == 28
    assert saved["selection"]["rule"] == "last" and result.test_map is not None


def test_ssmll_val_catalog_selects_and_test_is_optional(world, tmp_path):
    train = _ssmll_catalog(world).save(tmp_path / "train.zip")
    val = world[1]["test"]
    cfg = _ssmll_cfg(world, tmp_path, train, f"data.val_catalog={val}",
                     "data.test_catalog=null")
    result = runs.run(cfg)
    assert result.selection["rule"] == "clean_val_map" and result.val_map is not None
    assert result.selection["n_images"] == 16 and result.test_map is None
    log = [json.loads(x) for x in
           (result.run_dir / "semi" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["select"] == r["val_map"] for r in log)


def test_ssmll_selection_needs_its_catalog(world, tmp_path):
    train = _ssmll_catalog(world).save(tmp_path / "train.zip")
    with pytest.raises(ConfigError, match="val_catalog"):
        runs.run(_ssmll_cfg(world, tmp_path, train, "data.selection=val_catalog"))
    with pytest.raises(ConfigError, match="test_catalog is required"):
        runs.run(_ssmll_cfg(world, tmp_path, train, "data.regime=semi_supervised",
                            "data.test_catalog=null"))
    assert not (tmp_path / "run").exists()


def test_one_class_is_refused_before_any_extraction(world, tmp_path):
    tags = Catalog.load(world[1]["tags"])
    one = Catalog(tags.image_paths, ("c0",), tags.labels[:, :1], root=tags.root)
    test = Catalog.load(world[1]["test"])
    test1 = Catalog(test.image_paths, ("c0",), test.ground_truth[:, :1], root=test.root)
    cfg = make_cfg(world, tmp_path, f"data.train_catalog={one.save(tmp_path / 'one.zip')}",
                   f"data.test_catalog={test1.save(tmp_path / 'one_test.zip')}",
                   f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(DataError, match="softmax over one class"):
        runs.run(cfg)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match="prior_weight"):
        runs.run(_ssmll_cfg(world, tmp_path, tmp_path / "one.zip", "pseudo.prior_weight=0.5",
                            "context.enabled=false", f"out_dir={tmp_path / 'cbsa'}",
                            f"data.test_catalog={tmp_path / 'one_test.zip'}"))
