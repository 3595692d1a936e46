"""The feature cache: frozen-encoder outputs computed once per image and view, kept on disk.

One folder per key (design.md, Conventions). The key holds the encoder architecture, the
weights' identity (pretrained tag or sha256 of the checkpoint file), the preprocessing, the
precision, the hash of the image list (full paths, in order) and the view ("plain" or "flip",
the horizontal flip of the preprocessed image). The folder is named
`<architecture>-<view>-<first 16 hex of the key's sha256>`, so a different key never opens the
same folder. Layout:

    meta.json          format, version, the key, array shapes and dtypes (written last, atomically)
    image_paths.json   the N image paths the rows follow
    embeddings.npy     (N, D) float32, L2-normalised global embeddings (`Encoder.encode_images`)
    tokens.npy         (N, L + 1, D) float16, dense tokens (`Encoder.dense_tokens`), when asked
    state.json         rows done per array, the unreadable images, and a CRC-32 per block of
                       1024 rows of each array (written atomically; see `cache_integrity`)
    state.rank<r>.json rank r's progress during a sharded extraction (joined into state.json
                       and removed at its end)
    verified.json      the stamp of the last full verification (file sizes, mtimes, inodes)

Arrays are plain `.npy` files opened with `np.load(..., mmap_mode="r")`, so COCO-size caches
train with bounded memory. Tokens are float16 to halve their size (a ViT-B/16 at 224 px
stores 197 x 512 values per image); embeddings stay float32.

Extraction writes batch after batch into the arrays (`os.pwrite`; the checksum of a block is
taken when its last row is written); every `checkpoint_interval` seconds (and on any exception,
including Ctrl-C) it syncs the arrays and then records the rows done and the checksums in
`state.json`. A killed run (even `kill -9`) resumes at the last recorded row and, with the same
batch size, gives arrays identical to an uninterrupted run. A full disk stops the run with a
`CacheDiskFullError` naming the file, the recorded state untouched. Rows of unreadable images are
all zeros, listed in `state.json`, and `False` in `FeatureCache.valid`.

Integrity: every open checks each array's `.npy` header and size against `meta.json`; the
checksums are compared in full by `vlml features --verify` (`FeatureCache.verify`) and once per
cache before a run first uses it (`extract_features` calls `FeatureCache.ensure_verified`,
which `verified.json` makes a no-op while the files are unchanged). Damaged rows raise
`CacheCorruptError` naming the file and rows; `extract_features(..., repair=True)` (`vlml
features --repair`) re-extracts only their blocks. A cache written before checksums existed
("legacy": no "blocks" in `state.json`) still opens, with a one-line warning that it cannot be
checked; the next extraction into it (resume, adding dense tokens) records the checksums of
its rows as they are then.

Many processes (`torchrun --nproc_per_node N -m vlml features ...`, or `extract_features`
called on every rank after `vlml.distributed.init()`): rank 0 checks for a finished cache,
creates or reopens the folders and preallocates the arrays while the others wait; then each
rank extracts its `vlml.distributed.shard` of the rows (whole batches, so every batch is the
one a single process would run) into the same files (`os.pwrite` of disjoint rows) and records
its progress in its own `state.rank<r>.json`: rows done, unreadable images, the checksums of the
blocks wholly in its rows, and for a block it shares with a neighbour the CRC-32 of its part (a
"piece"). When all are done, rank 0 joins the records into `state.json`, combining the pieces
of a shared block into the block's CRC-32 (`cache_integrity.merge_parts`), removes them and
verifies the cache; every rank then returns it. The result is the cache of one process: same
folder, key and layout, the same arrays bit for bit on CPU with the same batch size. Only rank 0
shows progress. A killed job relaunched with the same world size and batch size resumes every
rank from its record; with another world size or batch size (or one process) the records are
first joined into `state.json`, which keeps the rows done from row 0 on without a gap: the rows
after the first gap are extracted again. A rank that fails stops the job with its own error;
ranks that were waiting for it raise `PeerStoppedError` (one line, no backend traceback).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlml import distributed
from vlml.encoders import cache_integrity as integrity
from vlml.encoders.cache_integrity import (
    BLOCK_ROWS,
    CHECKSUM,
    ArrayFile,
    BadRows,
    CacheCorruptError,
    CacheDiskFullError,
)
from vlml.encoders.clip import Encoder
from vlml.errors import ConfigError, DataError, VlmlError
from vlml.fileio import write_json_atomic
from vlml.progress import bar as progress_bar
from vlml.types import Catalog

FORMAT = "vlml-feature-cache"
VERSION = 2  # 2: a CLIP-ResNet's token 0 is its attention-pool output (was the mean-token value)
VIEWS = ("plain", "flip")
EMBEDDING_DTYPE = np.float32
TOKEN_DTYPE = np.float16
STREAMS = ("embeddings", "tokens")
SHARD_STATE = "state.rank{}.json"
SHARD_FORMAT = "vlml-feature-cache-shard"

__all__ = ["CacheMissError", "CacheCorruptError", "CacheDiskFullError", "FeatureCache",
           "FeatureKey", "PeerStoppedError", "extract_features", "image_list_hash"]


class CacheMissError(VlmlError, LookupError):
    """No complete feature cache exists for the requested key."""


class PeerStoppedError(VlmlError, RuntimeError):
    """Another process of a sharded extraction stopped (its own message says why) while this
    one waited for it; what this one extracted is recorded."""


def _together(what: str, fn: Any, *args: Any) -> Any:
    """`fn(*args)`, a collective of the job's processes (`what` it waits for); a peer that
    stopped becomes a one-line `PeerStoppedError` instead of the backend's traceback."""
    try:
        return fn(*args)
    except RuntimeError as e:  # gloo / NCCL: "Connection closed by peer", a timeout, ...
        if "timed out" in str(e).lower() or "timeout" in str(e).lower():
            why = (f"this process waited for {what} longer than the process group's timeout "
                   "(a relaunch whose ranks had very different amounts of rows left, or a "
                   "stalled process)")
        else:
            why = (f"another process of this job stopped while this one waited for {what} "
                   f"(its own message says why; {type(e).__name__} from the backend)")
        raise PeerStoppedError(f"{why}; whatever it extracted is recorded: fix the cause, "
                               "then run the same command again to resume") from e


