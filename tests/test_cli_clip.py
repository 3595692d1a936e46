"""`vlml features | zero-shot | pseudo-label` on generated images with a tiny random-init CLIP."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from vlml.cli.main import main
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.types import Catalog


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipcli")
    rng = np.random.default_rng(0)
    n, c = 24, 3
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    truth = (rng.random((n, c)) < 0.5).astype(np.int8)
    truth[:, 0] = np.where(truth.sum(1) == 0, 1, truth[:, 0])
    observed = np.where(rng.random((n, c)) < 0.5, truth, -1).astype(np.int8)
    cat = Catalog([f"{i}.png" for i in range(n)], ["cat", "dog", "car"], observed,
                  true_labels=truth, root=str(root))
    arch, ckpt = make_tiny_checkpoint(root / "clip", "vit", 32)
    return cat.save(root / "c.zip"), arch, ckpt, root


def _enc(setup):
    path, arch, ckpt, root = setup
    return ["--catalog", str(path), "--encoder", arch, "--pretrained", str(ckpt)]


def test_features_then_cache_hit(setup, capsys):
    out = setup[3] / "cache"
    assert main(["features", *_enc(setup), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "plain:" in first and "flip:" in first and "24 images" in first
    assert main(["features", *_enc(setup), "--out", str(out)]) == 0
    assert capsys.readouterr().out == first  # same folders: reused


def test_zero_shot_reports_map_equal_to_sklearn(setup, tmp_path, capsys):
    scores_path = tmp_path / "s.npy"
    assert main(["zero-shot", *_enc(setup), "--cache", str(setup[3] / "cache"),
                 "--scores-out", str(scores_path)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scores = np.load(scores_path)
    truth = Catalog.load(setup[0]).true_labels
    expected = 100 * np.mean([average_precision_score(truth[:, j], scores[:, j])
                              for j in range(3)])
    assert out["map"] == pytest.approx(expected, abs=1e-9)
    assert np.allclose(scores.sum(1), 1, atol=1e-5)  # softmax over classes


def test_pseudo_label_writes_labels_and_report(setup, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["pseudo-label", *_enc(setup), "--cache", str(setup[3] / "cache"),
                 "--out", str(out), "--param", "tau=0.03", "--param", "theta=0.3"]) == 0
    cat = Catalog.load(setup[0])
    for view in ("plain", "flip"):
        labels = np.load(out / f"pseudo_{view}.npy")
        assert labels.shape == (24, 3) and (labels[cat.labels >= 0] == -1).all()
        assert json.loads((out / f"pseudo_{view}.json").read_text())["params"]["theta"] == 0.3
    md = (out / "pseudo_quality.md").read_text()
    assert "| cat |" in md and "pos_precision" in md
    assert (out / "pseudo_quality.png").stat().st_size > 1000


def test_unknown_encoder_and_labeller_are_explained(setup, tmp_path, capsys):
    path = str(setup[0])
    assert main(["zero-shot", "--catalog", path, "--encoder", "ViT-B-3"]) == 2
    assert "ViT-B-32" in capsys.readouterr().err
    for method in ("vlp", "cap"):  # cap needs labelled targets: not a similarity labeller
        assert main(["pseudo-label", *_enc(setup), "--out", str(tmp_path), "--method",
                     method]) == 2
        assert "'vlpl'" in capsys.readouterr().err


def test_pseudo_label_offers_the_registered_labellers_that_need_no_targets(setup, tmp_path):
    from vlml import pseudo
    from vlml.cli.clip import similarity_labellers

    assert similarity_labellers() == pseudo.list_pseudo_labelers(needs_targets=False)
    assert {"vlpl", "fixed", "topk"} <= set(similarity_labellers())
    out = tmp_path / "fixed"
    assert main(["pseudo-label", *_enc(setup), "--cache", str(setup[3] / "cache"),
                 "--out", str(out), "--method", "fixed", "--param", "threshold=0.2",
                 "--views", "plain"]) == 0
    labels = np.load(out / "pseudo_plain.npy")
    assert set(np.unique(labels[Catalog.load(setup[0]).labels == -1])) <= {0, 1}


# ---- numbers that cannot mislead ------------------------------------------------------------

def _catalog(setup, name, labels, class_names=("cat", "dog", "car"), **kw):
    base = Catalog.load(setup[0])
    cat = Catalog(base.image_paths, list(class_names), np.asarray(labels, dtype=np.int8),
                  root=base.root, **kw)
    return str(cat.save(setup[3] / f"{name}.zip"))


def _with(setup, path):
    return ["--catalog", path, *_enc(setup)[2:]]


GIVEN = [{"reader": "manifest", "labels": "given"}]


def test_zero_shot_on_positives_only_labels_reports_no_map_and_why(setup, capsys):
    labels = np.full((24, 3), -1, dtype=np.int8)
    labels[np.arange(24), np.arange(24) % 3] = 1               # one given tag per image
    path = _catalog(setup, "positives", labels, provenance=GIVEN)
    assert main(["zero-shot", *_with(setup, path), "--cache", str(setup[3] / "cache")]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["map"] is None and out["n_skipped_classes"] == 3
    assert "given by a user" in out["evaluated_against"]
    assert "no mAP is reported" in out["note"] and "no known negative" in out["note"]
    assert "no mAP is reported" in captured.err
    assert not re.search(r"\bnan\b", (captured.out + captured.err).lower())


def test_zero_shot_on_given_labels_scores_only_classes_with_both_kinds(setup, tmp_path, capsys):
    truth = Catalog.load(setup[0]).true_labels
    labels = truth.copy()
    labels[:, 2] = np.where(truth[:, 2] == 1, 1, -1)           # 'car': only positives known
    path = _catalog(setup, "given", labels, provenance=GIVEN)
    scores_path = tmp_path / "s.npy"
    assert main(["zero-shot", *_with(setup, path), "--cache", str(setup[3] / "cache"),
                 "--scores-out", str(scores_path)]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    scores = np.load(scores_path)
    expected = 100 * np.mean([average_precision_score(truth[:, j], scores[:, j])
                              for j in range(2)])
    assert out["map"] == pytest.approx(expected, abs=1e-9) and out["n_skipped_classes"] == 1
    assert "1 with no known negative" in out["note"] and "'car'" in out["note"]
    assert "skipped 1 of 3 classes" in captured.err


def test_one_class_softmax_is_refused_before_any_work(setup, tmp_path, capsys):
    truth = Catalog.load(setup[0]).true_labels
    path = _catalog(setup, "one", truth[:, :1], class_names=["cat"])
    cache = tmp_path / "fresh-cache"
    assert main(["zero-shot", *_with(setup, path), "--cache", str(cache)]) == 2
    assert "softmax over one class is 1 for every image" in capsys.readouterr().err
    assert main(["pseudo-label", *_with(setup, path), "--cache", str(cache),
                 "--out", str(tmp_path / "p"), "--param", "tau=0.03", "--param",
                 "theta=0.3"]) == 2
    err = capsys.readouterr().err
    assert "VLPL pseudo-labels" in err and "'class_threshold'" in err
    assert not cache.exists() and not (tmp_path / "p").exists()
    # the cosine mode scores one class (its mAP against the ground truth)
    assert main(["zero-shot", *_with(setup, path), "--cache", str(setup[3] / "cache"),
                 "--mode", "cosine"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["map"] > 0


def test_catalog_without_classes_is_refused(setup, tmp_path, capsys):
    path = _catalog(setup, "noclass", np.zeros((24, 0)), class_names=[])
    assert main(["zero-shot", *_with(setup, path), "--cache", str(tmp_path / "c")]) == 2
    assert "no class names" in capsys.readouterr().err


@pytest.mark.parametrize("provenance, why", [
    (GIVEN, "its labels were given by a user"),
    ((), "it keeps no ground truth"),
])
def test_pseudo_label_quality_only_against_ground_truth(setup, tmp_path, capsys, provenance,
                                                        why):
    observed = Catalog.load(setup[0]).labels                   # partly known, no true labels
    path = _catalog(setup, "notruth", observed, provenance=provenance)
    out = tmp_path / "p"
    assert main(["pseudo-label", *_with(setup, path), "--cache", str(setup[3] / "cache"),
                 "--out", str(out), "--param", "tau=0.03", "--param", "theta=0.3",
                 "--views", "plain"]) == 0
    text = capsys.readouterr().out
    assert f"pseudo-label quality: not computed: {why}" in text
    assert (out / "pseudo_plain.npy").exists() and not (out / "pseudo_quality.md").exists()
