"""Integrity of the feature cache's array files: header and size checks, block checksums, stamp.

Every array of a cache (`embeddings.npy`, `tokens.npy`) is cut into blocks of `block_rows`
rows (the last block may be shorter). When a block's last row is written, the CRC-32 of the
block's bytes is recorded in `state.json` beside the rows done:

    "blocks": {"rows": 1024, "checksum": "crc32",
               "checksums": {"embeddings": ["1a2b3c4d", ...], "tokens": [...]}}

so a recorded row always has its block's checksum recorded with it, or its block is the one
still being written. Checks:

- `check_npy` (every open): the file exists, has a valid `.npy` header with the shape and
  dtype of `meta.json`, and exactly the size that implies;
- `verify_array` (`vlml features --verify`, and once per cache before a run first uses it):
  every recorded block is read back and its checksum compared;
- `stamp_is_current` / `write_stamp`: `verified.json` lists the size, mtime and inode of the
  files a full verification saw; while they are unchanged the cache is not read again.

Sharded extraction (`torchrun`, see `vlml.encoders.cache`): each process writes a contiguous
range of rows [lo, hi) and records its own checksums. A block that lies wholly in its range gets
its checksum as above; a block shared with a neighbour's range gets a *piece* instead, the CRC-32
of the rows it holds ([start, stop, hex]). `merge_parts` joins the processes' records into the
checksums of one process: the pieces of a shared block are combined with `crc_combine` (zlib's
crc32_combine, no reading), so every checksum still comes from the bytes as they were written.

CRC-32 (zlib) runs at several GB/s on one core, so verifying a cache costs far less than one
epoch over it (benchmarks/bench_cache_verify.py), and it catches any change of a block that is
not crafted on purpose.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlml.errors import DataError
from vlml.fileio import write_json_atomic

BLOCK_ROWS = 1024
CHECKSUM = "crc32"
STAMP = "verified.json"
STAMP_FORMAT = "vlml-feature-cache-verified"
_CHUNK = 8 << 20  # bytes read at a time when verifying: bounded memory for huge token blocks
_TICK_NS = 20_000_000  # longer than the coarse clock tick of Linux file times (1-10 ms)
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class CacheCorruptError(DataError):
    """Rows of a cache's array no longer match the checksums recorded when they were written.

    Attributes:
        bad: the damaged blocks, each a `BadRows`.
    """

    def __init__(self, message: str, where: str, bad: list[BadRows]) -> None:
        self.bad = bad
        super().__init__(message, where)


class CacheDiskFullError(DataError):
    """The disk (or quota) ran out while a cache was being written."""


def delete_and_rerun(folder: Path) -> str:
    """The fix for a cache file that cannot be read at all."""
    return (f"delete the folder {folder} and run `vlml features` (or extract_features) again "
            "to re-extract it")


@dataclass(frozen=True)
class BadRows:
    """One block whose bytes differ from its recorded checksum (rows `start` to `stop - 1`)."""

    stream: str
    file: Path
    start: int
    stop: int
    expected: str | None  # None: no checksum was recorded for these rows
    found: str

    def describe(self) -> str:
        what = (f"expected {CHECKSUM} {self.expected}, found {self.found}"
                if self.expected else "no checksum recorded")
        return f"{self.file.name} rows {self.start}-{self.stop - 1} ({what})"


# ---- layout ----------------------------------------------------------------------------------
def n_blocks(n_rows: int, block_rows: int) -> int:
    return -(-n_rows // block_rows)


def complete_blocks(done: int, n_rows: int, block_rows: int) -> int:
    """How many blocks have all their rows among the first `done` of `n_rows`."""
    return n_blocks(n_rows, block_rows) if done >= n_rows else done // block_rows


def block_span(k: int, n_rows: int, block_rows: int) -> tuple[int, int]:
    """Rows [start, stop) of block `k`."""
    return k * block_rows, min((k + 1) * block_rows, n_rows)


def crc(data: Any, value: int = 0) -> int:
    """zlib CRC-32 of a bytes-like object, continuing from `value`."""
    return zlib.crc32(data, value)


def hex_crc(value: int) -> str:
    return format(value, "08x")


def as_bytes(values: np.ndarray) -> np.ndarray:
    """A C-contiguous 1-D uint8 view (or copy) of `values`, for writing and checksumming."""
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8)


# ---- header and size -------------------------------------------------------------------------
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0,
                   (3, 0): np.lib.format.read_array_header_2_0}


def check_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype | str) -> int:
    """Check that `path` is a `.npy` file of exactly `shape` and `dtype`; returns the data offset.

    Raises:
        DataError: naming the file, what was found and expected, and the fix, when the file is
            missing, its header is not a valid `.npy` header or disagrees with `meta.json`, or
            its size is not the header's size plus shape x itemsize (truncated or extended).
    """
    path, shape, dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
    fix = delete_and_rerun(path.parent)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as e:
        raise DataError(f"feature-cache array file missing; {fix}", str(path)) from e
    except OSError as e:
        raise DataError(f"cannot open feature-cache array file ({e})", str(path)) from e
    with f:
        try:
            version = np.lib.format.read_magic(f)
            reader = _HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unknown .npy format version {version}")
            found_shape, fortran, found_dtype = reader(f)
        except (ValueError, SyntaxError, EOFError, OSError) as e:
            raise DataError(f"not a valid .npy header ({e}): the file is damaged; {fix}",
                            str(path)) from e
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    if tuple(found_shape) != shape or found_dtype != dtype or fortran:
        order = ", Fortran order" if fortran else ""
        raise DataError(f"the .npy header says shape {tuple(found_shape)} {found_dtype}{order}, "
                        f"expected {shape} {dtype.name} (meta.json); the file was replaced or "
                        f"damaged; {fix}", str(path))
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    expected = offset + shape[0] * row_bytes
    if size != expected:
        rows = max(size - offset, 0) // row_bytes if row_bytes else 0
        how = (f"truncated: only rows 0-{rows - 1} are there, rows {rows}-{shape[0] - 1} are "
               "missing" if size < expected else "longer than its header says")
        raise DataError(f"{size} bytes, expected {expected} for shape {shape} {dtype.name} "
                        f"({how}); {fix}", str(path))
    return offset


# ---- writing ---------------------------------------------------------------------------------
def check_free_space(folder: Path, files: list[Path]) -> None:
    """Refuse to start when the disk cannot hold the still unallocated part of `files`.

    The arrays are created sparse (full size, no blocks yet); a disk that fills up mid-run is
    still caught by `ArrayFile.write`, this only spares a long run that cannot finish.
    """
    needed = 0
    for p in files:
        st = p.stat()
        needed += max(st.st_size - getattr(st, "st_blocks", 0) * 512, 0)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise CacheDiskFullError(
            f"the cache needs {needed / 1e9:.2f} GB more but the disk has {free / 1e9:.2f} GB "
            "free; free some space or pass another output folder (--out), then run the same "
            "command again (it resumes where it stopped)", str(folder))


def oserror_in(exc: BaseException) -> OSError | None:
    """The OSError in `exc`'s chain of causes (a library may wrap it in its own error)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def write_error(e: OSError, path: Path, what: str, done: int) -> DataError:
    """`CacheDiskFullError` when `e` says the disk or quota ran out, else a `DataError`."""
    kept = f"the cache is unchanged up to its last recorded row ({done})"
    if e.errno in _NO_SPACE:
        return CacheDiskFullError(
            f"the disk ran out of space ({os.strerror(e.errno)}) while writing {what}; {kept}: "
            "free some space, then run the same command again to resume", str(path))
    return DataError(f"could not write {what} ({e}); {kept}: fix the cause, then run the same "
                     "command again to resume", str(path))


