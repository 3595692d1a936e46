"""Offline-friendly weights: `pretrained: random` for encoders and backbones (seeded, named in
the identity, kept apart in the feature cache), and a run whose weights cannot be had fails in
well under a second, before any data is read or any run folder exists, saying where it looked
and how to get out (a local checkpoint file, or `random`)."""

import time

import numpy as np
import pytest
import timm
import torch

from spml_world import make_cfg, make_world
from vlml import config, encoders, recipes, runs
from vlml.encoders import FeatureKey, WeightsUnavailableError
from vlml.errors import ConfigError, DataError
from vlml.models.backbone import check_backbone_weights, create_backbone
from vlml.types import Catalog


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def offline(monkeypatch, tmp_path_factory):
    """No network, and empty weight caches (whatever this machine has cached)."""
    empty = tmp_path_factory.mktemp("empty_caches")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(empty / "torch"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(empty / "hub"))


def _fake_hub_file(cache, repo, filename):
    """A file laid out as the Hugging Face hub cache stores a download."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    path = folder / "snapshots" / "abc123" / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return path


# ---- encoders --------------------------------------------------------------------------------
def test_random_encoder_is_seeded_named_in_identity_and_leaves_the_rng(world):
    arch = world[2]
    before = torch.random.get_rng_state()
    a = encoders.load(arch, "random", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)
    b = encoders.load(f"{arch}:random", device="cpu")
    c = encoders.load(arch, "random:3", device="cpu")
    assert a.identity["weights"] == b.identity["weights"] == "random:0"
    assert c.identity["weights"] == "random:3" and a.weights_file == ""
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert encoders.check_weights(arch, "random") == f"{arch}: random init (seed 0)"
    with pytest.raises(ConfigError, match="random:<seed>"):
        encoders.load(arch, "random:x")


def test_random_and_real_weights_never_share_a_feature_cache(world):
    root, paths, arch, ckpt = world
    cat = Catalog.load(paths["test"])
    keys = {FeatureKey.of(encoders.load(arch, w, device="cpu"), cat, "plain").folder_name()
            for w in ("random", "random:1", str(ckpt))}
    assert len(keys) == 3


def test_encoder_check_offline_names_the_weights_the_caches_and_both_ways_out(offline,
                                                                              tmp_path):
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        encoders.check_weights("RN50", "openai", cache_dir=str(tmp_path))
    assert time.monotonic() - t0 < 1
    msg = str(err.value)
    assert "RN50/openai" in msg and "HF_HUB_OFFLINE" in msg
    assert f"Looked in the Hugging Face hub cache {tmp_path}" in msg and "RN50.pt" in msg
    assert "pretrained='/path/to/file.bin'" in msg and "pretrained='random'" in msg


def test_encoder_check_probes_the_host_when_not_cached(unreachable, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="mocked DNS failure"):
        encoders.check_weights("ViT-B-32:openai", cache_dir=str(tmp_path))
    assert unreachable == ["https://huggingface.co"]


def test_encoder_check_finds_a_hub_cached_checkpoint_without_network(unreachable, tmp_path):
    path = _fake_hub_file(tmp_path, "timm/resnet50_clip.openai", "open_clip_model.safetensors")
    found = encoders.check_weights("RN50", "openai", cache_dir=str(tmp_path))
    assert found == f"RN50/openai: cached at {path}" and not unreachable


def test_encoder_check_refuses_a_missing_file_and_a_missing_default(world, tmp_path):
    with pytest.raises(DataError, match="'random'"):
        encoders.check_weights(world[2], str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="pretrained='random'"):
        encoders.check_weights("ViT-B-32", None)


# ---- backbones -------------------------------------------------------------------------------
def test_backbone_pretrained_values(tmp_path):
    torch.manual_seed(0)
    a = create_backbone("test_resnet", "random")
    torch.manual_seed(0)
    b = create_backbone("test_resnet", False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))
    full = timm.create_model("test_resnet", num_classes=10)
    torch.save(full.state_dict(), tmp_path / "w.pth")
    c = create_backbone("test_resnet", str(tmp_path / "w.pth"))  # its classifier is dropped
    assert torch.equal(c.state_dict()["bn1.weight"], full.state_dict()["bn1.weight"])
    assert check_backbone_weights("test_resnet", "random") == "test_resnet: random init"
    assert check_backbone_weights("test_resnet", str(tmp_path / "w.pth")).endswith("w.pth")
    with pytest.raises(DataError, match="true .*, false or random"):
        create_backbone("test_resnet", "imagenet")
    with pytest.raises(DataError, match="could not load this checkpoint"):
        create_backbone("resnet18", str(tmp_path / "w.pth"))


def test_backbone_config_accepts_bool_random_and_a_path():
    spml = recipes.get("spml")
    for value in (True, False, "random", "/w.pth"):
        cfg = config.build(spml.Config, {"model": {"pretrained": value}})
        config.validate(cfg)
        assert cfg.model.pretrained == value
    with pytest.raises(ConfigError, match="model.pretrained: expected bool or str"):
        config.validate(config.build(spml.Config, {"model": {"pretrained": 1}}))


def test_backbone_offline_fails_fast_with_the_cache_and_both_ways_out(offline):
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet50", True)
    assert time.monotonic() - t0 < 1
    msg = str(err.value)
    assert "backbone 'resnet50'" in msg and "timm/resnet50.a1_in1k" in msg
    assert "model.pretrained=/path/to/resnet50.safetensors" in msg
    assert "model.pretrained=random" in msg


def test_backbone_check_probes_the_host_or_finds_the_hub_cache(unreachable, monkeypatch,
                                                               tmp_path):
    with pytest.raises(WeightsUnavailableError, match="mocked DNS failure"):
        check_backbone_weights("resnet50", True)
    assert unreachable == ["https://huggingface.co"]
    path = _fake_hub_file(tmp_path, "timm/resnet50.a1_in1k", "model.safetensors")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert check_backbone_weights("resnet50", True) == f"resnet50: cached at {path}"


# ---- runs ------------------------------------------------------------------------------------
def _ssmll_cfg(world, out, recipe, *overrides):
    root, paths, arch, ckpt = world
    base = {"recipe": recipe,
            "data": {"dataset": "toy", "train_catalog": str(paths["train"]),
                     "test_catalog": str(paths["test"])},
            "encoder": {"name": arch, "pretrained": str(ckpt)},
            "out_dir": str(out), "cache_dir": str(root / "cache"), "progress": False}
    return config.build(recipes.get(recipe).Config, base, list(overrides))


@pytest.mark.parametrize("recipe,overrides", [
    ("spml", ("model.mode=end_to_end", "model.backbone=resnet50", "model.pretrained=true")),
    ("spml", ("encoder.name=RN50", "encoder.pretrained=openai")),
    ("cap", ("model.backbone=resnet50", "model.pretrained=true")),
    ("cbsa", ("encoder.name=RN50", "encoder.pretrained=openai")),
], ids=["spml_backbone", "spml_encoder", "cap_backbone", "cbsa_encoder"])
def test_run_needing_a_download_fails_offline_before_any_work(world, tmp_path, offline,
                                                              monkeypatch, recipe, overrides):
    module = recipes.get(recipe)
    monkeypatch.setattr(module, "load_splits", lambda *a: pytest.fail("data was read"))
    out = tmp_path / "run"
    cfg = (make_cfg(world, tmp_path, *overrides) if recipe == "spml"
           else _ssmll_cfg(world, out, recipe, *overrides))
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="random"):
        runs.run(cfg)
    assert time.monotonic() - t0 < 1
    assert not out.exists()


def test_spml_head_on_clip_features_needs_no_backbone_weights(world, tmp_path, offline):
    cfg = make_cfg(world, tmp_path, "model.backbone=resnet50", "model.pretrained=true")
    recipes.get("spml").preflight(cfg)  # mode linear on CLIP features: no backbone built


@pytest.mark.integration
def test_random_encoder_and_backbone_run_end_to_end_and_reload(world, tmp_path, offline):
    """No weights anywhere: a random-init CLIP (pseudo-labels and features) and a random-init
    backbone train, record `random:0`, and a reloaded run rebuilds the same encoder."""
    test = Catalog.load(world[1]["test"])
    clip = runs.run(make_cfg(world, tmp_path / "clip", "encoder.pretrained=random"))
    assert runs.load(clip.run_dir).record["encoder"]["identity"]["weights"] == "random:0"
    backbone = runs.run(make_cfg(world, tmp_path / "backbone", "encoder.pretrained=random",
                                 "model.features=backbone", "model.pretrained=random",
                                 "loss.name=an", "loss.params={}"))
    for result in (clip, backbone):
        saved = np.load(result.run_dir / "test_scores.npy")
        np.testing.assert_allclose(runs.load(result.run_dir).scores(test), saved, atol=1e-6)
