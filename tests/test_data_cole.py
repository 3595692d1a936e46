"""Cole formatted arrays: reading, the +1/-1/0 -> 1/0/-1 boundary, export, NUS-WIDE versions."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fixtures import COLE_PATHS as PATHS
from fixtures import COLE_REF_OBS as REF_OBS
from fixtures import COLE_TRUTH as TRUTH
from fixtures import cole_images as _images
from fixtures import make_nuswide as _nus
from fixtures import save_cole_reference as _save_reference
from vlml import data
from vlml.data.cole import (
    NUSWIDE_VERSIONS,
    from_reference_observed,
    read_cole,
    read_nuswide,
    to_reference_observed,
    write_cole,
)
from vlml.errors import ConfigError, DataError
from vlml.types import Catalog

# The same observations in our convention, written out by hand.
OUR_OBS = np.array([[1, 0, -1],
                    [-1, 1, -1],
                    [0, -1, -1]], dtype=np.int8)
@pytest.fixture
def cole_root(tmp_path: Path) -> Path:
    _images(tmp_path, PATHS)
    _save_reference(tmp_path, "train", PATHS, TRUTH, REF_OBS)
    return tmp_path


# ---- the label-convention boundary ------------------------------------------------------
def test_from_reference_observed_maps_each_value() -> None:
    assert from_reference_observed(np.array([1.0])).tolist() == [1]
    assert from_reference_observed(np.array([-1.0])).tolist() == [0]
    assert from_reference_observed(np.array([0.0])).tolist() == [-1]
    out = from_reference_observed(REF_OBS)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, OUR_OBS)


def test_to_reference_observed_is_the_inverse() -> None:
    ref = to_reference_observed(OUR_OBS)
    assert ref.dtype == np.float64
    np.testing.assert_array_equal(ref, REF_OBS)


def test_from_reference_observed_rejects_other_values() -> None:
    with pytest.raises(DataError, match="0.5"):
        from_reference_observed(np.array([[1.0, 0.5]]))


# ---- reading ---------------------------------------------------------------------------
def test_read_with_observed_labels(cole_root: Path) -> None:
    cat = read_cole(cole_root, "train")
    assert cat.image_paths == tuple(PATHS)
    np.testing.assert_array_equal(cat.labels, OUR_OBS)
    np.testing.assert_array_equal(cat.true_labels, TRUTH.astype(np.int8))
    assert cat.split == "train"
    assert Path(cat.root) == cole_root.absolute()
    assert all(p.is_file() for p in cat.full_paths())
    step = cat.provenance[0]
    assert step["step"] == "read" and step["dataset"] == "cole"
    assert step["observed_labels"] is True and step["split"] == "train"


def test_read_without_observed_labels_uses_ground_truth(tmp_path: Path) -> None:
    _images(tmp_path, PATHS)
    _save_reference(tmp_path, "val", PATHS, TRUTH)
    cat = read_cole(tmp_path, "val")
    np.testing.assert_array_equal(cat.labels, TRUTH.astype(np.int8))
    assert cat.true_labels is None
    assert cat.split == "val" and cat.provenance[0]["observed_labels"] is False


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.float32, bool])
def test_read_accepts_integer_and_bool_label_dtypes(tmp_path: Path, dtype: type) -> None:
    _images(tmp_path, PATHS)
    obs = REF_OBS.astype(np.float32 if dtype is bool else dtype)
    _save_reference(tmp_path, "train", PATHS, TRUTH.astype(dtype), obs)
    cat = read_cole(tmp_path, "train")
    np.testing.assert_array_equal(cat.labels, OUR_OBS)


def test_images_root_and_bytes_paths(tmp_path: Path) -> None:
    images = tmp_path / "pics"
    _images(images, PATHS)
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "formatted_train_images.npy", np.array([p.encode() for p in PATHS]))
    np.save(arrays / "formatted_train_labels.npy", TRUTH)
    cat = read_cole(arrays, "train", images_root=images)
    assert cat.image_paths == tuple(PATHS) and Path(cat.root) == images.absolute()
    with pytest.raises(DataError, match="image file not found") as e:
        read_cole(arrays, "train")
    assert "3 of 3" in str(e.value) and "formatted_train_images.npy" in str(e.value)
    assert read_cole(arrays, "train", check_images=False).n_images == 3


def test_obs_variant_reads_named_file(tmp_path: Path) -> None:
    _images(tmp_path, PATHS)
    _save_reference(tmp_path, "train", PATHS, TRUTH)
    np.save(tmp_path / "formatted_train_uniform_labels_obs.npy", REF_OBS)
    cat = read_cole(tmp_path, "train", obs_variant="uniform")
    np.testing.assert_array_equal(cat.labels, OUR_OBS)
    with pytest.raises(DataError, match="formatted_train_size_labels_obs.npy"):
        read_cole(tmp_path, "train", obs_variant="size")


# ---- class names ---------------------------------------------------------------------------
def test_class_names_generic_when_nothing_given(cole_root: Path) -> None:
    cat = read_cole(cole_root, "train")
    assert cat.class_names == ("class_000", "class_001", "class_002")
    assert cat.provenance[0]["class_names_source"] == "generic"


def test_class_names_from_argument_file_and_beside(cole_root: Path) -> None:
    cat = read_cole(cole_root, "train", class_names=["cat", "dog", "car"])
    assert cat.class_names == ("cat", "dog", "car")
    assert cat.provenance[0]["class_names_source"] == "argument"

    (cole_root / "classes.txt").write_text("x\ny\nz\n\n")
    cat = read_cole(cole_root, "train")
    assert cat.class_names == ("x", "y", "z")
    assert cat.provenance[0]["class_names_source"].endswith("classes.txt")

    (cole_root / "class_names.txt").write_text("p\nq\nr\n")  # preferred over classes.txt
    assert read_cole(cole_root, "train").class_names == ("p", "q", "r")

    other = cole_root / "mine.txt"
    other.write_text("u\nv\nw\n")
    assert read_cole(cole_root, "train", class_names=other).class_names == ("u", "v", "w")


def test_class_names_count_mismatch_names_file(cole_root: Path) -> None:
    (cole_root / "class_names.txt").write_text("p\nq\n")
    with pytest.raises(DataError, match=r"class_names\.txt.*2 class names.*3 columns"):
        read_cole(cole_root, "train")
    with pytest.raises(DataError, match="4 class names"):
        read_cole(cole_root, "train", class_names=["a", "b", "c", "d"])


# ---- errors ----------------------------------------------------------------------------
def test_unknown_split_lists_choices(cole_root: Path) -> None:
    with pytest.raises(ConfigError, match="train, val"):
        read_cole(cole_root, "test")


def test_missing_arrays_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_cole(tmp_path / "nowhere", "train")
    np.save(tmp_path / "formatted_train_labels.npy", TRUTH)
    with pytest.raises(DataError, match="formatted_train_images.npy"):
        read_cole(tmp_path, "train")


def test_row_count_mismatch_names_labels_file(cole_root: Path) -> None:
    np.save(cole_root / "formatted_train_labels.npy", TRUTH[:2])
    with pytest.raises(DataError, match=r"formatted_train_labels\.npy: has 2 rows.*3 entries"):
        read_cole(cole_root, "train")


def test_obs_shape_mismatch_names_obs_file(cole_root: Path) -> None:
    np.save(cole_root / "formatted_train_labels_obs.npy", REF_OBS[:, :2])
    with pytest.raises(DataError, match=r"formatted_train_labels_obs\.npy: has 2 columns"):
        read_cole(cole_root, "train")


def test_invalid_truth_value_names_file_and_entry(cole_root: Path) -> None:
    bad = TRUTH.copy()
    bad[1, 2] = 2
    np.save(cole_root / "formatted_train_labels.npy", bad)
    with pytest.raises(DataError, match=r"formatted_train_labels\.npy: value 2.0 at row 1, "
                                        r"column 2"):
        read_cole(cole_root, "train")


def test_invalid_obs_value_names_file(cole_root: Path) -> None:
    bad = REF_OBS.copy()
    bad[2, 0] = 0.5
    np.save(cole_root / "formatted_train_labels_obs.npy", bad)
    with pytest.raises(DataError, match=r"formatted_train_labels_obs\.npy.*row 2, column 0"):
        read_cole(cole_root, "train")


def test_obs_contradicting_truth_is_rejected(cole_root: Path) -> None:
    bad = REF_OBS.copy()
    bad[1, 0] = 1  # truth is 0 there
    np.save(cole_root / "formatted_train_labels_obs.npy", bad)
    with pytest.raises(DataError, match=r"labels_obs\.npy.*contradicts.*row 1, column 0"):
        read_cole(cole_root, "train")


def test_bad_images_array_names_file(cole_root: Path) -> None:
    np.save(cole_root / "formatted_train_images.npy", np.arange(3))
    with pytest.raises(DataError, match=r"formatted_train_images\.npy.*dtype int64"):
        read_cole(cole_root, "train")
    np.save(cole_root / "formatted_train_images.npy", np.array([PATHS]))
    with pytest.raises(DataError, match=r"1-D.*\(1, 3\)"):
        read_cole(cole_root, "train")
    np.save(cole_root / "formatted_train_images.npy", np.array(PATHS, dtype=object),
            allow_pickle=True)
    with pytest.raises(DataError, match="allow_pickle"):
        read_cole(cole_root, "train")
    assert read_cole(cole_root, "train", allow_pickle=True).image_paths == tuple(PATHS)


def test_corrupt_npy_names_file(cole_root: Path) -> None:
    (cole_root / "formatted_train_labels.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"formatted_train_labels\.npy: not a readable"):
        read_cole(cole_root, "train")


# ---- export --------------------------------------------------------------------------------
def _catalog(root: Path, split: str, paths: list[str], labels: np.ndarray,
             true_labels: np.ndarray | None = None) -> Catalog:
    return Catalog(image_paths=tuple(paths), class_names=("cat", "dog", "car"),
                   labels=labels.astype(np.int8),
                   true_labels=None if true_labels is None else true_labels.astype(np.int8),
                   root=str(root), split=split)


def test_write_matches_reference_dtypes_and_values(tmp_path: Path) -> None:
    train = _catalog(tmp_path, "train", PATHS, OUR_OBS, TRUTH)
    val = _catalog(tmp_path, "val", PATHS[:2], TRUTH[:2])
    out = tmp_path / "out"
    write_cole(out, train, val)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["class_names.txt"] + [f"formatted_{s}_{k}.npy" for s in ("train", "val")
                                                  for k in ("images", "labels", "labels_obs")])
    imgs = np.load(out / "formatted_train_images.npy")
    assert imgs.dtype == np.array(PATHS).dtype  # '<U10', as np.array(list_of_str) gives
    assert imgs.tolist() == PATHS
    labels = np.load(out / "formatted_train_labels.npy")
    obs = np.load(out / "formatted_train_labels_obs.npy")
    assert labels.dtype == np.float64 and obs.dtype == np.float64
    np.testing.assert_array_equal(labels, TRUTH)
    np.testing.assert_array_equal(obs, REF_OBS)
    # A fully labelled val catalog: every entry observed, negatives as -1.
    np.testing.assert_array_equal(np.load(out / "formatted_val_labels_obs.npy"),
                                  2 * TRUTH[:2] - 1)
    assert (out / "class_names.txt").read_text() == "cat\ndog\ncar\n"


def test_round_trip(tmp_path: Path) -> None:
    _images(tmp_path, PATHS)
    train = _catalog(tmp_path, "train", PATHS, OUR_OBS, TRUTH)
    val = _catalog(tmp_path, "val", PATHS[::-1], TRUTH[::-1])
    write_cole(tmp_path, train, val)
    for original in (train, val):
        back = read_cole(tmp_path, original.split)
        assert back.image_paths == original.image_paths
        assert back.class_names == original.class_names
        np.testing.assert_array_equal(back.labels, original.labels)
        np.testing.assert_array_equal(back.ground_truth, original.ground_truth)
        assert back.root == str(tmp_path.absolute()) and back.split == original.split
    np.testing.assert_array_equal(read_cole(tmp_path, "train").true_labels, train.true_labels)


def test_write_without_ground_truth_writes_nothing(tmp_path: Path) -> None:
    train = _catalog(tmp_path, "train", PATHS, OUR_OBS)  # unknowns, no true_labels
    val = _catalog(tmp_path, "val", PATHS, TRUTH)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="train catalog has unknown labels.*ground truth"):
        write_cole(out, train, val)
    with pytest.raises(DataError, match="val catalog has unknown labels"):
        write_cole(out, val, train)  # the train side is valid: nothing may be written first
    assert not out.exists() or not any(out.iterdir())


def test_write_rejects_mismatched_classes(tmp_path: Path) -> None:
    train = _catalog(tmp_path, "train", PATHS, TRUTH)
    val = Catalog(image_paths=tuple(PATHS), class_names=("a", "b", "c"),
                  labels=TRUTH.astype(np.int8), root=str(tmp_path))
    with pytest.raises(DataError, match="different class names"):
        write_cole(tmp_path / "out", train, val)
    assert not (tmp_path / "out").exists()


# ---- NUS-WIDE ------------------------------------------------------------------------------
def test_nuswide_records_version_and_keeps_empty_rows(tmp_path: Path) -> None:
    truth = _nus(tmp_path)
    cat = read_nuswide(tmp_path, "val", version="cole2020")
    assert cat.n_classes == 81 and cat.n_images == 4
    np.testing.assert_array_equal(cat.labels, truth.astype(np.int8))
    assert not (cat.labels[1] == 1).any()
    step = cat.provenance[0]
    assert step["dataset"] == "nuswide" and step["version"] == "cole2020"
    assert Path(cat.root) == (tmp_path / "Flickr").absolute()  # reference layout default


def test_nuswide_em_apl_warns_on_unexpected_size(tmp_path: Path) -> None:
    _nus(tmp_path)
    with pytest.warns(UserWarning, match="60260"):
        cat = read_nuswide(tmp_path, "val", version="em_apl")
    assert cat.provenance[0]["version"] == "em_apl"


def test_nuswide_invalid_version_lists_choices(tmp_path: Path) -> None:
    _nus(tmp_path)
    with pytest.raises(ConfigError) as e:
        read_nuswide(tmp_path, "val", version="cole2021")
    for name in NUSWIDE_VERSIONS:
        assert name in str(e.value)


def test_nuswide_wrong_class_count(tmp_path: Path) -> None:
    _images(tmp_path, PATHS)
    _save_reference(tmp_path, "train", PATHS, TRUTH)
    with pytest.raises(DataError, match="81 classes.*3 columns"):
        read_nuswide(tmp_path, "train")


# ---- through the registry -------------------------------------------------------------------
def test_registry_load(cole_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    cat = data.load("cole", root=cole_root, split="train", class_names=["a", "b", "c"])
    np.testing.assert_array_equal(cat.labels, OUR_OBS)
    nus_root = tmp_path_factory.mktemp("nus")
    _nus(nus_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = data.load("nuswide", root=nus_root, split="val", version="em_apl")
    assert cat.provenance[0]["version"] == "em_apl"
