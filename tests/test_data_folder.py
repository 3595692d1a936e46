"""Folder reader: one sub-folder per class, optionally under a split folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures import folder_image as _image
from fixtures import make_folder_tree
from vlml import data
from vlml.data.folder import read_folder
from vlml.errors import ConfigError, DataError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """cat: 1.jpg 2.png | dog: 2.png 3.JPG notes.txt | zebra: (empty) | .hidden: 9.jpg"""
    return make_folder_tree(tmp_path)


def test_hand_computed_matrix(tree: Path) -> None:
    cat = read_folder(tree, unlisted="negative")
    assert cat.class_names == ("cat", "dog", "zebra")
    # Rows sorted by file name; 2.png is in cat and dog: one image, two positives, cat's path.
    assert cat.image_paths == ("cat/1.jpg", "cat/2.png", "dog/3.JPG")
    np.testing.assert_array_equal(cat.labels, [[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert cat.split == "all" and Path(cat.root) == tree.absolute()
    assert all(p.is_file() for p in cat.full_paths())
    step = cat.provenance[0]
    assert step["step"] == "read" and step["dataset"] == "folder"
    assert step["n_files"] == 4 and step["empty_classes"] == ["zebra"]
    assert step["unlisted"] == "negative" and step["labels"] == "given"
    assert cat.ground_truth is None and cat.complete_labels is cat.labels  # given, not truth


def test_unlisted_unknown_is_the_default(tree: Path) -> None:
    expected = [[1, -1, -1], [1, 1, -1], [-1, 1, -1]]
    cat = read_folder(tree)
    np.testing.assert_array_equal(cat.labels, expected)
    assert cat.provenance[0]["unlisted"] == "unknown"
    np.testing.assert_array_equal(read_folder(tree, unlisted="unknown").labels, expected)
    with pytest.raises(ConfigError, match="unknown.*negative"):
        read_folder(tree, unlisted="maybe")


def test_split_layout(tmp_path: Path) -> None:
    for rel in ["train/a/x.jpg", "train/b/y.jpg", "test/a/z.jpg"]:
        _image(tmp_path / rel)
    cat = read_folder(tmp_path, split="train", unlisted="negative")
    assert cat.split == "train" and cat.class_names == ("a", "b")
    assert cat.image_paths == ("a/x.jpg", "b/y.jpg")
    assert Path(cat.root) == (tmp_path / "train").absolute()
    np.testing.assert_array_equal(cat.labels, [[1, 0], [0, 1]])
    assert read_folder(tmp_path, split="test").image_paths == ("a/z.jpg",)
    with pytest.raises(DataError, match=r"no folder for split 'val'.*\['test', 'train'\]"):
        read_folder(tmp_path, split="val")
    with pytest.raises(DataError, match="pass split="):  # split folders read as classes
        read_folder(tmp_path)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_folder(tmp_path / "missing")
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no class sub-folders"):
        read_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        read_folder(tmp_path)


def test_registry_load(tree: Path) -> None:
    cat = data.load("folder", root=tree, split="any")
    assert cat.n_images == 3 and cat.split == "all"
