"""Run folders are claimed by one config, never silently reused.

`claim(out_dir, cfg)` before any work of a run:
- a missing or empty folder is created and claimed: the resolved config goes to `config.yaml`;
- a folder whose `config.yaml` has the same values for every key that affects results
  (`vlml.config.result_diff`) is the same run: it resumes (keys such as `progress`, `device` or
  worker counts may differ);
- a folder claimed by another config is refused, naming the keys that differ;
- `new=True` claims the first free `<out_dir>-2`, `-3`, ...; `overwrite=True` wipes the old run.
A folder that is not empty and holds no `config.yaml` is not a run folder: it is refused even
with `overwrite`, so a mistyped `out_dir` never deletes someone's files.

Under torchrun (a process group) rank 0 alone claims and the other ranks take its answer
(`claim_once`): one process creates, replaces or refuses the folder.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from vlml import config, distributed
from vlml.errors import ConfigError, VlmlError

CONFIG_FILE = "config.yaml"


class RunFolderError(VlmlError):
    """The run folder holds another run (or is not a run folder)."""


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _check_is_run_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: expected a run folder, found a file")
    if not _is_empty(path) and not (path / CONFIG_FILE).is_file():
        raise RunFolderError(f"{path}: not empty and holds no {CONFIG_FILE}, so it is not a vlml "
                             "run folder; choose another out_dir")


def _describe(diff: list[str], saved: dict[str, Any], cfg: Any) -> str:
    new = config.to_dict(cfg)
    lines = []
    for key in diff[:10]:
        lines.append(f"  {key}: {_lookup(saved, key)!r} (saved) -> {_lookup(new, key)!r} (now)")
    more = f"\n  ... and {len(diff) - 10} more" if len(diff) > 10 else ""
    return "\n".join(lines) + more


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<absent>"
        node = node[part]
    return node


def _free_sibling(path: Path) -> Path:
    if _is_empty(path):
        return path
    for i in range(2, 10_000):
        candidate = path.with_name(f"{path.name}-{i}")
        if _is_empty(candidate):
            return candidate
    raise RunFolderError(f"{path}: no free suffixed folder left")


def plan(out_dir: str | Path, cfg: Any, *, new: bool = False, overwrite: bool = False
         ) -> tuple[Path, str]:
    """What `claim` would do, doing nothing: (the folder, "new run" | "resumes the run there" |
    "replaces the run there"). Raises what `claim` would raise."""
    if new and overwrite:
        raise ConfigError("--new and --overwrite exclude each other")
    path = Path(out_dir)
    _check_is_run_folder(path)
    if overwrite and not _is_empty(path):
        return path, "replaces the run there"
    if new:
        path = _free_sibling(path)
    saved_file = path / CONFIG_FILE
    if not saved_file.is_file():
        return path, "new run"
    saved = config.read_yaml(saved_file)
    diff = config.result_diff(saved, cfg)
    if diff:
        raise RunFolderError(
            f"{path} holds a run of another config; the keys that differ:\n"
            f"{_describe(diff, saved, cfg)}\nUse another out_dir, --new for a fresh "
            "suffixed folder, or --overwrite to replace that run.")
    return path, "resumes the run there"


def claim(out_dir: str | Path, cfg: Any, *, new: bool = False, overwrite: bool = False
          ) -> tuple[Path, Any]:
    """Claim the run folder for `cfg` (see the module docstring).

    Returns (the folder, the config as saved there: `out_dir` set to the folder).
    Raises `RunFolderError` when the folder belongs to another config or is not a run folder.
    """
    path, _ = plan(out_dir, cfg, new=new, overwrite=overwrite)
    if overwrite and path.exists():
        shutil.rmtree(path)
    cfg = _with_out_dir(cfg, path)
    path.mkdir(parents=True, exist_ok=True)
    config.save(cfg, path / CONFIG_FILE)
    return path, cfg


def _with_out_dir(cfg: Any, path: Path) -> Any:
    if hasattr(cfg, "out_dir") and str(cfg.out_dir) != str(path):
        return dataclasses.replace(cfg, out_dir=str(path))
    return cfg


def claim_once(out_dir: str | Path, cfg: Any, *, new: bool = False, overwrite: bool = False
               ) -> tuple[Path, Any]:
    """`claim` for a job of one or many processes: in a process group rank 0 claims (and
    alone deletes, with `overwrite`, or picks the suffixed folder, with `new`) and every other
    rank gets the same folder and config. A refusal raises on every rank: rank 0 raises its
    own error, the others a `RunFolderError` that points to it."""
    if not distributed.is_initialized():
        return claim(out_dir, cfg, new=new, overwrite=overwrite)
    answer: tuple[str | None, str | None] = (None, None)
    error: Exception | None = None
    if distributed.is_main():
        try:
            answer = (str(claim(out_dir, cfg, new=new, overwrite=overwrite)[0]), None)
        except Exception as e:  # noqa: BLE001 - told to the others, then raised
            error, answer = e, (None, str(e))
    folder, refused = distributed.broadcast_object(answer)
    if error is not None:
        raise error
    if refused is not None:
        raise RunFolderError(f"rank 0 did not claim the run folder {out_dir} (its message "
                             f"says why): {refused.splitlines()[0]}")
    path = Path(folder)
    return path, _with_out_dir(cfg, path)
