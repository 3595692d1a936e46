"""A sweep folder's tables: one row per method (the rows axis), one column per dataset or
proportion (the column axes), mean +/- std of the test mAP over seeds, the best mean of each
column marked; with published numbers, the paper's value and our difference beside each.

The numbers are read from each cell's `results.json` (the record only says which cells exist
and where). `std` is the sample standard deviation (ddof 1) over the seeds that finished; a
cell with fewer finished seeds than planned shows how many (e.g. "(2/3)"); one seed shows
its mean alone; no seed shows "—".
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlml.experiments.published import Published
from vlml.experiments.record import SweepRecord, test_map

DASH = "—"
FORMATS = ("md", "latex", "csv")


@dataclass(frozen=True)
class Stat:
    """Test mAP over the seeds of one (row, column): values in seed order."""

    values: tuple[float, ...]
    planned: int

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None


@dataclass
class Table:
    """One part's table. `stats[row][column]`; `published` values by (row, column)."""

    part: str
    title: str
    rows: list[str]
    columns: list[str]
    labels: dict[str, str]
    stats: dict[str, dict[str, Stat]]
    plot: str
    column_axes: list[str] = field(default_factory=list)
    x: dict[str, float] = field(default_factory=dict)
    published: Published | None = None
    extra_rows: list[str] = field(default_factory=list)
    x_key: str = "data.p"

    def label(self, key: str) -> str:
        if key in self.labels:
            return self.labels[key]
        if "/" in key:
            return " ".join(self.labels.get(k, k) for k in key.split("/"))
        if self.published is not None and key in self.published.rows and key not in self.rows:
            return self.published.rows[key].label
        return key

    def best(self, column: str) -> float | None:
        means = [s.mean for r in self.rows if (s := self.stats[r].get(column)) is not None
                 and s.mean is not None]
        return max(means) if means else None

    def paper(self, row: str, column: str) -> float | None:
        return None if self.published is None else self.published.value(row, column)


def build_tables(out: str | Path, published: dict[str, Published | None] | None = None
                 ) -> list[Table]:
    """The tables of the sweep folder `out`, one per grid part. `published`: part -> the
    numbers to compare with (None: no comparison)."""
    record = SweepRecord.load(out, required=True)
    meta = record.data["grid"]
    tables = []
    for part, spec in meta["parts"].items():
        axes = spec["axes"]
        rows = list(axes[spec["rows"]])
        col_values = [axes[c] for c in spec["columns"]]
        columns = ["/".join(c) for c in itertools.product(*col_values)] if col_values else [""]
        values: dict[tuple[str, str], list[tuple[int, float]]] = {}
        planned: dict[tuple[str, str], int] = {}
        xs: dict[str, float] = {}
        for entry in record.cells.values():
            if entry["part"] != part:
                continue
            v = entry["values"]
            if v.get(spec["rows"]) not in rows:
                continue
            row = v[spec["rows"]]
            col = "/".join(v[c] for c in spec["columns"]) if spec["columns"] else ""
            key = (row, col)
            planned[key] = planned.get(key, 0) + 1
            value = test_map(Path(record.out) / entry["run_dir"])
            if value is None or not math.isfinite(value):
                continue
            values.setdefault(key, []).append((entry["seed"], value))
            if isinstance(entry.get("x"), (int, float)):
                xs.setdefault(col, float(entry["x"]))
        stats = {r: {c: Stat(tuple(v for _, v in sorted(values.get((r, c), []))),
                             planned.get((r, c), 0)) for c in columns} for r in rows}
        pub = (published or {}).get(part)
        extra = [] if pub is None else [r for r in pub.rows if r not in rows]
        tables.append(Table(part, spec["title"], rows, columns, dict(spec["labels"]), stats,
                            spec["plot"], list(spec["columns"]), xs, pub, extra,
                            spec.get("x", "data.p")))
    return tables


# ---- text --------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return DASH
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def cell_text(stat: Stat | None, pm: str = "±", digits: int = 2) -> str:
    """"85.12 ± 0.34", "85.12 ± 0.34 (2/3)", "85.12" (one seed), or "—"."""
    if stat is None or stat.mean is None:
        return DASH
    text = _num(stat.mean, digits)
    if stat.std is not None:
        text += f" {pm} {_num(stat.std, digits)}"
    if stat.planned and stat.n < stat.planned:
        text += f" ({stat.n}/{stat.planned})"
    return text


