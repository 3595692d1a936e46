"""From grid cells to validated run configs: every cell is built and checked before any runs.

A cell's config is layered, later layers winning: its base config file (the part's `config`,
or an axis value's, with `{axis}` placeholders filled in), the grid's `set`, the part's `set`,
each axis value's overrides in axis order, the command line's `KEY=VALUE` overrides, the
`--root DATASET=PATH` data roots, and finally what the sweep sets: `seed`, `out_dir`
(`<out>/runs/<cell id>`), `name`, `cache_dir` (`<out>/cache`, shared by every cell, unless a
grid or the command line sets it) and `progress: false`. Unknown keys, recipes, methods or
datasets are `ConfigError`s naming the cell, the layer they came from and the valid choices.
"""

from __future__ import annotations

import dataclasses
import glob
import string
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml import config, recipes
from vlml.errors import ConfigError, VlmlError
from vlml.experiments.grid import (
    Cell,
    Grid,
    Part,
    merge,
    substitute,
    unknown_message,
)

RUNS = "runs"
CACHE = "cache"
WORLD = "world"
RESULTS_FILE = "results.json"
BASE_LABEL = "base config"


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its validated config (a recipe `Config`) and its run folder."""

    cell: Cell
    recipe: str
    cfg: Any
    run_dir: Path

    @property
    def id(self) -> str:
        return self.cell.id

    def finished(self) -> bool:
        """Its run folder holds `results.json` and was claimed by this same config."""
        saved = self.run_dir / "config.yaml"
        if not (self.run_dir / RESULTS_FILE).is_file() or not saved.is_file():
            return False
        return not config.result_diff(config.read_yaml(saved), self.cfg)


def places(out: Path) -> dict[str, str]:
    """What `${out}` and `${world}` stand for."""
    out = Path(out).absolute()
    return {"out": str(out), "world": str(out / WORLD)}


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _base_template(part: Part, cell: Cell, where: str) -> tuple[str | None, str]:
    """(the base config template of the cell, where it came from)."""
    chosen, source = part.config, f"part {part.name!r} config"
    for axis, name in cell.values:
        value = part.axis(axis).get(name)
        if value.config is not None:
            if chosen is not None and source.startswith("axes") and value.config != chosen:
                raise ConfigError(f"{where}: two axis values set `config` ({source} and "
                                  f"axes.{axis}.{name}); give it in one of them only")
            chosen, source = value.config, f"axes.{axis}.{name}.config"
    return chosen, source


def _choices_for(template: str, field: str, values: dict[str, str]) -> list[str]:
    """Names that would make `template` resolve to a shipped config for `field`, the other
    fields as in `values` (e.g. the shipped datasets of spml/{dataset}/{method})."""
    pattern = template.replace("{" + field + "}", "\0")
    for f, v in values.items():
        pattern = pattern.replace("{" + f + "}", v)
    root = config.shipped_root().as_posix() + "/"
    head, _, tail = (pattern.removesuffix(".yaml") + ".yaml").partition("\0")
    found = glob.glob(glob.escape(root + head) + "*" + glob.escape(tail))
    start, suffix = len(root + head), len(tail)
    names = sorted({Path(f).as_posix()[start:len(f) - suffix] for f in found})
    return [n for n in names if n and "/" not in n]


def resolve_base(template: str, cell: Cell, where: str) -> Path:
    """The config file of a cell's base template; for a shipped name that does not exist,
    `ConfigError` naming the axis value at fault and the values that exist."""
    values = dict(cell.values)
    fields = _template_fields(template)
    for f in fields:
        if f not in values:
            raise ConfigError(f"{where}: config {template!r} names {{{f}}}, "
                              f"{unknown_message('axis', f, list(values))}")
    name = template.format_map(values)
    try:
        return config.resolve(name)
    except ConfigError:
        for f in fields:
            choices = _choices_for(template, f, {k: v for k, v in values.items() if k != f})
            if choices and values[f] not in choices:
                raise ConfigError(f"{where}: no config {name!r}: "
                                  f"{unknown_message(f, values[f], choices)}") from None
        raise ConfigError(f"{where}: config {name!r} (from {template!r}) not found: no such "
                          "file, nor a shipped config (vlml configs list)") from None


def _layers(grid: Grid, part: Part, cell: Cell, overrides: list[str], roots: dict[str, str],
            where: str) -> list[tuple[str, dict[str, Any]]]:
    layers: list[tuple[str, dict[str, Any]]] = []
    template, source = _base_template(part, cell, where)
    if template is not None:
        path = resolve_base(template, cell, where)
        layers.append((f"{BASE_LABEL} {path} ({source})", config.read_yaml(path)))
    layers.append(("grid set", grid.overrides))
    layers.append((f"part {part.name!r} set", part.overrides))
    for axis, name in cell.values:
        layers.append((f"axes.{axis}.{name}", part.axis(axis).get(name).overrides))
    if overrides:
        cli = config.apply_overrides({}, overrides)
        for key in ("seed", "out_dir"):
            if key in cli:
                raise ConfigError(f"command line: {key} is set by the sweep (--seeds, --out)")
        layers.append(("command line", cli))
    if roots:
        merged: dict[str, Any] = {}
        for _, layer in layers:
            merged = merge(merged, layer)
        names = {dict(cell.values).get("dataset"), (merged.get("data") or {}).get("dataset")}
        for dataset, root in roots.items():
            if dataset in names:
                layers.append((f"--root {dataset}", {"data": {"root": root}}))
    return layers


def merge_sections(cls: Any, base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `extra` along config dataclass `cls`: sections are merged key by key,
    every other field (a dict-valued one such as `loss.params` too) is replaced whole."""
    if not dataclasses.is_dataclass(cls):
        return merge(base, extra)
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in extra.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict) and \
                isinstance(out.get(key), dict):
            out[key] = merge_sections(hint, out[key], value)
        else:
            out[key] = value
    return out


