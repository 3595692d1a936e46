"""Tiny datasets written in their real on-disk formats, shared by the reader tests
(tests/test_data_*.py) and the registry-driven contract tests (tests/test_contracts.py).

`DATASET_FIXTURES` maps every registered dataset name to a writer `(folder) -> LoadCase`: where
to point `vlml.data.load`, which split and options, and what the catalog must hold. Registering
a dataset reader without adding a writer here fails tests/test_contracts.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlml.data.voc import VOC_CLASSES

# ---- PASCAL VOC ---------------------------------------------------------------------------
# Objects per image: (class, difficult). The file order is deliberately not sorted.
VOC_OBJECTS: dict[str, list[tuple[str, int]]] = {
    "000012": [("person", 1), ("car", 0), ("person", 0)],  # difficult first, then not
    "000005": [("chair", 0), ("chair", 1), ("dog", 1)],
    "000009": [("horse", 0), ("person", 1)],
    "000020": [("cat", 1)],   # difficult only: no positive, dropped
    "000031": [],             # nothing at all: dropped
}


def voc_raw_value(objs: list[tuple[str, int]], cls: str) -> int:
    diffs = [d for name, d in objs if name == cls]
    return -1 if not diffs else (1 if 0 in diffs else 0)


def write_voc_xml(path: Path, image_id: str, objs: list[tuple[str, int]]) -> None:
    parts = [f"<annotation><folder>VOC</folder><filename>{image_id}.jpg</filename>"]
    for name, diff in objs:
        # persons get a <part> with its own <name>, as in VOC2012: it must not count as a class
        part = "<part><name>head</name></part>" if name == "person" else ""
        parts.append(f"<object>\n\t<name>{name}</name>\n\t<pose>Left</pose>"
                     f"<truncated>0</truncated><difficult>{diff}</difficult>{part}</object>")
    parts.append("</annotation>")
    path.write_text("\n".join(parts))


def make_voc(base: Path, year: str = "2007", split: str = "trainval",
             objects: dict[str, list[tuple[str, int]]] | None = None,
             newline: str = "\n") -> Path:
    """Write VOCdevkit/VOC<year> under `base` (class files, id list, XMLs, JPEGs); return base."""
    objects = VOC_OBJECTS if objects is None else objects
    voc = base / "VOCdevkit" / f"VOC{year}"
    main = voc / "ImageSets" / "Main"
    for d in (main, voc / "Annotations", voc / "JPEGImages"):
        d.mkdir(parents=True, exist_ok=True)
    for cls in VOC_CLASSES:
        lines = []
        for image_id, objs in objects.items():
            v = voc_raw_value(objs, cls)
            lines.append(f"{image_id}  1" if v == 1 else f"{image_id} {v}")
        (main / f"{cls}_{split}.txt").write_bytes((newline.join(lines) + newline).encode())
    (main / f"{split}.txt").write_bytes((newline.join(objects) + newline).encode())
    for i, (image_id, objs) in enumerate(objects.items()):
        write_voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, objs)
        Image.new("RGB", (8, 6), (i * 40, 10, 200)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    return base


# ---- MS-COCO ------------------------------------------------------------------------------
# Category list deliberately not sorted by id: column order must follow the list.
COCO_CATEGORIES = [{"id": 18, "name": "dog", "supercategory": "animal"},
                   {"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"}]
COCO_IMAGE_IDS = [9, 10, 100, 55]  # 55 has no annotation
COCO_ANNOTATIONS = [  # (annotation id, image id, category id)
    (1, 9, 1), (2, 100, 18), (3, 100, 18), (4, 10, 3), (5, 10, 1),
]


def coco_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def coco_instances(split: str = "val2014") -> dict[str, Any]:
    return {
        "info": {"year": 2014}, "licenses": [],
        "images": [{"id": i, "file_name": coco_file_name(split, i), "width": 8, "height": 6}
                   for i in COCO_IMAGE_IDS],
        "annotations": [{"id": a, "image_id": i, "category_id": c, "iscrowd": 0,
                         "bbox": [0, 0, 1, 1], "area": 1.0, "segmentation": [[0, 0, 1, 1]]}
                        for a, i, c in COCO_ANNOTATIONS],
        "categories": [dict(c) for c in COCO_CATEGORIES],
    }


def make_coco(root: Path, split: str = "val2014", data: dict[str, Any] | None = None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    data = coco_instances(split) if data is None else data
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    for im in data.get("images", []):
        if "file_name" in im:
            Image.new("RGB", (8, 6), (90, 20, 200)).save(root / split / im["file_name"])
    return root


# ---- CUB-200-2011 -------------------------------------------------------------------------
CUB_ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger",
                  "has_wing_color::blue", "has_size::small_(5_-_9_in)"]
CUB_IMAGES = {  # image_id: (relative path, is_training_image)
    1: ("001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1),
    2: ("001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 0),
    3: ("002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", 1),
    4: ("002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg", 0),
    5: ("200.Common_Yellowthroat/Common_Yellowthroat_0055_190967.jpg", 1),
}
CUB_PRESENT = np.array([[1, 0, 0, 1],   # image 1
                        [0, 1, 0, 0],   # image 2
                        [0, 1, 1, 0],   # image 3
                        [1, 1, 1, 1],   # image 4
                        [0, 0, 0, 0]],  # image 5
                       dtype=np.int8)


def cub_label_lines() -> list[str]:
    return [f"{i} {a} {CUB_PRESENT[i - 1, a - 1]} {1 + (i + a) % 4} {i * 1.25 + a:.4f}"
            for i in CUB_IMAGES for a in range(1, len(CUB_ATTRIBUTES) + 1)]


def make_cub(parent: Path, attributes_inside: bool = False, newline: str = "\n") -> Path:
    """Write the official tarball layout under `parent`; return `parent`."""
    base = parent / "CUB_200_2011"
    (base / "attributes").mkdir(parents=True)
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, (p, _) in CUB_IMAGES.items()))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n"
                                                       for i, (_, t) in CUB_IMAGES.items()))
    names = "".join(f"{a} {n}\n" for a, n in enumerate(CUB_ATTRIBUTES, start=1))
    where = base / "attributes" / "attributes.txt" if attributes_inside \
        else parent / "attributes.txt"
    where.write_text(names)
    lines = cub_label_lines()
    lines[9] += " 0"  # an extra trailing field, as on a few lines of the real file
    (base / "attributes" / "image_attribute_labels.txt").write_bytes(
        (newline.join(lines) + newline).encode())
    for i, (p, _) in CUB_IMAGES.items():
        (base / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (i * 40, 90, 10)).save(base / "images" / p)
    return parent


# ---- Cole et al. formatted arrays (and NUS-WIDE through them) -------------------------------
# Ground truth (0/1) and reference observed labels (+1 pos, -1 neg, 0 unknown) for 3 images.
COLE_TRUTH = np.array([[1, 0, 1],
                       [0, 1, 0],
                       [0, 1, 1]], dtype=np.float64)
COLE_REF_OBS = np.array([[1, -1, 0],
                         [0, 1, 0],
                         [-1, 0, 0]], dtype=np.float64)
COLE_PATHS = ["a/img0.jpg", "a/img1.jpg", "b/img2.jpg"]


def cole_images(root: Path, paths: list[str]) -> None:
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (200, 10, 10)).save(root / p)


def save_cole_reference(root: Path, split: str, paths: list[str], truth: np.ndarray,
                        obs: np.ndarray | None = None) -> None:
    """Write arrays as the reference format_*.py / generate_observed_labels.py scripts do."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"formatted_{split}_images.npy", np.array(paths))
    np.save(root / f"formatted_{split}_labels.npy", truth)
    if obs is not None:
        np.save(root / f"formatted_{split}_labels_obs.npy", obs)


