"""Checkpoint and weights files: written atomically, read safely, refused clearly.

Checkpoints are plain state dicts written with `torch.save` and read with `weights_only=True`;
weights are safetensors files. Every read of such a file, ours or a user's, goes through this
module (or is checked by `check_checkpoint_file` before a library reads it), so a missing,
truncated or foreign file is a `DataError` naming the file and what was expected. A file that
`weights_only` refuses (it holds pickled Python objects) is refused as such: vlml never loads
it any other way, and never suggests doing so.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vlml.errors import DataError
from vlml.fileio import atomic_open, write_bytes_atomic

CHECKPOINT_EXPECTED = ("a training checkpoint written by vlml (torch.save of tensors and plain "
                       "values)")
WEIGHTS_EXPECTED = "a safetensors weights file written by vlml"
REFUSED = ("it holds pickled Python objects besides tensors and plain values, which vlml does "
           "not load (unpickling them could run arbitrary code); where you trust the file, "
           "re-save only its tensors (torch.save(model.state_dict(), FILE), or safetensors)")
LAST_NAME = "last.pt"
_TORCH_ZIP_MEMBERS = ("data.pkl", "constants.pkl")
_PICKLE_PROTO = 0x80


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`torch.save(state)` to a temp file, then rename over `path` (a failed write, e.g. a
    full disk, leaves the previous checkpoint as it was: `vlml.fileio.atomic_open`)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def describe_load_error(exc: BaseException) -> str:
    """A short account of why a checkpoint could not be read, for a user. torch's refusal of
    pickled objects is said in our words (torch's own text recommends `weights_only=False`,
    which vlml never suggests); other errors keep their text, on one line, without any
    sentence that mentions `weights_only`."""
    text = str(exc)
    if "Unsupported global" in text or "not an allowed global" in text:
        return REFUSED
    if "weights_only" in text or "Weights only load failed" in text:
        return "not a readable torch checkpoint (damaged, or not written by torch.save)"
    if isinstance(exc, StopIteration):
        return "it holds no tensors (an empty state dict)"
    if isinstance(exc, SafetensorError):
        return f"not a valid safetensors file ({text.strip() or type(exc).__name__})"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "truncated or damaged (its zip archive cannot be read)"
    if isinstance(exc, (EOFError, pickle.UnpicklingError)):
        return f"truncated or not a torch checkpoint ({type(exc).__name__})"
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    flat = flat if len(flat) <= 300 else flat[:297] + "..."
    return f"{type(exc).__name__}: {flat}" if flat else type(exc).__name__


def _require_file(path: Path, expected: str) -> None:
    if path.is_dir():
        raise DataError(f"is a folder; expected {expected}", str(path))
    if not path.is_file():
        raise DataError(f"file not found; expected {expected}", str(path))
    if path.stat().st_size == 0:
        raise DataError(f"is empty (0 bytes); expected {expected}", str(path))


def check_checkpoint_file(path: str | Path, expected: str = "a checkpoint file") -> Path:
    """Cheap checks (headers only, no tensor read) that `path` is a checkpoint a loader can
    read: a safetensors file with a valid header, a torch.save zip archive (or TorchScript, or
    a numpy .npz) whose index is intact, or a legacy pickled torch file. `DataError` naming the
    file and `expected` otherwise (a folder, an empty, truncated or foreign file)."""
    path = Path(path).expanduser()
    _require_file(path, expected)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"cannot read this file ({e.strerror or e}); expected {expected}",
                        str(path)) from None
    if path.suffix.lower() == ".safetensors" or _looks_safetensors(path, head):
        try:
            with safe_open(str(path), framework="pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own and OS errors
            raise DataError(f"{describe_load_error(e)}; expected {expected}", str(path)) from e
        return path
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DataError(f"truncated or damaged zip archive ({e}); expected {expected}",
                            str(path)) from e
        if any(n.endswith(".npy") for n in names):
            return path  # a numpy .npz archive (big_vision weights)
        if any(n.rsplit("/", 1)[-1] in _TORCH_ZIP_MEMBERS for n in names):
            _check_no_pickled_objects(path, expected)
            return path
        raise DataError(f"a zip archive but not a torch checkpoint (no data.pkl inside); "
                        f"expected {expected}", str(path))
    if head[:1] == bytes([_PICKLE_PROTO]):
        return path  # a legacy (pre-zip) torch file: only loading it can tell more
    raise DataError(f"not a checkpoint file (it starts with {head[:8]!r}); expected {expected}",
                    str(path))


def _check_no_pickled_objects(path: Path, expected: str) -> None:
    """`DataError` when a torch.save archive references Python objects `weights_only` would
    refuse (read from its small data.pkl alone, no tensor loaded)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - TorchScript archives and odd files: the loader decides
        return
    if unsafe:
        shown = ", ".join(unsafe[:3]) + (" ..." if len(unsafe) > 3 else "")
        raise DataError(f"{REFUSED} (it references {shown}); expected {expected}", str(path))


def _looks_safetensors(path: Path, head: bytes) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then '{'."""
    if len(head) < 8:
        return False
    n = int.from_bytes(head, "little")
    if not 2 <= n < path.stat().st_size:
        return False
    with open(path, "rb") as f:
        f.seek(8)
        return f.read(1) == b"{"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expected: str = CHECKPOINT_EXPECTED) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (tensors and plain Python values only).

    Raises `DataError` naming the file when it is missing, a folder, truncated, not a torch
    file, not a dict, or holds pickled objects that `weights_only` refuses.
    """
    path = Path(path)
    hint = (". A run's damaged last.pt can be deleted (the run then restarts from epoch 1), or "
            "the run started again with --overwrite") if path.name == LAST_NAME else ""
    try:
        check_checkpoint_file(path, expected)
    except DataError as e:
        raise DataError(f"{e}{hint}") from None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise DataError(f"cannot be read: {describe_load_error(e)}; expected {expected}{hint}",
                        str(path)) from None
    if not isinstance(state, dict):
        raise DataError(f"holds a {type(state).__name__}, not a dict; expected {expected}",
                        str(path))
    return state


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Model weights as safetensors, atomically (a failed write leaves the old file)."""
    write_bytes_atomic(path, save({k: v.detach().contiguous().cpu()
                                   for k, v in state_dict.items()}))


def load_weights(path: str | Path, device: str | torch.device = "cpu",
                 expected: str = WEIGHTS_EXPECTED) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on `device`; `DataError` naming the file when it is
    missing, a folder, truncated or not safetensors."""
    path = Path(path)
    _require_file(path, expected)
    try:
        return load_file(str(path), device=str(torch.device(device)))
    except Exception as e:  # SafetensorError, and anything else a damaged file may cause
        raise DataError(f"cannot be read: {describe_load_error(e)}; expected {expected}",
                        str(path)) from None
