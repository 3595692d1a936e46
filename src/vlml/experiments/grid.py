"""Grid files: the base config and the axes of a paper's table, read and checked (torch-free).

A grid file is YAML. One table:

    name: cbsa_ablations            # default: the file's stem
    title: CBSA ablations, VOC2012 at 5% labelled
    seeds: [0, 1, 2]                # training seeds (`--seeds` replaces them)
    config: ssmll/voc2012/cbsa_p05  # base config of every cell: a shipped name or a file;
                                    # may name axes as {axis} (e.g. spml/{dataset}/{method})
    set: {optim.epochs: 28}         # overrides of every cell (dotted or nested keys)
    axes:                           # the cells are the product of the axes, in this order
      method:                       # a mapping: value name -> its overrides (or null)
        full: null
        no_context: {context.enabled: false, label: "no context task"}
        k2: {config: ssmll/voc2012/ablations/k2_p05}
      dataset: [voc2007, coco2014]  # a list: names only (used by {dataset} in `config`)
      context.k: [2, 4]             # an axis named by a config key: each value sets it
    table: {rows: method, columns: [dataset], published: spml_resnet50, plot: bars}
    slurm: {partition: gpu, gpus: 1, cpus: 8, time: "12:00:00", mem: 64G}

Several tables in one file: `parts: {name: {title, config, set, axes, table}}`; the file's
other keys (seeds, set, world, threads, slurm) apply to every part.

A cell's config is its base config updated, in this order, by the grid's `set`, the part's
`set`, and each axis value's overrides (then the command line's; see `vlml.experiments.plan`).
Sections (`optim`, `loss`, ...) are merged key by key; any other value, a dict-valued setting
such as `loss.params` included, is replaced whole. `threads: N` pins torch's thread count of
every cell, so a sweep gives the same numbers with any `--jobs`.

Reserved keys of an axis value: `config` (this value's base config, e.g. an ablation's own
file) and `label` (how the table names it, e.g. "5%"). Override values may use `${out}` (the
sweep folder) and `${world}` (the generated toy world, see `world:`). `seed` and `out_dir` are
the sweep's to set, never a grid's.

`world: {seed: 0, size: quick}` generates the demo's toy world once under `<out>/world`
(`vlml.demo.world`, sizes `quick` or `full`): `${world}/pool.catalog.zip` (fully labelled
train pool) and `${world}/test.catalog.zip`. The seeds never change the world.

`table`: `rows` (an axis; default the first), `columns` (the other axes by default), `labels`
(value name -> text), `published` (a shipped published-numbers name for `vlml table
--compare`), `plot` (`bars`, `lines` or `none`; default `lines` when a column axis is named
`p`, else `bars`), `x` (the config key giving a line plot's x values; default `data.p`).
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlml import config, shipped
from vlml.errors import ConfigError

GRID_KEYS = ("name", "title", "description", "seeds", "world", "set", "threads", "slurm",
             "parts", "config", "axes", "table")
PART_KEYS = ("title", "config", "set", "axes", "table")
SHARED_KEYS = ("name", "title", "description", "seeds", "world", "set", "threads", "slurm",
               "parts")
TABLE_KEYS = ("rows", "columns", "labels", "published", "plot", "x")
WORLD_KEYS = ("seed", "size")
WORLD_SIZES = ("quick", "full")
SLURM_KEYS = ("partition", "gpus", "cpus", "time", "mem", "account", "qos", "constraint",
              "array_parallelism", "setup", "additional")
PLOTS = ("bars", "lines", "none")
RESERVED_VALUE_KEYS = ("config", "label")
FORBIDDEN_KEYS = ("seed", "out_dir")
PLACEHOLDERS = ("out", "world")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: its name (a folder name), its table label, its overrides (a
    nested mapping) and, optionally, its own base config."""

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    config: str | None = None


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]

    def names(self) -> list[str]:
        return [v.name for v in self.values]

    def get(self, name: str) -> AxisValue:
        for v in self.values:
            if v.name == name:
                return v
        raise ConfigError(unknown_message(f"value of axis {self.name!r}", name, self.names()))


@dataclass(frozen=True)
class TableSpec:
    """How a part's cells become a table (see the module docstring)."""

    rows: str
    columns: tuple[str, ...]
    labels: dict[str, str]
    published: str | None
    plot: str
    x: str


