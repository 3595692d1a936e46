"""The feature cache: keys, reuse, resume after interruption, flip view, dense tokens, bad files."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from vlml.encoders import CacheMissError, FeatureCache, FeatureKey, extract_features, load
from vlml.errors import ConfigError, DataError
from vlml.types import Catalog

N_IMAGES = 20


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    names = []
    for i in range(N_IMAGES):
        h, w = rng.integers(30, 60, size=2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        names.append(f"{i}.png")
    return root, names


def _catalog(root, names) -> Catalog:
    return Catalog(names, ["a", "b"], np.zeros((len(names), 2), np.int8), root=str(root))


@pytest.fixture(scope="module")
def catalog(images):
    return _catalog(*images)


def _extract(catalog, enc, out, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("progress", False)
    kw.setdefault("checkpoint_interval", 0)
    return extract_features(catalog, enc, out, **kw)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_calls(monkeypatch, enc, name, fail_at=None):
    calls = []
    original = getattr(enc, name)

    def wrapped(x):
        calls.append(len(x))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("simulated interruption")
        return original(x)

    monkeypatch.setattr(enc, name, wrapped)
    return calls


# ---- contents ------------------------------------------------------------------------------
def test_embeddings_match_encoder_and_flip_differs(catalog, vit, tmp_path):
    caches = _extract(catalog, vit, tmp_path)
    assert set(caches) == {"plain", "flip"}
    x = torch.stack([vit.preprocess(Image.open(p).convert("RGB"))
                     for p in catalog.full_paths()])
    plain, flip = caches["plain"].embeddings, caches["flip"].embeddings
    assert isinstance(plain, np.memmap) and plain.dtype == np.float32
    assert plain.shape == (N_IMAGES, vit.embed_dim)
    np.testing.assert_allclose(plain, vit.encode_images(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(flip, vit.encode_images(x.flip(-1)).numpy(), atol=1e-6)
    assert np.abs(plain - flip).max(axis=1).min() > 1e-3  # every row changes under the flip
    assert caches["plain"].valid.all() and caches["plain"].bad_images == []
    assert caches["plain"].path != caches["flip"].path


def test_dense_token_shapes_vit_and_resnet(catalog, vit, resnet, tmp_path):
    for enc, n_tokens in ((vit, 1 + (32 // 8) ** 2), (resnet, 1 + (64 // 32) ** 2)):
        cache = _extract(catalog, enc, tmp_path, views=("plain",), dense=True)["plain"]
        assert cache.tokens.shape == (N_IMAGES, n_tokens, enc.embed_dim)
        assert cache.tokens.dtype == np.float16
        x = torch.stack([enc.preprocess(Image.open(p).convert("RGB"))
                         for p in catalog.full_paths()[:4]])
        np.testing.assert_allclose(cache.tokens[:4].astype(np.float32),
                                   enc.dense_tokens(x).numpy(), rtol=2e-3, atol=2e-3)


def test_dense_tokens_are_added_to_an_existing_cache(catalog, vit, tmp_path, monkeypatch):
    first = _extract(catalog, vit, tmp_path, views=("plain",))["plain"]
    assert not first.has_tokens
    emb_before = _digest(first.path / "embeddings.npy")
    calls = _count_calls(monkeypatch, vit, "encode_images")
    second = _extract(catalog, vit, tmp_path, views=("plain",), dense=True)["plain"]
    assert second.path == first.path and second.complete_tokens
    assert calls == [] and _digest(second.path / "embeddings.npy") == emb_before


# ---- keys ----------------------------------------------------------------------------------
def test_same_key_is_reused_without_touching_the_model(catalog, vit, tmp_path, monkeypatch):
    first = _extract(catalog, vit, tmp_path)
    calls = _count_calls(monkeypatch, vit, "encode_images")
    second = _extract(catalog, vit, tmp_path)
    assert calls == []
    for view in first:
        assert second[view].path == first[view].path
        np.testing.assert_array_equal(second[view].embeddings, first[view].embeddings)
        key = FeatureKey.of(vit, catalog, view)
        assert FeatureCache.open(tmp_path, key).path == first[view].path


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(FeatureKey)])
def test_any_key_field_change_is_a_miss(catalog, vit, tmp_path, field):
    _extract(catalog, vit, tmp_path, views=("plain",))
    key = FeatureKey.of(vit, catalog, "plain")
    FeatureCache.open(tmp_path, key)  # the real key hits
    value = getattr(key, field)
    changed = {"preprocess": {**key.preprocess, "resize_mode": "squash"}, "n_images": 19,
               "view": "flip"}.get(field, f"{value}x" if isinstance(value, str) else value)
    other = dataclasses.replace(key, **{field: changed})
    assert other.folder_name() != key.folder_name()
    with pytest.raises(CacheMissError):
        FeatureCache.open(tmp_path, other)


def test_changed_encoder_or_images_extract_into_new_folders(catalog, images, ckpts, vit,
                                                            resnet, tmp_path, monkeypatch):
    base = _extract(catalog, vit, tmp_path, views=("plain",))["plain"]
    before = _digest(base.path / "embeddings.npy")
    arch, ckpt = ckpts["vit"]
    variants = {
        "weights": (catalog, load(ckpts["vit_seed1"][0], pretrained=str(ckpts["vit_seed1"][1]))),
        "preprocess": (catalog, load(arch, pretrained=str(ckpt), resize_mode="squash")),
        "architecture": (catalog, resnet),
        "image list": (_catalog(images[0], images[1][::-1]), vit),
    }
    folders = {base.path}
    for what, (cat, enc) in variants.items():
        calls = _count_calls(monkeypatch, enc, "encode_images")
        cache = _extract(cat, enc, tmp_path, views=("plain",))["plain"]
        assert sum(calls) == N_IMAGES, what  # extracted again, not reused
        assert cache.path not in folders, what
        folders.add(cache.path)
    assert _digest(base.path / "embeddings.npy") == before


def test_open_reports_misses(tmp_path, catalog, vit):
    key = FeatureKey.of(vit, catalog, "plain")
    with pytest.raises(CacheMissError, match="no feature cache"):
        FeatureCache.open(tmp_path, key)
    with pytest.raises(CacheMissError, match="not a feature cache"):
        FeatureCache.load(tmp_path)
    with pytest.raises(ConfigError, match="view"):
        _extract(catalog, vit, tmp_path, views=("flipped",))


# ---- resume --------------------------------------------------------------------------------
def test_resume_after_interruption_gives_identical_arrays(catalog, vit, tmp_path, monkeypatch):
    clean = _extract(catalog, vit, tmp_path / "clean", dense=True)
    # 5 batches of 4, two views: calls go plain, flip, plain, flip, ...; the 8th call is the
    # flip view of batch 4, so plain has 16 rows done and flip 12 when the run dies.
    calls = _count_calls(monkeypatch, vit, "encode_images", fail_at=8)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        _extract(catalog, vit, tmp_path / "resumed", dense=True)
    partial = {v: FeatureCache.load(p, require_complete=False)
               for v, p in ((v, tmp_path / "resumed" / c.path.name) for v, c in clean.items())}
    assert partial["plain"].rows_done("embeddings") == 16
    assert partial["flip"].rows_done("embeddings") == 12
    for cache in partial.values():  # what a killed process may leave beyond the recorded rows
        for name in ("embeddings", "tokens"):
            arr = np.load(cache.path / f"{name}.npy", mmap_mode="r+")
            arr[cache.rows_done(name):] = 7
            arr.flush()
            del arr
    with pytest.raises(CacheMissError, match="incomplete"):
        FeatureCache.load(partial["flip"].path)
    monkeypatch.undo()
    calls = _count_calls(monkeypatch, vit, "encode_images")
    resumed = _extract(catalog, vit, tmp_path / "resumed", dense=True)
    assert calls == [4, 4, 4]  # flip of batch 4, then both views of batch 5
    for view in clean:
        np.testing.assert_array_equal(resumed[view].embeddings, clean[view].embeddings)
        np.testing.assert_array_equal(resumed[view].tokens, clean[view].tokens)


def test_workers_give_the_same_arrays(catalog, vit, tmp_path):
    one = _extract(catalog, vit, tmp_path / "a", views=("plain",))["plain"]
    two = _extract(catalog, vit, tmp_path / "b", views=("plain",), num_workers=2)["plain"]
    np.testing.assert_array_equal(one.embeddings, two.embeddings)


# ---- bad images ----------------------------------------------------------------------------
@pytest.fixture()
def bad_catalog(images, tmp_path):
    root, names = images
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not a png")
    paths = [str(root / n) for n in names[:6]]
    paths[2] = str(corrupt)
    paths[4] = str(tmp_path / "missing.jpg")
    return Catalog(paths, ["a", "b"], np.zeros((6, 2), np.int8))


def test_unreadable_image_raises_naming_its_path(bad_catalog, vit, tmp_path):
    with pytest.raises(DataError, match="corrupt.png.*not a readable image.*skip_bad"):
        _extract(bad_catalog, vit, tmp_path / "out")


def test_skip_bad_lists_images_and_marks_rows_invalid(bad_catalog, vit, tmp_path):
    caches = _extract(bad_catalog, vit, tmp_path / "out", skip_bad=True)
    good = Catalog([bad_catalog.image_paths[i] for i in (0, 1, 3, 5)], ["a", "b"],
                   np.zeros((4, 2), np.int8))
    ref = _extract(good, vit, tmp_path / "ref", views=("plain",))["plain"].embeddings
    for cache in caches.values():
        assert [(b["index"], b["path"]) for b in cache.bad_images] == [
            (2, bad_catalog.image_paths[2]), (4, bad_catalog.image_paths[4])]
        assert "file not found" in cache.bad_images[1]["reason"]
        np.testing.assert_array_equal(cache.valid, [True, True, False, True, False, True])
        assert not cache.embeddings[[2, 4]].any()
    np.testing.assert_allclose(caches["plain"].embeddings[[0, 1, 3, 5]], ref, atol=1e-6)
    # The finished cache keeps its list; without skip_bad it is an error again, naming the path.
    with pytest.raises(DataError, match="corrupt.png"):
        _extract(bad_catalog, vit, tmp_path / "out")


def test_rows_for_maps_a_subset_catalog(catalog, vit, tmp_path):
    cache = _extract(catalog, vit, tmp_path, views=("plain",))["plain"]
    sub = catalog.subset([5, 2, 17])
    np.testing.assert_array_equal(cache.rows_for(sub), [5, 2, 17])
    with pytest.raises(DataError, match="not in this feature cache"):
        cache.rows_for(["/elsewhere/x.png"])