class ArrayFile:
    """One array of a cache, open for writing rows [lo, hi) with `os.pwrite`.

    Rows are written in increasing order (a write may jump anywhere; the block it lands in is
    then re-read up to that row, never below `lo`). When a block's last row is written, its
    checksum is stored in `checksums[k]` (the list from `state.json`, changed in place), so
    saving the state records rows and checksums together. A block only partly inside
    [lo, hi) (a sharded extraction: its other rows are another process's) gets a piece
    [start, stop, hex] in `pieces` instead, once its rows in [lo, hi) are all written.

    Args:
        path: the `.npy` file (already created with its full size).
        shape: (N, ...) of the array; dtype: its dtype.
        block_rows: rows per block.
        checksums: the hex checksums of the complete blocks so far (changed in place); blocks
            before `lo`, or wholly before row `done` and not listed, become None.
        done: rows recorded as written; the next write usually starts there.
        lo, hi: the rows this writer may write (default: all).
        pieces: the pieces recorded so far (changed in place).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | str,
                 block_rows: int, checksums: list[str | None], done: int, lo: int = 0,
                 hi: int | None = None, pieces: list[list[Any]] | None = None) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.offset = check_npy(self.path, self.shape, self.dtype)
        self.n_rows = self.shape[0]
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.block_rows, self.checksums, self.done = block_rows, checksums, done
        self.lo, self.hi = lo, self.n_rows if hi is None else hi
        self.pieces: list[list[Any]] = [] if pieces is None else pieces
        # blocks before this one are not this writer's to record: before `lo`, or wholly
        # before the rows it starts from (in one process, `checksums` already has them)
        self.first_own = max(-(-lo // block_rows), done // block_rows)
        self.fd = os.open(self.path, os.O_RDWR)
        self.pos: int | None = None  # next row of the running checksum; set by the first write
        self.value = 0

    def _seek(self, row: int) -> None:
        """Start the running checksum at `row`, from the rows of its block already on disk
        (those from `lo` on: rows below are not this writer's)."""
        self.pos = row
        first = max(row - row % self.block_rows, self.lo)
        self.value = crc(self._read(first, row)) if row > first else 0

    def _set_checksum(self, k: int, value: str) -> None:
        if k >= len(self.checksums):
            self.checksums.extend([None] * max(self.first_own - len(self.checksums), 0))
        if k < len(self.checksums):
            self.checksums[k] = value
        elif k == len(self.checksums):
            self.checksums.append(value)
        else:
            raise ValueError(f"{self.path.name}: block {k} completed before block "
                             f"{len(self.checksums)}")

    def _set_piece(self, start: int, stop: int, value: str) -> None:
        self.pieces[:] = [p for p in self.pieces if p[0] != start] + [[start, stop, value]]
        self.pieces.sort()

    def _read(self, start: int, stop: int) -> bytes:
        n = (stop - start) * self.row_bytes
        data = os.pread(self.fd, n, self.offset + start * self.row_bytes)
        if len(data) != n:
            raise DataError(f"short read of rows {start}-{stop - 1}; "
                            f"{delete_and_rerun(self.path.parent)}", str(self.path))
        return data

    def write(self, start: int, values: np.ndarray) -> None:
        """Write rows `start` to `start + len(values) - 1`, then account their checksums.

        Raises:
            CacheDiskFullError: the disk ran out; nothing is recorded for these rows.
            DataError: any other write error, naming the file.
        """
        if start < self.lo or start + len(values) > self.hi:
            raise ValueError(f"{self.path.name}: rows {start}-{start + len(values) - 1} are "
                             f"outside this writer's rows {self.lo}-{self.hi - 1}")
        if start != self.pos:
            self._seek(start)
        data = as_bytes(values.astype(self.dtype, copy=False))
        if len(data) != len(values) * self.row_bytes:
            raise ValueError(f"{self.path.name}: rows of {values.shape[1:]} {values.dtype}, "
                             f"expected {self.shape[1:]} {self.dtype}")
        stop = start + len(values)
        where = self.offset + start * self.row_bytes
        try:
            written = 0
            while written < len(data):  # pwrite may write less than asked
                written += os.pwrite(self.fd, data[written:], where + written)
        except OSError as e:
            raise write_error(e, self.path, f"rows {start}-{stop - 1}", self.done) from e
        row = start
        while row < stop:  # account the rows block by block
            k = row // self.block_rows
            first, last = block_span(k, self.n_rows, self.block_rows)
            end = min(last, stop)
            self.value = crc(data[(row - start) * self.row_bytes:(end - start) * self.row_bytes],
                             self.value)
            row = end
            if end == last or end == self.hi:  # the block, or this writer's part of it, is done
                if first >= self.lo and end == last:
                    self._set_checksum(k, hex_crc(self.value))
                else:
                    self._set_piece(max(first, self.lo), end, hex_crc(self.value))
                self.value = 0
        self.pos = stop

    def flush(self, done: int) -> None:
        """Put the written rows on disk (before `state.json` records `done` rows)."""
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise write_error(e, self.path, "its rows to disk", self.done) from e
        self.done = done

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- reading ---------------------------------------------------------------------------------
def block_checksums(path: Path, shape: tuple[int, ...], dtype: np.dtype | str, block_rows: int,
                    n_blocks_: int, first: int = 0) -> list[str]:
    """The hex checksums of `n_blocks_` blocks of the array file from block `first` on, as it
    is now."""
    offset = check_npy(path, shape, dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    buf = memoryview(bytearray(min(_CHUNK, max(block_rows * row_bytes, 1))))
    out = []
    with open(path, "rb", buffering=0) as f:
        f.seek(offset + first * block_rows * row_bytes)
        for k in range(first, first + n_blocks_):
            start, stop = block_span(k, shape[0], block_rows)
            left, value = (stop - start) * row_bytes, 0
            while left:
                n = f.readinto(buf[:min(left, len(buf))])
                if not n:
                    raise DataError(f"ends inside rows {start}-{stop - 1}; "
                                    f"{delete_and_rerun(path.parent)}", str(path))
                value = crc(buf[:n], value)
                left -= n
            out.append(hex_crc(value))
    return out


def verify_array(stream: str, path: Path, shape: tuple[int, ...], dtype: np.dtype | str,
                 block_rows: int, checksums: list[str], done: int) -> list[BadRows]:
    """Blocks among the first `done` rows whose bytes differ from `checksums` (empty: all good).

    A complete block with no recorded checksum is reported too (`expected` None).
    """
    want = complete_blocks(done, shape[0], block_rows)
    found = block_checksums(path, shape, dtype, block_rows, want)
    bad = []
    for k, value in enumerate(found):
        expected = checksums[k] if k < len(checksums) else None
        if value != expected:
            start, stop = block_span(k, shape[0], block_rows)
            bad.append(BadRows(stream, Path(path), start, stop, expected, value))
    return bad


def merge_rows(bad: list[BadRows]) -> list[tuple[int, int]]:
    """The row ranges [start, stop) of `bad`, adjacent ones merged, over all streams."""
    spans: list[list[int]] = []
    for b in sorted(bad, key=lambda b: b.start):
        if spans and b.start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b.stop)
        else:
            spans.append([b.start, b.stop])
    return [(a, z) for a, z in spans]


def corrupt_error(folder: Path, bad: list[BadRows]) -> CacheCorruptError:
    """The error for damaged blocks: which files and rows, expected vs found, and the fix."""
    shown = "; ".join(b.describe() for b in bad[:5])
    more = f"; and {len(bad) - 5} more block(s)" if len(bad) > 5 else ""
    return CacheCorruptError(
        f"the feature cache was changed after it was written: {shown}{more}. Re-extract those "
        "rows: run `vlml features` with the same arguments plus --repair (Python: "
        f"extract_features(..., repair=True)), or {delete_and_rerun(folder)}",
        str(bad[0].file), bad)


# ---- sharded writing: joining the processes' records ----------------------------------------
def _gf2_times(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc1 = crc(A), crc2 = crc(B) and len2 = len(B) in bytes (zlib's
    crc32_combine, which Python's zlib does not expose): O(log len2), nothing read.

    >>> crc_combine(crc(b"abc"), crc(b"defg"), 4) == crc(b"abcdefg")
    True
    """
    if len2 <= 0:
        return crc1
    op = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    op = _gf2_square(_gf2_square(op))  # four zero bits
    while len2:  # apply len2 zero bytes to crc1, one bit of len2 at a time
        op = _gf2_square(op)  # 2^k zero bytes at the k-th pass
        if len2 & 1:
            crc1 = _gf2_times(op, crc1)
        len2 >>= 1
    return crc1 ^ crc2


@dataclass(frozen=True)
class Part:
    """What one process of a sharded extraction recorded of one array.

    Attributes:
        lo: its first row; rows [lo, done) are written and recorded.
        done: one past its last recorded row.
        checksums: hex checksums by block index (None for blocks not wholly its own).
        pieces: [start, stop, hex] of its rows of blocks shared with another process.
    """

    lo: int
    done: int
    checksums: list[str | None]
    pieces: list[list[Any]]


def _combined(k: int, first: int, last: int, row_bytes: int, parts: list[Part]) -> str | None:
    """Block k's checksum from the pieces that tile rows [first, last), None if they do not."""
    pieces = sorted((int(a), int(b), str(h)) for p in parts for a, b, h in p.pieces
                    if first <= int(a) < last and int(b) <= p.done)
    value, row = 0, first
    for a, b, h in pieces:
        if a != row:
            return None
        value = crc_combine(value, int(h, 16), (b - a) * row_bytes) if a > first else int(h, 16)
        row = b
    return hex_crc(value) if row == last else None


def merge_parts(path: Path, shape: tuple[int, ...], dtype: np.dtype | str, block_rows: int,
                done: int, checksums: list[str], parts: list[Part]) -> tuple[int, list[str]]:
    """Join the records of a sharded extraction into the rows done and the block checksums of
    one array, as one process would have recorded them.

    Args:
        path, shape, dtype: the array file.
        block_rows: rows per block.
        done, checksums: the array's record in `state.json` (rows [0, done) done).
        parts: the processes' records.

    Returns:
        (rows done, checksums): the rows done are those from row 0 on without a gap in the
        union of [0, done) and every part's [lo, done) (rows after a gap are extracted again);
        each complete block's checksum comes from `checksums`, else a part's own, else its
        parts' pieces combined, else (only when rows were written by runs of different
        layouts, so that no record has all of a block) the block as it is on disk.
    """
    n = shape[0]
    reach = done
    for a, b in sorted((p.lo, p.done) for p in parts if p.done > p.lo):
        if a <= reach:
            reach = max(reach, b)
    reach = min(reach, n)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    out: list[str] = []
    for k in range(complete_blocks(reach, n, block_rows)):
        first, last = block_span(k, n, block_rows)
        own = [p.checksums[k] for p in parts if k < len(p.checksums) and p.checksums[k]]
        if k < len(checksums) and last <= done and checksums[k]:
            value: str | None = checksums[k]
        elif own:
            value = own[0]
        else:
            value = _combined(k, first, last, row_bytes, parts)
        if value is None:
            value = block_checksums(path, shape, dtype, block_rows, 1, first=k)[0]
        out.append(value)
    return reach, out


# ---- the stamp -------------------------------------------------------------------------------
def fingerprint(folder: Path, names: list[str]) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns, inode]} of the files a verification reads."""
    out = {}
    for name in names:
        try:
            st = (folder / name).stat()
        except FileNotFoundError:  # reported by the check that reads it
            out[name] = [-1, -1, -1]
        else:
            out[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def stamp_is_current(folder: Path, names: list[str]) -> bool:
    """Whether `verified.json` vouches for exactly these files as they are now."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
        return (stamp.get("format") == STAMP_FORMAT and stamp.get("checksum") == CHECKSUM
                and stamp.get("files") == fingerprint(folder, names))
    except (OSError, ValueError, AttributeError):
        return False


def write_stamp(folder: Path, names: list[str], seen: dict[str, list[int]]) -> None:
    """Record that the files passed a full verification, if they are still as `seen` (their
    `fingerprint` taken before the verification read them)."""
    try:
        # File times advance in clock ticks (a few ms): a change within the tick of a file's
        # last write keeps its mtime. Stamping once that tick is over makes any later change
        # show.
        wait = (max(v[1] for v in seen.values()) + _TICK_NS - time.time_ns()) / 1e9
        if 0 < wait <= _TICK_NS / 1e9:
            time.sleep(wait)
        if fingerprint(folder, names) == seen:
            write_json_atomic(folder / STAMP, {"format": STAMP_FORMAT, "checksum": CHECKSUM,
                                               "files": seen})
    except (OSError, DataError):  # a read-only folder, a full disk: the next run verifies again
        pass
