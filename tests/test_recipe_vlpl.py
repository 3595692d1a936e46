"""The SPML recipe end to end on generated images, with a tiny random-init CLIP and timm model."""

import json

import numpy as np
import pytest

from spml_world import make_cfg, make_world
from vlml import losses, regimes, runs
from vlml.engine import BEST, load_weights
from vlml.errors import ConfigError, UnknownNameError, VlmlError
from vlml.types import Catalog


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.mark.parametrize("overrides", [
    (),
    ("model.features=backbone", "loss.name=an", "loss.params={}"),
    ("model.mode=end_to_end", "loss.name=em"),
    ("model.mode=linear_init", "model.linear_epochs=1", "loss.name=an", "loss.params={}"),
    ("model.hidden=32",),
    ("model.hidden=32", "model.features=backbone", "loss.name=an", "loss.params={}"),
])
def test_recipe_runs_every_mode(world, tmp_path, overrides):
    cfg = make_cfg(world, tmp_path, *overrides)
    result = runs.run(cfg)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 <= result.test_map <= 100 and saved["test_map"] == pytest.approx(result.test_map)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert (tmp_path / "run" / "config.yaml").exists()
    again = runs.evaluate_run(tmp_path / "run")
    assert again["test_map"] == pytest.approx(result.test_map, abs=1e-6)


def test_vlpl_writes_flip_aware_pseudo_labels(world, tmp_path):
    runs.run(make_cfg(world, tmp_path))
    run = tmp_path / "run"
    plain, flip = np.load(run / "pseudo_plain.npy"), np.load(run / "pseudo_flip.npy")
    train, _ = regimes.train_val_split(Catalog.load(world[1]["train"]))
    assert plain.shape == flip.shape == train.labels.shape
    assert (plain[train.labels >= 0] == -1).all()  # observed labels always win
    assert ((plain == 1).sum(1) <= 3).all()          # floor(1 / theta) cap, theta 0.3
    assert "pos_precision" in json.loads((run / "pseudo_quality.json").read_text())


@pytest.mark.parametrize("loss", ["role", "em_apl", "ll_cp", "ll_r", "epr", "wan", "asl"])
def test_every_stateful_and_plain_loss_trains(world, tmp_path, loss):
    params = {"em_apl": ["loss.params={alpha: 0.1, beta: 0.1}",
                         "loss.state_params={warmup_epoch: 1, num_epochs: 2}"],
              "role": ["loss.params={k: 1.5}"], "epr": ["loss.params={k: 1.5}"]}
    extra = params.get(loss, ["loss.params={}"])
    result = runs.run(make_cfg(world, tmp_path, f"loss.name={loss}", *extra))
    assert np.isfinite(result.test_map)


def test_resumed_run_matches(world, tmp_path):
    cfg = make_cfg(world, tmp_path, "optim.epochs=3")
    full = runs.run(cfg)
    (tmp_path / "run" / "results.json").unlink()
    again = runs.run(cfg)  # the last checkpoint is complete: resumes, nothing to train
    assert again.history == full.history and again.test_map == full.test_map


@pytest.mark.parametrize("override, error, message", [
    ("loss.name=vlpll", UnknownNameError, "Did you mean 'vlpl'"),
    ("model.backbone=resnet5O", UnknownNameError, "resnet50"),
    ("model.mode=end2end", ConfigError, "end_to_end"),
    ("data.train_catalog=null", ConfigError, "data.root"),
    ("model.hidden=-1", ConfigError, "model.hidden must be >= 0"),
])
def test_bad_config_fails_before_work(world, tmp_path, override, error, message):
    overrides = [override, "model.features=backbone"] if "backbone" in override else [override]
    overrides += ["data.dataset=voc2007"] if "catalog" in override else []
    with pytest.raises(error, match=message):
        runs.run(make_cfg(world, tmp_path, *overrides))
    assert not (tmp_path / "run").exists()


def test_hidden_head_needs_linear_mode(world, tmp_path):
    with pytest.raises(ConfigError, match="model.hidden=8 needs model.mode: linear"):
        runs.run(make_cfg(world, tmp_path, "model.hidden=8", "model.mode=end_to_end"))


def test_hidden_gives_an_mlp_head(world, tmp_path):
    runs.run(make_cfg(world, tmp_path, "model.hidden=32"))
    weights = load_weights(tmp_path / "run" / BEST)
    assert weights["net.0.weight"].shape[0] == 32 and weights["net.2.weight"].shape[1] == 32


def test_missing_dataset_leaves_no_run_folder(world, tmp_path):
    cfg = make_cfg(world, tmp_path, "data.train_catalog=null", "data.dataset=voc2007",
                   f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(VlmlError, match="nowhere"):
        runs.run(cfg)
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_lists_choices(world, tmp_path):
    cfg = make_cfg(world, tmp_path, "data.train_catalog=null", "data.dataset=vocc",
                   "data.root=/x")
    with pytest.raises(UnknownNameError, match="voc2007"):
        runs.run(cfg)


def test_registry_covers_every_loss():
    assert {"an", "em", "vlpl", "role", "ll_cp", "em_apl"} <= set(losses.list_losses())
