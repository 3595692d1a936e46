"""Typed configs: dataclass defaults, then a YAML file, then dotted `key=value` overrides.

Unknown keys are errors (with close matches); the resolved config is saved beside a run.
Config dataclasses are frozen; each field is declared once with `setting(...)`: its default,
allowed choices or range, whether it affects a run's numbers, and a one-line help. One
`validate(cfg)` checks every field from that metadata; recipes add only cross-field rules.
Shipped configs are package data, found by name (`resolve("spml/voc2007/vlpl")`).

Example: `build(SPMLConfig, read_yaml("voc.yaml"), ["optim.lr=1e-4", "loss.name=em"])`,
then `replace(cfg, **{"optim.lr": 1e-4, "progress": False})` for a changed copy.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vlml import shipped
from vlml.errors import ConfigError, UnknownChoiceError
from vlml.fileio import write_text_atomic

T = TypeVar("T")
Choices = tuple[Any, ...] | Callable[[], Iterable[Any]]
META = "vlml"  # the field-metadata key of a `Setting`


# ---- declaring fields ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
    """What a config field accepts (checked by `validate`) and whether it affects results.

    `choices` apply to non-numeric values, the range (`low`, `high`, open or closed ends) to
    numeric ones, so `k: int | str` can take "auto" or an integer >= 2.
    """

    help: str = ""
    choices: Choices | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    affects_results: bool = True

    def choice_names(self) -> tuple[Any, ...] | None:
        """The allowed values (a registry is asked now, not at import time)."""
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def range_text(self) -> str:
        """'> 0', '>= 0', 'in [0, 1)', ... (empty without a range)."""
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{low}, {high}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ""

    def in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def setting(default: Any = dataclasses.MISSING, *, choices: Choices | None = None,
            low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, affects_results: bool = True, help: str = "") -> Any:
    """A dataclass field with its `Setting` in metadata; list/dict defaults are copied per
    instance. `choices`: a tuple, or a zero-argument callable such as
    `names_from("vlml.losses:list_losses")`, called only when validating.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Optim:
    ...     lr: float = setting(1e-4, low=0, low_open=True, help="learning rate")
    >>> validate(Optim(lr=-1.0))
    Traceback (most recent call last):
    vlml.errors.ConfigError: lr must be > 0, got -1.0
    """
    meta = {META: Setting(help, choices, low, high, low_open, high_open, affects_results)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[T], *, help: str = "") -> Any:
    """A nested config section field (default: `cls()`); `validate` walks into it."""
    return dataclasses.field(default_factory=cls, metadata={META: Setting(help)})


def names_from(target: str) -> Callable[[], list[str]]:
    """A lazy `choices` callable: "package.module:function" is imported and called at
    validation time, so declaring a config imports no registry (and no torch)."""
    module, _, name = target.partition(":")

    def names() -> list[str]:
        return list(getattr(importlib.import_module(module), name)())

    names.__qualname__ = target
    return names


def setting_of(field: dataclasses.Field) -> Setting:
    """The field's `Setting` (an empty one when it was declared without `setting`)."""
    return field.metadata.get(META, Setting())


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


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
    """`build(cls, read_yaml(resolve(path)), overrides)`: a file or a shipped config name;
    path None means defaults + overrides only."""
    path = resolve(path) if path is not None else None
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


# ---- validation ------------------------------------------------------------------------------
def validate(cfg: T) -> T:
    """Check every field of config dataclass `cfg` (nested sections too) against its type hint
    and its `setting` metadata; `ConfigError` names the dotted key, the value and what was
    expected (`UnknownChoiceError`, with close matches, for a value outside its choices)."""
    _validate(cfg, "")
    return cfg