def image_list_hash(paths: Sequence[str | Path]) -> str:
    """sha256 (hex) of the image paths, in order. Image contents are not read, so an image
    replaced in place under the same path is not noticed (delete the cache folder then)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _catalog_paths(images: Catalog | Sequence[str | Path]) -> list[str]:
    """Absolute paths (without resolving links), so the same list means the same files."""
    paths = images.full_paths() if isinstance(images, Catalog) else images
    return [os.path.abspath(p) for p in paths]


@dataclass(frozen=True)
class FeatureKey:
    """Everything that decides a cache's contents; any field change is a different cache."""

    architecture: str
    weights: str
    preprocess: dict[str, Any] = field(hash=False)
    precision: str
    images: str
    n_images: int
    view: str

    @classmethod
    def of(cls, encoder: Encoder | dict[str, Any], images: Catalog | Sequence[str | Path],
           view: str) -> FeatureKey:
        """The key for `encoder` (or its `identity` dict) over a catalog or path list."""
        ident = encoder if isinstance(encoder, dict) else encoder.identity
        paths = _catalog_paths(images)
        return cls(ident["architecture"], ident["weights"], dict(ident["preprocess"]),
                   ident["precision"], image_list_hash(paths), len(paths), _check_view(view))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of `to_dict()`."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def folder_name(self) -> str:
        arch = re.sub(r"[^A-Za-z0-9._-]+", "_", self.architecture)
        return f"{arch}-{self.view}-{self.digest()[:16]}"


def _check_view(view: str) -> str:
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; expected one of {VIEWS}")
    return view


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"unreadable feature-cache file ({e})", str(path)) from e


