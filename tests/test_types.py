import zipfile

import numpy as np
import pytest

from vlml.errors import DataError, UnknownNameError
from vlml.registry import Registry
from vlml.types import Catalog, as_labels, validate_labels


def make_catalog(n=4, c=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 2, size=(n, c)).astype(np.int8)
    return Catalog(image_paths=[f"img/{i}.jpg" for i in range(n)],
                   class_names=[f"c{j}" for j in range(c)], labels=labels, **kw)


def test_validate_labels_accepts_convention():
    y = np.array([[1, 0, -1]], dtype=np.int8)
    assert validate_labels(y) is y


@pytest.mark.parametrize("labels, message", [
    (np.array([1, 0], dtype=np.int8), "2-D"),
    (np.array([[1, 0]], dtype=np.int64), "int8"),
    (np.array([[1, 2]], dtype=np.int8), "value 2 at row 0, column 1"),
])
def test_validate_labels_rejects(labels, message):
    with pytest.raises(DataError, match=message):
        validate_labels(labels)


def test_ground_truth_rejects_unknown():
    with pytest.raises(DataError, match="true_labels"):
        make_catalog(true_labels=np.full((4, 3), -1, dtype=np.int8))


def test_catalog_shape_and_names_checked():
    with pytest.raises(DataError, match="expected 3 rows"):
        Catalog(["a", "b", "c"], ["x"], np.zeros((2, 1), np.int8))
    with pytest.raises(DataError, match="appears twice"):
        Catalog(["a"], ["x", "x"], np.zeros((1, 2), np.int8))
    with pytest.raises(DataError, match="expected 0 columns"):
        Catalog(["a"], [], np.zeros((1, 1), np.int8))
    with pytest.raises(DataError, match="empty class name"):
        Catalog(["a"], [" "], np.zeros((1, 1), np.int8))


def test_as_labels_casts_exact_values_only():
    assert as_labels(np.array([[1.0, 0.0, -1.0]])).dtype == np.int8
    with pytest.raises(DataError):
        as_labels(np.array([[0.5]]))


def test_save_load_round_trip_is_lossless(tmp_path):
    cat = make_catalog(n=50, c=7, root="/data", split="train",
                       provenance=[{"step": "read", "dataset": "x"}])
    cat = cat.with_step({"step": "noop"}, true_labels=(cat.labels == 1).astype(np.int8))
    path = cat.save(tmp_path / "sub" / "train.catalog.zip")
    back = Catalog.load(path)
    assert back.image_paths == cat.image_paths
    assert back.class_names == cat.class_names
    np.testing.assert_array_equal(back.labels, cat.labels)
    np.testing.assert_array_equal(back.true_labels, cat.true_labels)
    assert back.labels.dtype == np.int8
    assert (back.root, back.split) == ("/data", "train")
    assert back.provenance == cat.provenance
    assert [p["step"] for p in back.provenance] == ["read", "noop"]
    assert not list(tmp_path.glob("sub/.*tmp"))  # no temp file left behind


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Catalog.load(tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_text("not a zip")
    with pytest.raises(DataError, match="junk.zip"):
        Catalog.load(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("catalog.json", '{"format": "something-else", "version": 1}')
    with pytest.raises(DataError, match="expected format"):
        Catalog.load(other)


def test_subset_keeps_rows_and_records_step():
    cat = make_catalog(n=6, c=2)
    sub = cat.subset([4, 1], split="x")
    assert sub.image_paths == ("img/4.jpg", "img/1.jpg")
    np.testing.assert_array_equal(sub.labels, cat.labels[[4, 1]])
    assert sub.split == "x" and sub.provenance[-1]["step"] == "subset"
    with pytest.raises(IndexError):
        cat.subset([6])


def test_full_paths_and_class_index(tmp_path):
    cat = make_catalog(root=str(tmp_path))
    assert cat.full_paths()[0] == tmp_path / "img/0.jpg"
    assert cat.class_index("c2") == 2
    with pytest.raises(DataError, match="unknown class 'c9'"):
        cat.class_index("c9")


def test_ground_truth_property():
    full = Catalog(["a"], ["x", "y"], np.array([[1, 0]], np.int8))
    assert full.ground_truth is full.labels
    partial = Catalog(["a"], ["x", "y"], np.array([[1, -1]], np.int8))
    assert partial.ground_truth is None


def test_registry_suggests_close_names():
    r = Registry("dataset")
    r.register("voc2007", 1)
    r.register("voc2012", 2)
    assert r.names() == ["voc2007", "voc2012"] and "voc2007" in r
    with pytest.raises(UnknownNameError, match="Did you mean 'voc2007'"):
        r.get("voc207")
    with pytest.raises(ValueError, match="twice"):
        r.register("voc2007", 3)


# ---- zero classes: a pool of images with no class list yet ---------------------------------
def test_catalog_with_zero_classes_works_everywhere(tmp_path):
    cat = Catalog(["a.jpg", "b.jpg", "c.jpg"], [], np.zeros((3, 0), np.int8), root=str(tmp_path),
                  split="pool", provenance=[{"step": "read", "labels": "given"}])
    assert (cat.n_images, cat.n_classes, len(cat)) == (3, 0, 3)
    assert cat.labels.shape == (3, 0) and cat.full_paths()[1] == tmp_path / "b.jpg"
    assert cat.ground_truth is None  # given labels, even with nothing unknown
    assert cat.complete_labels.shape == (3, 0)
    with pytest.raises(DataError, match=r"unknown class 'x'; classes are \[\]"):
        cat.class_index("x")
    sub = cat.subset([2, 0])
    assert sub.image_paths == ("c.jpg", "a.jpg") and sub.labels.shape == (2, 0)
    back = Catalog.load(cat.save(tmp_path / "pool.catalog.zip"))
    assert back.class_names == () and back.labels.shape == (3, 0)
    assert back.labels.dtype == np.int8 and back.provenance == cat.provenance
    assert back.header()["class_names"] == []
    empty = Catalog([], [], np.zeros((0, 0), np.int8))
    assert Catalog.load(empty.save(tmp_path / "empty.zip")).labels.shape == (0, 0)


# ---- label provenance -----------------------------------------------------------------------
def test_ground_truth_follows_label_provenance():
    y = np.array([[1, 0], [0, 1]], np.int8)
    truth = Catalog(["a", "b"], ["x", "y"], y, provenance=[{"step": "read",
                                                             "labels": "ground_truth"}])
    assert truth.labels_source == "ground_truth" and truth.ground_truth is truth.labels
    given = Catalog(["a", "b"], ["x", "y"], y, provenance=[{"step": "read", "labels": "given"}])
    assert given.labels_source == "given" and given.ground_truth is None
    assert given.complete_labels is given.labels
    # steps appended later keep it; true_labels, when kept, are the ground truth whatever the source
    step = given.with_step({"step": "noop"})
    assert step.labels_source == "given" and step.ground_truth is None
    kept = given.with_step({"step": "noop"}, true_labels=y.copy())
    assert kept.ground_truth is kept.true_labels
    # built in code without the key: the old rule (no unknowns = ground truth)
    plain = Catalog(["a", "b"], ["x", "y"], y)
    assert plain.labels_source is None and plain.ground_truth is plain.labels
    # the last step that says decides
    relabelled = given.with_step({"step": "verified", "labels": "ground_truth"})
    assert relabelled.ground_truth is relabelled.labels
    with pytest.raises(DataError, match=r"provenance step 0: labels='truth'; expected one of"):
        Catalog(["a"], ["x"], np.ones((1, 1), np.int8), provenance=[{"labels": "truth"}])
