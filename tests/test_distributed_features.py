"""Sharded feature extraction under torchrun (issue 20): `torchrun --nproc_per_node 2 -m vlml
features` gives the folder, arrays and checksums of one process, bit for bit (CPU, gloo);
a job killed with SIGKILL resumes every rank's slice from its own record; a relaunch with
another world size resumes from the rows done without a gap; an error on a rank stops the job
with that rank's message. Plus the pieces of shared checksum blocks and their combination."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlml import distributed
from vlml.encoders import cache as cache_mod
from vlml.encoders import cache_integrity as integrity
from vlml.encoders import extract_features, load
from vlml.types import Catalog

N_IMAGES = 200
BATCH = 8  # 25 batches: rank 0 of 2 gets rows 0-103, rank 1 rows 104-199
BLOCK = 16  # checksum rows in the killed run: block 6 (rows 96-111) is shared by both ranks
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    names = []
    for i in range(N_IMAGES):
        h, w = rng.integers(24, 48, size=2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        names.append(f"{i}.png")
    catalog = Catalog(names, ["a", "b"], np.zeros((N_IMAGES, 2), np.int8), root=str(root))
    return {"root": root, "catalog": catalog, "catalog_file": catalog.save(root / "c.zip"),
            "enc": load("toy-clip")}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_KEYS}
    return {**env, "OMP_NUM_THREADS": "1", "VLML_PROGRESS": "none"}


def _torchrun(nproc: int, *args: str) -> list[str]:
    launcher = [str(TORCHRUN)] if TORCHRUN.is_file() else [sys.executable, "-m",
                                                           "torch.distributed.run"]
    return [*launcher, "--nproc_per_node", str(nproc), "--standalone", *args]


def _features(catalog_file: Path, out: Path) -> list[str]:
    return ["features", "--catalog", str(catalog_file), "--encoder", "toy-clip", "--out",
            str(out), "--batch-size", str(BATCH)]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(out.iterdir()) if p.is_dir()}


def _same_caches(a: Path, b: Path) -> None:
    """Same folder names; identical arrays, state.json and meta.json; no rank records left."""
    fa, fb = _folders(a), _folders(b)
    assert list(fa) == list(fb) and fa
    for name in fa:
        for f in ("embeddings.npy", "state.json", "meta.json", "image_paths.json"):
            assert (fa[name] / f).read_bytes() == (fb[name] / f).read_bytes(), (name, f)
        assert not list(fb[name].glob("state.rank*.json"))


# ---- torchrun, end to end ----------------------------------------------------------------
def test_two_ranks_give_the_one_process_cache_bit_for_bit(world, tmp_path):
    one = _run([sys.executable, "-m", "vlml", *_features(world["catalog_file"], tmp_path / "1")])
    assert one.returncode == 0, one.stderr
    two = _run(_torchrun(2, "-m", "vlml", *_features(world["catalog_file"], tmp_path / "2")))
    assert two.returncode == 0, two.stderr
    _same_caches(tmp_path / "1", tmp_path / "2")
    state = json.loads(next((tmp_path / "2").glob("*-plain-*/state.json")).read_text())
    assert state["done"] == {"embeddings": N_IMAGES}
    assert len(state["blocks"]["checksums"]["embeddings"]) == 1  # one block, from both ranks
    assert two.stdout.count("plain: ") >= 1 and "(200 images, dim 64)" in two.stdout


_JOB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vlml import distributed
    from vlml.encoders import cache, extract_features, load
    from vlml.types import Catalog
    catalog_file, out, delay, count = sys.argv[1:]
    cache.BLOCK_ROWS = {block}
    distributed.init()
    enc = load("toy-clip")
    original, rows = enc.encode_images, [0]
    def encode_images(x):
        rows[0] += len(x)
        time.sleep(float(delay))
        return original(x)
    enc.encode_images = encode_images
    extract_features(Catalog.load(catalog_file), enc, out, batch_size={batch}, progress=False,
                     checkpoint_interval=0)
    Path(count + ".rank" + str(distributed.rank())).write_text(str(rows[0]))
    distributed.destroy()
""").format(block=BLOCK, batch=BATCH)


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for c in map(int, children):
            out += [c, *_descendants(c)]
    return out


