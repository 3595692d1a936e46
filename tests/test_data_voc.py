"""PASCAL VOC reader: tiny datasets in the real layout, every error path, the shared mini set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vlml.data
from fixtures import make_voc
from fixtures import write_voc_xml as write_xml
from vlml.data.voc import VOC_CLASSES, read_voc2007, read_voc2012
from vlml.errors import ConfigError, DataError

SHARED_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2007-mini"

KEPT = ["000005", "000009", "000012"]  # rows, sorted by file name


def expected(difficult: str) -> np.ndarray:
    """Hand-written label matrix for OBJECTS (rows KEPT)."""
    c = VOC_CLASSES.index
    out = np.zeros((3, 20), dtype=np.int8)
    out[0, c("chair")] = 1
    out[1, c("horse")] = 1
    out[2, c("car")] = out[2, c("person")] = 1
    if difficult == "ignore":
        out[0, c("dog")] = -1
        out[1, c("person")] = -1
    return out


@pytest.fixture
def voc_base(tmp_path: Path) -> Path:
    return make_voc(tmp_path)


def class_file(base: Path, cls: str, split: str = "trainval", year: str = "2007") -> Path:
    return base / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{cls}_{split}.txt"


# ---- labels -----------------------------------------------------------------------------------

@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("difficult", ["negative", "ignore"])
def test_txt_labels_match_hand_computed(tmp_path: Path, newline: str, difficult: str) -> None:
    cat = read_voc2007(make_voc(tmp_path, newline=newline), "trainval", difficult=difficult)
    assert cat.image_paths == tuple(f"JPEGImages/{i}.jpg" for i in KEPT)
    assert cat.class_names == VOC_CLASSES
    assert cat.labels.dtype == np.int8
    np.testing.assert_array_equal(cat.labels, expected(difficult))
    assert cat.true_labels is None
    assert cat.split == "trainval"
    assert cat.provenance == ({"step": "read", "dataset": "voc2007", "split": "trainval",
                               "difficult": difficult, "source": "txt",
                               "labels": "ground_truth"},)
    assert all(p.is_file() for p in cat.full_paths())


@pytest.mark.parametrize("difficult", ["negative", "ignore"])
def test_xml_source_equals_txt_source(voc_base: Path, difficult: str) -> None:
    txt = read_voc2007(voc_base, "trainval", difficult=difficult, source="txt")
    xml = read_voc2007(voc_base, "trainval", difficult=difficult, source="xml")
    assert xml.image_paths == txt.image_paths
    np.testing.assert_array_equal(xml.labels, txt.labels)
    np.testing.assert_array_equal(xml.labels, expected(difficult))
    assert xml.provenance[0]["source"] == "xml"


def test_ids_separated_by_several_spaces_and_tabs(voc_base: Path) -> None:
    path = class_file(voc_base, "cow")
    path.write_text(path.read_text().replace("000012 -1", "000012 \t  -1"))
    np.testing.assert_array_equal(read_voc2007(voc_base, "trainval").labels,
                                  expected("negative"))


def test_rows_sorted_by_file_name_with_voc2012_ids(tmp_path: Path) -> None:
    objects = {"2009_000010": [("dog", 0)], "2008_000123": [("cat", 0)],
               "2008_000007": [("bus", 0), ("dog", 0)]}
    base = make_voc(tmp_path, year="2012", split="train", objects=objects)
    cat = read_voc2012(base, "train")
    assert cat.image_paths == ("JPEGImages/2008_000007.jpg", "JPEGImages/2008_000123.jpg",
                               "JPEGImages/2009_000010.jpg")
    c = VOC_CLASSES.index
    assert np.flatnonzero(cat.labels[0]).tolist() == sorted([c("bus"), c("dog")])
    assert np.flatnonzero(cat.labels[1]).tolist() == [c("cat")]
    assert cat.provenance[0]["dataset"] == "voc2012"


@pytest.mark.parametrize("how", ["parent", "devkit", "year"])
def test_root_accepted_three_ways(voc_base: Path, how: str) -> None:
    root = {"parent": voc_base, "devkit": voc_base / "VOCdevkit",
            "year": voc_base / "VOCdevkit" / "VOC2007"}[how]
    cat = read_voc2007(root, "trainval")
    assert Path(cat.root) == (voc_base / "VOCdevkit" / "VOC2007").absolute()
    np.testing.assert_array_equal(cat.labels, expected("negative"))


def test_registry_load(voc_base: Path) -> None:
    cat = vlml.data.load("voc2007", root=str(voc_base), split="trainval", difficult="ignore")
    np.testing.assert_array_equal(cat.labels, expected("ignore"))


# ---- errors -----------------------------------------------------------------------------------

def test_root_not_found_lists_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_voc2007(tmp_path, "trainval")
    msg = str(e.value)
    assert "VOCdevkit/VOC2007/ImageSets/Main" in msg and str(tmp_path) in msg


def test_wrong_year_folder_is_named(tmp_path: Path) -> None:
    base = make_voc(tmp_path, year="2012", split="train")
    with pytest.raises(DataError, match="VOC2012.*VOC2007 was asked for"):
        read_voc2007(base / "VOCdevkit" / "VOC2012", "train")


@pytest.mark.parametrize("reader,split", [(read_voc2007, "training"), (read_voc2012, "test")])
def test_unknown_split_lists_valid_ones(voc_base: Path, reader, split: str) -> None:
    with pytest.raises(DataError, match="valid splits: train, val, trainval") as e:
        reader(voc_base, split)
    assert repr(split) in str(e.value)


def test_bad_option_values(voc_base: Path) -> None:
    with pytest.raises(ConfigError, match="difficult"):
        read_voc2007(voc_base, "trainval", difficult="drop")
    with pytest.raises(ConfigError, match="source"):
        read_voc2007(voc_base, "trainval", source="json")


@pytest.mark.parametrize("bad_line", ["000009 2", "000009 1 1", "000009", "000009 yes"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_bad_line_names_file_and_line(voc_base: Path, bad_line: str, newline: str) -> None:
    path = class_file(voc_base, "sheep")
    lines = path.read_text().splitlines()
    assert lines[2].startswith("000009")
    lines[2] = bad_line
    path.write_bytes((newline.join(lines) + newline).encode())
    with pytest.raises(DataError) as e:
        read_voc2007(voc_base, "trainval")
    assert "sheep_trainval.txt:line 3" in str(e.value)
    assert repr(bad_line) in str(e.value)


def test_id_missing_from_a_class_file(voc_base: Path) -> None:
    path = class_file(voc_base, "bird")
    path.write_text("".join(ln for ln in path.read_text().splitlines(True)
                            if not ln.startswith("000009")))
    with pytest.raises(DataError) as e:
        read_voc2007(voc_base, "trainval")
    assert "bird_trainval.txt" in str(e.value) and "000009" in str(e.value)


def test_id_only_in_a_later_class_file(voc_base: Path) -> None:
    path = class_file(voc_base, "train")
    path.write_text(path.read_text() + "000099 -1\n")
    with pytest.raises(DataError) as e:
        read_voc2007(voc_base, "trainval")
    assert "train_trainval.txt" in str(e.value) and "000099" in str(e.value)


def test_duplicate_id_in_class_file(voc_base: Path) -> None:
    path = class_file(voc_base, "aeroplane")
    path.write_text(path.read_text() + "000005 -1\n")
    with pytest.raises(DataError, match=r"aeroplane_trainval.txt:line 6.*listed twice"):
        read_voc2007(voc_base, "trainval")


def test_missing_class_file(voc_base: Path) -> None:
    class_file(voc_base, "tvmonitor").unlink()
    with pytest.raises(DataError, match="tvmonitor_trainval.txt"):
        read_voc2007(voc_base, "trainval")


def test_missing_jpegimages(voc_base: Path) -> None:
    jpeg = voc_base / "VOCdevkit" / "VOC2007" / "JPEGImages"
    for p in jpeg.iterdir():
        p.unlink()
    jpeg.rmdir()
    with pytest.raises(DataError, match="JPEGImages"):
        read_voc2007(voc_base, "trainval")


def test_xml_unknown_class_names_file_and_expected(voc_base: Path) -> None:
    path = voc_base / "VOCdevkit" / "VOC2007" / "Annotations" / "000009.xml"
    write_xml(path, "000009", [("horse", 0), ("unicorn", 0)])
    with pytest.raises(DataError) as e:
        read_voc2007(voc_base, "trainval", source="xml")
    msg = str(e.value)
    assert "000009.xml" in msg and "'unicorn'" in msg and "aeroplane" in msg


def test_xml_malformed_names_file_and_line(voc_base: Path) -> None:
    path = voc_base / "VOCdevkit" / "VOC2007" / "Annotations" / "000012.xml"
    path.write_text("<annotation>\n<object><name>car</name>\n</annotation>\n")
    with pytest.raises(DataError, match=r"000012.xml:line 3.*malformed XML"):
        read_voc2007(voc_base, "trainval", source="xml")


def test_xml_bad_difficult_value(voc_base: Path) -> None:
    path = voc_base / "VOCdevkit" / "VOC2007" / "Annotations" / "000012.xml"
    path.write_text(path.read_text().replace("<difficult>1</difficult>",
                                             "<difficult>maybe</difficult>"))
    with pytest.raises(DataError, match=r"000012.xml.*'maybe'"):
        read_voc2007(voc_base, "trainval", source="xml")


def test_xml_missing_annotation_file(voc_base: Path) -> None:
    (voc_base / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml").unlink()
    with pytest.raises(DataError, match="000005.xml"):
        read_voc2007(voc_base, "trainval", source="xml")


def test_xml_source_needs_annotations_folder(tmp_path: Path) -> None:
    base = make_voc(tmp_path)
    ann = base / "VOCdevkit" / "VOC2007" / "Annotations"
    for p in ann.iterdir():
        p.unlink()
    ann.rmdir()
    with pytest.raises(DataError, match="Annotations"):
        read_voc2007(base, "trainval", source="xml")


# ---- the shared mini set (400 real VOC2007 trainval images) -----------------------------------

KNOWN_TRAINVAL_POSITIVES = {
    "aeroplane": 18, "bicycle": 14, "bird": 24, "boat": 10, "bottle": 20, "bus": 16, "car": 45,
    "cat": 32, "chair": 42, "cow": 13, "diningtable": 12, "dog": 40, "horse": 24,
    "motorbike": 16, "person": 152, "pottedplant": 18, "sheep": 10, "sofa": 18, "train": 26,
    "tvmonitor": 23,
}


@pytest.mark.skipif(not SHARED_MINI.is_dir(), reason="shared voc2007-mini data not present")
def test_real_mini_trainval() -> None:
    cat = vlml.data.load("voc2007", root=SHARED_MINI, split="trainval")
    main = SHARED_MINI / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    # Independent count: lines whose value field is exactly 1, per class file.
    independent = {cls: sum(ln.split()[-1] == "1" for ln in
                            (main / f"{cls}_trainval.txt").read_text().splitlines() if ln.strip())
                   for cls in VOC_CLASSES}
    assert cat.labels.shape == (400, 20)
    counts = dict(zip(cat.class_names, cat.labels.sum(axis=0).tolist(), strict=True))
    assert counts == independent == KNOWN_TRAINVAL_POSITIVES
    assert set(np.unique(cat.labels).tolist()) == {0, 1}
    assert list(cat.image_paths) == sorted(cat.image_paths)
    assert all(p.is_file() for p in cat.full_paths())
    ignore = read_voc2007(SHARED_MINI, "trainval", difficult="ignore")
    np.testing.assert_array_equal(ignore.labels == 1, cat.labels == 1)
    assert (ignore.labels == -1).any()