class FeatureCache:
    """A finished (or, for `load(..., require_complete=False)`, partial) cache of one view.

    Attributes:
        path: the cache folder.
        key: the key dict stored in `meta.json`.
        meta: the whole `meta.json`.
    """

    def __init__(self, path: Path, meta: dict[str, Any], state: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.key: dict[str, Any] = meta["key"]
        self._state = state
        self._paths: list[str] | None = None

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.path)!r}, view={self.view!r}, n_images={self.n_images}, "
                f"tokens={self.has_tokens}, complete={self.complete})")

    # ---- opening ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, require_complete: bool = True) -> FeatureCache:
        """Open the cache folder `path` (key read from its `meta.json`).

        Each array's `.npy` header and file size are checked against `meta.json` (a
        `DataError` naming the file and the fix otherwise); the block checksums are not read
        (`verify`, `ensure_verified`).
        """
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise CacheMissError(f"{path}: not a feature cache (no meta.json)")
        meta = _read_json(path / "meta.json")
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"expected format {FORMAT!r} version {VERSION}, got "
                            f"{meta.get('format')!r} version {meta.get('version')!r}",
                            str(path / "meta.json"))
        cache = cls(path, meta, _read_json(path / "state.json"))
        for spec in meta["arrays"].values():
            integrity.check_npy(path / spec["file"], spec["shape"], spec["dtype"])
        if require_complete and not cache.complete:
            raise CacheMissError(f"{path}: incomplete ({cache.rows_done('embeddings')} of "
                                 f"{cache.n_images} rows); run extract_features again to resume")
        return cache

    @classmethod
    def open(cls, out_dir: str | Path, key: FeatureKey, *, dense: bool = False) -> FeatureCache:
        """The complete cache for exactly `key` under `out_dir`; `CacheMissError` otherwise.

        With `dense=True` the cache must also hold complete dense tokens.
        """
        path = Path(out_dir) / key.folder_name()
        if not (path / "meta.json").is_file():
            raise CacheMissError(f"no feature cache for this key under {out_dir} "
                                 f"(looked for {path.name})")
        cache = cls.load(path)
        if cache.key != key.to_dict():
            raise CacheMissError(f"{path}: its key differs from the requested one")
        if dense and not cache.complete_tokens:
            raise CacheMissError(f"{path}: has no complete dense tokens")
        return cache

    # ---- contents ---------------------------------------------------------------------------
    @property
    def view(self) -> str:
        return self.key["view"]

    @property
    def n_images(self) -> int:
        return int(self.key["n_images"])

    @property
    def embed_dim(self) -> int:
        return int(self.meta["arrays"]["embeddings"]["shape"][1])

    @property
    def has_tokens(self) -> bool:
        return "tokens" in self.meta["arrays"]

    def rows_done(self, stream: str) -> int:
        return int(self._state["done"].get(stream, 0))

    @property
    def complete(self) -> bool:
        return self.rows_done("embeddings") >= self.n_images

    @property
    def complete_tokens(self) -> bool:
        return self.has_tokens and self.rows_done("tokens") >= self.n_images

    def _memmap(self, stream: str) -> np.ndarray:
        spec = self.meta["arrays"][stream]
        path = self.path / spec["file"]
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:  # changed since the open: say how, not numpy's words
            integrity.check_npy(path, spec["shape"], spec["dtype"])
            raise DataError(f"cannot open ({e}); {integrity.delete_and_rerun(self.path)}",
                            str(path)) from e

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings, memory-mapped read-only."""
        return self._memmap("embeddings")

    @property
    def tokens(self) -> np.ndarray:
        """(N, L + 1, D) float16 dense tokens (index 0 global), memory-mapped read-only."""
        if not self.has_tokens or (self.complete and not self.complete_tokens):
            raise CacheMissError(f"{self.path}: dense tokens missing or incomplete; run "
                                 "extract_features(..., dense=True) to add them")
        return self._memmap("tokens")

    @property
    def bad_images(self) -> list[dict[str, Any]]:
        """Unreadable images: dicts with index, path, reason."""
        return list(self._state.get("bad", []))

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool, False for rows of unreadable images (their features are zeros)."""
        mask = np.ones(self.n_images, dtype=bool)
        mask[[b["index"] for b in self.bad_images]] = False
        return mask

    @property
    def image_paths(self) -> list[str]:
        if self._paths is None:
            self._paths = list(_read_json(self.path / "image_paths.json"))
        return self._paths

    def rows_for(self, images: Catalog | Sequence[str | Path]) -> np.ndarray:
        """Row index of each image of `images` (e.g. a subset catalog) in this cache."""
        where = {p: i for i, p in enumerate(self.image_paths)}
        wanted = _catalog_paths(images)
        missing = [p for p in wanted if p not in where]
        if missing:
            raise DataError(f"{len(missing)} image(s) are not in this feature cache (first: "
                            f"{missing[0]})", str(self.path))
        return np.fromiter((where[p] for p in wanted), dtype=np.int64, count=len(wanted))

    # ---- integrity --------------------------------------------------------------------------
    @property
    def legacy(self) -> bool:
        """True for a cache written before block checksums existed (nothing to verify)."""
        return "blocks" not in self._state

    @property
    def block_rows(self) -> int:
        return int(self._state["blocks"]["rows"]) if not self.legacy else 0

    def _verified_files(self) -> list[str]:
        return [spec["file"] for spec in self.meta["arrays"].values()] + ["state.json"]

    def verify(self) -> list[BadRows]:
        """Read every recorded block of every array back and compare its checksum.

        Returns:
            The damaged blocks (empty when all match, or for a `legacy` cache). When all
            match, `verified.json` records the files as verified.
        """
        if self.legacy:
            return []
        blocks = self._state["blocks"]
        if blocks.get("checksum") != CHECKSUM:
            raise DataError(f"unknown checksum {blocks.get('checksum')!r}, expected "
                            f"{CHECKSUM!r}; {integrity.delete_and_rerun(self.path)}",
                            str(self.path / "state.json"))
        seen = integrity.fingerprint(self.path, self._verified_files())
        bad: list[BadRows] = []
        for stream, spec in self.meta["arrays"].items():
            bad += integrity.verify_array(
                stream, self.path / spec["file"], tuple(spec["shape"]), spec["dtype"],
                self.block_rows, blocks["checksums"].get(stream, []), self.rows_done(stream))
        if not bad:
            integrity.write_stamp(self.path, self._verified_files(), seen)
        return bad

    def ensure_verified(self) -> bool:
        """Verify in full unless `verified.json` vouches for the files as they are now.

        A `legacy` cache gets a one-line warning instead (it has no checksums).

        Returns:
            Whether a full verification ran.

        Raises:
            CacheCorruptError: naming the file and rows that changed, and the fix.
        """
        if self.legacy:
            warnings.warn(f"{self.path}: this feature cache has no checksums (written by an "
                          "older vlml), so damage to it cannot be detected; delete the folder "
                          "and run `vlml features` again to rebuild it with checksums",
                          stacklevel=2)
            return False
        if integrity.stamp_is_current(self.path, self._verified_files()):
            return False
        bad = self.verify()
        if bad:
            raise integrity.corrupt_error(self.path, bad)
        return True


