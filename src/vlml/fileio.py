"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

The file gets the mode any new file gets under the user's umask (0666 & ~umask), not the 0600
of a bare `mkstemp`. A write that fails (a full disk, a quota, a read-only folder, a file in
the way of a folder) deletes the temporary file, leaves the previous file as it was, and raises
`DataError` naming the file and what ran out; any other error inside the `with` block passes
through unchanged (the temporary file deleted all the same).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from vlml.errors import ConfigError, DataError

# errno values that mean the write itself failed, whichever library was writing
WRITE_ERRNOS = {errno.ENOSPC: "the disk is full (no space left on the device)",
                errno.EDQUOT: "the disk quota is exhausted",
                errno.EFBIG: "the file size limit was reached (file too large)",
                errno.EROFS: "the file system is read-only",
                errno.EIO: "an input/output error occurred on the device"}
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _write_oserror(exc: BaseException) -> OSError | None:
    """The OSError of a failed write in `exc`'s chain (libraries such as torch re-raise it as
    their own error type, with the OSError as its cause or context), else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def write_error(path: str | os.PathLike, exc: OSError) -> DataError:
    """The `DataError` for a write of `path` that failed with `exc`: what ran out (or went
    wrong), and that the previous file was kept."""
    what = WRITE_ERRNOS.get(exc.errno or 0) or (exc.strerror or str(exc))
    return DataError(f"could not write this file: {what}. Nothing was replaced: the previous "
                     "file, if there was one, is as it was. Free some space (or fix the cause) "
                     "and run the command again", str(path))


def _prepare_folder(path: Path) -> None:
    """Create `path`'s folder; `DataError` when the target is a folder or a file is in the way."""
    if path.is_dir():
        raise DataError("is a folder; expected the path of a file to write", str(path))
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{parent} is a file, so no folder can be made there; expected "
                                "a folder (or nothing) at that path", str(path))
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the folder {path.parent} ({e.strerror or e})",
                        str(path)) from e


def check_folder_path(path: str | os.PathLike, what: str) -> Path:
    """`path` as a folder to write into: `ConfigError` naming `what` when it (or a parent) is
    an existing file. Nothing is created."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{what}={str(path)!r}: {p} is a file; expected a folder (or a "
                                  "path where one can be made)")
            break
    return path


def _open_temp(fd: int, mode: str, target: Path) -> IO[Any]:
    """The file object of the temporary file for `target` (the fault tests replace this to make
    writes fail)."""
    return os.fdopen(fd, mode)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success rename it to `path`, on error delete it.

    Raises `DataError` naming `path` when the write fails for lack of space (or another
    write error: quota, read-only, I/O), when `path` is a folder, or when a file is in the way
    of its folder; the previous file at `path` is then left as it was.
    """
    path = Path(path)
    _prepare_folder(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise DataError(f"cannot create a file in {path.parent} ({e.strerror or e})",
                        str(path)) from e
    own_step = False  # whether an error came from our own flush/fsync/replace
    try:
        try:
            f = _open_temp(fd, mode, path)
        except BaseException:
            os.close(fd)
            raise
        with f:
            own_step = True
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            own_step = False
            yield f
            own_step = True
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        failed = _write_oserror(e) or (e if own_step and isinstance(e, OSError) else None)
        if failed is not None:
            raise write_error(path, failed) from e
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """`np.save` without pickles, atomically (the exact `.npy` format other tools read)."""
    with atomic_open(path, "wb") as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
