"""The demo's last step: the trained VLPL model tags fresh toy scenes it has never seen.

The scenes are those of `vlml sample-photos`'s `new/` folder (the seed between the demo world's
pool and test seeds), so their true tags are known; the tagger uses the run's thresholds
(calibrated on the validation scenes at the end of training). `tag_fresh_scenes` returns the
rows for `metrics.json` and draws `tagging.png`: each scene with its predicted and true tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlml.data import toy
from vlml.demo.photos import new_scene_seed

N_SCENES = 12


def _f1(pred: set[str], true: set[str]) -> float:
    return 2 * len(pred & true) / max(len(pred) + len(true), 1)


def _grid(images: list[np.ndarray], rows: list[dict[str, Any]], path: Path) -> Path:
    """A grid of the scenes, each titled with its predicted and true tags."""
    from vlml.report.plots import plt, save_figure

    cols = 4
    n_rows = -(-len(images) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 3.4 * n_rows))
    for ax, image, row in zip(np.ravel(axes), images, rows, strict=False):
        ax.imshow(image)
        ok = set(row["tags"]) == set(row["true"])
        ax.set_title(f"tagged: {', '.join(row['tags']) or '-'}\ntrue: {', '.join(row['true'])}",
                     fontsize=7, color="black" if ok else "firebrick")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("Fresh scenes tagged by the trained VLPL model (red: not exactly right)")
    return save_figure(fig, path)


def tag_fresh_scenes(run_dir: Path, out: Path, seed: int, n: int = N_SCENES) -> dict[str, Any]:
    """Tag `n` fresh scenes of demo world `seed` with the run in `run_dir`; draw
    `out/tagging.png`. Returns {"n", "thresholds", "mean_f1", "exact", "rows", "plot"}."""
    from vlml.predict import Tagger

    scenes = [toy.render_scene(new_scene_seed(seed), i) for i in range(n)]
    tagger = Tagger.from_run(run_dir)
    tags = tagger.tag([Image.fromarray(s.image) for s in scenes])
    rows = [{"scene": i, "tags": list(tagged), "true": sorted(set(scene.class_names))}
            for i, (scene, tagged) in enumerate(zip(scenes, tags.tags, strict=True))]
    f1 = [_f1(set(r["tags"]), set(r["true"])) for r in rows]
    plot = _grid([s.image for s in scenes], rows, out / "tagging.png")
    return {"n": n, "thresholds": tagger.resolve_thresholds(None)[1],
            "mean_f1": float(np.mean(f1)),
            "exact": int(sum(set(r["tags"]) == set(r["true"]) for r in rows)),
            "rows": rows, "plot": plot.name}