@dataclass(frozen=True)
class Part:
    """One table of a grid: its base config, overrides and axes."""

    name: str
    title: str
    config: str | None
    overrides: dict[str, Any]
    axes: tuple[Axis, ...]
    table: TableSpec

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise ConfigError(unknown_message(f"axis of part {self.name!r}", name,
                                          [a.name for a in self.axes]))


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: a part, one value per axis, a seed."""

    part: str
    values: tuple[tuple[str, str], ...]
    seed: int

    @property
    def key(self) -> str:
        """The cell without its seed: `part/value/value`."""
        return "/".join([self.part, *(v for _, v in self.values)])

    @property
    def id(self) -> str:
        """`part/value/.../seedN`, also its run folder under `<out>/runs`."""
        return f"{self.key}/seed{self.seed}"

    def value(self, axis: str) -> str:
        return dict(self.values)[axis]


@dataclass(frozen=True)
class World:
    """The toy world a grid trains on (`world:`)."""

    seed: int
    size: str


@dataclass(frozen=True)
class Grid:
    """A parsed grid file."""

    name: str
    title: str
    source: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any]
    parts: tuple[Part, ...]
    world: World | None = None
    threads: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise ConfigError(unknown_message("part", name, [p.name for p in self.parts]))

    def cells(self, seeds: list[int] | tuple[int, ...] | None = None,
              only: dict[str, list[str]] | None = None) -> list[Cell]:
        """Every cell (parts in order, axes as a product, seeds innermost). `only`: axis ->
        the values kept (or part -> names with the key "part"); unknown names are errors."""
        seeds = tuple(self.seeds if seeds is None else seeds)
        for s in seeds:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise ConfigError(f"seeds: expected integers >= 0, got {s!r}")
        only = only or {}
        check_only(self, only)
        out = []
        for part in self.parts:
            if "part" in only and part.name not in only["part"]:
                continue
            names = [[v.name for v in a.values if a.name not in only or v.name in only[a.name]]
                     for a in part.axes]
            for combo in itertools.product(*names):
                for seed in seeds:
                    out.append(Cell(part.name, tuple(zip([a.name for a in part.axes], combo,
                                                         strict=True)), seed))
        return out


# ---- messages ------------------------------------------------------------------------------
def unknown_message(what: str, name: Any, valid: list[str]) -> str:
    """"unknown <what> 'x'. Did you mean 'y'? Valid choices: a, b, c"."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Valid choices: {', '.join(map(str, valid))}"


def _check_keys(data: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_message('key', key, list(valid))}")


def check_only(grid: Grid, only: dict[str, list[str]]) -> None:
    """`only` names existing axes and values (or parts), else `ConfigError` with choices."""
    axes: dict[str, list[str]] = {"part": [p.name for p in grid.parts]}
    for part in grid.parts:
        for a in part.axes:
            axes.setdefault(a.name, [])
            axes[a.name] += [n for n in a.names() if n not in axes[a.name]]
    for axis, names in only.items():
        if axis not in axes:
            raise ConfigError(f"--only: {unknown_message('axis', axis, list(axes))}")
        for name in names:
            if name not in axes[axis]:
                raise ConfigError(f"--only: {unknown_message(f'{axis}', name, axes[axis])}")


# ---- nested overrides ----------------------------------------------------------------------
def nest(overrides: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """`{"optim.lr": 1, "loss": {"name": "an"}}` -> `{"optim": {"lr": 1}, "loss": {...}}`."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to values, got "
                          f"{overrides!r}")
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: config keys are text, got {key!r}")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {p!r} is set both as a value and as a section")
        value = nest(value, f"{where}.{key}") if isinstance(value, dict) else value
        node[leaf] = merge(node[leaf], value) if isinstance(node.get(leaf), dict) and \
            isinstance(value, dict) else value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `extra`, nested mappings merged key by key (a copy)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_forbidden(overrides: dict[str, Any], where: str) -> None:
    for key in FORBIDDEN_KEYS:
        if key in overrides:
            raise ConfigError(f"{where}: {key!r} is set by the sweep (seeds: `seeds:` or "
                              f"--seeds; run folders: --out), not by a grid")


def check_placeholders(value: Any, where: str) -> None:
    """Every `${name}` in the strings of `value` is a known placeholder."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_placeholders(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_placeholders(v, where)
    elif isinstance(value, str):
        valid = ["${" + p + "}" for p in PLACEHOLDERS]
        for name in _PLACEHOLDER.findall(value):
            if name not in PLACEHOLDERS:
                message = unknown_message("placeholder", "${" + name + "}", valid)
                raise ConfigError(f"{where}: {message}")


def substitute(value: Any, places: dict[str, str]) -> Any:
    """`value` with `${out}` / `${world}` replaced in every string."""
    if isinstance(value, dict):
        return {k: substitute(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, places) for v in value]
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: places.get(m.group(1), m.group(0)), value)
    return value