@dataclass(frozen=True)
class _Shard:
    """This process's part of a sharded extraction: rank `rank` of `world` writes rows
    [lo, hi) (`distributed.shard`: whole batches, so arrays match one process's)."""

    rank: int
    world: int
    lo: int
    hi: int

    @classmethod
    def of(cls, n: int, batch_size: int, rank: int, world: int) -> _Shard:
        rows = distributed.shard(n, batch_size, rank, world)
        return cls(rank, world, rows.start, rows.stop)


def _shard_states(folder: Path) -> dict[int, Path]:
    """{rank: its `state.rank<r>.json`} in `folder`, by rank."""
    found = {}
    for path in folder.glob("state.rank*.json"):
        m = re.fullmatch(r"state\.rank(\d+)\.json", path.name)
        if m:
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


class _ViewWriter:
    """Creates or reopens one view's cache folder and writes rows into it.

    Every array is an `ArrayFile` that records a checksum per block in `state["blocks"]`;
    `save` syncs the arrays before `state.json` records the rows, so what it records is on
    disk. Close it (`release` or `close`) to give its file descriptors back.

    Records left by the processes of a sharded extraction (`state.rank<r>.json`) are joined
    into `state.json` and removed when the folder is opened, unless `layout` (world size,
    batch size) is the one they were written with: then each process resumes from its own.
    With `open_files=False` the folder is only made ready (created, joined, space checked).
    """

    def __init__(self, folder: Path, key: FeatureKey, paths: list[str], encoder: Encoder,
                 dense: bool, *, layout: tuple[int, int] | None = None,
                 open_files: bool = True) -> None:
        self.folder = folder
        self.streams = ("embeddings", "tokens") if dense else ("embeddings",)
        self.files: dict[str, ArrayFile] = {}
        n, d = len(paths), encoder.embed_dim
        if (folder / "meta.json").is_file():
            self.meta = self._read_meta(key)
            self.state = _read_json(folder / "state.json")
            if "blocks" not in self.state:
                self._adopt_legacy()
        else:  # new, or a creation that was killed before meta.json was written
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            self.meta = {"format": FORMAT, "version": VERSION, "key": key.to_dict(),
                         "arrays": {}, "encoder": {"name": encoder.name,
                                                   "weights_file": encoder.weights_file}}
            self.state = {"done": {}, "bad": [], "blocks": {"rows": BLOCK_ROWS,
                                                            "checksum": CHECKSUM,
                                                            "checksums": {}}}
            self._write_json("image_paths.json", paths)
            self._new_array("embeddings", (n, d), EMBEDDING_DTYPE)
        if dense and "tokens" not in self.meta["arrays"]:
            self._new_array("tokens", (n, encoder.n_tokens(), d), TOKEN_DTYPE)
        self._join_shards(n, layout)
        if any(self.done(s) < n for s in self.streams):  # rows to add, not just to repair
            integrity.check_free_space(folder, [folder / f"{s}.npy" for s in self.streams])
        if open_files:
            self._open_files()

    def _read_meta(self, key: FeatureKey) -> dict[str, Any]:
        meta = _read_json(self.folder / "meta.json")
        if meta.get("key") != key.to_dict():
            raise DataError("this folder holds a feature cache with a different key; "
                            "remove it or choose another output folder", str(self.folder))
        return meta

    def _open_files(self, lo: int = 0, hi: int | None = None,
                    pieces: dict[str, list[Any]] | None = None) -> None:
        blocks = self.state["blocks"]
        try:
            for s in self.streams:
                spec = self.meta["arrays"][s]
                self.files[s] = ArrayFile(
                    self.folder / spec["file"], tuple(spec["shape"]), spec["dtype"],
                    int(blocks["rows"]), blocks["checksums"].setdefault(s, []), self.done(s),
                    lo=lo, hi=hi, pieces=None if pieces is None else pieces.setdefault(s, []))
        except BaseException:
            self.release()
            raise

    def _join_shards(self, n: int, layout: tuple[int, int] | None) -> None:
        """Join the `state.rank<r>.json` records into `state.json`, then remove them; kept
        as they are when all were written with `layout` = (world size, batch size)."""
        found = _shard_states(self.folder)
        if not found:
            return
        records = {r: _read_json(path) for r, path in found.items()}
        block_rows = int(self.state["blocks"]["rows"])
        if layout is not None and all(
                rec.get("world") == layout[0] and r < layout[0]
                and rec.get("rows") == [_Shard.of(n, layout[1], r, layout[0]).lo,
                                        _Shard.of(n, layout[1], r, layout[0]).hi]
                and rec["blocks"].get("rows") == block_rows for r, rec in records.items()):
            return
        sums = self.state["blocks"]["checksums"]
        for stream, spec in self.meta["arrays"].items():
            parts = [integrity.Part(rec["rows"][0],
                                    int(rec["done"].get(stream, rec["rows"][0])),
                                    rec["blocks"]["checksums"].get(stream, []),
                                    rec["blocks"].get("pieces", {}).get(stream, []))
                     for rec in records.values() if rec["blocks"].get("rows") == block_rows]
            done, sums[stream] = integrity.merge_parts(
                self.folder / spec["file"], tuple(spec["shape"]), spec["dtype"], block_rows,
                self.done(stream), sums.get(stream, []), parts)
            self.state["done"][stream] = done
        reach = max(self.done(stream) for stream in self.meta["arrays"])
        for rec in records.values():
            self.mark_bad([(b["index"], b["path"], b["reason"]) for b in rec.get("bad", [])
                           if b["index"] < reach])
        self._write_state()
        for path in found.values():
            path.unlink(missing_ok=True)

    def _new_array(self, stream: str, shape: tuple[int, ...], dtype: type) -> None:
        """Create the (sparse) array file, then record it in state.json and meta.json."""
        path = self.folder / f"{stream}.npy"
        try:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        except OSError as e:
            raise integrity.write_error(e, path, "the new array's header", 0) from e
        self.meta["arrays"][stream] = {"file": f"{stream}.npy", "shape": list(shape),
                                       "dtype": np.dtype(dtype).name}
        self.state["done"][stream] = 0
        self.state["blocks"]["checksums"][stream] = []
        self._write_state()
        self._write_json("meta.json", self.meta)

    def _adopt_legacy(self) -> None:
        """A cache from before checksums: record those of its rows as they are now."""
        sums = {}
        for stream, spec in self.meta["arrays"].items():
            shape = tuple(spec["shape"])
            k = integrity.complete_blocks(self.done(stream), shape[0], BLOCK_ROWS)
            sums[stream] = integrity.block_checksums(self.folder / spec["file"], shape,
                                                     spec["dtype"], BLOCK_ROWS, k)
        self.state["blocks"] = {"rows": BLOCK_ROWS, "checksum": CHECKSUM, "checksums": sums}
        self._write_state()

    def done(self, stream: str) -> int:
        return int(self.state["done"].get(stream, 0))

    def start(self) -> int:
        return min(self.done(s) for s in self.streams)

    def needs(self, stream: str, end: int) -> bool:
        return stream in self.streams and self.done(stream) < end

    def write(self, stream: str, start: int, values: np.ndarray) -> None:
        """Append rows `start`... of `stream`; rows already done are kept as they are."""
        skip = max(self.done(stream) - start, 0)
        if skip < len(values):
            self.files[stream].write(start + skip, values[skip:])
            self.state["done"][stream] = start + len(values)

    def rewrite(self, stream: str, start: int, values: np.ndarray) -> None:
        """Write rows again over done ones (repair); their blocks' checksums are replaced."""
        self.files[stream].write(start, values)

    def mark_bad(self, rows: list[tuple[int, str, str]]) -> None:
        known = {b["index"] for b in self.state["bad"]}
        for i, path, reason in rows:
            if i not in known:
                self.state["bad"].append({"index": i, "path": path, "reason": reason})
        self.state["bad"].sort(key=lambda b: b["index"])

    def _write_json(self, name: str, obj: Any) -> None:
        path = self.folder / name
        try:
            write_json_atomic(path, obj)
        except (OSError, DataError) as e:  # the previous file, if any, is still in place
            failed = integrity.oserror_in(e)
            if failed is None:
                raise
            done = min((self.done(s) for s in self.state["done"]), default=0)
            raise integrity.write_error(failed, path, name, done) from e

    def _write_state(self) -> None:
        self._write_json("state.json", self.state)

    def save(self) -> None:
        """Sync the arrays, then record the rows done (so a recorded row is on disk)."""
        for s, f in self.files.items():
            f.flush(self.done(s))
        self._write_state()

    def release(self) -> None:
        """Close the array files (idempotent)."""
        for f in self.files.values():
            f.close()

    def close(self) -> FeatureCache:
        self.release()
        return FeatureCache(self.folder, self.meta, self.state)


