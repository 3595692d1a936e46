"""The context clustering of CBSA drawn for the run report (docs/methods.md 5.6)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlml.contexts import check_affinity
from vlml.errors import DataError
from vlml.report.plots import plt, save_figure


def plot_contexts(aff: np.ndarray, clusters: np.ndarray, class_names: Sequence[str],
                  path: str | Path, title: str | None = None) -> Path:
    """PNG of the affinity reordered by context, with context boundaries and class names.

    Rows/columns are grouped by context (classes in their original order within a context);
    white lines separate contexts; the right-hand panel lists each context's classes.
    """
    aff = check_affinity(aff)
    clusters = np.asarray(clusters)
    names = list(class_names)
    if len(clusters) != aff.shape[0] or len(names) != aff.shape[0]:
        raise DataError(f"affinity is {aff.shape}, but got {len(clusters)} clusters and "
                        f"{len(names)} class names", "plot_contexts")
    order = np.argsort(clusters, kind="stable")
    c = len(names)
    k = int(clusters.max()) + 1
    size = min(4.0 + 0.12 * c, 16.0)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(size + 4.0, size),
                                   gridspec_kw={"width_ratios": [size, 4.0]})
    off = aff[~np.eye(len(aff), dtype=bool)]
    # Scale to the largest off-diagonal value: the diagonal (self-affinity) would wash it out.
    vmax = max(float(off.max()) if off.size else float(aff.max()), 1e-9)
    im = ax.imshow(aff[np.ix_(order, order)], cmap="viridis", vmin=0.0, vmax=vmax,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="(A + A^T) / 2")
    font = max(4.0, min(9.0, 400.0 / max(c, 1)))
    ticks = np.arange(c)
    ax.set_xticks(ticks, [names[i] for i in order], rotation=90, fontsize=font)
    ax.set_yticks(ticks, [names[i] for i in order], fontsize=font)
    bounds = np.cumsum(np.bincount(clusters, minlength=k))[:-1] - 0.5
    for b in bounds:
        ax.axhline(b, color="white", lw=1.2)
        ax.axvline(b, color="white", lw=1.2)
    ax.set_title(title or f"Label co-occurrence clustered into {k} contexts")
    side.axis("off")
    lines = []
    for j in range(k):
        members = [names[i] for i in np.flatnonzero(clusters == j)]
        lines.append(f"context {j} ({len(members)}): " + ", ".join(members))
    text = "\n".join(textwrap.fill(line, width=48, subsequent_indent="    ") for line in lines)
    side.text(0.0, 1.0, text, va="top", ha="left", fontsize=max(5.0, min(8.0, font)),
              family="monospace", transform=side.transAxes)
    return save_figure(fig, path)


__all__ = ["plot_contexts"]
