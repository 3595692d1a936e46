"""The open_clip adapter: loading, identity, image/text/class embeddings, dense tokens, errors.

Tiny random-init open_clip models are saved to a checkpoint file and loaded through the same
local-file path as real weights; open_clip itself (loaded independently) is the reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlml.encoders import (
    WeightsUnavailableError,
    add_model_config,
    list_encoders,
    list_template_sets,
    load,
    resolve_templates,
)
from vlml.encoders.dense import dense_tokens, interpolate_positions, resnet_feature_map
from vlml.encoders.prompts import ensemble
from vlml.encoders.tiny import tiny_config
from vlml.errors import ConfigError, DataError, UnknownNameError


def _reference(ckpts, kind):
    """The same checkpoint loaded by open_clip directly, with its eval transform."""
    arch, ckpt = ckpts[kind]
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(ckpt))
    return model.eval(), preprocess, open_clip.get_tokenizer(arch)


def _image(seed: int, size=(40, 52)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


# ---- loading and identity ------------------------------------------------------------------
def test_identity_names_architecture_file_hash_and_preprocessing(ckpts, vit):
    arch, ckpt = ckpts["vit"]
    assert vit.identity == {
        "architecture": arch,
        "weights": "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "preprocess": {"fill_color": 0, "interpolation": "bicubic",
                       "mean": list(open_clip.OPENAI_DATASET_MEAN), "mode": "RGB",
                       "resize_mode": "shortest", "size": [32, 32],
                       "std": list(open_clip.OPENAI_DATASET_STD)},
        "precision": "fp32"}
    json.dumps(vit.identity)  # JSON-ready for the cache key
    assert vit.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not vit.model.training


def test_identity_changes_with_weights_and_resize_mode(ckpts, vit):
    arch, ckpt1 = ckpts["vit_seed1"]
    other = load(arch, pretrained=str(ckpt1))
    assert other.identity["weights"] != vit.identity["weights"]
    squash = load(arch, pretrained=str(ckpts["vit"][1]), resize_mode="squash")
    assert squash.identity["preprocess"]["resize_mode"] == "squash"
    assert squash.identity["weights"] == vit.identity["weights"]


def test_arch_colon_tag_spelling_and_registry(ckpts):
    names = list_encoders()
    assert "RN50:openai" in names and "ViT-B-32:openai" in names
    arch, ckpt = ckpts["vit"]
    assert load(f"{arch}:{ckpt}").identity["architecture"] == arch


def test_unknown_encoder_suggests_close_names():
    with pytest.raises(UnknownNameError, match="ViT-B-32"):
        load("ViT-B-33", pretrained="openai")


def test_unknown_tag_suggests_close_tags():
    with pytest.raises(UnknownNameError, match="'openai'"):
        load("RN50", pretrained="opnai")


def test_missing_checkpoint_file_names_the_path(ckpts, tmp_path):
    arch, _ = ckpts["vit"]
    missing = tmp_path / "nope.bin"
    with pytest.raises(DataError, match="nope.bin"):
        load(arch, pretrained=str(missing))


def test_checkpoint_of_another_architecture_is_a_data_error(ckpts):
    arch, _ = ckpts["vit"]
    _, resnet_ckpt = ckpts["resnet"]
    with pytest.raises(DataError, match="could not load"):
        load(arch, pretrained=str(resnet_ckpt))


def test_add_model_config_refuses_a_taken_name(tmp_path, ckpts):
    arch, _ = ckpts["vit"]
    path = tmp_path / f"{arch}.json"
    path.write_text(json.dumps(tiny_config("vit", 64)))
    with pytest.raises(ConfigError, match="already taken"):
        add_model_config(path)


def test_real_weights_offline_fail_fast_with_local_file_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        load("RN50", pretrained="openai", cache_dir=str(tmp_path))
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "RN50/openai could not be fetched" in msg
    assert "pretrained='/path/to/file.bin'" in msg and "--pretrained" in msg
    assert "encoder.pretrained=/path/to/file.bin" in msg


def test_real_weights_unreachable_host_fail_fast(unreachable, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="mocked DNS failure.*no network"):
        load("ViT-B-32:openai", cache_dir=str(tmp_path))
    assert unreachable and unreachable[0].startswith("https://")


# ---- images and texts against open_clip ----------------------------------------------------
@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_preprocess_and_encode_images_match_open_clip(ckpts, vit, resnet, kind):
    enc = vit if kind == "vit" else resnet
    model, preprocess, _ = _reference(ckpts, kind)
    images = [_image(i) for i in range(3)]
    x = torch.stack([enc.preprocess(im) for im in images])
    x_ref = torch.stack([preprocess(im) for im in images])
    assert torch.equal(x, x_ref)
    out = enc.encode_images(x)
    assert out.dtype == torch.float32 and out.shape == (3, enc.embed_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        ref = F.normalize(model.encode_image(x_ref), dim=-1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_encode_images_rejects_wrong_size(vit):
    with pytest.raises(DataError, match=r"\(32, 32\)"):
        vit.encode_images(torch.zeros(2, 3, 48, 48))


def test_encode_texts_matches_open_clip(ckpts, vit):
    model, _, tokenizer = _reference(ckpts, "vit")
    texts = ["a photo of a cat.", "a dog", "red circle and blue square"]
    with torch.no_grad():
        ref = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    torch.testing.assert_close(vit.encode_texts(texts), ref, atol=1e-6, rtol=1e-5)


def test_template_ensemble_is_mean_of_unit_vectors_renormalised(vit):
    templates = ["a photo of a {name}.", "a drawing of the {name}.", "{name}"]
    names = ["cat", "red square"]
    got = vit.encode_classes(names, templates)
    assert got.shape == (2, vit.embed_dim)
    for c, name in enumerate(names):
        t = vit.encode_texts([tpl.format(name=name) for tpl in templates]).numpy()
        mean = t.mean(axis=0)
        np.testing.assert_allclose(got[c].numpy(), mean / np.linalg.norm(mean), atol=1e-6)
    single = vit.encode_classes(names)  # default "a photo of a {name}."
    torch.testing.assert_close(single, vit.encode_texts(["a photo of a cat.",
                                                         "a photo of a red square."]))


def test_ensemble_of_raw_vectors():
    raw = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]])  # unit vectors (1,0), (0,1)
    torch.testing.assert_close(ensemble(raw), torch.tensor([[2 ** -0.5, 2 ** -0.5]]))


def test_template_sets_and_validation():
    assert {"default", "openai-imagenet-80", "openai-imagenet-7"} <= set(list_template_sets())
    eighty = resolve_templates("openai-imagenet-80")
    assert len(eighty) == 80 and all("{name}" in t for t in eighty)
    assert resolve_templates("a {name} here") == ("a {name} here",)
    seven = resolve_templates("openai-imagenet-7")
    assert resolve_templates(["openai-imagenet-7"]) == seven  # as the CLI passes it
    assert resolve_templates(["x {name}", "openai-imagenet-7"]) == ("x {name}", *seven)
    with pytest.raises(UnknownNameError, match="openai-imagenet-7"):
        resolve_templates("openai-imagenet-8")
    with pytest.raises(ConfigError, match="no {name} field"):
        resolve_templates(["a photo of a thing"])
    with pytest.raises(ConfigError, match="other than"):
        resolve_templates(["a {name} of {size}"])


# ---- dense tokens --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_vit_dense_tokens_shape_and_pooled_token(vit, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = vit.dense_tokens(x)
    patch = 8
    assert tokens.shape == (2, 1 + (size // patch) ** 2, vit.embed_dim)
    assert vit.n_tokens((size, size)) == tokens.shape[1]
    if size == 32:  # native size: token 0 is exactly what encode_image projects
        torch.testing.assert_close(F.normalize(tokens[:, 0], dim=-1), vit.encode_images(x),
                                   atol=1e-6, rtol=1e-5)


def test_vit_patch_tokens_match_open_clip_intermediates(vit):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    visual = vit.model.visual
    with torch.no_grad():
        out = visual.forward_intermediates(x, indices=1, normalize_intermediates=True,
                                           output_fmt="NLC")
        ref = out["image_intermediates"][-1] @ visual.proj
    torch.testing.assert_close(vit.dense_tokens(x)[:, 1:], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [64, 96])
def test_resnet_dense_tokens_shape(resnet, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    tokens = resnet.dense_tokens(x)
    assert tokens.shape == (2, 1 + (size // 32) ** 2, resnet.embed_dim)


def test_resnet_token0_is_encode_image(resnet):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pooled = resnet.model.encode_image(x)
    torch.testing.assert_close(resnet.dense_tokens(x)[:, 0], pooled, atol=1e-5, rtol=1e-4)


def test_resnet_spatial_tokens_are_the_attention_pool_value_path(resnet):
    """With q and k projections zeroed, attention is uniform, so open_clip's attention-pool
    output is the mean of the value path over the mean token and the h*w cells: the value of
    the mean token (computed here) together with our spatial tokens."""
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model = copy.deepcopy(resnet.model)
    pool = model.visual.attnpool
    with torch.no_grad():
        for lin in (pool.q_proj, pool.k_proj):
            lin.weight.zero_()
            lin.bias.zero_()
        uniform = model.encode_image(x)
        tokens = dense_tokens(model.visual, x)
        fmap_mean = resnet_feature_map(model.visual, x).flatten(2).mean(dim=2)
        mean_value = pool.c_proj(pool.v_proj(fmap_mean + pool.positional_embedding[0]))
    values = torch.cat([mean_value[:, None], tokens[:, 1:]], dim=1)
    torch.testing.assert_close(values.mean(dim=1), uniform, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 0], uniform, atol=1e-5, rtol=1e-4)


def test_interpolate_positions_keeps_native_grid_and_resizes_others():
    pos = torch.randn(1 + 4 * 4, 8)
    assert interpolate_positions(pos, (4, 4)) is pos
    const = torch.cat([torch.zeros(1, 8), torch.ones(16, 8) * torch.arange(8.0)])
    out = interpolate_positions(const, (6, 5))
    assert out.shape == (1 + 30, 8)
    torch.testing.assert_close(out[0], const[0])
    torch.testing.assert_close(out[1:], torch.arange(8.0).expand(30, 8), atol=1e-5, rtol=0)


# ---- the embedded toy model ----------------------------------------------------------------
def test_toy_clip_is_registered_from_its_asset_files(monkeypatch, tmp_path, ckpts):
    from vlml.encoders import registry

    config = tmp_path / "vlml_test_toy.json"
    monkeypatch.setattr(registry, "TOY_CONFIG", config)
    monkeypatch.setattr(registry, "ASSETS", tmp_path)
    with pytest.raises(ConfigError, match="toy-clip.*not installed"):
        load("toy-clip")
    assert "toy-clip" not in list_encoders()
    config.write_text(json.dumps(tiny_config("vit", 32)))
    with pytest.raises(ConfigError, match="no weights file"):
        load("toy-clip")
    weights = tmp_path / "vlml_test_toy.pt"
    weights.write_bytes(ckpts["vit"][1].read_bytes())
    toy = load("toy-clip")
    assert "toy-clip" in list_encoders()
    assert toy.name == "toy-clip" and toy.architecture == "vlml_test_toy"
    assert toy.weights_file == str(weights.resolve())
    assert toy.encode_images(torch.zeros(1, 3, 32, 32)).shape == (1, 32)