class _ShardWriter(_ViewWriter):
    """One process's writer in a sharded extraction: rows [lo, hi) of a folder that rank 0
    made ready (`_ViewWriter(..., layout=..., open_files=False)`), into the same arrays, its
    progress in its own `state.rank<r>.json`: rows done per array, its unreadable images, the
    checksums of its whole blocks and the pieces of the blocks it shares with a neighbour.
    It resumes from that record, or from `state.json` where that has more of its rows."""

    def __init__(self, folder: Path, key: FeatureKey, paths: list[str], encoder: Encoder,
                 dense: bool, shard: _Shard) -> None:
        self.folder, self.shard = folder, shard
        self.streams = ("embeddings", "tokens") if dense else ("embeddings",)
        self.files = {}
        self.meta = self._read_meta(key)
        base = _read_json(folder / "state.json")
        own = folder / self._state_name()
        state = _read_json(own) if own.is_file() else None
        if state is None or state.get("rows") != [shard.lo, shard.hi]:
            state = {"format": SHARD_FORMAT, "rank": shard.rank, "world": shard.world,
                     "rows": [shard.lo, shard.hi], "done": {}, "bad": [],
                     "blocks": {"rows": base["blocks"]["rows"], "checksum": CHECKSUM,
                                "checksums": {}, "pieces": {}}}
        for s in self.streams:  # rows of its range that state.json already has are done
            from_base = min(max(int(base["done"].get(s, 0)), shard.lo), shard.hi)
            state["done"][s] = max(int(state["done"].get(s, shard.lo)), from_base)
        self.state = state
        self._open_files(shard.lo, shard.hi, state["blocks"].setdefault("pieces", {}))

    def _state_name(self) -> str:
        return SHARD_STATE.format(self.shard.rank)

    def _write_state(self) -> None:
        self._write_json(self._state_name(), self.state)


