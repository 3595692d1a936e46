"""CUB-200-2011 reader: a tiny dataset in the official layout, errors, a full-size label file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import vlml.data
from fixtures import CUB_ATTRIBUTES as ATTRIBUTES
from fixtures import CUB_IMAGES as IMAGES
from fixtures import CUB_PRESENT as PRESENT
from fixtures import make_cub
from vlml.data.cub import read_cub
from vlml.errors import DataError


def labels_file(parent: Path) -> Path:
    return parent / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"


def rewrite_line(path: Path, index: int, text: str | None) -> None:
    lines = path.read_text().splitlines()
    if text is None:
        del lines[index]
    else:
        lines[index] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("split,ids", [("train", [1, 3, 5]), ("test", [2, 4])])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_split_filter_and_labels(tmp_path: Path, split: str, ids: list[int],
                                 newline: str) -> None:
    cat = read_cub(make_cub(tmp_path, newline=newline), split)
    assert cat.image_paths == tuple(f"images/{IMAGES[i][0]}" for i in ids)
    assert cat.class_names == tuple(ATTRIBUTES)
    np.testing.assert_array_equal(cat.labels, PRESENT[np.array(ids) - 1])
    assert cat.labels.dtype == np.int8 and cat.true_labels is None
    assert cat.split == split
    assert cat.provenance == ({"step": "read", "dataset": "cub", "split": split,
                               "labels": "ground_truth"},)
    assert all(p.is_file() for p in cat.full_paths())


@pytest.mark.parametrize("given", ["parent", "folder"])
def test_root_parent_or_folder(tmp_path: Path, given: str) -> None:
    make_cub(tmp_path)
    root = tmp_path if given == "parent" else tmp_path / "CUB_200_2011"
    cat = vlml.data.load("cub", root=root, split="train")
    assert Path(cat.root) == (tmp_path / "CUB_200_2011").absolute()
    assert cat.n_images == 3


def test_attribute_names_inside_attributes_folder(tmp_path: Path) -> None:
    cat = read_cub(make_cub(tmp_path, attributes_inside=True), "test")
    assert cat.class_names == tuple(ATTRIBUTES)


def test_label_lines_in_any_order(tmp_path: Path) -> None:
    make_cub(tmp_path)
    path = labels_file(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines)) + "\n")
    np.testing.assert_array_equal(read_cub(tmp_path, "train").labels, PRESENT[[0, 2, 4]])


# ---- errors -----------------------------------------------------------------------------------

def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid splits: train, test"):
        read_cub(make_cub(tmp_path), "val")


def test_root_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_cub(tmp_path, "train")
    assert "CUB_200_2011/images.txt" in str(e.value)


def test_missing_attribute_names_lists_places(tmp_path: Path) -> None:
    make_cub(tmp_path)
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(DataError) as e:
        read_cub(tmp_path, "train")
    assert str(tmp_path / "attributes.txt") in str(e.value)
    assert "CUB_200_2011/attributes/attributes.txt" in str(e.value)


@pytest.mark.parametrize("name", ["images.txt", "train_test_split.txt",
                                  "attributes/image_attribute_labels.txt"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    make_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / name).unlink()
    with pytest.raises(DataError, match=Path(name).name):
        read_cub(tmp_path, "train")


@pytest.mark.parametrize("text,why", [("3 2 x 1 2.0", "is_present 'x'"),
                                      ("3 2", "expected '<image_id> <attribute_id>"),
                                      ("3 2 2 1 2.0", "is_present 2"),
                                      ("9 2 1 1 2.0", "image_id 9 is not in images.txt"),
                                      ("3 7 1 1 2.0", "attribute_id 7"),
                                      ("3 1 1 1 2.0", "image_id 3 attribute_id 1 listed twice")])
def test_bad_label_line_names_file_and_line(tmp_path: Path, text: str, why: str) -> None:
    make_cub(tmp_path)
    rewrite_line(labels_file(tmp_path), 9, text)  # line 10 (the former "3 2 ..." line)
    with pytest.raises(DataError) as e:
        read_cub(tmp_path, "train")
    assert "image_attribute_labels.txt:line 10" in str(e.value)
    assert why in str(e.value)


def test_line_number_counts_blank_lines(tmp_path: Path) -> None:
    make_cub(tmp_path)
    path = labels_file(tmp_path)
    lines = path.read_text().splitlines()
    lines[5] = "5 9 0 1 1.0"
    path.write_text("\n\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match="image_attribute_labels.txt:line 8"):
        read_cub(tmp_path, "train")


def test_missing_label_pair(tmp_path: Path) -> None:
    make_cub(tmp_path)
    rewrite_line(labels_file(tmp_path), 9, None)
    with pytest.raises(DataError, match="no label for image_id 3 attribute_id 2"):
        read_cub(tmp_path, "train")


def test_unknown_image_in_split_file(tmp_path: Path) -> None:
    make_cub(tmp_path)
    rewrite_line(tmp_path / "CUB_200_2011" / "train_test_split.txt", 3, "44 1")
    with pytest.raises(DataError, match=r"train_test_split.txt:line 4.*image_id 44"):
        read_cub(tmp_path, "train")


def test_bad_split_value(tmp_path: Path) -> None:
    make_cub(tmp_path)
    rewrite_line(tmp_path / "CUB_200_2011" / "train_test_split.txt", 1, "2 yes")
    with pytest.raises(DataError, match=r"train_test_split.txt:line 2"):
        read_cub(tmp_path, "train")


def test_bad_images_line(tmp_path: Path) -> None:
    make_cub(tmp_path)
    rewrite_line(tmp_path / "CUB_200_2011" / "images.txt", 4, "five images/x.jpg")
    with pytest.raises(DataError, match=r"images.txt:line 5.*image_id 'five'"):
        read_cub(tmp_path, "train")


# ---- real size --------------------------------------------------------------------------------

def _fixed_width(values: np.ndarray, width: int) -> np.ndarray:
    """(N, width) ASCII bytes of non-negative ints, right-aligned with leading spaces."""
    out = np.full((values.size, width), ord(" "), dtype=np.uint8)
    rest = values.copy()
    for k in range(width - 1, -1, -1):
        digit = (rest % 10).astype(np.uint8) + ord("0")
        out[:, k] = np.where((rest > 0) | (k == width - 1), digit, ord(" "))
        rest //= 10
    return out


def test_full_size_label_file_reads_fast(tmp_path: Path) -> None:
    """11,788 images x 312 attributes = 3,677,856 lines, the size of the real file."""
    n_img, n_attr = 11_788, 312
    rng = np.random.default_rng(0)
    present = (rng.random((n_img, n_attr)) < 0.1).astype(np.int8)
    base = tmp_path / "CUB_200_2011"
    (base / "attributes").mkdir(parents=True)
    (base / "images").mkdir()
    img = np.repeat(np.arange(1, n_img + 1), n_attr)
    attr = np.tile(np.arange(1, n_attr + 1), n_img)
    tail = np.frombuffer(b" 3 13.0700\n", dtype=np.uint8)
    rows = np.hstack([_fixed_width(img, 5), np.full((img.size, 1), 32, np.uint8),
                      _fixed_width(attr, 3), np.full((img.size, 1), 32, np.uint8),
                      (present.reshape(-1, 1) + ord("0")).astype(np.uint8),
                      np.broadcast_to(tail, (img.size, tail.size))])
    (base / "attributes" / "image_attribute_labels.txt").write_bytes(rows.tobytes())
    (base / "images.txt").write_text("".join(f"{i} c/{i}.jpg\n" for i in range(1, n_img + 1)))
    (base / "train_test_split.txt").write_text("".join(f"{i} {i % 2}\n"
                                                       for i in range(1, n_img + 1)))
    (tmp_path / "attributes.txt").write_text("".join(f"{a} attr_{a}\n"
                                                     for a in range(1, n_attr + 1)))
    start = time.perf_counter()
    cat = read_cub(tmp_path, "train")
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(cat.labels, present[0::2])
    assert cat.image_paths[:2] == ("images/c/1.jpg", "images/c/3.jpg")
    assert elapsed < 5, f"{elapsed:.1f} s"
