"""Arrays written for a person carry their image paths and class names (`vlml.outputs`)."""

import csv
import json

import numpy as np
import pytest

from vlml.errors import ConfigError, DataError
from vlml.outputs import write_named

PATHS, CLASSES = ["/a/1.jpg", "/a/2.jpg"], ["cat", "dog", "car"]
VALUES = np.array([[0.1, 0.9, 0.25], [1.0, 0.0, 0.5]], np.float32)


def test_npz_holds_values_paths_and_classes(tmp_path):
    (path,) = write_named(tmp_path / "s.npz", VALUES, PATHS, CLASSES)
    with np.load(path) as z:  # no pickle needed
        assert np.array_equal(z["values"], VALUES)
        assert z["image_paths"].tolist() == PATHS and z["class_names"].tolist() == CLASSES


def test_csv_and_jsonl_rows_name_image_and_class(tmp_path):
    write_named(tmp_path / "s.csv", VALUES, PATHS, CLASSES)
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0] == ["image", *CLASSES] and rows[2] == ["/a/2.jpg", "1.0", "0.0", "0.5"]
    write_named(tmp_path / "s.jsonl", VALUES, PATHS, CLASSES)
    first = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert first == {"image": "/a/1.jpg", "values": {"cat": 0.1, "dog": 0.9, "car": 0.25}}


def test_npy_gets_a_names_file_beside_it(tmp_path):
    files = write_named(tmp_path / "p.npy", VALUES.astype(np.int8), PATHS, CLASSES)
    assert [f.name for f in files] == ["p.npy", "p.names.json"]
    names = json.loads(files[1].read_text())
    assert names["image_paths"] == PATHS and names["class_names"] == CLASSES


def test_bad_suffix_and_shape_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"expected one of \.npz, \.csv, \.jsonl, \.npy"):
        write_named(tmp_path / "s.txt", VALUES, PATHS, CLASSES)
    with pytest.raises(DataError, match="does not match 2 images x 2 classes"):
        write_named(tmp_path / "s.npz", VALUES, PATHS, CLASSES[:2])
    assert not list(tmp_path.iterdir())


def test_cli_score_modes_match_the_library():
    from vlml.cli.clip import SCORE_MODES
    from vlml.pseudo.clip_scores import SCORE_MODES as LIB

    assert SCORE_MODES == LIB