class _Images(Dataset):
    """Row i -> (i, preprocessed image or zeros, "" or why the image could not be read), for
    rows `start` to `stop - 1` (default: to the end)."""

    def __init__(self, paths: list[str], transform: Any, size: tuple[int, int],
                 start: int, stop: int | None = None) -> None:
        self.paths, self.transform, self.size, self.start = paths, transform, size, start
        self.stop = len(paths) if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        row = self.start + i
        try:
            with Image.open(self.paths[row]) as im:
                return row, self.transform(im.convert("RGB")), ""
        except FileNotFoundError:
            reason = "file not found"
        except Exception as e:  # PIL raises many types for corrupt data
            reason = f"not a readable image ({type(e).__name__}: {e})"
        return row, torch.zeros(3, *self.size), reason


def _bad_images_error(bad: list[dict[str, Any]], folder: Path | None = None) -> DataError:
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    again = (f"; the cache {folder} lists them: delete it to re-extract after fixing the "
             "files" if folder else "; fix or remove the file")
    return DataError(f"{bad[0]['reason']}{more}{again}, or pass skip_bad=True "
                     "(--skip-bad-images) to keep going with the image listed and its row "
                     "marked invalid", bad[0]["path"])


def extract_features(catalog: Catalog, encoder: Encoder, out_dir: str | Path,
                     views: Sequence[str] = VIEWS, dense: bool = False, batch_size: int = 64,
                     num_workers: int = 0, skip_bad: bool = False, progress: bool = True,
                     checkpoint_interval: float = 5.0, repair: bool = False
                     ) -> dict[str, FeatureCache]:
    """Embed every image of `catalog` (and its flip) once, into caches under `out_dir`.

    Args:
        catalog: the images; rows of every array follow `catalog.image_paths`.
        encoder: a loaded `Encoder`; its `identity` goes into the key.
        out_dir: parent folder; each view gets its own key-named folder inside.
        views: any of "plain", "flip" (flip = horizontal flip of the preprocessed image).
        dense: also store dense tokens (N, L + 1, D) float16 (added to an existing cache).
        batch_size, num_workers: DataLoader settings; keep `batch_size` when resuming for
            bit-identical arrays.
        skip_bad: list unreadable images (rows zero, `valid` False) instead of raising.
        progress: show progress (images/s, ETA; `vlml.progress` picks bars or lines).
        checkpoint_interval: seconds between progress records (0 = after every batch).
        repair: verify existing caches in full and re-extract the blocks of rows whose
            checksums no longer match (instead of raising `CacheCorruptError`).

    Returns:
        {view: FeatureCache}. A key already complete under `out_dir` is reused without
        touching any image; a partial one resumes; any other key starts a new folder. Every
        returned cache has passed a full checksum verification once (`verified.json`).

    In a process group (`vlml.distributed.init()` under torchrun, world size > 1) call it on
    every rank with the same arguments: each rank extracts its slice of the rows and every
    rank returns the finished caches (module docstring); only rank 0 shows progress and
    writes the shared files.

    Raises:
        DataError: an unreadable image (naming its path) unless `skip_bad`; an array file
            whose header or size is wrong.
        CacheCorruptError: rows changed since they were written (file and rows named).
        CacheDiskFullError: the disk ran out while writing (the recorded state is kept).
        PeerStoppedError: in a process group, another rank stopped while this one waited.
    """
    views = tuple(dict.fromkeys(_check_view(v) for v in views))
    if not views:
        raise ConfigError("views is empty; expected any of ('plain', 'flip')")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if dense and not encoder.supports_dense:
        raise ConfigError(f"dense tokens are not available for {encoder.architecture} (needs "
                          "an open_clip ViT or CLIP-ResNet image tower)")
    if catalog.n_images == 0:
        raise DataError("the catalog has no images", "catalog")
    paths = _catalog_paths(catalog)
    out_dir = Path(out_dir)
    keys = {v: FeatureKey.of(encoder, paths, v) for v in views}
    world, main = distributed.world_size(), distributed.is_main()
    hits: dict[str, FeatureCache] = {}
    if main:
        hits = _open_hits(out_dir, keys, paths, encoder, dense, batch_size, num_workers,
                          skip_bad, repair)
    if world > 1:
        _extract_sharded(out_dir, keys, paths, encoder, dense, batch_size, num_workers,
                         skip_bad, progress and main, checkpoint_interval,
                         todo=[v for v in views if v not in hits])
        hits.update({v: FeatureCache.open(out_dir, keys[v], dense=dense)
                     for v in views if v not in hits})
    elif len(hits) < len(views):
        with contextlib.ExitStack() as stack:
            writers = {}
            for v, k in keys.items():
                if v not in hits:
                    writers[v] = _ViewWriter(out_dir / k.folder_name(), k, paths, encoder, dense)
                    stack.callback(writers[v].release)
            _run(writers, paths, encoder, batch_size, num_workers, skip_bad, progress,
                 checkpoint_interval)
            for v, w in writers.items():
                hits[v] = w.close()
                # reads back what this run wrote, and what a resumed run's predecessor did
                hits[v].ensure_verified()
    caches = {v: hits[v] for v in views}
    if not skip_bad:
        for cache in caches.values():
            if cache.bad_images:
                raise _bad_images_error(cache.bad_images, cache.path)
    return caches