def _kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (each worker leads its own process group)."""
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=30)


def _records(folder: Path) -> dict[int, dict]:
    out = {}
    for r, path in cache_mod._shard_states(folder).items():
        try:
            out[r] = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now
            pass
    return out


def test_killed_job_resumes_every_rank_then_other_world_sizes(world, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "BLOCK_ROWS", BLOCK)
    ref = extract_features(world["catalog"], world["enc"], tmp_path / "ref", batch_size=BATCH,
                           progress=False)
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    out, count = tmp_path / "out", tmp_path / "count"
    job = subprocess.Popen(_torchrun(2, str(script), str(world["catalog_file"]), str(out),
                                     "0.15", str(count)), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    plain = out / ref["plain"].path.name
    shards = [distributed.shard(N_IMAGES, BATCH, r, 2) for r in range(2)]
    deadline = time.monotonic() + 90
    try:  # kill once both ranks have recorded rows
        while time.monotonic() < deadline and job.poll() is None:
            recs = _records(plain) if plain.is_dir() else {}
            if len(recs) == 2 and all(recs[r]["done"]["embeddings"] > shards[r].start
                                      for r in recs):
                break
            time.sleep(0.02)
    finally:
        _kill_job(job)
    assert job.returncode is not None and not list(tmp_path.glob("count.rank*")), \
        job.stdout.read()
    killed = {r: rec["done"]["embeddings"] for r, rec in _records(plain).items()}
    assert all(shards[r].start < killed[r] < shards[r].stop for r in (0, 1)), killed
    assert json.loads((plain / "state.json").read_text())["done"]["embeddings"] == 0
    shutil.copytree(out, tmp_path / "copy")
    shutil.copytree(out, tmp_path / "copy3")

    # the same world size: each rank extracts only the rows its record lacks
    again = _run(_torchrun(2, str(script), str(world["catalog_file"]), str(out), "0",
                           str(count)))
    assert again.returncode == 0, again.stderr
    _same_caches(tmp_path / "ref", out)
    for r in (0, 1):  # both views share the loader: each counts the rows once per view
        lacking = {v: shards[r].stop - _records_at_kill(tmp_path / "copy", ref[v].path.name, r)
                   for v in ref}
        assert int((tmp_path / f"count.rank{r}").read_text()) == sum(lacking.values())

    # one process (another world size): the rows done from row 0 on (rank 0's) are kept,
    # rank 1's are extracted again
    kept = {v: _records_at_kill(tmp_path / "copy", ref[v].path.name, 0) for v in ref}
    encoded = []
    original = world["enc"].encode_images
    monkeypatch.setattr(world["enc"], "encode_images",
                        lambda x: encoded.append(len(x)) or original(x))
    resumed = extract_features(world["catalog"], world["enc"], tmp_path / "copy",
                               batch_size=BATCH, progress=False)
    _same_caches(tmp_path / "ref", tmp_path / "copy")
    assert sum(encoded) == sum(N_IMAGES - k for k in kept.values())
    assert resumed["plain"].verify() == []

    # three ranks: the same, each new rank starting where state.json leaves its rows
    three = _run(_torchrun(3, "-m", "vlml", *_features(world["catalog_file"], tmp_path / "copy3")))
    assert three.returncode == 0, three.stderr
    _same_caches(tmp_path / "ref", tmp_path / "copy3")


def _records_at_kill(out: Path, name: str, rank: int) -> int:
    """Rows rank `rank` had recorded in folder `name` of a copy taken right after the kill
    (its slice's start when it had saved no record there yet: views are saved one by one)."""
    path = out / name / f"state.rank{rank}.json"
    if not path.is_file():
        return distributed.shard(N_IMAGES, BATCH, rank, 2).start
    return json.loads(path.read_text())["done"]["embeddings"]


def test_an_error_on_one_rank_stops_the_job_with_its_message(world, tmp_path):
    names = list(world["catalog"].image_paths)
    names[150] = "missing.png"  # in rank 1's slice
    catalog = Catalog(names, ["a", "b"], np.zeros((N_IMAGES, 2), np.int8),
                      root=str(world["root"]))
    done = _run(_torchrun(2, "-m", "vlml", *_features(catalog.save(tmp_path / "bad.zip"),
                                                       tmp_path / "out")))
    assert done.returncode != 0
    assert "vlml: error (rank 1): " in done.stderr and "missing.png" in done.stderr
    assert "file not found" in done.stderr
    assert "[rank0]: Traceback" not in done.stderr  # a waiting rank says so in one line


# ---- pieces of shared blocks ---------------------------------------------------------------
def test_crc_combine_matches_zlib():
    rng = np.random.default_rng(1)
    for n1, n2 in [(0, 5), (1, 1), (7, 0), (100, 3), (4096, 12345)]:
        a, b = rng.bytes(n1), rng.bytes(n2)
        assert integrity.crc_combine(zlib.crc32(a), zlib.crc32(b), n2) == zlib.crc32(a + b)


@pytest.mark.parametrize("cuts", [[0, 24, 48], [0, 10, 37, 48], [0, 3, 4, 48], [0, 48]])
def test_writers_of_row_ranges_merge_into_one_writers_checksums(tmp_path, cuts):
    """Rows 0-47 in blocks of 8, written by one writer per range (ranges cut anywhere, one
    inside a single block): the merge gives one writer's rows done and checksums."""
    rng = np.random.default_rng(2)
    values = rng.standard_normal((48, 3)).astype(np.float32)
    ref_sums: list[str | None] = []
    path = tmp_path / "a.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(48, 3)).flush()
    one = integrity.ArrayFile(path, (48, 3), np.float32, 8, ref_sums, 0)
    one.write(0, values)
    one.close()
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        sums: list[str | None] = []
        pieces: list = []
        w = integrity.ArrayFile(path, (48, 3), np.float32, 8, sums, lo, lo=lo, hi=hi,
                                pieces=pieces)
        for a in range(lo, hi, 5):  # batches that do not follow the blocks
            w.write(a, values[a:min(a + 5, hi)])
        w.close()
        assert all(s is None for s in sums[:-(-lo // 8)])
        parts.append(integrity.Part(lo, hi, sums, pieces))
    assert integrity.merge_parts(path, (48, 3), np.float32, 8, 0, [], parts) == (48, ref_sums)
    # a gap: rows after it are not done, blocks before it keep their checksums
    gap = [p for p in parts if p.lo != cuts[1]] if len(parts) > 1 else parts
    done, sums = integrity.merge_parts(path, (48, 3), np.float32, 8, 0, [], gap)
    assert done == (cuts[1] if len(parts) > 1 else 48) and sums == ref_sums[:done // 8]


def test_a_writer_starting_after_recorded_blocks_leaves_them_to_state_json(tmp_path):
    """A rank of rows 0-23 that starts at row 10 (state.json has rows 0-9 and block 0): its
    record holds None for block 0, then its own blocks; the merge takes block 0 from
    state.json."""
    values = np.arange(24 * 2, dtype=np.float32).reshape(24, 2)
    path = tmp_path / "a.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(24, 2))
    arr[:10] = values[:10]
    arr.flush()
    base = integrity.block_checksums(path, (24, 2), np.float32, 8, 1)
    sums: list[str | None] = []
    w = integrity.ArrayFile(path, (24, 2), np.float32, 8, sums, 10, lo=0, hi=24, pieces=[])
    w.write(10, values[10:])
    w.close()
    ref = integrity.block_checksums(path, (24, 2), np.float32, 8, 3)
    assert sums == [None, *ref[1:]] and w.pieces == []
    parts = [integrity.Part(0, 24, sums, w.pieces)]
    assert integrity.merge_parts(path, (24, 2), np.float32, 8, 10, base, parts) == (24, ref)


def test_merge_reads_a_block_no_record_holds_whole(tmp_path):
    """state.json has rows 0-11 (an earlier one-process run); then two writers of rows 0-9 and
    10-23: the first has nothing to do, the second starts at 12. Block 1 (rows 8-15) is whole
    in no record, so its checksum is read from the file; the others come from the records."""
    values = np.arange(24 * 2, dtype=np.float32).reshape(24, 2)
    path = tmp_path / "a.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(24, 2))
    arr[:12] = values[:12]
    arr.flush()
    sums: list[str | None] = []
    w = integrity.ArrayFile(path, (24, 2), np.float32, 8, sums, 12, lo=10, hi=24, pieces=[])
    w.write(12, values[12:])
    w.close()
    assert w.pieces[0][:2] == [10, 16]
    ref = integrity.block_checksums(path, (24, 2), np.float32, 8, 3)
    parts = [integrity.Part(0, 10, [], []), integrity.Part(10, 24, sums, w.pieces)]
    assert integrity.merge_parts(path, (24, 2), np.float32, 8, 12, ref[:1], parts) == (24, ref)
