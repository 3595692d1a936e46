"""The images reader: a folder of untagged images, every label unknown, classes from a file or
none at all (a catalog with zero classes), through the library and `vlml data prepare|stats`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fixtures import UNTAGGED_IMAGES, folder_image, make_untagged
from vlml import data
from vlml.cli.main import main
from vlml.data.untagged import read_images
from vlml.errors import ConfigError, DataError
from vlml.types import Catalog


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_untagged(tmp_path / "photos")


def test_every_image_sorted_every_label_unknown(photos: Path, tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    cat = read_images(photos, classes=tmp_path / "classes.txt")
    assert cat.image_paths == tuple(sorted(UNTAGGED_IMAGES))  # hidden, non-images skipped
    assert cat.class_names == ("cat", "dog", "bird")
    assert cat.labels.shape == (4, 3) and (cat.labels == -1).all()
    assert cat.labels.dtype == np.int8 and cat.true_labels is None
    assert cat.split == "all" and cat.root == str(photos.absolute())
    assert all(p.is_file() for p in cat.full_paths())
    step = cat.provenance[0]
    assert step["dataset"] == "images" and step["labels"] == "given"
    assert step["classes_source"] == f"file:{(tmp_path / 'classes.txt').absolute()}"
    assert cat.ground_truth is None


def test_no_classes_gives_a_zero_class_catalog(photos: Path, tmp_path: Path) -> None:
    cat = read_images(photos)
    assert cat.class_names == () and cat.labels.shape == (4, 0)
    assert cat.provenance[0]["classes_source"] == "none"
    assert cat.ground_truth is None  # nothing unknown, but nothing is truth either
    back = Catalog.load(cat.save(tmp_path / "pool.catalog.zip"))
    assert back.labels.shape == (4, 0) and back.image_paths == cat.image_paths
    assert read_images(photos, classes=[]).n_classes == 0
    assert read_images(photos, classes=["a", "b"]).class_names == ("a", "b")


def test_split_folder(tmp_path: Path) -> None:
    folder_image(tmp_path / "new" / "x.jpg")
    folder_image(tmp_path / "old" / "y.jpg")
    cat = read_images(tmp_path, split="new")
    assert cat.split == "new" and cat.image_paths == ("x.jpg",)
    assert cat.root == str((tmp_path / "new").absolute())
    with pytest.raises(DataError, match=r"no folder for split 'mid'.*\['new', 'old'\]"):
        read_images(tmp_path, split="mid")


def test_errors(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        read_images(tmp_path / "missing")
    with pytest.raises(DataError, match="a file was given"):
        read_images(photos / "b.jpg")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    folder_image(tmp_path / "empty" / ".hidden" / "x.jpg")
    with pytest.raises(DataError, match="no image files"):
        read_images(tmp_path / "empty")
    classes = tmp_path / "c.txt"
    classes.write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match=r"c\.txt:line 2: blank line"):
        read_images(photos, classes=classes)
    classes.write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"c\.txt:line 3: class 'cat' repeats"):
        read_images(photos, classes=classes)
    classes.write_bytes(b"cat\n\xff\xfed\x00o\x00g\x00\n")
    with pytest.raises(DataError, match=r"c\.txt:line 2: class list file is not UTF-8"):
        read_images(photos, classes=classes)
    with pytest.raises(ConfigError, match="repeats"):
        read_images(photos, classes=["a", "a"])


def test_registry_and_unknown_option(photos: Path) -> None:
    assert data.load("images", photos, "any").n_images == 4
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['unlisted'\] for dataset "
                                          r"'images'; valid options: classes"):
        data.load("images", photos, None, unlisted="unknown")


# ---- through the CLI ------------------------------------------------------------------------
def test_prepare_images_then_stats(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cats"
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert main(["data", "prepare", "images", "--root", str(photos), "--classes-file",
                 str(tmp_path / "classes.txt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(4 images, 2 classes)" in printed
    assert "labels: untagged images, every label unknown (-1); 100.0% of entries unknown" \
        in printed
    cat = Catalog.load(out / "all.catalog.zip")
    assert cat.class_names == ("cat", "dog") and (cat.labels == -1).all()
    assert Path(cat.root).is_absolute()


def test_prepare_and_stats_with_zero_classes(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cats"
    assert main(["data", "prepare", "images", "--root", str(photos), "--out", str(out)]) == 0
    assert "no label entries (0 classes, 4 images)" in capsys.readouterr().out
    path = out / "all.catalog.zip"
    assert main(["data", "stats", str(path)]) == 0
    table = capsys.readouterr().out
    assert "images: 4   classes: 0" in table and "labels: given" in table
    assert main(["data", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_classes"] == 0 and stats["positives"] == [] and stats["unknown_share"] == 0
    assert stats["images_without_positive"] == 4 and stats["labels_source"] == "given"
