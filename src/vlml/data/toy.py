"""The embedded toy world: seeded procedural multi-label scenes written as a normal `Catalog`.

Each scene is a small RGB image (default 64x64) on a textured background with 1-4 objects from
16 classes. A class is a (colour, shape) pair out of 8 colours x 8 shapes, and every colour and
every shape belongs to two classes, so a model must bind colour to shape. The classes form four
groups of four that tend to appear together (the context CBSA can learn). Objects occlude each
other but each keeps at least `MIN_VISIBLE` of its area in view; Gaussian pixel noise is added.

Scene `i` of the world with seed `s` depends only on `(s, i)`, so any subset is reproducible and
different seeds give disjoint worlds. Seeds from `PRETRAIN_SEED` (10,000) up are used to
pre-train the shipped tiny CLIP; the default splits use small seeds.

>>> cat = generate_toy(Path("toy"), n_images=100, seed=1, split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlml.data.toy_captions import caption_for
from vlml.errors import ConfigError, DataError
from vlml.progress import bar
from vlml.types import LABEL_DTYPE, LABELS_GROUND_TRUTH, LABELS_KEY, Catalog

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "ring", "cross", "star", "bar", "crescent")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35), "green": (40, 175, 60), "blue": (45, 85, 225),
    "yellow": (235, 215, 40), "purple": (150, 55, 195), "orange": (250, 140, 25),
    "cyan": (40, 205, 215), "white": (245, 245, 245),
}
_COLOUR_NAMES = tuple(COLOURS)

# Shape s comes in colour s and colour s+3 (mod 8): each colour and each shape is in two classes.
TOY_CLASSES: tuple[str, ...] = tuple(
    f"{_COLOUR_NAMES[(s + k) % 8]} {SHAPES[s]}" for s in range(8) for k in (0, 3))
# Four groups of four classes; within a group colours and shapes are all different, and the two
# classes of a shape (or of a colour) are in different groups.
TOY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("red circle", "green square", "cyan ring", "white cross"),
    ("blue triangle", "yellow ring", "red star", "green bar"),
    ("purple cross", "orange star", "blue crescent", "yellow circle"),
    ("cyan bar", "white crescent", "purple square", "orange triangle"),
)
N_OBJECTS_P = (0.2, 0.3, 0.3, 0.2)  # P(1, 2, 3, 4 objects are attempted)
IN_GROUP_P = 0.8                    # chance each object comes from the scene's group
MIN_VISIBLE = 0.6                   # share of an object's area that must stay visible
PLACEMENT_TRIES = 12
PRETRAIN_SEED = 10_000
# Default splits read by `read_toy`: (world seed, number of images).
TOY_SPLITS: dict[str, tuple[int, int]] = {"train": (1, 5000), "val": (2, 1000), "test": (3, 2000)}

_CLASS_INDEX = {name: i for i, name in enumerate(TOY_CLASSES)}
_GROUP_INDICES = tuple(np.array([_CLASS_INDEX[n] for n in g]) for g in TOY_GROUPS)
_GROUP_OF = np.empty(len(TOY_CLASSES), dtype=np.int64)
for _g, _members in enumerate(_GROUP_INDICES):
    _GROUP_OF[_members] = _g


@dataclass(frozen=True)
class Scene:
    """One rendered scene: `image` (H, W, 3) uint8 and the visible classes (indices into
    `TOY_CLASSES`) in drawing order, back to front."""

    image: np.ndarray
    classes: tuple[int, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(TOY_CLASSES[c] for c in self.classes)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws scene `index` of world `seed` (both non-negative ints)."""
    return np.random.default_rng([int(seed), int(index)])