def _validate(cfg: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value, hint = f"{prefix}{f.name}", getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ConfigError(f"{key}: expected a {hint.__name__} section, got {value!r}")
            _validate(value, key + ".")
        else:
            check_value(key, value, hint, setting_of(f))


def check_value(key: str, value: Any, hint: Any, spec: Setting) -> None:
    """One field: its type, then (unless None) its choices or its range; NaN is refused."""
    if not _type_ok(hint, value):
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if value is None:
        return
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if not spec.in_range(value):
            raise ConfigError(f"{key} must be {spec.range_text()}, got {value!r}")
        return
    choices = spec.choice_names()
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), list(map(str, choices)), n=3, cutoff=0.5)
        hint_text = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownChoiceError(f"{key}: {value!r} is not one of "
                                 f"{', '.join(map(str, choices))}.{hint_text}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_ok(hint: Any, value: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(
            _type_ok(args[0] if args else Any, v) for v in value)
    if origin is dict:
        k, v = args or (Any, Any)
        return isinstance(value, dict) and all(
            _type_ok(k, a) and _type_ok(v, b) for a, b in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return "null" if hint is type(None) else hint.__name__
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return str(hint).replace("typing.", "")


# ---- changed copies and differences ----------------------------------------------------------
def replace(cfg: T, **changes: Any) -> T:
    """A copy of frozen config `cfg` with dotted keys changed, e.g.
    `replace(cfg, **{"optim.lr": 1e-4, "progress": False})`; unknown keys are errors. The copy is
    not validated: call `validate` (or the recipe's) on it."""
    return _replace(cfg, changes, "")


def _replace(cfg: Any, changes: dict[str, Any], prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(cfg)}
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if head not in names:
            close = difflib.get_close_matches(head, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"unknown key {prefix}{head!r}.{hint}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        base = direct.get(head, getattr(cfg, head))
        if not dataclasses.is_dataclass(base):
            raise ConfigError(f"{prefix}{head} is not a section; cannot set {prefix}{head}."
                              f"{next(iter(sub))}")
        direct[head] = _replace(base, sub, f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def result_diff(a: Any, b: Any, schema: type | None = None) -> list[str]:
    """The dotted keys, sorted, whose values differ between configs `a` and `b` (dataclass
    instances, or nested dicts as read from a saved config.yaml), among the keys that affect
    results. A key on one side only counts as different. Which keys do not affect results
    (`setting(..., affects_results=False)`) is read from the dataclass side, else `schema`;
    with neither, every key counts."""
    if schema is None:
        schema = next((type(x) for x in (a, b) if dataclasses.is_dataclass(x)), None)
    flat_a, flat_b = _flatten(_as_dict(a)), _flatten(_as_dict(b))
    keys = sorted(set(flat_a) | set(flat_b))
    return [k for k in keys if _affects(schema, k) and (
        k not in flat_a or k not in flat_b or flat_a[k] != flat_b[k])]


def _as_dict(cfg: Any) -> dict[str, Any]:
    return _plain(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaves; an empty mapping has none, so `params: {}` and `params: {a: 1}` differ
    by `params.a` alone."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _affects(schema: Any, dotted: str) -> bool:
    """Whether `dotted` affects results: the `Setting` of the first non-section field on its
    path (a dict field's entries inherit it); unknown keys count."""
    for part in dotted.split("."):
        if schema is None or not dataclasses.is_dataclass(schema):
            return True
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            return True
        f = fields[part]
        hint = typing.get_type_hints(schema)[part]
        if not dataclasses.is_dataclass(hint):
            return setting_of(f).affects_results
        schema = hint
    return True


# ---- the fields every run config has ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Base of every recipe's config: the run-level keys. A recipe's config subclasses it,
    re-declares `recipe`, `name` and `out_dir` with its own defaults and adds its sections."""

    recipe: str = setting("spml", help="recipe that runs this config")
    name: str = setting("run", affects_results=False, help="run name shown in reports")
    seed: int = setting(0, low=0, help="seed of initialisation, data order and augmentation")
    device: str = setting("auto", affects_results=False, help="auto, cpu, cuda, cuda:1, ...")
    out_dir: str = setting("runs/run", affects_results=False, help="run folder")
    cache_dir: str = setting("cache", affects_results=False, help="feature cache folder")
    progress: bool = setting(True, affects_results=False, help="show progress bars")
    calibrate: str = setting("f1", affects_results=False,
                             help="per-class decision thresholds fitted on the validation data "
                                  "when the run ends (thresholds.json): f1, precision=P, "
                                  "recall=R (P, R in (0, 1]) or none")


# ---- shipped configs -------------------------------------------------------------------------
def shipped_root() -> Path:
    """The folder of the configs shipped with the package (`vlml/configs`)."""
    return shipped.package_folder("configs")


def list_shipped() -> list[str]:
    """Names of the shipped configs, e.g. 'spml/voc2007/vlpl' (no ".yaml"), sorted."""
    return shipped.yaml_names(shipped_root())


def resolve(name_or_path: str | Path) -> Path:
    """The config file meant by `name_or_path`: an existing file wins; else a shipped config
    name like 'spml/voc2007/vlpl' (".yaml" and a leading "configs/" optional); else
    `ConfigError` with close names."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_absolute() or str(name_or_path).startswith((".", "~")):
        raise ConfigError(f"{path}: config file not found")
    name = Path(name_or_path).as_posix().removeprefix("configs/").removesuffix(".yaml")
    found = shipped.find_yaml(shipped_root(), name)
    if found is not None:
        return found
    close = difflib.get_close_matches(name, list_shipped(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else (
        " See vlml.config.list_shipped() for the shipped names.")
    raise ConfigError(f"{name_or_path}: config not found (no such file, nor a shipped config "
                      f"name such as 'spml/voc2007/vlpl').{hint}")
