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