def _open_hits(out_dir: Path, keys: dict[str, FeatureKey], paths: list[str], encoder: Encoder,
               dense: bool, batch_size: int, num_workers: int, skip_bad: bool, repair: bool
               ) -> dict[str, FeatureCache]:
    """{view: complete cache} of the views whose key is already complete under `out_dir`,
    repaired when asked and verified (once per cache: `verified.json`)."""
    hits: dict[str, FeatureCache] = {}
    for v, key in keys.items():
        try:
            hits[v] = FeatureCache.open(out_dir, key, dense=dense)
        except CacheMissError:
            continue
        if repair:
            hits[v] = _repair(hits[v], key, paths, encoder, batch_size, num_workers, skip_bad)
        hits[v].ensure_verified()  # before any extraction, so a damaged hit fails early
    return hits


def _extract_sharded(out_dir: Path, keys: dict[str, FeatureKey], paths: list[str],
                     encoder: Encoder, dense: bool, batch_size: int, num_workers: int,
                     skip_bad: bool, progress: bool, checkpoint_interval: float,
                     todo: list[str]) -> None:
    """Extract views `todo` (rank 0's list counts) with every process of the job, each its
    `distributed.shard` of the rows. Rank 0 makes the folders ready first; at the end it joins
    the processes' records into `state.json` and verifies the caches, while the others wait.
    """
    ready = _prepare_shards(out_dir, keys, todo, paths, encoder, dense, batch_size) \
        if distributed.is_main() else None
    todo = _together("rank 0 to make the cache folders ready", distributed.all_gather_object,
                     ready)[0]
    if not todo:
        return
    shard = _Shard.of(len(paths), batch_size, distributed.rank(), distributed.world_size())
    if shard.hi > shard.lo:
        with contextlib.ExitStack() as stack:
            writers = {}
            for v in todo:
                writers[v] = _ShardWriter(out_dir / keys[v].folder_name(), keys[v], paths,
                                          encoder, dense, shard)
                stack.callback(writers[v].release)
            _run(writers, paths, encoder, batch_size, num_workers, skip_bad, progress,
                 checkpoint_interval, rows=range(shard.lo, shard.hi))
    _together("the others to finish their rows", distributed.barrier)  # records saved
    if distributed.is_main():
        for v in todo:
            folder = out_dir / keys[v].folder_name()
            _ViewWriter(folder, keys[v], paths, encoder, dense, open_files=False).release()
            cache = FeatureCache.load(folder)  # complete, or CacheMissError saying how far
            if dense and not cache.complete_tokens:
                raise CacheMissError(f"{folder}: dense tokens incomplete after extraction "
                                     f"({cache.rows_done('tokens')} of {cache.n_images} rows); "
                                     "run the same command again to resume")
            cache.ensure_verified()  # reads back what every process wrote
    _together("rank 0 to join and verify the records", distributed.barrier)


