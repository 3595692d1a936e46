"""Every run writes `report.md` with its plots: identity and test mAP, the selection rule,
training curves per phase, per-class AP (skipped classes shown as skipped), pseudo-label
statistics, and never a `nan` or `None`."""

import dataclasses
import json
import re

import numpy as np
import pytest

from spml_world import make_cfg, make_world
from vlml import config, recipes, runs
from vlml.report import write_run_report
from vlml.report.run_report import selection_rule
from vlml.types import Catalog

pytestmark = pytest.mark.usefixtures("one_thread")

SECTIONS = ("## Model selection", "## Training curves", "## Per-class test AP",
            "## Pseudo-labels")
BAD = re.compile(r"(?i:\bnan\b|\binf\b)|\bNone\b")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def ssmll_cfg(world, out, recipe, *overrides):
    root, paths, arch, ckpt = world
    base = {"recipe": recipe,
            "data": {"dataset": "toy", "train_catalog": str(paths["train"]),
                     "test_catalog": str(paths["test"]), "regime": "semi_supervised",
                     "p": 0.25},
            "encoder": {"name": arch, "pretrained": str(ckpt), "batch_size": 16},
            "optim": {"warmup_epochs": 1, "epochs": 2, "warmup_batch_size": 4,
                      "labeled_batch_size": 4, "unlabeled_batch_size": 12, "lr": 1e-2,
                      "ema_decay": 0.5, "num_workers": 0},
            "out_dir": str(out), "cache_dir": str(root / "cache"), "progress": False}
    if recipe == "cap":
        base["model"] = {"mode": "linear", "features": "clip"}
    return config.build(recipes.get(recipe).Config, base, list(overrides))


def check_report(run_dir):
    """The report's text, after checking its sections, that every image it references is a
    real PNG beside it, and that it prints no nan/None."""
    text = (run_dir / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    assert not BAD.search(text), BAD.search(text)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "training_curves.png" in images and "per_class_ap.png" in images
    for name in images:
        data = (run_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    return text


def test_spml_report_with_pseudo_labels_and_per_class_ap(world, tmp_path):
    result = runs.run(make_cfg(world, tmp_path))
    text = check_report(result.run_dir)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert f"Test mAP {result.test_map:.2f}" in text
    assert "Recipe `spml` (loss `vlpl`, mode `linear`)" in text and "dataset `toy`" in text
    sel = selection_rule(saved)
    assert f"Rule `{sel['rule']}`" in text and sel["rule"] != "?"
    assert "| training | 2 |" in text  # one phase of 2 epochs
    for name, ap in saved["test_per_class_ap"].items():
        assert f"| {name} | {100 * ap:.2f} |" in text
    pseudo = np.load(result.run_dir / "pseudo_plain.npy")
    assert f"| **all** | {int((pseudo == 1).sum())} | {int((pseudo == 0).sum())} |" in text
    assert "pseudo_labels.png" in text


def test_spml_two_phases_and_a_loss_without_pseudo_labels(world, tmp_path):
    run_dir = runs.run(make_cfg(world, tmp_path, "model.mode=linear_init",
                                "model.features=backbone", "model.linear_epochs=1",
                                "optim.epochs=2", "loss.name=an", "loss.params={}")).run_dir
    text = check_report(run_dir)
    assert "| linear_phase | 1 |" in text and "| training | 2 |" in text
    assert text.index("| linear_phase |") < text.index("| training |")
    assert "No pseudo-labels: the loss `an` uses none." in text


@pytest.mark.parametrize("recipe, overrides", [
    ("cbsa", ("model.n_ctx=4", "context.k=2")),
    ("cap", ()),
])
def test_ssmll_report_phases_pseudo_quality_and_contexts(world, tmp_path, recipe, overrides):
    result = runs.run(ssmll_cfg(world, tmp_path / recipe, recipe, *overrides))
    text = check_report(result.run_dir)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert f"Test mAP {result.test_map:.2f}" in text
    assert "| warmup | 1 |" in text and "| semi | 2 |" in text
    assert "Rule `last`" in text and "Selection metric: absent" in text
    assert "pseudo_quality.png" in text and "pseudo_labels.png" in text
    pseudo = text[text.index("## Pseudo-labels"):]
    epochs = len(saved["pseudo_quality"])
    assert epochs == 2 and all(f"\n| {e} | " in pseudo for e in (1, 2))
    assert ("## Contexts" in text and "](contexts.png)" in text) == (recipe == "cbsa")


def test_skipped_test_classes_are_named_not_nan(world, tmp_path):
    """A test class with no known positive has no AP: the table says skipped, the mAP says over
    how many classes it is taken."""
    root, paths = world[0], world[1]
    test = Catalog.load(paths["test"])
    labels = test.labels.copy()
    labels[:, 3] = 0  # c3: no positive in the test labels
    path = dataclasses.replace(test, labels=labels, true_labels=None).save(tmp_path / "t.zip")
    world = (root, {**paths, "test": path}, *world[2:])
    with pytest.warns(UserWarning, match="skipped 1 of 4 classes"):
        run_dir = runs.run(make_cfg(world, tmp_path)).run_dir
    text = check_report(run_dir)
    assert "| c3 | skipped (no known positive or no known negative" in text
    assert "over 3 of 4 classes" in text and "1 skipped: c3." in text


def test_report_of_results_without_test_split_or_quality(tmp_path):
    """Written from the results alone: the recorded selection dict, no test split, pseudo-label
    quality of undefined values, no metrics log."""
    (tmp_path / "semi").mkdir()
    results = {"name": "mine", "recipe": "cbsa", "dataset": "own", "phase": "semi",
               "best_epoch": 1, "val_map": None, "test_map": None, "n_test": 0,
               "n_labeled": 5, "n_unlabeled": 20,
               "selection": {"rule": "observed_recall_at_k", "metric": "val_recall_at_3",
                             "description": "observed-positive recall@3", "k": 3},
               "pseudo_quality": [{"epoch": 1, "pl_used_fraction": 0.5,
                                   "pl_positive_rate": 0.1, "pl_pos_precision": None}]}
    (tmp_path / "semi" / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "train_loss": 1.0, "val_recall_at_3": 40.0}) + "\n")
    text = write_run_report(tmp_path, results).read_text()
    assert not BAD.search(text)
    assert "Test mAP: absent, the run has no test split" in text
    assert "Per-class AP: absent" in text
    assert ("Rule `observed_recall_at_k` (observed-positive recall at 3 on held-out training "
            "images; epoch-record key `val_recall_at_3`)") in text
    assert "Its observed-positive recall at 3 on held-out training images: 40.00." in text
    assert "| semi | 1 | 1.000 | 1.000 | 40.00 |" in text
    assert "Pseudo-label quality: absent, the unlabelled images carry no ground truth" in text


@pytest.mark.parametrize("selection, rule, metric", [
    (None, "clean_val_map", "val_map"),
    ("last", "last", None),
    ("labeled_val", "labeled_val", "val_map"),
    ({"rule": "observed_map", "metric": "val_observed_map", "description": "d"},
     "observed_map", "val_observed_map"),
])
def test_selection_rule_reads_every_recorded_form(selection, rule, metric):
    results = {} if selection is None else {"selection": selection}
    sel = selection_rule(results)
    assert (sel["rule"], sel["metric"]) == (rule, metric) and sel["description"]
