"""`Tagger`: a trained run, or a zero-shot CLIP, that tags images.

>>> tagger = Tagger.from_run("runs/vlpl")                           # doctest: +SKIP
>>> tags = tagger.tag("photos/new", top_k=3)                        # doctest: +SKIP
>>> tags.tags[0], tags.scores.shape                                 # doctest: +SKIP
(('dog', 'bicycle'), (400, 16))
>>> zs = Tagger.zero_shot("toy-clip", ["red circle", "blue square"])  # doctest: +SKIP

Scores are the run's own probabilities from pixels (`vlml.models.image_model`: the frozen
encoder's forward and the head, equal to the run's test scores to 1e-6). Thresholds (per
class): a run's `thresholds.json` (`vlml.thresholds`, calibrated on validation data or by
`vlml calibrate`), else 0.5 for every class; zero-shot: 0.3 for every class on the softmax
scores, VLPL's pseudo-label threshold theta (docs/methods.md: a class is a pseudo-positive where
its softmax over the classes at tau = 0.03 exceeds theta = 0.3), so at most 3 tags per image.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlml.errors import ConfigError, DataError
from vlml.predict.sources import ImageSources, resolve_images, to_pil
from vlml.predict.tags import CALIBRATED, Tags, check_top_k, decide, parse_threshold
from vlml.thresholds import DEFAULT, Thresholds

ZERO_SHOT_THRESHOLD = 0.3  # VLPL's theta (pseudo-positive where the softmax score > theta)
ZERO_SHOT_TAU = 0.03  # VLPL's tau on VOC/NUS/CUB


def check_class_names(names: Any, where: str = "class_names") -> tuple[str, ...]:
    """Class names for a zero-shot tagger: a non-empty list of distinct, non-blank strings
    (at least 2: the scores are a softmax over the classes).

    Raises:
        ConfigError: naming the offending name and its position.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"{where}: expected a list of class names, got "
                          f"{type(names).__name__} {names!r}")
    if not names:
        raise ConfigError(f"{where}: the class list is empty; expected at least two names")
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ConfigError(f"{where}: class {i + 1} is {type(name).__name__} {name!r}; "
                              "expected a string")
        if not name.strip():
            raise ConfigError(f"{where}: class {i + 1} is an empty name ({name!r}); every "
                              "class needs a name")
        if name in first:
            raise ConfigError(f"{where}: class name {name!r} appears twice (classes "
                              f"{first[name] + 1} and {i + 1}); names must be unique")
        first[name] = i
    if len(names) < 2:
        raise ConfigError(f"{where}: one class ({names[0]!r}); zero-shot scores are a softmax "
                          "over the classes, which needs at least two (add the alternatives)")
    return tuple(names)


class _Images(Dataset):
    """Item i -> (i, preprocessed (3, H, W) image or zeros, "" or why it could not be read)."""

    def __init__(self, sources: ImageSources, transform: Any, size: tuple[int, int],
                 start: int) -> None:
        self.sources, self.transform, self.size, self.start = sources, transform, size, start

    def __len__(self) -> int:
        return len(self.sources) - self.start

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        from PIL import Image

        row = self.start + i
        item = self.sources.items[row]
        if not isinstance(item, str):
            return row, self.transform(to_pil(item)), ""
        try:
            with Image.open(item) as im:
                return row, self.transform(im.convert("RGB")), ""
        except FileNotFoundError:
            reason = "file not found"
        except IsADirectoryError:
            reason = "a folder, not an image file"
        except Exception as e:  # PIL raises many types for corrupt data
            reason = f"not a readable image ({type(e).__name__}: {e})"
            with contextlib.suppress(OSError):
                if os.path.getsize(item) == 0:
                    reason = "an empty file (0 bytes)"
        return row, torch.zeros(3, *self.size), reason


def bad_images_error(bad: list[tuple[str, str]]) -> DataError:
    """The error for unreadable images met in one batch, naming each."""
    listed = "\n".join(f"  {path}: {reason}" for path, reason in bad)
    return DataError(f"{len(bad)} unreadable image(s):\n{listed}\nfix or remove them, or pass "
                     "skip_bad=True (--skip-bad-images) to tag the rest and list these")


