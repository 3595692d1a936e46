"""Typed configs: dataclass defaults, then a YAML file, then dotted `key=value` overrides.

Unknown keys are errors (with close matches); the resolved config is saved beside a run.

Example: `build(SPMLConfig, read_yaml("voc.yaml"), ["optim.lr=1e-4", "loss.name=em"])`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vlml.errors import ConfigError
from vlml.fileio import write_text_atomic

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`; `ConfigError` naming the file if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got "
                          f"{type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `a.b.c=value` entries (values parsed as YAML scalars/lists) in a nested dict copy."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value ({e})") from e
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def build(cls: type[T], data: dict[str, Any], overrides: list[str] | None = None,
          where: str = "") -> T:
    """Instantiate dataclass `cls` from nested `data` plus `overrides`; unknown keys are errors."""
    return _from_dict(cls, apply_overrides(data, overrides or []), where)


def load(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """`build(cls, read_yaml(path), overrides)`; path None means defaults + overrides only."""
    data = read_yaml(path) if path is not None else {}
    return build(cls, data, overrides, where=f"{path}: " if path else "")


def _from_dict(cls: type[T], data: dict[str, Any], where: str, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{prefix.rstrip('.') or 'config'}: expected a mapping, got "
                          f"{data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"{where}unknown key {prefix}{key!r}.{hint} "
                              f"Valid keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, where, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where, key) if len(args) == 1 else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (
            hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key}: expected {hint.__name__}, got {value!r}")
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return origin(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def save(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(_plain(to_dict(cfg)), sort_keys=False))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