def make_nuswide(root: Path, n: int = 4) -> np.ndarray:
    """NUS-WIDE's val split as formatted arrays (81 classes) and Flickr/ images; the truth."""
    rng = np.random.default_rng(0)
    truth = (rng.random((n, 81)) < 0.05).astype(np.float64)
    truth[1] = 0  # an image without any positive (about 22% of NUS-WIDE)
    paths = [f"actor/{i}.jpg" for i in range(n)]
    cole_images(root / "Flickr", paths)
    save_cole_reference(root, "val", paths, truth)
    return truth


# ---- your own images: folder tree and manifest ----------------------------------------------
def folder_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 3), (10, 200, 30)).save(path)


def make_folder_tree(root: Path) -> Path:
    """cat: 1.jpg 2.png | dog: 2.png 3.JPG notes.txt | zebra: (empty) | .hidden: 9.jpg"""
    for rel in ["cat/1.jpg", "cat/2.png", "dog/2.png", "dog/3.JPG", ".hidden/9.jpg"]:
        folder_image(root / rel)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "zebra").mkdir()
    (root / "README.md").write_text("ignored")
    return root


MANIFEST_IMAGES = ["img/a.jpg", "img/b.png", "img/c.jpg", "img/d.jpg"]
# (image, positives, negatives, unknowns, split)
MANIFEST_ROWS = [
    ("img/a.jpg", ["cat", "dog"], [], [], "train"),
    ("img/b.png", ["dog"], ["cat"], ["bird"], "train"),
    ("img/c.jpg", [], [], ["car"], "test"),
    ("img/d.jpg", ["bird"], [], [], "test"),
]