# ---- parsing -------------------------------------------------------------------------------
def _name(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value
    if not isinstance(text, str) or not _NAME.match(text):
        raise ConfigError(f"{where}: {value!r} is not a usable name (it names a run folder: "
                          "letters, digits, '.', '_', '+', '-'); give it a `label:` for the "
                          "table instead")
    return text


def _axis_value(axis: str, name: Any, spec: Any, where: str) -> AxisValue:
    vname = _name(name, f"{where}: value")
    w = f"{where}.{vname}"
    if axis.count(".") and spec is None:
        return AxisValue(vname, vname, nest({axis: name}, w))
    if spec is None:
        return AxisValue(vname, vname)
    if not isinstance(spec, dict):
        raise ConfigError(f"{w}: expected a mapping of overrides (or nothing), got {spec!r}")
    spec = dict(spec)
    base = spec.pop("config", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{w}.config: expected a config name or file, got {base!r}")
    label = spec.pop("label", vname)
    overrides = nest(spec, w)
    if "." in axis:
        overrides = merge(nest({axis: name}, w), overrides)
    _check_forbidden(overrides, w)
    check_placeholders(overrides, w)
    return AxisValue(vname, str(label), overrides, base)


def _axis(name: Any, spec: Any, where: str) -> Axis:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: axis names are text, got {name!r}")
    w = f"{where}.{name}"
    if isinstance(spec, list):
        values = [_axis_value(name, v, None, w) for v in spec]
    elif isinstance(spec, dict):
        values = [_axis_value(name, k, v, w) for k, v in spec.items()]
    else:
        raise ConfigError(f"{w}: expected a list of values or a mapping value -> overrides, "
                          f"got {spec!r}")
    if not values:
        raise ConfigError(f"{w}: an axis needs at least one value")
    names = [v.name for v in values]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{w}: value(s) {', '.join(dup)} given twice")
    return Axis(name, tuple(values))


def _table(spec: Any, axes: tuple[Axis, ...], where: str) -> TableSpec:
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
    _check_keys(spec, TABLE_KEYS, where)
    names = [a.name for a in axes]
    rows = spec.get("rows", names[0] if names else None)
    if rows not in names:
        raise ConfigError(f"{where}.rows: {unknown_message('axis', rows, names)}")
    columns = spec.get("columns", [n for n in names if n != rows])
    columns = [columns] if isinstance(columns, str) else list(columns)
    for c in columns:
        if c not in names or c == rows:
            raise ConfigError(f"{where}.columns: "
                              f"{unknown_message('axis', c, [n for n in names if n != rows])}")
    missing = [n for n in names if n != rows and n not in columns]
    if missing:
        raise ConfigError(f"{where}.columns: every axis but the rows' must be a column (or "
                          f"have one value); missing {', '.join(missing)}")
    plot = spec.get("plot", "lines" if "p" in columns else "bars")
    if plot not in PLOTS:
        raise ConfigError(f"{where}.plot: {unknown_message('plot', plot, list(PLOTS))}")
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    published = spec.get("published")
    if published is not None and not isinstance(published, str):
        raise ConfigError(f"{where}.published: expected a published-numbers name, got "
                          f"{published!r}")
    return TableSpec(rows, tuple(columns), labels, published, plot, str(spec.get("x", "data.p")))


def _part(name: str, data: dict[str, Any], where: str) -> Part:
    _check_keys(data, PART_KEYS, where)
    axes_spec = data.get("axes")
    if not isinstance(axes_spec, dict) or not axes_spec:
        raise ConfigError(f"{where}.axes: expected a mapping axis -> values (at least one "
                          f"axis), got {axes_spec!r}")
    axes = tuple(_axis(k, v, f"{where}.axes") for k, v in axes_spec.items())
    base = data.get("config")
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{where}.config: expected a config name or file, got {base!r}")
    overrides = nest(data.get("set"), f"{where}.set")
    _check_forbidden(overrides, f"{where}.set")
    check_placeholders(overrides, f"{where}.set")
    table = _table(data.get("table"), axes, f"{where}.table")
    labels = {v.name: v.label for a in axes for v in a.values if v.label != v.name}
    table = TableSpec(table.rows, table.columns, {**labels, **table.labels}, table.published,
                      table.plot, table.x)
    return Part(_name(name, f"{where}: part"), str(data.get("title", name)), base, overrides,
                axes, table)


def _world(spec: Any, where: str) -> World | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping {{seed, size}}, got {spec!r}")
    _check_keys(spec, WORLD_KEYS, where)
    seed, size = spec.get("seed", 0), spec.get("size", "quick")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{where}.seed: expected an integer >= 0, got {seed!r}")
    if size not in WORLD_SIZES:
        raise ConfigError(f"{where}.size: {unknown_message('size', size, list(WORLD_SIZES))}")
    return World(seed, size)


def parse(data: dict[str, Any], source: str, default_name: str) -> Grid:
    """A `Grid` from a grid file's mapping; `ConfigError` naming the file and key otherwise."""
    where = source
    _check_keys(data, GRID_KEYS, where)
    if "parts" in data:
        inline = [k for k in data if k not in SHARED_KEYS]
        if inline:
            raise ConfigError(f"{where}: with `parts:`, {', '.join(inline)} belong inside "
                              "each part")
        parts_spec = data["parts"]
        if not isinstance(parts_spec, dict) or not parts_spec:
            raise ConfigError(f"{where}.parts: expected a mapping part name -> part")
        for k, v in parts_spec.items():
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.parts.{k}: expected a mapping {{title, config, set, "
                                  f"axes, table}}, got {v!r}")
        parts = tuple(_part(str(k), v, f"{where}.parts.{k}") for k, v in parts_spec.items())
    else:
        parts = (_part(str(data.get("name", default_name)),
                       {k: data[k] for k in PART_KEYS if k in data}, where),)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{where}.seeds: expected a list of integers >= 0, got {seeds!r}")
    overrides = nest(data.get("set"), f"{where}.set")
    _check_forbidden(overrides, f"{where}.set")
    check_placeholders(overrides, f"{where}.set")
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{where}.threads: expected an integer >= 1, got {threads!r}")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise ConfigError(f"{where}.slurm: expected a mapping, got {slurm!r}")
    _check_keys(slurm, SLURM_KEYS, f"{where}.slurm")
    return Grid(str(data.get("name", default_name)), str(data.get("title", default_name)),
                source, tuple(seeds), overrides, parts, _world(data.get("world"), f"{where}.world"),
                threads, dict(slurm), str(data.get("description", "")))


# ---- shipped grids -------------------------------------------------------------------------
def shipped_root() -> Path:
    """The folder of the grid files shipped with the package (`vlml/grids`)."""
    return shipped.package_folder("grids")


def list_shipped() -> list[str]:
    """Names of the shipped grids, e.g. 'toy', 'vlpl_table1', sorted."""
    return shipped.yaml_names(shipped_root())


def resolve(name_or_path: str | Path) -> Path:
    """The grid file meant: an existing file, else a shipped grid name (".yaml" optional);
    `ConfigError` with the close shipped names otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = Path(name_or_path).as_posix().removesuffix(".yaml")
    found = shipped.find_yaml(shipped_root(), name)
    if found is not None:
        return found
    raise ConfigError(f"{name_or_path}: no such grid file; as a shipped grid: "
                      f"{unknown_message('grid', name, list_shipped())}")


def load(name_or_path: str | Path) -> Grid:
    """Read and check a grid file (or a shipped grid by name)."""
    path = resolve(name_or_path)
    return parse(config.read_yaml(path), str(path), path.stem)


__all__ = ["Grid", "Part", "Axis", "AxisValue", "Cell", "TableSpec", "World", "load", "parse",
           "resolve", "list_shipped", "shipped_root", "nest", "merge", "substitute",
           "unknown_message"]