def _build(recipe: Any, layers: list[tuple[str, dict[str, Any]]], forced: dict[str, Any],
           where: str) -> Any:
    """The config from the layers; on an error, the first layer that brings it is named."""
    cls = recipe.Config
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge_sections(cls, merged, layer)
    try:
        return config.build(cls, merge_sections(cls, merged, forced))
    except ConfigError as e:
        acc: dict[str, Any] = {}
        for label, layer in layers:
            acc = merge_sections(cls, acc, layer)
            try:
                config.build(recipe.Config, acc)
            except ConfigError as inner:
                raise ConfigError(f"{where}: {label}: {inner}") from None
        raise ConfigError(f"{where}: {e}") from None


def plan_cell(grid: Grid, cell: Cell, out: Path, overrides: list[str] | None = None,
              roots: dict[str, str] | None = None) -> PlannedCell:
    """Build and validate one cell's config (nothing is read from the data or written).
    Its paths (run folder, cache) are absolute, so a cell runs the same from any folder."""
    out = Path(out).absolute()
    part = grid.part(cell.part)
    where = f"{grid.source}: cell {cell.id}"
    layers = _layers(grid, part, cell, list(overrides or []), dict(roots or {}), where)
    bases = {label for label, _ in layers if label.startswith(BASE_LABEL)}
    layers = [(label, substitute(layer, places(out))) for label, layer in layers]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge(merged, layer)
    name = str(merged.get("recipe", "spml"))
    try:
        recipe = recipes.get(name)
    except VlmlError as e:
        raise ConfigError(f"{where}: {e}") from None
    # the shared cache folder, unless a grid or the command line names one (a base config
    # file's own cache_dir is the single-run default, not a choice for the sweep)
    user_cache = any("cache_dir" in layer for label, layer in layers if label not in bases)
    forced = {"seed": cell.seed, "out_dir": str(out / RUNS / cell.id), "progress": False,
              "name": f"{grid.name}-{cell.key.replace('/', '-')}-seed{cell.seed}"}
    if not user_cache:
        forced["cache_dir"] = str(out / CACHE)
    cfg = _build(recipe, layers, forced, where)
    try:
        cfg = recipe.validate(cfg)
    except VlmlError as e:
        hint = ""
        if "data.root" in str(e):
            name = dict(cell.values).get("dataset", cfg.data.dataset)
            hint = f" (vlml sweep: --root {name}=PATH)"
        raise ConfigError(f"{where}: {e}{hint}") from None
    return PlannedCell(cell, cfg.recipe, cfg, Path(cfg.out_dir))


def plan(grid: Grid, out: Path, *, seeds: list[int] | None = None,
         overrides: list[str] | None = None, roots: dict[str, str] | None = None,
         only: dict[str, list[str]] | None = None) -> list[PlannedCell]:
    """Every cell of the grid, built and validated; the first bad cell raises `ConfigError`
    (before anything runs)."""
    cells = grid.cells(seeds, only)
    if not cells:
        raise ConfigError(f"{grid.source}: no cell to run (check --only)")
    planned = [plan_cell(grid, c, out, overrides, roots) for c in cells]
    _check_roots(roots or {}, planned)
    return planned


def _check_roots(roots: dict[str, str], planned: list[PlannedCell]) -> None:
    """A `--root` name is a dataset of the grid, or at least a dataset vlml knows (one
    command line may serve several grids); a typo is an error with the grid's datasets."""
    from vlml import data

    names = sorted({n for p in planned for n in (dict(p.cell.values).get("dataset"),
                                                  p.cfg.data.dataset) if n})
    shipped = {d.name for family in config.shipped_root().iterdir() if family.is_dir()
               for d in family.iterdir() if d.is_dir()}
    known = set(names) | set(data.DATASETS.names()) | shipped
    for dataset in roots:
        if dataset not in known:
            raise ConfigError(f"--root: {unknown_message('dataset', dataset, names)}")


__all__ = ["PlannedCell", "plan", "plan_cell", "resolve_base", "places", "RUNS", "CACHE",
           "WORLD"]
