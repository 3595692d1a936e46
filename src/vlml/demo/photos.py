"""Sample photos for trying the own-images path: toy scenes written as image files with the
kind of labels a user has, and nothing else (no catalog, no ground truth beside them).

`write_sample_photos(out)` writes, for demo world `seed` (the demo's scenes):

    out/classes.txt             the 16 class names, one per line
    out/train/NNNNNN.png        the training photos
    out/train/tags.csv          one tag per photo (`image,positives`): a quick single tag
    out/train/tags_few.csv      5% of the photos fully tagged (`positives` and `negatives`),
                                the others untagged
    out/test/NNNNNN.png, out/test/tags.csv   test photos with every present class tagged
    out/val/NNNNNN.png, out/val/tags.csv     a few more fully tagged photos (to calibrate the
                                decision thresholds, `vlml calibrate`)
    out/new/NNNNNN.png          untagged photos (to tag with a trained model)

The single tag is drawn as the SPML protocol draws it (`vlml.regimes.single_positive`, seed
1200) and the fully tagged share as the SSMLL one (`labeled_indices`, seed 1), so runs on these
files match the benchmark regimes on the same scenes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from vlml import regimes
from vlml.data import toy
from vlml.demo.world import world_seeds
from vlml.fileio import write_text_atomic
from vlml.progress import bar
from vlml.regimes.semi_supervised import labeled_indices
from vlml.types import Catalog

# the new and val photos are scenes of the seed between the demo world's pool and test seeds:
# new ones from index 0, val ones from this index on
VAL_START = 100_000


def new_scene_seed(seed: int) -> int:
    """Toy seed of the `new/` (and `val/`) photos of demo world `seed`."""
    return world_seeds(seed)[0] + 1


def _render(folder: Path, seed: int, n: int, progress: bool, start: int = 0
            ) -> tuple[list[str], np.ndarray]:
    """PNG scenes start..start+n-1 of toy world `seed` in `folder`; (file names, (n, C) 0/1
    truth)."""
    folder.mkdir(parents=True, exist_ok=True)
    names, classes = [], []
    for i in bar(range(start, start + n), enabled=progress, desc=f"photos ({folder.name})",
                 unit="img"):
        scene = toy.render_scene(seed, i)
        names.append(f"{i:06d}.png")
        Image.fromarray(scene.image).save(folder / names[-1], compress_level=1)
        classes.append(scene.classes)
    return names, toy.labels_of(classes)


def _csv(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _names(row: np.ndarray, value: int) -> str:
    return "|".join(toy.TOY_CLASSES[c] for c in np.flatnonzero(row == value))


def write_sample_photos(out: str | Path, seed: int = 0, n_train: int = 1500, n_test: int = 600,
                        n_new: int = 16, n_val: int = 200, labelled_share: float = 0.05,
                        progress: bool = True) -> Path:
    """Write the sample photos and tag files (module docstring) under `out`; returns it."""
    out = Path(out)
    pool_seed, test_seed = world_seeds(seed)
    names, truth = _render(out / "train", pool_seed, n_train, progress)
    tags = regimes.single_positive(Catalog(names, toy.TOY_CLASSES, truth)).labels
    write_text_atomic(out / "train" / "tags.csv", _csv(
        [{"image": n, "positives": _names(t, 1)} for n, t in zip(names, tags, strict=True)],
        ("image", "positives")))
    full = set(labeled_indices(n_train, labelled_share).tolist())
    write_text_atomic(out / "train" / "tags_few.csv", _csv(
        [{"image": n, "positives": _names(t, 1) if i in full else "",
          "negatives": _names(t, 0) if i in full else ""}
         for i, (n, t) in enumerate(zip(names, truth, strict=True))],
        ("image", "positives", "negatives")))
    for split, split_seed, n, start in (("test", test_seed, n_test, 0),
                                        ("val", new_scene_seed(seed), n_val, VAL_START)):
        split_names, split_truth = _render(out / split, split_seed, n, progress, start)
        write_text_atomic(out / split / "tags.csv", _csv(
            [{"image": n, "positives": _names(t, 1)}
             for n, t in zip(split_names, split_truth, strict=True)], ("image", "positives")))
    _render(out / "new", new_scene_seed(seed), n_new, progress)
    write_text_atomic(out / "classes.txt", "\n".join(toy.TOY_CLASSES) + "\n")
    return out