class Tagger:
    """Images in, tags and per-class scores out.

    Attributes:
        model: the `ImageModel` (pixels -> (B, C) probabilities), on `device`, eval mode.
        class_names: C class names, the columns of the scores.
        thresholds: the default per-class `Thresholds` (see the module docstring).
        device: where the model runs.
        identity: JSON-ready description of the model (what a resumed output must match).
        source: "run" or "zero-shot".
    """

    def __init__(self, model: Any, class_names: Sequence[str], thresholds: Thresholds, *,
                 device: torch.device, identity: dict[str, Any], source: str) -> None:
        if tuple(thresholds.class_names) != tuple(class_names):
            raise DataError(f"the thresholds' classes {list(thresholds.class_names)[:5]} differ "
                            f"from the model's {list(class_names)[:5]}", "thresholds")
        self.model = model
        self.model.module.to(device).eval()
        self.class_names = tuple(class_names)
        self.thresholds = thresholds
        self.device = device
        self.identity = identity
        self.source = source

    def __repr__(self) -> str:
        return (f"Tagger({self.source}, {self.model.kind}, {len(self.class_names)} classes, "
                f"device={str(self.device)!r})")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device | None = None) -> Tagger:
        """The finished run in `run_dir` (`vlml.runs.load`) with its `thresholds.json`, else 0.5
        for every class. A missing weights file or other encoder weights raise there."""
        from vlml import runs, thresholds
        from vlml.encoders.weights import sha256_file

        run = runs.load(run_dir, device=device)
        stored = thresholds.load(run.path)
        if stored is not None and tuple(stored.class_names) != tuple(run.class_names):
            raise DataError(f"thresholds.json names the classes {list(stored.class_names)[:5]}"
                            f"... but the run's are {run.class_names[:5]}...; re-run `vlml "
                            "calibrate`", str(run.path / thresholds.FILE))
        identity = {"source": "run", "run": str(run.path.absolute()),
                    "recipe": run.record.get("recipe"),
                    "weights_sha256": sha256_file(run.path / run.record["weights"]),
                    "encoder": (run.record.get("encoder") or {}).get("identity")}
        return cls(run.image_model(), run.class_names,
                   stored or Thresholds.constant(run.class_names, DEFAULT), device=run.device,
                   identity=identity, source="run")

    @classmethod
    def zero_shot(cls, encoder: Any, class_names: Sequence[str],
                  templates: str | Sequence[str] | None = None, tau: float = ZERO_SHOT_TAU,
                  pretrained: str | None = None,
                  device: str | torch.device | None = None) -> Tagger:
        """CLIP zero-shot over `class_names`: softmax(cos(image, class text) / tau).

        Args:
            encoder: an `vlml.encoders.Encoder`, or a name to load with `pretrained`
                ("toy-clip", "ViT-B-32" with pretrained="openai", ...).
            class_names: two or more distinct, non-blank names.
            templates: prompt template(s) with `{name}` or a template set name (default
                "a photo of a {name}.").
            tau: softmax temperature, > 0.
            pretrained, device: passed to `vlml.encoders.load` when `encoder` is a name.
        """
        from vlml.encoders import prompts
        from vlml.models import image_model

        names = check_class_names(class_names)
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ConfigError(f"tau {tau!r}; expected a temperature > 0 (VLPL: 0.03)")
        resolved = prompts.resolve_templates(templates or prompts.DEFAULT_TEMPLATES)
        if isinstance(encoder, (str, Path)):
            from vlml import encoders

            encoder = encoders.load(str(encoder), pretrained, device=device)
        model = image_model.zero_shot(encoder, list(names), list(resolved), tau=float(tau))
        identity = {"source": "zero-shot", "encoder": encoder.identity, "classes": list(names),
                    "templates": list(resolved), "tau": float(tau)}
        thresholds = Thresholds.constant(names, ZERO_SHOT_THRESHOLD)
        return cls(model, names, thresholds, device=encoder.device, identity=identity,
                   source="zero-shot")

    # ---- thresholds ---------------------------------------------------------------------
    def resolve_thresholds(self, threshold: float | str | None = None) -> tuple[np.ndarray, str]:
        """(C,) thresholds for `threshold` (None: the tagger's own; "calibrated": the run's
        calibrated ones, an error if it has none; a float in [0, 1]: for every class), and
        what they are, in words."""
        threshold = parse_threshold(threshold)
        th = self.thresholds
        n_cal, c = int(th.calibrated.sum()), len(self.class_names)
        if threshold == CALIBRATED and not n_cal:
            where = "a zero-shot tagger has" if self.source == "zero-shot" else \
                f"the run {self.identity.get('run')} has"
            raise ConfigError(f"threshold 'calibrated': {where} no calibrated thresholds; fit "
                              "them with `vlml calibrate RUN_DIR --catalog FILE`, or give a "
                              "number")
        if isinstance(threshold, float):
            return np.full(c, threshold), f"{threshold:g} for every class (given)"
        if n_cal:
            rest = "" if n_cal == c else \
                f"; the other {c - n_cal} keep the default {th.default:g}"
            return th.values.astype(np.float64), (
                f"calibrated per class (target {th.target}, fitted on {th.source or '?'}; "
                f"{n_cal} of {c} classes calibrated{rest})")
        if self.source == "zero-shot":
            return th.values.astype(np.float64), (
                f"{th.default:g} for every class (zero-shot default: VLPL's pseudo-label "
                "threshold theta on the softmax scores)")
        return th.values.astype(np.float64), (
            f"{th.default:g} for every class (default: the run has no calibrated thresholds)")

    # ---- tagging ------------------------------------------------------------------------
    def tag(self, images: Any, threshold: float | str | None = None, top_k: int | None = None,
            batch_size: int = 64, num_workers: int = 0, skip_bad: bool = False,
            progress: bool = False) -> Tags:
        """Tag every image of `images` (files, folders, globs, catalogs, in-memory images:
        `vlml.predict.sources`). Returns one `Tags` record, rows in input order.

        Args:
            threshold: None (the tagger's thresholds), "calibrated", or a float in [0, 1].
            top_k: at most this many tags per image, the highest-scoring above threshold.
            batch_size, num_workers: DataLoader settings.
            skip_bad: leave unreadable images out (listed in `Tags.bad`) instead of raising.
            progress: show a progress bar (images/s) on stderr.

        Raises:
            DataError: no images; unreadable images (all those of the batch where the first
                was met, each named) unless `skip_bad`.
        """
        values, _ = self.resolve_thresholds(threshold)
        k = check_top_k(top_k)
        parts = list(self.iter_tag(images, threshold, top_k, batch_size, num_workers, skip_bad,
                                   progress))
        return Tags.concat(parts, self.class_names, values, k)

    def iter_tag(self, images: Any, threshold: float | str | None = None,
                 top_k: int | None = None, batch_size: int = 64, num_workers: int = 0,
                 skip_bad: bool = False, progress: bool = False) -> Iterator[Tags]:
        """`tag`, one `Tags` record per batch as it finishes: memory stays flat however many
        images there are. Arguments are checked (and the inputs resolved) on the call."""
        batches = self.iter_batches(images, threshold, top_k, batch_size, num_workers,
                                    skip_bad, progress)
        return (part for _, part in batches)

    def iter_batches(self, images: Any, threshold: float | str | None = None,
                     top_k: int | None = None, batch_size: int = 64, num_workers: int = 0,
                     skip_bad: bool = False, progress: bool = False,
                     start: int = 0) -> Iterator[tuple[int, Tags]]:
        """(end, Tags) per batch, from input `start` on; `end` is the position after the
        batch's last image (bad ones included): where a resumed run starts. Arguments are
        checked (and the inputs resolved) on the call, before the first batch."""
        values, _ = self.resolve_thresholds(threshold)
        k = check_top_k(top_k)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size {batch_size!r}; expected an integer >= 1")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers {num_workers!r}; expected an integer >= 0")
        sources = resolve_images(images)
        if not 0 <= start <= len(sources):
            raise ConfigError(f"start {start} is outside [0, {len(sources)}]")
        data = _Images(sources, self.model.preprocess, self.model.image_size, start)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        return self._batches(loader, sources, values, k, skip_bad, progress, start)

    def _batches(self, loader: DataLoader, sources: ImageSources, values: np.ndarray,
                 k: int | None, skip_bad: bool, progress: bool,
                 start: int) -> Iterator[tuple[int, Tags]]:
        from vlml.progress import bar

        shown = bar(total=len(sources), initial=start, enabled=progress, desc="tagging",
                    unit="img")
        try:
            for rows, x, reasons in loader:
                rows_np = rows.numpy().astype(np.int64)
                bad = [(sources.name(int(r)), why) for r, why in zip(rows_np, reasons,
                                                                       strict=True) if why]
                if bad and not skip_bad:
                    raise bad_images_error(bad)
                keep = np.array([not why for why in reasons], dtype=bool)
                if keep.all():
                    scores = self._scores(x)
                elif keep.any():
                    scores = self._scores(x[torch.from_numpy(keep)])
                else:
                    scores = np.zeros((0, len(self.class_names)), np.float32)
                index = rows_np[keep]
                part = Tags([sources.name(int(i)) for i in index], scores,
                            decide(scores, values, k), self.class_names, values, index, bad, k)
                shown.update(len(rows_np))
                yield int(rows_np[-1]) + 1, part
        finally:
            shown.close()

    def _scores(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed -> (B, C) float32 probabilities (on the CPU)."""
        with torch.no_grad():
            out = self.model.module(x.to(self.device, torch.float32))
        return out.float().cpu().numpy()