BOLD_ON, BOLD_OFF = "\x02", "\x03"  # around a column's best, replaced by each format


def _grid_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and body (strings) of a table; the best of a column between `BOLD_ON` and
    `BOLD_OFF`."""
    cols = [c for c in table.columns]
    compare = table.published is not None
    header = [""]
    for c in cols:
        name = table.label(c) or "test mAP"
        header += [name, f"{name} paper", "Δ"] if compare else [name]
    body = []
    for r in table.rows + table.extra_rows:
        line = [table.label(r)]
        for c in cols:
            stat = table.stats.get(r, {}).get(c)
            text = cell_text(stat)
            best = table.best(c)
            if stat is not None and stat.mean is not None and best is not None and \
                    abs(stat.mean - best) < 1e-9:
                text = f"{BOLD_ON}{text}{BOLD_OFF}"
            line.append(text)
            if compare:
                paper = table.paper(r, c)
                diff = None if paper is None or stat is None or stat.mean is None else \
                    stat.mean - paper
                line += [_num(paper), _num(diff, sign=True)]
        body.append(line)
    return header, body


def render_markdown(table: Table) -> str:
    header, body = _grid_rows(table)
    header[0] = "method"
    lines = [f"### {table.title}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row).replace(BOLD_ON, "**").replace(BOLD_OFF, "**") + " |"
              for row in body]
    lines += ["", _footnote(table)]
    return "\n".join(lines) + "\n"


def _footnote(table: Table) -> str:
    seeds = sorted({s.planned for r in table.stats.values() for s in r.values() if s.planned})
    n = "/".join(map(str, seeds)) if seeds else "0"
    text = (f"Test mAP, mean ± std (sample, ddof 1) over {n} seed(s); best mean of each column "
            "in bold.")
    if table.published is not None:
        text += (f" Paper: {table.published.title} ({table.published.source}); Δ = ours - "
                 f"paper; {DASH} where the paper gives none.")
    return text


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace(DASH, "--")


def render_latex(table: Table) -> str:
    header, body = _grid_rows(table)
    header[0] = "Method"
    lines = [r"\begin{table}[t]", r"\centering",
             f"\\caption{{{_latex_escape(table.title)}. {_latex_escape(_footnote(table))}}}",
             r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for row in body:
        cells = [_latex_escape(c).replace(BOLD_ON, r"\textbf{").replace(BOLD_OFF, "}")
                 for c in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Long format: one line per (row, column), machine-readable."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["part", "row", "row_label", "column", "column_label", "mean", "std", "n",
                "n_planned", "best", "published", "diff", "values"])
    for r in table.rows + table.extra_rows:
        for c in table.columns:
            s = table.stats.get(r, {}).get(c)
            best = table.best(c)
            mean = None if s is None else s.mean
            paper = table.paper(r, c)
            w.writerow([table.part, r, table.label(r), c, table.label(c),
                        "" if mean is None else f"{mean:.4f}",
                        "" if s is None or s.std is None else f"{s.std:.4f}",
                        0 if s is None else s.n, 0 if s is None else s.planned,
                        int(mean is not None and best is not None and abs(mean - best) < 1e-9),
                        "" if paper is None else f"{paper:.2f}",
                        "" if paper is None or mean is None else f"{mean - paper:.4f}",
                        "" if s is None else " ".join(f"{v:.4f}" for v in s.values)])
    return buf.getvalue()


RENDER = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
SUFFIX = {"md": ".md", "latex": ".tex", "csv": ".csv"}


def render(table: Table, fmt: str = "md") -> str:
    """The table as Markdown, LaTeX (booktabs) or CSV."""
    if fmt not in RENDER:
        from vlml.errors import ConfigError
        from vlml.experiments.grid import unknown_message

        raise ConfigError(unknown_message("format", fmt, list(FORMATS)))
    return RENDER[fmt](table)


__all__ = ["Table", "Stat", "build_tables", "render", "render_markdown", "render_latex",
           "render_csv", "cell_text", "FORMATS", "SUFFIX"]