def manifest_images(folder: Path, paths: list[str] = MANIFEST_IMAGES) -> None:
    for p in paths:
        (folder / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (5, 5), (0, 100, 200)).save(folder / p)


def write_manifest_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = (
        "image", "positives", "negatives", "unknowns", "split"), sep: str = "|") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for image, pos, neg, unk, split in rows:
            full = {"image": image, "positives": sep.join(pos), "negatives": sep.join(neg),
                    "unknowns": sep.join(unk), "split": split}
            w.writerow([full[h] for h in header])
    return path


def write_manifest_jsonl(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w") as f:
        for image, pos, neg, unk, split in rows:
            f.write(json.dumps({"image": image, "positives": pos, "negatives": neg,
                                "unknowns": unk, "split": split}) + "\n")
    return path


# ---- one load case per registered dataset ---------------------------------------------------
@dataclass(frozen=True)
class LoadCase:
    """How to load a written fixture through `vlml.data.load`, and what must come back."""

    root: Path
    split: str | None
    class_names: tuple[str, ...]
    n_images: int
    options: dict[str, Any] = field(default_factory=dict)


def _voc(year: str, split: str) -> Callable[[Path], LoadCase]:
    def write(folder: Path) -> LoadCase:
        return LoadCase(make_voc(folder, year=year, split=split), split, VOC_CLASSES, 3)
    return write


def _coco(folder: Path) -> LoadCase:
    return LoadCase(make_coco(folder), "val2014", ("dog", "person", "car"), 3)


def _cub(folder: Path) -> LoadCase:
    return LoadCase(make_cub(folder), "train", tuple(CUB_ATTRIBUTES), 3)


def _cole(folder: Path) -> LoadCase:
    cole_images(folder, COLE_PATHS)
    save_cole_reference(folder, "train", COLE_PATHS, COLE_TRUTH, COLE_REF_OBS)
    return LoadCase(folder, "train", ("a", "b", "c"), 3, {"class_names": ["a", "b", "c"]})


def _nuswide(folder: Path) -> LoadCase:
    make_nuswide(folder)
    names = tuple(f"tag{i}" for i in range(81))
    return LoadCase(folder, "val", names, 4, {"class_names": list(names)})


def _manifest(folder: Path) -> LoadCase:
    manifest_images(folder)
    path = write_manifest_csv(folder / "labels.csv", MANIFEST_ROWS)
    return LoadCase(path, "train", ("bird", "car", "cat", "dog"), 2)


def _folder(folder: Path) -> LoadCase:
    return LoadCase(make_folder_tree(folder), "any", ("cat", "dog", "zebra"), 3)


UNTAGGED_IMAGES = ["b.jpg", "a/2.PNG", "a/1.jpeg", "a/deep/x.webp"]


def make_untagged(root: Path) -> Path:
    """A flat-ish folder of untagged images plus what the images reader must skip: a text
    file, a hidden file and a hidden folder."""
    for rel in [*UNTAGGED_IMAGES, ".hidden/9.jpg", "a/.thumb.jpg"]:
        folder_image(root / rel)
    (root / "notes.txt").write_text("not an image")
    return root


def _images(folder: Path) -> LoadCase:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("cat\ndog\n")
    return LoadCase(make_untagged(folder / "photos"), "any", ("cat", "dog"),
                    len(UNTAGGED_IMAGES), {"classes": str(folder / "classes.txt")})


def _toy(folder: Path) -> LoadCase:
    from vlml.data.toy import TOY_CLASSES

    return LoadCase(folder, "val", tuple(TOY_CLASSES), 3, {"n_images": 3, "progress": False})


DATASET_FIXTURES: dict[str, Callable[[Path], LoadCase]] = {
    "voc2007": _voc("2007", "trainval"), "voc2012": _voc("2012", "train"), "coco": _coco,
    "cub": _cub, "cole": _cole, "nuswide": _nuswide, "manifest": _manifest, "folder": _folder,
    "images": _images, "toy": _toy,
}
