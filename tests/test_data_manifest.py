"""Manifest reader: CSV and JSON-lines files of image path + labels by class name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fixtures import MANIFEST_IMAGES as IMAGES
from fixtures import MANIFEST_ROWS as ROWS
from fixtures import manifest_images as _images
from fixtures import write_manifest_csv as _write_csv
from fixtures import write_manifest_jsonl as _write_jsonl
from vlml import data
from vlml.data.manifest import read_class_list, read_manifest
from vlml.errors import ConfigError, DataError
from vlml.types import Catalog

# Sorted union of the names: bird, car, cat, dog. Unlisted -> negative.
EXPECTED = np.array([
    [0, 0, 1, 1],
    [-1, 0, 0, 1],
    [0, -1, 0, 0],
    [1, 0, 0, 0],
], dtype=np.int8)
# The same, unlisted -> unknown (the default).
EXPECTED_UNKNOWN = np.array([
    [-1, -1, 1, 1],
    [-1, -1, 0, 1],
    [-1, -1, -1, -1],
    [1, -1, -1, -1],
], dtype=np.int8)
NEG = {"unlisted": "negative"}


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    _images(tmp_path)
    return _write_csv(tmp_path / "labels.csv", ROWS)


@pytest.fixture
def jsonl_path(tmp_path: Path) -> Path:
    _images(tmp_path)
    return _write_jsonl(tmp_path / "labels.jsonl", ROWS)


# ---- reading --------------------------------------------------------------------------------
def test_csv_hand_computed_matrix(csv_path: Path) -> None:
    cat = read_manifest(csv_path, **NEG)
    assert cat.class_names == ("bird", "car", "cat", "dog")
    assert cat.image_paths == tuple(IMAGES)
    np.testing.assert_array_equal(cat.labels, EXPECTED)
    assert cat.true_labels is None
    assert cat.split == "all" and Path(cat.root) == csv_path.parent.absolute()
    assert all(p.is_file() for p in cat.full_paths())
    step = cat.provenance[0]
    assert step["step"] == "read" and step["dataset"] == "manifest"
    assert step["classes_source"] == "union" and step["unlisted"] == "negative"
    assert step["labels"] == "given"


def test_given_labels_are_not_ground_truth(tmp_path: Path) -> None:
    """A fully tagged manifest (no unknown left) is complete, not verified truth."""
    _images(tmp_path)
    rows = [(r[0], r[1], r[2], [], r[4]) for r in ROWS]
    cat = read_manifest(_write_csv(tmp_path / "full.csv", rows), **NEG)
    assert not (cat.labels == -1).any()
    assert cat.labels_source == "given" and cat.ground_truth is None
    assert cat.complete_labels is cat.labels
    back = Catalog.load(cat.save(tmp_path / "c.zip"))
    assert back.ground_truth is None and back.labels_source == "given"
    sub = back.subset([0, 1])  # later steps carry the provenance forward
    assert sub.ground_truth is None and sub.labels_source == "given"


def test_jsonl_gives_the_same_catalog(jsonl_path: Path) -> None:
    cat = read_manifest(jsonl_path, split="any", **NEG)
    assert cat.class_names == ("bird", "car", "cat", "dog")
    np.testing.assert_array_equal(cat.labels, EXPECTED)
    assert cat.split == "all"


def test_semicolon_separator(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_csv(tmp_path / "m.csv", ROWS, sep=" ; ")
    np.testing.assert_array_equal(read_manifest(path).labels, EXPECTED_UNKNOWN)


def test_unlisted_unknown_is_the_default(csv_path: Path) -> None:
    """One quick tag per photo: a class a row does not name is not known to be absent."""
    cat = read_manifest(csv_path)
    np.testing.assert_array_equal(cat.labels, EXPECTED_UNKNOWN)
    assert cat.provenance[0]["unlisted"] == "unknown"
    np.testing.assert_array_equal(read_manifest(csv_path, unlisted="unknown").labels,
                                  EXPECTED_UNKNOWN)
    with pytest.raises(ConfigError, match="unknown.*negative"):
        read_manifest(csv_path, unlisted="ignore")


def test_split_filter(csv_path: Path, jsonl_path: Path) -> None:
    for path in (csv_path, jsonl_path):
        cat = read_manifest(path, split="test")
        assert cat.split == "test" and cat.image_paths == ("img/c.jpg", "img/d.jpg")
        assert cat.class_names == ("bird", "car", "cat", "dog")  # from every row
        np.testing.assert_array_equal(cat.labels, EXPECTED_UNKNOWN[2:])


def test_split_errors(tmp_path: Path, csv_path: Path) -> None:
    with pytest.raises(DataError, match=r"no row has split 'val'.*\['test', 'train'\]"):
        read_manifest(csv_path, split="val")
    no_split = _write_csv(tmp_path / "nosplit.csv", ROWS,
                          header=("image", "positives", "negatives", "unknowns"))
    assert read_manifest(no_split).n_images == 4
    with pytest.raises(DataError, match="no split column"):
        read_manifest(no_split, split="train")
    partial = _write_csv(tmp_path / "partial.csv", [ROWS[0], (*ROWS[1][:4], "")])
    with pytest.raises(DataError, match=r"partial\.csv:line 3: row has no split value"):
        read_manifest(partial, split="train")


def test_columns_order_free_and_optional(tmp_path: Path) -> None:
    _images(tmp_path)
    path = tmp_path / "m.csv"
    path.write_text("positives,image\ncat|dog,img/a.jpg\n,img/b.png\n")
    cat = read_manifest(path, **NEG)
    assert cat.class_names == ("cat", "dog") and cat.image_paths == ("img/a.jpg", "img/b.png")
    np.testing.assert_array_equal(cat.labels, [[1, 1], [0, 0]])


def test_absolute_image_path(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    _images(other, ["x.jpg"])
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"image": str(other / "x.jpg"), "positives": ["cat"]}) + "\n")
    cat = read_manifest(path)
    assert cat.full_paths() == [other / "x.jpg"]
    assert cat.image_paths == ("elsewhere/x.jpg",)  # inside the root: stored relative


# ---- classes ---------------------------------------------------------------------------------
def test_explicit_classes_set_column_order(csv_path: Path) -> None:
    order = ["dog", "cat", "car", "bird", "horse"]
    cat = read_manifest(csv_path, classes=order, **NEG)
    assert cat.class_names == tuple(order)
    np.testing.assert_array_equal(cat.labels[:, :4], EXPECTED[:, [3, 2, 1, 0]])
    assert (cat.labels[:, 4] == 0).all()
    assert cat.provenance[0]["classes_source"] == "argument"


def test_classes_from_file_and_beside(csv_path: Path, tmp_path: Path) -> None:
    listed = tmp_path / "my_classes.txt"
    listed.write_text("dog\ncat\nbird\ncar\n\n")  # blank lines at the end are fine
    cat = read_manifest(csv_path, classes=listed)
    assert cat.class_names == ("dog", "cat", "bird", "car")
    assert cat.provenance[0]["classes_source"] == f"file:{listed.absolute()}"
    (tmp_path / "classes.txt").write_text("car\nbird\ncat\ndog\n")
    cat = read_manifest(csv_path)
    assert cat.class_names == ("car", "bird", "cat", "dog")
    assert cat.provenance[0]["classes_source"].endswith("classes.txt")


def test_unknown_class_with_explicit_list(csv_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_manifest(csv_path, classes=["bird", "car", "cats", "dog"])
    msg = str(e.value)
    assert f"{csv_path}:line 2" in msg and "'cat'" in msg and "did you mean 'cats'" in msg


def test_class_list_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"c\.txt:line 3: class 'a' repeats.*line 1"):
        read_class_list(path)
    path.write_text("a\n\nb\n")
    with pytest.raises(DataError, match=r"c\.txt:line 2: blank line between class names"):
        read_class_list(path)
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no class names"):
        read_class_list(path)
    with pytest.raises(DataError, match="not found"):
        read_class_list(tmp_path / "none.txt")


# ---- row errors, each naming file and line --------------------------------------------------
def test_positive_and_negative_conflict(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_csv(tmp_path / "m.csv", [ROWS[0], ("img/b.png", ["cat"], ["cat"], [], "x")])
    with pytest.raises(DataError, match=r"m\.csv:line 3: class\(es\) \['cat'\] named both "
                                        "positive and negative"):
        read_manifest(path)


def test_empty_image_field(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_jsonl(tmp_path / "m.jsonl", [ROWS[0], ("  ", ["cat"], [], [], "x")])
    with pytest.raises(DataError, match=r"m\.jsonl:line 2: empty image field"):
        read_manifest(path)


def test_duplicate_image(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_csv(tmp_path / "m.csv", [ROWS[0], ROWS[1], ("img/./a.jpg", ["dog"], [], [],
                                                              "test")])
    with pytest.raises(DataError, match=r"m\.csv:line 4: image 'img/./a.jpg' is listed again "
                                        r"\(first on line 2 as 'img/a.jpg'; both name "):
        read_manifest(path)


def test_malformed_json_line(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_jsonl(tmp_path / "m.jsonl", ROWS[:2])
    with open(path, "a") as f:
        f.write("\n{\"image\": \"img/c.jpg\", \"positives\": [\"cat\"]\n")
    with pytest.raises(DataError, match=r"m\.jsonl:line 4: malformed JSON"):
        read_manifest(path)


def test_jsonl_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"image": "a.jpg", "positives": "cat"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:line 1: 'positives' must be a list"):
        read_manifest(path)
    path.write_text('["a.jpg"]\n')
    with pytest.raises(DataError, match="line 1: expected a JSON object"):
        read_manifest(path)


def test_missing_required_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("image,labels\na.jpg,cat\n")
    with pytest.raises(DataError, match=r"m\.csv:line 1: missing required column\(s\) "
                                        r"\['positives'\]"):
        read_manifest(path)
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"image": "a.jpg", "positives": []}\n{"positives": ["cat"]}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:line 2: missing required key\(s\) "
                                        r"\['image'\]"):
        read_manifest(jl)


def test_too_many_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("image,positives\na.jpg,cat,extra\n")
    with pytest.raises(DataError, match=r"m\.csv:line 2: row has 3 fields"):
        read_manifest(path)


def test_missing_images_named_with_count(tmp_path: Path) -> None:
    _images(tmp_path, IMAGES[:2])
    path = _write_csv(tmp_path / "m.csv", ROWS)
    with pytest.raises(DataError) as e:
        read_manifest(path)
    msg = str(e.value)
    assert f"{path}:line 4" in msg and "img/c.jpg" in msg and "2 of 4" in msg
    assert read_manifest(path, split="train").n_images == 2  # only selected rows are checked
    assert read_manifest(path, check_images=False).n_images == 4


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest file not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(DataError, match="folder was given"):
        read_manifest(tmp_path)
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(DataError, match=r"suffix '\.txt'.*\.csv"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        read_manifest(tmp_path / "e.csv")


# ---- through the registry -------------------------------------------------------------------
def test_registry_load(csv_path: Path, jsonl_path: Path) -> None:
    cat = data.load("manifest", root=csv_path, split=None, unlisted="negative")
    np.testing.assert_array_equal(cat.labels, EXPECTED)
    cat = data.load("manifest", root=jsonl_path, split="train", unlisted="unknown")
    assert cat.split == "train" and cat.n_images == 2


# ---- two spellings of one image, paths outside the root, encodings --------------------------
@pytest.mark.parametrize("spelling", ["absolute", "dotdot", "dot"])
def test_one_image_under_two_spellings_names_both_lines(tmp_path: Path, spelling: str) -> None:
    _images(tmp_path)
    other = {"absolute": str(tmp_path / "img" / "a.jpg"), "dotdot": "img/x/../a.jpg",
             "dot": "./img/a.jpg"}[spelling]
    path = _write_csv(tmp_path / "m.csv", [ROWS[0], ROWS[1], (other, ["cat"], [], [], "test")])
    with pytest.raises(DataError) as e:
        read_manifest(path)
    msg = str(e.value)
    assert f"{path}:line 4: image {other!r} is listed again (first on line 2 as " \
           "'img/a.jpg'" in msg and str(tmp_path / "img" / "a.jpg") in msg


def test_spellings_are_normalised_when_stored(tmp_path: Path) -> None:
    _images(tmp_path)
    path = _write_csv(tmp_path / "m.csv", [("./img/x/../a.jpg", ["cat"], [], [], "t"),
                                           (str(tmp_path / "img" / "b.png"), ["dog"], [], [], "t")])
    cat = read_manifest(path)
    assert cat.image_paths == ("img/a.jpg", "img/b.png")


@pytest.mark.parametrize("outside", ["relative", "absolute"])
def test_path_outside_the_root_is_refused_unless_allowed(tmp_path: Path, outside: str) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    _images(tmp_path, ["x.jpg"])
    given = "../x.jpg" if outside == "relative" else str(tmp_path / "x.jpg")
    path = root / "m.jsonl"
    path.write_text(json.dumps({"image": given, "positives": ["cat"]}) + "\n")
    with pytest.raises(DataError) as e:
        read_manifest(path)
    msg = str(e.value)
    assert f"{path}:line 1: image path" in msg and "outside the manifest's folder" in msg
    assert str(tmp_path / "x.jpg") in msg and "allow_outside_root=true" in msg
    cat = data.load("manifest", path, None, allow_outside_root=True)
    assert cat.image_paths == (str(tmp_path / "x.jpg"),)  # kept absolute
    assert cat.full_paths() == [tmp_path / "x.jpg"] and cat.full_paths()[0].is_file()
    assert cat.provenance[0]["allow_outside_root"] is True


@pytest.mark.parametrize("kind", ["csv", "jsonl", "classes"])
def test_non_utf8_text_names_file_and_line(tmp_path: Path, kind: str) -> None:
    _images(tmp_path)
    latin1 = "caf\u00e9".encode("latin-1")
    if kind == "csv":
        bad = tmp_path / "m.csv"
        bad.write_bytes(b"image,positives\nimg/a.jpg,cat\nimg/b.png," + latin1 + b"\n")
        line, call = 3, lambda: read_manifest(bad)
    elif kind == "jsonl":
        bad = tmp_path / "m.jsonl"
        bad.write_bytes(b'{"image": "img/a.jpg", "positives": ["' + latin1 + b'"]}\n')
        line, call = 1, lambda: read_manifest(bad)
    else:
        bad = tmp_path / "classes.txt"
        bad.write_bytes(b"cat\ndog\n" + latin1 + b"\n")
        line, call = 3, lambda: read_manifest(_write_csv(tmp_path / "m.csv", ROWS[:1]),
                                               classes=bad)
    with pytest.raises(DataError) as e:
        call()
    assert f"{bad}:line {line}:" in str(e.value) and "not UTF-8" in str(e.value)


def test_utf8_with_bom_and_non_ascii_names(tmp_path: Path) -> None:
    _images(tmp_path)
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffimage,positives\nimg/a.jpg,caf\u00e9|\u732b\n".encode())
    assert read_manifest(path).class_names == ("caf\u00e9", "\u732b")