def sample_classes(rng: np.random.Generator) -> list[int]:
    """1-4 distinct class indices, each from one random group with probability `IN_GROUP_P`."""
    n = int(rng.choice(4, p=N_OBJECTS_P)) + 1
    group = int(rng.integers(len(TOY_GROUPS)))
    inside = list(_GROUP_INDICES[group])
    outside = [c for c in range(len(TOY_CLASSES)) if _GROUP_OF[c] != group]
    chosen: list[int] = []
    for _ in range(n):
        pool = inside if (rng.random() < IN_GROUP_P and inside) else outside
        chosen.append(pool.pop(int(rng.integers(len(pool)))))
    return chosen


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _polygon(points: np.ndarray, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    """Unit-radius `points` (K, 2) rotated by `angle`, scaled by `r`, moved to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    px = cx + r * (points[:, 0] * c - points[:, 1] * s)
    py = cy + r * (points[:, 0] * s + points[:, 1] * c)
    return list(zip(px.tolist(), py.tolist(), strict=True))


def _star_points(n_tips: int, inner: float) -> np.ndarray:
    a = np.pi * np.arange(2 * n_tips) / n_tips - np.pi / 2
    rad = np.where(np.arange(2 * n_tips) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1)


_UNIT_POLYGONS = {
    "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": _star_points(3, 1.0)[::2],
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                       [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "star": _star_points(5, 0.45),
    "bar": np.array([[-1.0, -0.32], [1.0, -0.32], [1.0, 0.32], [-1.0, 0.32]]),
}


def shape_mask(shape: str, cx: float, cy: float, r: float, angle: float,
               size: int) -> np.ndarray:
    """Boolean (size, size) mask of `shape` centred at (cx, cy) px, radius `r` px, rotated by
    `angle` radians."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    if shape in _UNIT_POLYGONS:
        draw.polygon(_polygon(_UNIT_POLYGONS[shape], cx, cy, r, angle), fill=255)
    elif shape in ("circle", "ring", "crescent"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            q = 0.55 * r
            draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
        elif shape == "crescent":
            q, ox, oy = 0.85 * r, cx + 0.5 * r * np.cos(angle), cy + 0.5 * r * np.sin(angle)
            draw.ellipse([ox - q, oy - q, ox + q, oy + q], fill=0)
    else:
        raise ConfigError(f"unknown shape {shape!r}; shapes are {list(SHAPES)}")
    return np.asarray(img) > 0


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 texture in [0, 255]: two muted colours mixed by a smooth,
    striped or checkered pattern."""
    x, y = _grid(size)
    kind = int(rng.integers(3))
    if kind == 0:
        coarse = rng.random((5, 5)).astype(np.float32)
        pattern = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))
    elif kind == 1:
        a, f = rng.uniform(0, np.pi), rng.uniform(2, 8)
        phase = rng.uniform(0, 2 * np.pi)
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(a) + y * np.sin(a)) / size
                                     + phase)
    else:
        k = int(rng.integers(4, 17))
        pattern = ((x // k + y // k) % 2).astype(np.float32)
    hsv = np.stack([rng.random(2), rng.uniform(0, 0.35, 2), rng.uniform(0.15, 0.75, 2)], axis=1)
    rgb = np.asarray(Image.fromarray((hsv[None] * 255).astype(np.uint8), "HSV").convert("RGB"),
                     dtype=np.float32)[0]
    return rgb[0] + pattern[..., None] * (rgb[1] - rgb[0])


def render_scene(seed: int, index: int, size: int = 64) -> Scene:
    """Render scene `index` of world `seed`; a pure function of its arguments."""
    rng = scene_rng(seed, index)
    wanted = sample_classes(rng)
    img = background(rng, size)
    x, y = _grid(size)
    scale = size / 64
    placed: list[int] = []
    visible: list[np.ndarray] = []
    areas: list[int] = []
    for cls in wanted:
        shape = TOY_CLASSES[cls].split(" ", 1)[1]
        for _ in range(PLACEMENT_TRIES):
            r = rng.uniform(7.5, 13.0) * scale
            cx, cy = rng.uniform(r * 0.8, size - r * 0.8, 2)
            mask = shape_mask(shape, cx, cy, r, rng.uniform(0, 2 * np.pi), size)
            area = int(mask.sum())
            if area < 12 * scale * scale:
                continue
            kept = [int((v & ~mask).sum()) for v in visible]
            if all(k >= MIN_VISIBLE * a for k, a in zip(kept, areas, strict=True)):
                break
        else:
            continue  # no room for this object: it is not drawn and not labelled
        visible = [v & ~mask for v in visible] + [mask]
        areas.append(area)
        placed.append(cls)
        colour = np.asarray(COLOURS[TOY_CLASSES[cls].split(" ", 1)[0]], dtype=np.float32)
        colour = colour + rng.normal(0, 12, 3)
        b = rng.uniform(0, 2 * np.pi)
        shade = 1 + rng.uniform(0, 0.25) * ((x - cx) * np.cos(b) + (y - cy) * np.sin(b)) / r
        img[mask] = colour[None] * shade[mask][:, None]
    img += rng.normal(0, rng.uniform(2, 10), img.shape).astype(np.float32)
    return Scene(np.clip(img, 0, 255).round().astype(np.uint8), tuple(placed))


def labels_of(classes: list[tuple[int, ...]]) -> np.ndarray:
    """(N, C) int8 0/1 matrix with a 1 at each scene's visible classes."""
    labels = np.zeros((len(classes), len(TOY_CLASSES)), dtype=LABEL_DTYPE)
    for i, cs in enumerate(classes):
        labels[i, list(cs)] = 1
    return labels


def _generate_step(seed: int, n_images: int, size: int) -> dict[str, object]:
    """The provenance step of a generated toy split (also how `read_toy` recognises one)."""
    return {"step": "generate", "dataset": "toy", "seed": seed, "n_images": n_images,
            "size": size, LABELS_KEY: LABELS_GROUND_TRUTH}


def catalog_path(out_dir: Path, split: str) -> Path:
    return Path(out_dir) / f"{split}.catalog.zip"


def _check_args(n_images: int, seed: int, size: int, split: str) -> None:
    if not isinstance(n_images, int) or n_images < 1:
        raise ConfigError(f"n_images must be a positive int, got {n_images!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(size, int) or size < 32:
        raise ConfigError(f"size must be an int >= 32 (pixels), got {size!r}")
    if not split or "/" in split or "\\" in split:
        raise ConfigError(f"split must be a plain folder name, got {split!r}")


def generate_toy(out_dir: Path, n_images: int, seed: int, size: int = 64, split: str = "train",
                 progress: bool = True) -> Catalog:
    """Render scenes 0..n_images-1 of world `seed` as PNGs under `out_dir/split/` and save the
    catalog to `out_dir/<split>.catalog.zip` (written last, atomically).

    Returns a `Catalog` with full 0/1 labels over `TOY_CLASSES` (provenance: ground truth),
    root `out_dir` made absolute.
    """
    _check_args(n_images, seed, size, split)
    out_dir = Path(out_dir)
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    paths, classes = [], []
    for i in bar(range(n_images), enabled=progress, desc=f"toy scenes ({split})", unit="img"):
        scene = render_scene(seed, i, size)
        rel = f"{split}/{i:06d}.png"
        Image.fromarray(scene.image).save(out_dir / rel, compress_level=1)
        paths.append(rel)
        classes.append(scene.classes)
    catalog = Catalog(
        image_paths=tuple(paths), class_names=TOY_CLASSES, labels=labels_of(classes),
        root=str(out_dir.absolute()), split=split,
        provenance=(_generate_step(seed, n_images, size),))
    catalog.save(catalog_path(out_dir, split))
    return catalog


def read_toy(root: Path, split: str, n_images: int | None = None, seed: int | None = None,
             size: int = 64, progress: bool = True) -> Catalog:
    """The toy split `split` under `root`: loaded if already generated with these settings,
    generated otherwise. `split` is one of `TOY_SPLITS` unless both `n_images` and `seed` are
    given."""
    if split not in TOY_SPLITS and (n_images is None or seed is None):
        raise ConfigError(f"unknown toy split {split!r}; expected one of {list(TOY_SPLITS)} "
                          "or both n_images= and seed=")
    default_seed, default_n = TOY_SPLITS.get(split, (seed, n_images))
    seed = default_seed if seed is None else seed
    n_images = default_n if n_images is None else n_images
    path = catalog_path(root, split)
    if path.is_file():
        try:
            cat = Catalog.load(path)
        except DataError:
            cat = None
        if cat is not None and cat.provenance[:1] == (_generate_step(seed, n_images, size),):
            # the folder may have moved since it was written
            cat = replace(cat, root=str(Path(root).absolute()))
            if all(p.is_file() for p in cat.full_paths()):
                return cat
    return generate_toy(Path(root), n_images, seed, size=size, split=split, progress=progress)


__all__ = ["TOY_CLASSES", "TOY_GROUPS", "TOY_SPLITS", "PRETRAIN_SEED", "SHAPES", "COLOURS",
           "Scene", "caption_for", "generate_toy", "read_toy", "render_scene", "sample_classes",
           "scene_rng", "shape_mask", "background", "labels_of", "catalog_path"]