def _prepare_shards(out_dir: Path, keys: dict[str, FeatureKey], todo: list[str],
                    paths: list[str], encoder: Encoder, dense: bool, batch_size: int
                    ) -> list[str]:
    """Rank 0, before any process writes: create or reopen the folders of views `todo`, keep
    the processes' records when they were written with this world size and batch size (each
    resumes from its own), else join them into `state.json`. Returns `todo`."""
    layout = (distributed.world_size(), batch_size)
    for v in todo:
        _ViewWriter(out_dir / keys[v].folder_name(), keys[v], paths, encoder, dense,
                    layout=layout, open_files=False).release()
    return todo


def _encode(encoder: Encoder, images: torch.Tensor, view: str, stream: str,
            bad_local: list[int]) -> np.ndarray:
    """One batch of one view's `stream` as the cache stores it (rows of bad images zero)."""
    x = images if view == "plain" else torch.flip(images, dims=[-1])
    if stream == "embeddings":
        out = encoder.encode_images(x).cpu().numpy()
        dtype = EMBEDDING_DTYPE
    else:
        out = encoder.dense_tokens(x).cpu().numpy()
        dtype = TOKEN_DTYPE
    out[bad_local] = 0
    return out.astype(dtype, copy=False)


def _bad_rows(rows: torch.Tensor, reasons: Sequence[str], paths: list[str], skip_bad: bool
              ) -> list[tuple[int, str, str]]:
    """(row, path, reason) of the unreadable images of a batch; raises unless `skip_bad`."""
    bad = [(int(r), paths[int(r)], why) for r, why in zip(rows, reasons, strict=True) if why]
    if bad and not skip_bad:
        raise _bad_images_error([{"index": i, "path": p, "reason": why} for i, p, why in bad])
    return bad


@torch.inference_mode()  # also covers the in-process data pipeline (num_workers=0)
def _run(writers: dict[str, _ViewWriter], paths: list[str], encoder: Encoder, batch_size: int,
         num_workers: int, skip_bad: bool, progress: bool, checkpoint_interval: float,
         rows: range | None = None) -> None:
    """Extract `rows` (default: all) for every writer, from the first row one of them lacks."""
    rows = range(len(paths)) if rows is None else rows
    start = min(w.start() for w in writers.values())
    data = _Images(paths, encoder.preprocess, encoder.image_size, start, rows.stop)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    part = "" if len(rows) == len(paths) else \
        f"; this process: rows {rows.start}-{rows.stop - 1} of {len(paths)}"
    bar = progress_bar(total=len(rows), initial=start - rows.start, unit="img",
                       enabled=progress, desc=f"features {encoder.name} ({', '.join(writers)}"
                                          f"{part})")
    last_save = time.monotonic()
    try:
        for rows, images, reasons in loader:
            a, b = int(rows[0]), int(rows[-1]) + 1
            bad = _bad_rows(rows, reasons, paths, skip_bad)
            bad_local = [i - a for i, _, _ in bad]
            for view, w in writers.items():
                for stream in STREAMS:
                    if w.needs(stream, b):
                        w.write(stream, a, _encode(encoder, images, view, stream, bad_local))
                w.mark_bad(bad)
            bar.update(b - a)
            if time.monotonic() - last_save >= checkpoint_interval:
                for w in writers.values():
                    w.save()
                last_save = time.monotonic()
    except BaseException:
        for w in writers.values():  # keep what is done; a failing save leaves the last record
            with contextlib.suppress(VlmlError, OSError):
                w.save()
        raise
    else:
        for w in writers.values():
            w.save()
    finally:
        bar.close()


@torch.inference_mode()
def _repair(cache: FeatureCache, key: FeatureKey, paths: list[str], encoder: Encoder,
            batch_size: int, num_workers: int, skip_bad: bool) -> FeatureCache:
    """Verify `cache` in full and re-extract every block whose checksum does not match."""
    bad = cache.verify()
    if not bad:
        return cache
    writer = _ViewWriter(cache.path, key, paths, encoder, dense=cache.has_tokens)
    try:
        for block in bad:
            data = _Images(paths, encoder.preprocess, encoder.image_size, block.start,
                           block.stop)
            loader = DataLoader(data, batch_size=batch_size, shuffle=False,
                                num_workers=num_workers)
            for rows, images, reasons in loader:
                failed = _bad_rows(rows, reasons, paths, skip_bad)
                a = int(rows[0])
                writer.rewrite(block.stream, a, _encode(encoder, images, cache.view,
                                                        block.stream,
                                                        [i - a for i, _, _ in failed]))
                writer.mark_bad(failed)
        writer.save()
    finally:
        writer.release()
    return writer.close()
