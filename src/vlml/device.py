"""Resolve the compute device once; library code never calls `.cuda()`.

A device that is not there (`cuda` on a machine without a GPU, `cuda:3` with one GPU, `mps`
off Apple silicon) or a name torch does not know is a `ConfigError` at once, naming the setting
and what is available, before any work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlml.errors import ConfigError

if TYPE_CHECKING:
    import torch

AUTO = ("", "auto")
NO_TORCH_NEEDED = (*AUTO, "cpu")


def check_device(name: str | None, what: str = "device") -> None:
    """`ConfigError` unless `name` names a device this machine has (`resolve_device`'s checks);
    "auto" and "cpu" are accepted without importing torch (config validation stays light)."""
    if name is None or (isinstance(name, str) and name.strip().lower() in NO_TORCH_NEEDED):
        return
    resolve_device(name, what)


def resolve_device(name: str | torch.device | None = None, what: str = "device") -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps") or, when None/"auto", cuda if available else
    cpu. `what` names the setting in errors (e.g. "device" or "--device")."""
    import torch

    if name is None or (isinstance(name, str) and name.strip().lower() in AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(str(name).strip())
        except (RuntimeError, ValueError, TypeError):
            raise ConfigError(f"{what}={name!r}: not a device name; expected auto, cpu, cuda, "
                              f"cuda:N (N a GPU index) or mps") from None
    _check_available(device, name, what)
    return device


def _check_available(device: torch.device, name: object, what: str) -> None:
    import torch

    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what}={name!r}: no CUDA GPU is available on this machine "
                              "(torch.cuda.is_available() is False); expected cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what}={name!r}: there is no GPU {device.index}; this machine "
                              f"has {count} (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise ConfigError(f"{what}={name!r}: the MPS (Apple GPU) backend is not available "
                              "here; expected cpu or auto")
    elif device.type not in ("cpu", "meta"):
        raise ConfigError(f"{what}={name!r}: device type {device.type!r} is not supported; "
                          "expected auto, cpu, cuda, cuda:N or mps")
