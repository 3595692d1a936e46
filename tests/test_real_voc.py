"""Both papers' recipes end to end on real PASCAL VOC 2007 images and official labels
(`../shared/data/voc2007-mini`, 400 images of train/val), read through the real VOC reader, with
a tiny random-init CLIP ResNet. Checks that every stage runs on real JPEGs and real label files
and writes its outputs; accuracy is meaningless with random weights. Skipped without `../shared`.
"""

import json
from pathlib import Path

import pytest

from vlml import config, runs
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.recipes.spml import recipe as vlpl
from vlml.recipes.ssmll import cap, cbsa

VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2007-mini"
VOC_CLASSES = sorted(["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
                      "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                      "pottedplant", "sheep", "sofa", "train", "tvmonitor"])

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not VOC_MINI.is_dir(),
                                 reason="../shared/data/voc2007-mini is not available")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_real")
    arch, ckpt = make_tiny_checkpoint(root / "clip", "resnet", 64)
    return root, {"name": arch, "pretrained": str(ckpt), "batch_size": 64}


def _data(**extra):
    return {"dataset": "voc2007", "root": str(VOC_MINI), "train_split": "train",
            "test_split": "val", **extra}


def _check_results(run_dir: Path) -> dict:
    """Every VOC class has positives in the mini val split: 20 APs, mAP their mean."""
    saved = json.loads((run_dir / "results.json").read_text())
    aps = saved["test_per_class_ap"]
    assert sorted(aps) == VOC_CLASSES and all(0 <= v <= 1 for v in aps.values())
    assert saved["test_map"] == pytest.approx(100 * sum(aps.values()) / 20, abs=1e-6)
    return saved


# the small val split of the mini set misses a class; the warning says which
@pytest.mark.filterwarnings("ignore:mAP. skipped 1 of 20 classes")
def test_vlpl_on_real_voc(clip, tmp_path):
    root, encoder = clip
    cfg = config.build(vlpl.SPMLConfig, {
        "data": _data(), "encoder": encoder,
        "model": {"mode": "linear", "features": "clip", "backbone": "test_resnet",
                  "pretrained": False},
        "optim": {"lr": 0.01, "batch_size": 32, "epochs": 1, "num_workers": 0},
        "out_dir": str(tmp_path / "vlpl"), "cache_dir": str(root / "cache"), "progress": False})
    runs.run(cfg)
    saved = _check_results(tmp_path / "vlpl")
    assert saved["n_train"] + saved["n_val"] > 150


@pytest.mark.parametrize("recipe", ["cbsa", "cap"])
def test_ssmll_recipes_on_real_voc(clip, tmp_path, recipe):
    root, encoder = clip
    base = {"data": _data(p=0.2), "encoder": encoder,
            "optim": {"warmup_epochs": 1, "epochs": 1, "warmup_batch_size": 8,
                      "labeled_batch_size": 4, "unlabeled_batch_size": 16, "lr": 1e-2,
                      "num_workers": 0},
            "out_dir": str(tmp_path / recipe), "cache_dir": str(root / "cache"),
            "progress": False}
    if recipe == "cap":
        base["model"] = {"mode": "linear", "features": "clip"}
        runs.run(config.build(cap.Config, base))
    else:
        base["model"] = {"n_ctx": 2}
        base["context"] = {"k": 3}
        runs.run(config.build(cbsa.Config, base))
        contexts = json.loads((tmp_path / recipe / "contexts.json").read_text())
        assert sorted(n for c in contexts["contexts"] for n in c) == VOC_CLASSES
        assert (tmp_path / recipe / "report.md").is_file()
    saved = _check_results(tmp_path / recipe)
    assert saved["phase"] == "semi" and saved["n_labeled"] > 0 and saved["n_unlabeled"] > 0


def _write_manifest(path: Path, cat, rows: list[tuple[int, list[str], list[str]]]) -> None:
    """A manifest CSV beside no images: absolute image paths into the VOC folder."""
    lines = ["image,positives,negatives"]
    lines += [f"{Path(cat.root) / cat.image_paths[i]},{'|'.join(pos)},{'|'.join(neg)}"
              for i, pos, neg in rows]
    path.write_text("\n".join(lines) + "\n")


def test_own_data_path_on_real_voc(clip, tmp_path):
    """A user's route (README "Your own images") on real photos: manifests with one quick tag
    per photo, or a few photos fully tagged, no ground truth anywhere; catalogs by the manifest
    reader; VLPL and CBSA from the `own` configs with a random-init encoder; `vlml eval`."""
    import numpy as np

    from vlml.cli.main import main
    from vlml.data.voc import read_voc2007
    from vlml.types import Catalog

    rng = np.random.default_rng(0)
    train, val = (read_voc2007(VOC_MINI, s) for s in ("train", "val"))
    names = list(train.class_names)
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")

    def tags(cat, i, value):
        return [names[j] for j in np.flatnonzero(cat.labels[i] == value)]

    _write_manifest(tmp_path / "one_tag.csv", train,
                    [(i, [str(rng.choice(tags(train, i, 1)))], [])
                     for i in range(len(train.image_paths)) if (train.labels[i] == 1).any()])
    full = set(rng.choice(len(train.image_paths), size=len(train.image_paths) // 10, replace=False))
    _write_manifest(tmp_path / "few.csv", train,
                    [(i, tags(train, i, 1), tags(train, i, 0)) if i in full else (i, [], [])
                     for i in range(len(train.image_paths))])
    _write_manifest(tmp_path / "test.csv", val,
                    [(i, tags(val, i, 1), []) for i in range(len(val.image_paths))])

    arch = clip[1]["name"]
    common = (f"encoder.name={arch} encoder.pretrained=random encoder.batch_size=64 "
              f"cache_dir={tmp_path / 'cache'} progress=false "
              f"data.test_catalog={tmp_path / 'cat/test/all.catalog.zip'}")
    commands = [
        *(f"data prepare manifest --root {tmp_path / m}.csv --classes-file "
          f"{tmp_path / 'classes.txt'} --option allow_outside_root=true "
          f"--out {tmp_path / 'cat' / m}"
          for m in ("one_tag", "few")),
        f"data prepare manifest --root {tmp_path / 'test.csv'} --classes-file "
        f"{tmp_path / 'classes.txt'} --option allow_outside_root=true --option unlisted=negative "
        f"--out {tmp_path / 'cat/test'}",
        f"train spml/own/vlpl data.train_catalog={tmp_path / 'cat/one_tag/all.catalog.zip'} "
        f"optim.epochs=2 out_dir={tmp_path / 'vlpl'} {common}",
        f"train ssmll/own/cbsa data.train_catalog={tmp_path / 'cat/few/all.catalog.zip'} "
        f"model.n_ctx=2 optim.warmup_epochs=1 optim.epochs=1 optim.labeled_batch_size=4 "
        f"optim.unlabeled_batch_size=16 out_dir={tmp_path / 'cbsa'} {common}",
        f"eval {tmp_path / 'vlpl'}",
        f"eval {tmp_path / 'cbsa'}",
    ]
    for command in commands:
        assert main(command.split()) == 0, command

    for m in ("one_tag", "few"):
        given = Catalog.load(tmp_path / f"cat/{m}/all.catalog.zip")
        assert given.true_labels is None and (given.labels == -1).mean() > 0.8
    for name in ("vlpl", "cbsa"):
        _check_results(tmp_path / name)
        assert (tmp_path / name / "report.md").is_file()
    record = json.loads((tmp_path / "vlpl" / "run.json").read_text())
    assert record["encoder"]["pretrained"] == "random"
