"""What every registered reader must do, checked from the registry and tests/fixtures.py: store
an absolute root, say where its labels come from, and list its options when given an unknown
one; and what `vlml data prepare` prints and leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import vlml.data
from fixtures import DATASET_FIXTURES, MANIFEST_ROWS, manifest_images, write_manifest_csv
from vlml.cli.main import main
from vlml.errors import ConfigError
from vlml.types import Catalog

# Where each reader's labels come from (provenance key "labels").
LABEL_SOURCES = {
    "voc2007": "ground_truth", "voc2012": "ground_truth", "coco": "ground_truth",
    "cub": "ground_truth", "nuswide": "ground_truth", "cole": "ground_truth",
    "toy": "ground_truth", "manifest": "given", "folder": "given", "images": "given",
}


def test_every_reader_says_where_its_labels_come_from():
    assert set(vlml.data.list_datasets()) == set(LABEL_SOURCES)


@pytest.mark.parametrize("name", vlml.data.list_datasets())
def test_reader_stores_an_absolute_root_and_its_label_source(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = DATASET_FIXTURES[name](Path("ds"))  # a relative folder, as a user may type it
    cat = vlml.data.load(name, case.root, case.split, **case.options)
    assert Path(cat.root).is_absolute(), f"{name}: root {cat.root!r} is relative"
    assert cat.labels_source == LABEL_SOURCES[name]
    assert cat.provenance[0]["labels"] == LABEL_SOURCES[name]
    if LABEL_SOURCES[name] == "given":
        assert cat.ground_truth is None
    monkeypatch.chdir(tmp_path / "ds")  # the catalog still finds its images from elsewhere
    assert all(p.is_file() for p in cat.full_paths())


@pytest.mark.parametrize("name", vlml.data.list_datasets())
def test_unknown_option_lists_the_valid_ones(name, tmp_path):
    case = DATASET_FIXTURES[name](tmp_path)
    entry = vlml.data.DATASETS.get(name)
    with pytest.raises(ConfigError) as e:
        vlml.data.load(name, case.root, case.split, **case.options, no_such_option=1)
    msg = str(e.value)
    assert f"unknown option(s) ['no_such_option'] for dataset {name!r}" in msg
    assert f"valid options: {', '.join(entry.options) or 'none'}" in msg
    assert set(case.options) <= set(entry.options)


def test_unknown_option_suggests_a_close_name(tmp_path):
    case = DATASET_FIXTURES["voc2007"](tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'difficult'"):
        vlml.data.load("voc2007", case.root, case.split, dificult="ignore")


# ---- vlml data prepare ------------------------------------------------------------------------
@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    manifest_images(tmp_path)
    return write_manifest_csv(tmp_path / "labels.csv", MANIFEST_ROWS)


def test_prepare_prints_the_unlisted_policy_and_unknown_share(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "manifest", "--root", str(manifest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    cat = Catalog.load(out / "all.catalog.zip")
    share = 100 * float((cat.labels == -1).mean())
    assert share == 11 / 16 * 100
    assert f"labels: unlisted classes -> unknown (-1); {share:.1f}% of entries unknown" in printed
    assert main(["data", "prepare", "manifest", "--root", str(manifest), "--out", str(out),
                 "--split", "train", "--option", "unlisted=negative"]) == 0
    printed = capsys.readouterr().out
    assert "labels: unlisted classes -> negative (0); 12.5% of entries unknown" in printed
    assert Catalog.load(out / "train.catalog.zip").provenance[0]["unlisted"] == "negative"


def test_prepare_folder_and_benchmark_print_their_labels(tmp_path, capsys):
    case = DATASET_FIXTURES["folder"](tmp_path / "f")
    assert main(["data", "prepare", "folder", "--root", str(case.root),
                 "--out", str(tmp_path / "o1")]) == 0
    assert "labels: unlisted classes -> unknown (-1); 55.6% of entries unknown" \
        in capsys.readouterr().out
    case = DATASET_FIXTURES["coco"](tmp_path / "c")
    assert main(["data", "prepare", "coco", "--root", str(case.root), "--split", "val2014",
                 "--out", str(tmp_path / "o2")]) == 0
    assert "labels: ground truth from the dataset's annotations; 0.0% of entries unknown" \
        in capsys.readouterr().out


def test_prepare_manifest_help_documents_the_format(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "prepare", "manifest", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in ("image      required", "positives  required", "negatives  optional",
                   "unknowns   optional", "split      optional", "separated by | or ;",
                   "JSON lines", "--classes-file", "classes.txt beside the manifest",
                   "Split: split=NAME", "unknown   -1 (default)", "negative  0:",
                   "allow_outside_root=true", "vlml data prepare manifest --root",
                   "reader options (--option KEY=VALUE): classes, unlisted, check_images, "
                   "allow_outside_root"):
        assert needle in text, needle


def test_prepare_unknown_option_key_exits_2_listing_valid_ones(manifest, tmp_path, capsys):
    assert main(["data", "prepare", "manifest", "--root", str(manifest), "--out",
                 str(tmp_path / "o"), "--option", "unlistd=negative"]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['unlistd']" in err and "did you mean 'unlisted'" in err
    assert "valid options: classes, unlisted, check_images, allow_outside_root" in err
    assert not (tmp_path / "o").exists()


def test_prepare_classes_file_errors(manifest, tmp_path, capsys):
    (tmp_path / "classes.txt.bak").write_text("cat\n")
    case = DATASET_FIXTURES["coco"](tmp_path / "c")
    assert main(["data", "prepare", "coco", "--root", str(case.root), "--classes-file",
                 str(tmp_path / "classes.txt.bak"), "--out", str(tmp_path / "o")]) == 2
    assert "dataset 'coco' takes no class list" in capsys.readouterr().err
    assert main(["data", "prepare", "manifest", "--root", str(manifest), "--classes-file",
                 str(tmp_path / "classes.txt.bak"), "--option", 'classes=["cat"]',
                 "--out", str(tmp_path / "o")]) == 2
    assert "pass one" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("bad", ["duplicate", "outside", "encoding", "missing split"])
def test_failed_prepare_writes_nothing(manifest, tmp_path, capsys, bad):
    rows = list(MANIFEST_ROWS)
    if bad == "duplicate":
        rows.append((str(tmp_path / "img" / "a.jpg"), ["cat"], [], [], "test"))
    elif bad == "outside":
        rows.append(("../x.jpg", ["cat"], [], [], "test"))
    path = write_manifest_csv(tmp_path / "bad.csv", rows)
    if bad == "encoding":
        path.write_bytes(path.read_bytes() + b"img/e.jpg,caf\xe9,,,test\n")
    out = tmp_path / "out"
    splits = ["--split", "train", "--split", "val" if bad == "missing split" else "test"]
    assert main(["data", "prepare", "manifest", "--root", str(path), "--out", str(out),
                 *splits]) == 2
    assert str(path) in capsys.readouterr().err
    assert _left_behind(out) == []  # not even the split that read fine


def test_interrupted_save_leaves_no_partial_catalog(manifest, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["data", "prepare", "manifest", "--root", str(manifest), "--out", str(out),
                 "--split", "train"]) == 0
    before = (out / "train.catalog.zip").read_bytes()
    writes = []

    def failing_write(*args, **kwargs):
        writes.append(1)
        if len(writes) == 2:  # the second array of the zip: half written
            raise OSError("No space left on device")
        return real_write(*args, **kwargs)

    real_write = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="No space left"):
        main(["data", "prepare", "manifest", "--root", str(manifest), "--out", str(out),
              "--split", "train", "--option", "unlisted=negative"])
    assert _left_behind(out) == ["train.catalog.zip"]  # no temp file, no half-written zip
    assert (out / "train.catalog.zip").read_bytes() == before  # the old catalog intact
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
