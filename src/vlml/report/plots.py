"""Headless matplotlib figures written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from vlml.fileio import atomic_open  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save `fig` as PNG at `path` (temp file + rename) and close it."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def grouped_bars(names: list[str], series: dict[str, list[float]], title: str, ylabel: str,
                 path: str | Path) -> Path:
    """One group of bars per name, one bar per series (e.g. per-class AP by method)."""
    import numpy as np

    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) * max(len(series), 1) / 2), 3.6))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def line_plot(xs: list[float], series: dict[str, list[float]], title: str, xlabel: str,
              ylabel: str, path: str | Path, integer_x: bool = False) -> Path:
    """One line per series over shared x values (`integer_x`: ticks on whole numbers only)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in series.items():
        ax.plot(xs, values, marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    if integer_x:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def class_bars(names: list[str], values: list[float | None], title: str, ylabel: str,
               path: str | Path, skipped_label: str = "skipped") -> Path:
    """One bar per class; a class whose value is None gets no bar but `skipped_label` written
    at its place, so a skipped class is never drawn as a zero."""
    import numpy as np

    c = len(names)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.28 * c), 30.0), 3.6))
    x = np.arange(c)
    known = [i for i, v in enumerate(values) if v is not None]
    ax.bar(x[known], [values[i] for i in known], 0.7, color="tab:blue")
    top = max([values[i] for i in known], default=1.0) or 1.0
    for i, v in enumerate(values):
        if v is None:
            ax.text(i, 0.02 * top, skipped_label, rotation=90, ha="center", va="bottom",
                    fontsize=7, color="tab:gray")
    ax.set_xticks(x, names, rotation=60 if c > 6 else 0, ha="right" if c > 6 else "center",
                  fontsize=max(4.0, min(8.0, 480.0 / max(c, 1))))
    ax.set_xlim(-0.6, c - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def phase_curves(phases: list[tuple[str, list[float], list[float | None], list[float | None]]],
                 metric_label: str | None, title: str, path: str | Path,
                 marker: tuple[float, float] | None = None) -> Path:
    """Training curves over consecutive phases: the loss (left) and, when `metric_label` is
    given, the selection metric (right) per epoch; one line per phase on a shared epoch axis.

    Each phase is `(name, epochs, losses, metric values)` (None: no value that epoch);
    `marker` = (x, y) of the selected model on the metric panel."""
    n_panels = 2 if metric_label else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 3.6), squeeze=False)
    nan = float("nan")
    for name, xs, losses, values in phases:
        axes[0][0].plot(xs, [nan if v is None else v for v in losses], marker="o", ms=3,
                        label=name)
        if metric_label:
            axes[0][1].plot(xs, [nan if v is None else v for v in values], marker="o", ms=3,
                            label=name)
    for _, xs, _, _ in phases[1:]:  # a dotted line where a phase starts
        for ax in axes[0]:
            if xs:
                ax.axvline(xs[0] - 0.5, color="gray", ls=":", lw=1)
    panels = [(axes[0][0], "training loss")]
    if metric_label:
        panels.append((axes[0][1], metric_label))
        if marker is not None:
            axes[0][1].plot([marker[0]], [marker[1]], "*", ms=12, color="tab:red",
                            label="selected model")
    for ax, ylabel in panels:
        ax.set_xlabel("epoch (phases in order)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
