"""Published numbers of the papers (methods.md section 6), shipped as package data
(`vlml/published/<name>.yaml`), for `vlml table --compare`.

A file:

    title: SPML test mAP, ResNet-50 at 448 px (VLPL Table 1 and later papers)
    source: methods.md section 6
    columns: {voc: VOC, coco: COCO, nus: NUS-WIDE, cub: CUB}     # the paper's columns
    match: {voc2007: voc, voc2012: voc, coco2014: coco}          # our column -> the paper's
    rows:                                                        # our row (method) name ->
      an: {label: AN, values: {voc: 85.89, coco: 64.92, nus: 42.27, cub: 18.31}}
      gr_loss: {label: "GR-Loss (IJCAI'24)", values: {...}}      # rows we do not run too

Our column of a table is its column-axis values joined by "/" (e.g. `voc2012/p05`); `match`
maps it to the paper's column (an unmatched column is looked up under its own name). A value
the paper does not give is absent (shown as "—").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml import config, shipped
from vlml.errors import ConfigError
from vlml.experiments.grid import unknown_message

FILE_KEYS = ("title", "source", "notes", "columns", "match", "rows")


@dataclass(frozen=True)
class PublishedRow:
    label: str
    values: dict[str, float]


@dataclass(frozen=True)
class Published:
    """One table of published numbers."""

    name: str
    title: str
    source: str
    columns: dict[str, str]
    match: dict[str, str]
    rows: dict[str, PublishedRow]
    notes: str = ""

    def column(self, ours: str) -> str:
        """The paper's column for our column key."""
        return self.match.get(ours, ours)

    def value(self, row: str, ours: str) -> float | None:
        """The paper's number for our (row, column), None where it gives none."""
        r = self.rows.get(row)
        return None if r is None else r.values.get(self.column(ours))


def shipped_root() -> Path:
    """The folder of the shipped published numbers (`vlml/published`)."""
    return shipped.package_folder("published")


def list_shipped() -> list[str]:
    return sorted(p.stem for p in shipped_root().glob("*.yaml"))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def parse(data: dict[str, Any], name: str, where: str) -> Published:
    """A `Published` from a file's mapping; `ConfigError` naming the key otherwise."""
    for key in data:
        if key not in FILE_KEYS:
            raise ConfigError(f"{where}: {unknown_message('key', key, list(FILE_KEYS))}")
    columns = {str(k): str(v) for k, v in (data.get("columns") or {}).items()}
    if not columns:
        raise ConfigError(f"{where}.columns: expected a mapping column -> label")
    match = {str(k): str(v) for k, v in (data.get("match") or {}).items()}
    for ours, theirs in match.items():
        if theirs not in columns:
            raise ConfigError(f"{where}.match.{ours}: "
                              f"{unknown_message('column', theirs, list(columns))}")
    rows = {}
    for row, spec in (data.get("rows") or {}).items():
        w = f"{where}.rows.{row}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{w}: expected {{label, values}}, got {spec!r}")
        values = {}
        for col, v in (spec.get("values") or {}).items():
            if str(col) not in columns:
                raise ConfigError(f"{w}.values: {unknown_message('column', col, list(columns))}")
            values[str(col)] = _number(v, f"{w}.values.{col}")
        rows[str(row)] = PublishedRow(str(spec.get("label", row)), values)
    return Published(name, str(data.get("title", name)), str(data.get("source", "")), columns,
                     match, rows, str(data.get("notes", "")))


def load(name_or_path: str | Path) -> Published:
    """A shipped published table by name (e.g. "spml_resnet50") or a YAML file."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        found = shipped.find_yaml(shipped_root(), Path(str(name_or_path)).stem)
        if found is None:
            message = unknown_message("published table", str(name_or_path), list_shipped())
            raise ConfigError(f"{name_or_path}: no such file, nor a shipped table: {message}")
        path = found
    return parse(config.read_yaml(path), path.stem, str(path))


__all__ = ["Published", "PublishedRow", "load", "parse", "list_shipped", "shipped_root"]
