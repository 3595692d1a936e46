"""Feature-cache integrity: header and size checks, block checksums, the verified stamp, repair,
a full disk, and resuming after `kill -9` (issue 17)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vlml.cli.main import main
from vlml.encoders import FeatureCache, load
from vlml.encoders import cache as cache_mod
from vlml.encoders import cache_integrity as integrity
from vlml.encoders.cache import CacheCorruptError, CacheDiskFullError, extract_features
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.errors import DataError
from vlml.pseudo.clip_scores import catalog_embeddings
from vlml.types import Catalog

N_IMAGES = 20
BLOCK = 4  # rows per checksum block in these tests: 5 blocks of 20 rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    rng = np.random.default_rng(0)
    names = []
    for i in range(N_IMAGES):
        h, w = rng.integers(30, 50, size=2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        names.append(f"{i}.png")
    catalog = Catalog(names, ["a", "b"], np.zeros((N_IMAGES, 2), np.int8), root=str(root))
    arch, ckpt = make_tiny_checkpoint(root / "tiny", "vit", 32)
    return {"catalog": catalog, "catalog_file": catalog.save(root / "c.zip"), "arch": arch,
            "ckpt": ckpt}


@pytest.fixture(scope="module")
def vit(setup):
    return load(setup["arch"], pretrained=str(setup["ckpt"]))


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(cache_mod, "BLOCK_ROWS", BLOCK)


def _extract(setup, enc, out, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("progress", False)
    kw.setdefault("checkpoint_interval", 0)
    kw.setdefault("views", ("plain",))
    return extract_features(setup["catalog"], enc, out, **kw)


def _count(monkeypatch, obj, name, fail_from=None, error=None):
    """Record the calls of `obj.name`; from call `fail_from` on, raise `error` instead."""
    calls = []
    original = getattr(obj, name)

    def wrapped(*args, **kwargs):
        calls.append(len(args[0]) if name in ("encode_images", "dense_tokens") else 1)
        if fail_from is not None and len(calls) >= fail_from:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapped)
    return calls


def _damage(path, rows, value=0.5):
    arr = np.load(path, mmap_mode="r+")
    arr[rows] = value
    arr.flush()
    del arr


def _state(cache):
    return json.loads((cache.path / "state.json").read_text())


def _cli(setup, out, *extra):
    return main(["features", "--catalog", str(setup["catalog_file"]), "--encoder",
                 setup["arch"], "--pretrained", str(setup["ckpt"]), "--out", str(out),
                 "--batch-size", "4", "--views", "plain", *extra])


# ---- damaged rows ----------------------------------------------------------------------------
def test_rows_overwritten_in_the_middle_are_named(setup, vit, tmp_path):
    cache = _extract(setup, vit, tmp_path)["plain"]
    blocks = _state(cache)["blocks"]
    assert blocks["rows"] == BLOCK and blocks["checksum"] == "crc32"
    assert len(blocks["checksums"]["embeddings"]) == N_IMAGES // BLOCK
    _damage(cache.path / "embeddings.npy", slice(9, 11))
    with pytest.raises(CacheCorruptError, match=r"embeddings\.npy rows 8-11 \(expected crc32 "
                       r"[0-9a-f]{8}, found [0-9a-f]{8}\).*--repair.*delete the folder") as e:
        _extract(setup, vit, tmp_path)
    assert e.value.where == str(cache.path / "embeddings.npy")
    assert [(b.stream, b.start, b.stop) for b in e.value.bad] == [("embeddings", 8, 12)]
    with pytest.raises(CacheCorruptError, match="rows 8-11"):  # a run's entry point refuses too
        catalog_embeddings(setup["catalog"], vit, tmp_path, batch_size=4, progress=False)


def test_truncated_array_is_a_clear_error(setup, vit, tmp_path):
    cache = _extract(setup, vit, tmp_path)["plain"]
    path = cache.path / "embeddings.npy"
    size = path.stat().st_size
    os.truncate(path, size - 3 * 32 * 4 - 5)
    for call in (lambda: cache.embeddings,  # opened before the damage
                 lambda: _extract(setup, vit, tmp_path)):
        with pytest.raises(DataError, match=r"embeddings\.npy: .*truncated: only rows 0-15 are "
                           r"there, rows 16-19 are missing.*delete the folder"):
            call()


def test_garbled_header_is_a_clear_error(setup, vit, tmp_path):
    cache = _extract(setup, vit, tmp_path)["plain"]
    with open(cache.path / "embeddings.npy", "r+b") as f:
        f.write(b"\x00garbage")
    with pytest.raises(DataError, match=r"embeddings\.npy: not a valid \.npy header.*delete "
                                        r"the folder .* run `vlml features`") as e:
        FeatureCache.load(cache.path)
    assert "pickle" not in str(e.value)


def test_header_of_another_shape_is_refused(setup, vit, tmp_path):
    cache = _extract(setup, vit, tmp_path)["plain"]
    np.save(cache.path / "embeddings.npy", np.zeros((N_IMAGES, 16), np.float32))
    with pytest.raises(DataError, match=r"header says shape \(20, 16\) float32, expected "
                                        r"\(20, 32\) float32"):
        _extract(setup, vit, tmp_path)


# ---- vlml features --verify / --repair -------------------------------------------------------
def test_cli_verify_good_then_damaged_then_repaired(setup, tmp_path, capsys):
    assert _cli(setup, tmp_path, "--verify") == 2  # nothing extracted yet
    assert "plain: NOT USABLE: no feature cache" in capsys.readouterr().out
    assert _cli(setup, tmp_path) == 0
    capsys.readouterr()
    assert _cli(setup, tmp_path, "--verify") == 0
    assert capsys.readouterr().out.startswith("plain: OK ")
    cache = next(tmp_path.glob("*-plain-*"))
    clean = np.load(cache / "embeddings.npy").copy()
    _damage(cache / "embeddings.npy", [1, 17])
    assert _cli(setup, tmp_path, "--verify") == 2
    out = capsys.readouterr()
    assert "plain: DAMAGED" in out.out and "embeddings.npy rows 0-3" in out.out
    assert "embeddings.npy rows 16-19" in out.out and "--repair" in out.err
    assert _cli(setup, tmp_path, "--repair") == 0
    assert _cli(setup, tmp_path, "--verify") == 0
    assert "plain: OK" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(cache / "embeddings.npy"), clean)


def test_repair_reextracts_only_the_damaged_blocks(setup, vit, tmp_path, monkeypatch):
    cache = _extract(setup, vit, tmp_path, dense=True)["plain"]
    clean = {s: np.load(cache.path / f"{s}.npy").copy() for s in ("embeddings", "tokens")}
    _damage(cache.path / "embeddings.npy", 9)
    _damage(cache.path / "tokens.npy", 17)
    emb = _count(monkeypatch, vit, "encode_images")
    tok = _count(monkeypatch, vit, "dense_tokens")
    repaired = _extract(setup, vit, tmp_path, dense=True, repair=True)["plain"]
    assert emb == [BLOCK] and tok == [BLOCK]  # rows 8-11 and 16-19, nothing else
    for s, arr in clean.items():
        np.testing.assert_array_equal(np.load(repaired.path / f"{s}.npy"), arr)
    assert repaired.verify() == []


# ---- the stamp -------------------------------------------------------------------------------
def test_verified_once_per_cache_then_the_stamp_skips(setup, vit, tmp_path, monkeypatch):
    calls = _count(monkeypatch, integrity, "verify_array")
    cache = _extract(setup, vit, tmp_path / "a")["plain"]
    assert len(calls) == 1  # what this run wrote, read back once
    stamp = json.loads((cache.path / integrity.STAMP).read_text())
    assert set(stamp["files"]) == {"embeddings.npy", "state.json"}
    _extract(setup, vit, tmp_path / "a")
    catalog_embeddings(setup["catalog"], vit, tmp_path / "a", batch_size=4, progress=False)
    assert len(calls) == 1
    # a copy (new inodes) is a cache this run has not seen: its first use verifies it
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    catalog_embeddings(setup["catalog"], vit, tmp_path / "b", batch_size=4, progress=False)
    catalog_embeddings(setup["catalog"], vit, tmp_path / "b", batch_size=4, progress=False)
    assert len(calls) == 2


def test_a_folder_where_no_stamp_can_be_written_is_verified_every_run(setup, vit, tmp_path,
                                                                     monkeypatch):
    _extract(setup, vit, tmp_path)
    (next(tmp_path.glob("*-plain-*")) / integrity.STAMP).unlink()
    _count(monkeypatch, integrity, "write_json_atomic", fail_from=1,
           error=OSError(errno.EROFS, os.strerror(errno.EROFS)))
    calls = _count(monkeypatch, integrity, "verify_array")
    for _ in range(2):
        catalog_embeddings(setup["catalog"], vit, tmp_path, batch_size=4, progress=False)
    assert len(calls) == 2


# ---- a full disk -----------------------------------------------------------------------------
@pytest.mark.parametrize("call, fail_from, file", [
    ("pwrite", 5, "embeddings.npy"),  # the array write of the 3rd batch's plain view
    ("fsync", 15, "embeddings.npy"),  # 6 as the folders are made, then 4 a batch (array, state)
    ("replace", 11, "state.json"),  # 6 as the folders are made, then 2 a batch
])
def test_full_disk_keeps_the_previous_state(setup, vit, tmp_path, monkeypatch, call,
                                            fail_from, file):
    clean = _extract(setup, vit, tmp_path / "clean", views=("plain", "flip"))
    # the disk fills up during the third batch and stays full
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _count(monkeypatch, os, call, fail_from=fail_from, error=full)
    with pytest.raises(CacheDiskFullError, match=rf"{file}: the disk ran out of space .*free "
                                                 r"some space, then run the same command"):
        _extract(setup, vit, tmp_path / "out", views=("plain", "flip"))
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "BLOCK_ROWS", BLOCK)
    for ref in clean.values():
        partial = FeatureCache.load(tmp_path / "out" / ref.path.name, require_complete=False)
        assert partial.rows_done("embeddings") == 8  # two batches recorded, the third not
        assert partial.verify() == []  # what is recorded is what is on disk
    resumed = _extract(setup, vit, tmp_path / "out", views=("plain", "flip"))
    for view, ref in clean.items():
        np.testing.assert_array_equal(resumed[view].embeddings, ref.embeddings)


def test_too_little_free_space_stops_before_any_work(setup, vit, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=1, used=1, free=0))
    calls = _count(monkeypatch, vit, "encode_images")
    with pytest.raises(CacheDiskFullError, match=r"needs .* GB more but the disk has 0\.00 GB"):
        _extract(setup, vit, tmp_path, dense=True)
    assert calls == []


# ---- caches from before checksums ------------------------------------------------------------
def test_legacy_cache_opens_with_a_warning_and_gets_checksums_when_extended(
        setup, vit, tmp_path, capsys):
    cache = _extract(setup, vit, tmp_path)["plain"]
    state = _state(cache)
    sums = state["blocks"]["checksums"]["embeddings"]
    del state["blocks"]  # exactly what vlml wrote before checksums
    (cache.path / "state.json").write_text(json.dumps(state))
    (cache.path / integrity.STAMP).unlink()
    with pytest.warns(UserWarning, match="no checksums .* cannot be detected"):
        legacy = _extract(setup, vit, tmp_path)["plain"]
    assert legacy.legacy
    np.testing.assert_array_equal(legacy.embeddings, cache.embeddings)
    assert _cli(setup, tmp_path, "--verify") == 0
    assert "plain: NOT CHECKED" in capsys.readouterr().out
    # adding dense tokens records the existing rows' checksums: no longer legacy
    dense = _extract(setup, vit, tmp_path, dense=True)["plain"]
    assert not dense.legacy and dense.verify() == []
    assert _state(dense)["blocks"]["checksums"]["embeddings"] == sums


# ---- interruption ----------------------------------------------------------------------------
def test_resume_with_blocks_unaligned_to_batches(setup, vit, tmp_path, monkeypatch):
    """Batches of 3 rows, blocks of 4: the run dies inside a block; the resumed run's checksum
    of that block covers the rows the first run wrote, and nothing it left beyond them."""
    clean = _extract(setup, vit, tmp_path / "clean", batch_size=3)["plain"]
    _count(monkeypatch, vit, "encode_images", fail_from=4, error=RuntimeError("interrupted"))
    with pytest.raises(RuntimeError, match="interrupted"):
        _extract(setup, vit, tmp_path / "out", batch_size=3)
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "BLOCK_ROWS", BLOCK)
    folder = tmp_path / "out" / clean.path.name
    partial = FeatureCache.load(folder, require_complete=False)
    assert partial.rows_done("embeddings") == 9  # rows 8 in block 2 (rows 8-11) and the rest
    _damage(folder / "embeddings.npy", slice(9, None), 7.0)  # left by the killed process
    resumed = _extract(setup, vit, tmp_path / "out", batch_size=3)["plain"]
    np.testing.assert_array_equal(resumed.embeddings, clean.embeddings)
    assert _state(resumed)["blocks"] == _state(clean)["blocks"]


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vlml.encoders import add_model_config, cache, extract_features, load
    from vlml.types import Catalog
    catalog_file, arch, ckpt, out, kill_at = sys.argv[1:]
    cache.BLOCK_ROWS = {block}
    add_model_config(Path(ckpt).parent / (arch + ".json"))
    enc = load(arch, pretrained=ckpt)
    original, calls = enc.encode_images, []
    def encode_images(x):
        calls.append(1)
        if len(calls) == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(x)
    enc.encode_images = encode_images
    extract_features(Catalog.load(catalog_file), enc, out, batch_size=3, progress=False,
                     checkpoint_interval=0)
""")


def test_kill_9_then_rerun_gives_identical_arrays(setup, vit, tmp_path):
    clean = _extract(setup, vit, tmp_path / "clean", batch_size=3, views=("plain", "flip"))
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN.format(block=BLOCK), str(setup["catalog_file"]),
         setup["arch"], str(setup["ckpt"]), str(tmp_path / "out"), "8"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == -signal.SIGKILL, done.stderr
    partial = FeatureCache.load(tmp_path / "out" / clean["flip"].path.name,
                                require_complete=False)
    assert 0 < partial.rows_done("embeddings") < N_IMAGES
    resumed = _extract(setup, vit, tmp_path / "out", batch_size=3, views=("plain", "flip"))
    for view, ref in clean.items():
        np.testing.assert_array_equal(resumed[view].embeddings, ref.embeddings)
        assert _state(resumed[view])["blocks"] == _state(ref)["blocks"]
