"""COCO reader: tiny instances files in the real layout, ordering rules, every error path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import vlml.data
from fixtures import COCO_CATEGORIES as CATEGORIES
from fixtures import coco_file_name as file_name
from fixtures import coco_instances as instances
from fixtures import make_coco
from vlml.data.coco import read_coco
from vlml.errors import DataError


def test_labels_order_and_paths(tmp_path: Path) -> None:
    cat = read_coco(make_coco(tmp_path), "val2014")
    # ids as strings: "10" < "100" < "9"; image 55 has no annotation and is dropped
    assert cat.image_paths == tuple(f"val2014/{file_name('val2014', i)}" for i in (10, 100, 9))
    assert cat.class_names == ("dog", "person", "car")
    np.testing.assert_array_equal(cat.labels, np.array([[0, 1, 1],    # 10: car, person
                                                        [1, 0, 0],    # 100: dog (twice)
                                                        [0, 1, 0]],   # 9: person
                                                       dtype=np.int8))
    assert cat.labels.dtype == np.int8 and cat.true_labels is None
    assert cat.split == "val2014"
    assert Path(cat.root) == tmp_path.absolute()
    assert cat.provenance[0]["step"] == "read" and cat.provenance[0]["dataset"] == "coco"
    assert all(p.is_file() for p in cat.full_paths())


def test_string_order_matches_cole_formula(tmp_path: Path) -> None:
    """Cole's format_coco.py: sorted(np.unique([str(image_id) ...])) then int."""
    rng = np.random.default_rng(0)
    ids = rng.choice(100_000, size=300, replace=False).tolist()
    data = instances("train2017")
    data["images"] = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
    data["annotations"] = [{"id": k, "image_id": i, "category_id": CATEGORIES[k % 3]["id"]}
                           for k, i in enumerate(ids[:250])]
    root = tmp_path
    (root / "annotations").mkdir()
    (root / "train2017").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    cat = vlml.data.load("coco", root=root, split="train2017")
    reference = np.array(sorted(np.unique([str(i) for i in ids[:250]])), dtype=int)
    assert cat.image_paths == tuple(f"train2017/{i:012d}.jpg" for i in reference)
    col = {i: k % 3 for k, i in enumerate(ids[:250])}
    assert [int(np.flatnonzero(r)[0]) for r in cat.labels] == [col[i] for i in reference]


def test_annotations_override_path(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    other = tmp_path / "elsewhere.json"
    (root / "annotations" / "instances_val2014.json").rename(other)
    cat = read_coco(root, "val2014", annotations=other)
    assert cat.n_images == 3


# ---- errors -----------------------------------------------------------------------------------

def test_missing_annotation_file_lists_found_splits(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    with pytest.raises(DataError) as e:
        read_coco(root, "train2014")
    assert "instances_train2014.json" in str(e.value) and "val2014" in str(e.value)


def test_missing_image_folder(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    for p in (root / "val2014").iterdir():
        p.unlink()
    (root / "val2014").rmdir()
    with pytest.raises(DataError, match="val2014"):
        read_coco(root, "val2014")


def test_unknown_category_names_file_and_annotation(tmp_path: Path) -> None:
    data = instances()
    data["annotations"].append({"id": 777, "image_id": 9, "category_id": 2})
    root = make_coco(tmp_path, data=data)
    with pytest.raises(DataError) as e:
        read_coco(root, "val2014")
    msg = str(e.value)
    assert "instances_val2014.json" in msg and "annotation id 777" in msg
    assert "category_id 2" in msg


def test_unknown_image_names_file_and_annotation(tmp_path: Path) -> None:
    data = instances()
    data["annotations"].append({"id": 778, "image_id": 12345, "category_id": 3})
    root = make_coco(tmp_path, data=data)
    with pytest.raises(DataError) as e:
        read_coco(root, "val2014")
    msg = str(e.value)
    assert "instances_val2014.json" in msg and "annotation id 778" in msg and "12345" in msg


def test_malformed_json_names_position(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    path = root / "annotations" / "instances_val2014.json"
    path.write_text('{"images": [],\n  "annotations": [\n    {"id": 1,, }]}')
    with pytest.raises(DataError) as e:
        read_coco(root, "val2014")
    msg = str(e.value)
    assert "instances_val2014.json" in msg and "line 3 column 14" in msg


@pytest.mark.parametrize("drop", ["categories", "images", "annotations"])
def test_missing_top_level_key(tmp_path: Path, drop: str) -> None:
    data = instances()
    del data[drop]
    with pytest.raises(DataError, match=f"missing top-level key '{drop}'"):
        read_coco(make_coco(tmp_path, data=data), "val2014")


@pytest.mark.parametrize("section,key", [("annotations", "category_id"),
                                         ("annotations", "image_id"),
                                         ("images", "file_name"), ("categories", "name")])
def test_missing_entry_key(tmp_path: Path, section: str, key: str) -> None:
    data = instances()
    del data[section][1][key]
    root = make_coco(tmp_path, data=data)
    with pytest.raises(DataError) as e:
        read_coco(root, "val2014")
    assert f"{section}[1] lacks key '{key}'" in str(e.value)
    assert "instances_val2014.json" in str(e.value)


def test_non_integer_image_id(tmp_path: Path) -> None:
    data = instances()
    data["annotations"][2]["image_id"] = "100"
    with pytest.raises(DataError, match=r"annotations\[2\] has image_id='100'"):
        read_coco(make_coco(tmp_path, data=data), "val2014")


def test_duplicate_category_id(tmp_path: Path) -> None:
    data = instances()
    data["categories"].append({"id": 3, "name": "truck"})
    with pytest.raises(DataError, match="category id 3 appears twice"):
        read_coco(make_coco(tmp_path, data=data), "val2014")


def test_no_annotations(tmp_path: Path) -> None:
    data = instances()
    data["annotations"] = []
    with pytest.raises(DataError, match="'annotations' is empty"):
        read_coco(make_coco(tmp_path, data=data), "val2014")


# ---- scale ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train2014_scale(tmp_path: Path) -> None:
    """600k annotations over 82k images (train2014's size) read in a few seconds."""
    rng = np.random.default_rng(1)
    n_img, n_ann = 82_783, 604_907
    img_ids = rng.choice(600_000, size=n_img, replace=False)
    cats = [{"id": int(i), "name": f"c{i}"} for i in rng.permutation(np.arange(1, 91))[:80]]
    ann_img = img_ids[rng.integers(0, n_img, size=n_ann)]
    ann_cat = np.array([c["id"] for c in cats])[rng.integers(0, 80, size=n_ann)]
    data = {"images": [{"id": int(i), "file_name": f"{i:012d}.jpg"} for i in img_ids],
            "annotations": [{"id": k, "image_id": int(i), "category_id": int(c),
                             "bbox": [1.0, 2.0, 3.0, 4.0], "area": 12.0, "iscrowd": 0}
                            for k, (i, c) in enumerate(zip(ann_img, ann_cat, strict=True))],
            "categories": cats}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    del data
    start = time.perf_counter()
    cat = read_coco(tmp_path, "train2014")
    elapsed = time.perf_counter() - start
    assert cat.labels.shape == (np.unique(ann_img).size, 80)
    assert cat.labels.sum() == np.unique(ann_img * 100 + ann_cat).size
    assert elapsed < 20, elapsed
