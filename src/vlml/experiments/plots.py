"""One PNG per table, beside it: bars with error bars (std over seeds) per column for an SPML
table; mAP vs labelled proportion, one line per method with error bars, one panel per dataset,
for an SSMLL table (`plot: lines`, x from the cells' config key `table.x`, e.g. `data.p`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlml.experiments.table import Table


def _err(std: float | None) -> float:
    return 0.0 if std is None else std


def bars(table: Table, path: str | Path) -> Path:
    """Grouped bars: one group per column, one bar per row (method), error bars = std."""
    from vlml.report.plots import plt, save_figure

    cols = table.columns
    rows = [r for r in table.rows if any(
        table.stats[r][c].mean is not None for c in cols)]
    if len(cols) == 1:  # one column: a bar per row, named on the x axis
        return _single_column(table, rows, cols[0], path)
    x = np.arange(len(cols))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) * len(cols) + 2), 3.8))
    for i, r in enumerate(rows):
        means = [table.stats[r][c].mean for c in cols]
        stds = [_err(table.stats[r][c].std) for c in cols]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width,
               [np.nan if m is None else m for m in means], width, yerr=stds, capsize=2,
               label=table.label(r))
    ax.set_xticks(x, [table.label(c) or "test mAP" for c in cols])
    finite = [s.mean for r in rows for s in table.stats[r].values() if s.mean is not None]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 3))
    ax.set_ylabel("test mAP (mean ± std over seeds)")
    ax.set_title(table.title, fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(rows) > 8 else 1, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _single_column(table: Table, rows: list[str], col: str, path: str | Path) -> Path:
    from vlml.report.plots import plt, save_figure

    stats = [table.stats[r][col] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(rows) + 1.5), 3.8))
    colors = [f"C{i % 10}" for i in range(len(rows))]
    ax.bar(np.arange(len(rows)), [s.mean for s in stats], 0.7,
           yerr=[_err(s.std) for s in stats], capsize=3, color=colors)
    ax.set_xticks(np.arange(len(rows)), [table.label(r) for r in rows], rotation=45,
                  ha="right", fontsize=8)
    means = [s.mean for s in stats if s.mean is not None]
    ax.set_ylim(max(0.0, min(means) - 5), min(100.0, max(means) + 3))
    ax.set_ylabel(f"{table.label(col) or 'test mAP'} (mean ± std over seeds)")
    ax.set_title(table.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _x_axis(table: Table) -> int:
    """Index of the column axis the line plot runs along ("p" if present, else the last)."""
    axes = table.column_axes
    return axes.index("p") if "p" in axes else max(len(axes) - 1, 0)


def lines(table: Table, path: str | Path) -> Path:
    """mAP vs the x key (labelled proportion), one line per row, one panel per value of the
    other column axes; error bars = std over seeds."""
    from vlml.report.plots import plt, save_figure

    k = _x_axis(table)
    scale, xlabel = (100.0, "labelled images (%)") if table.x_key == "data.p" else \
        (1.0, table.x_key)
    panels: dict[str, list[str]] = {}
    for c in table.columns:
        parts = c.split("/")
        panels.setdefault("/".join(parts[:k] + parts[k + 1:]), []).append(c)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 3.6),
                             squeeze=False)
    for ax, (panel, cols) in zip(axes[0], panels.items(), strict=True):
        cols = [c for c in cols if c in table.x]
        cols.sort(key=lambda c: table.x[c])
        for r in table.rows:
            pts = [(scale * table.x[c], table.stats[r][c]) for c in cols
                   if table.stats[r][c].mean is not None]
            if not pts:
                continue
            ax.errorbar([p for p, _ in pts], [s.mean for _, s in pts],
                        yerr=[_err(s.std) for _, s in pts], marker="o", ms=3, capsize=2,
                        label=table.label(r))
        ax.set_xlabel(xlabel)
        ax.set_title(table.label(panel) if panel else table.title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test mAP (mean ± std over seeds)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def plot(table: Table, path: str | Path) -> Path | None:
    """The table's plot (`table.plot`: bars, lines or none); None when there is nothing to
    draw."""
    has_values = any(s.mean is not None for r in table.stats.values() for s in r.values())
    if table.plot == "none" or not has_values:
        return None
    if table.plot == "lines" and table.x:
        return lines(table, path)
    return bars(table, path)


__all__ = ["plot", "bars", "lines"]
