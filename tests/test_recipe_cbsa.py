"""The CBSA recipe end to end on generated images with a tiny random-init CLIP, the
labeled-only warm-up, the ablation flags, contexts and exact resume."""

import json

import numpy as np
import pytest
import torch

from spml_world import interrupt_semi_epoch, quadrant_image, ssmll_base
from vlml import config, encoders, recipes, runs
from vlml.contexts import ContextClustering
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.engine import LAST, Trainer, load_checkpoint
from vlml.errors import ConfigError, DataError, UnknownNameError
from vlml.pseudo.prior import fuse_prior
from vlml.recipes.ssmll import cbsa
from vlml.recipes.ssmll.data import load_splits
from vlml.recipes.ssmll.parts import build_loop
from vlml.types import Catalog

C = 4
GROUPS = [["c0", "c1"], ["c2", "c3"]]  # planted co-occurrence groups
TIMING = ("train_seconds", "train_items_per_s", "pseudo_seconds")


pytestmark = pytest.mark.usefixtures("one_thread")


def grouped_truth(n, seed):
    """Each image draws one group and lights up its classes (each with p 0.8, at least one)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, C), dtype=np.int8)
    for i in range(n):
        g = rng.integers(2)
        truth[i, 2 * g:2 * g + 2] = rng.random(2) < 0.8
        if not truth[i].any():
            truth[i, 2 * g + rng.integers(2)] = 1
    return truth


def write_images(folder, truth, seed, prefix=""):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, row in enumerate(truth):
        quadrant_image(row, rng).save(folder / f"{prefix}{i}.png")
        names.append(f"{prefix}{i}.png")
    return names


def catalog(folder, n, seed, split):
    truth = grouped_truth(n, seed)
    names = write_images(folder, truth, seed)
    return Catalog(names, [f"c{c}" for c in range(C)], truth, root=str(folder), split=split)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssmll_world")
    paths = {"train": catalog(root / "train", 48, 0, "train").save(root / "train.zip"),
             "test": catalog(root / "test", 16, 1, "test").save(root / "test.zip")}
    arch, ckpt = make_tiny_checkpoint(root / "clip", "vit", 32)
    return root, paths, arch, ckpt


def make_cfg(world, tmp_path, *overrides, run="run"):
    base = {**ssmll_base(world, tmp_path / run), "model": {"n_ctx": 4},
            "context": {"k": 2, "reference_groups": GROUPS}}
    return config.build(cbsa.Config, base, list(overrides))


def results(tmp_path, run="run"):
    return json.loads((tmp_path / run / "results.json").read_text())


def without_timing(history):
    return [{k: v for k, v in rec.items() if k not in TIMING} for rec in history]


# ---- end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs", ["cache", "images"])
def test_recipe_runs_from_tokens_and_from_images(world, tmp_path, inputs):
    result = runs.run(make_cfg(world, tmp_path, f"model.inputs={inputs}"))
    saved = results(tmp_path)
    assert 0 <= result.test_map <= 100 and saved["test_map"] == pytest.approx(result.test_map)
    assert result.phase == "semi" and result.best_epoch == 2  # selection "last"
    assert saved["n_labeled"] == 12 and saved["n_unlabeled"] == 36
    assert {"CF1", "OF1"} <= set(saved["test_at_0.5"]) and len(saved["test_per_class_ap"]) == C
    quality = saved["pseudo_quality"]
    assert [q["epoch"] for q in quality] == [1, 2]
    assert 0 <= quality[0]["pl_pos_precision"] <= 1 and 0 < quality[0]["pl_used_fraction"] <= 1
    assert (tmp_path / "run" / "contexts.png").stat().st_size > 0
    again = runs.evaluate_run(tmp_path / "run")
    assert again["test_map"] == pytest.approx(result.test_map, abs=1e-6)


def test_contexts_recover_planted_groups(world, tmp_path):
    runs.run(make_cfg(world, tmp_path, "optim.epochs=0"))
    ctx = results(tmp_path)["context"]
    assert sorted(map(sorted, ctx["contexts"])) == GROUPS
    assert ctx["adjusted_rand_index"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "run" / "contexts.json").read_text())
    assert saved["k"] == 2 and saved["clusters"] == [0, 0, 1, 1]


def test_run_report_shows_contexts_and_pseudo_label_quality(world, tmp_path):
    result = runs.run(make_cfg(world, tmp_path))
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"Test mAP {result.test_map:.2f}" in report
    assert "- context 1: c0, c1" in report and "- context 2: c2, c3" in report
    assert "adjusted Rand index vs the reference groups 1.000" in report
    assert "](contexts.png)" in report
    epochs = len(results(tmp_path)["pseudo_quality"])
    table = report[report.index("| epoch |"):].split("\n\n")[0]  # pseudo-labels per epoch
    assert epochs > 0 and table.count("\n| ") == epochs  # one row per epoch


def test_adjusted_rand_index_against_hand_values():
    clustering = ContextClustering(np.array([0, 0, 1, 1]), ("a", "b", "c", "d"))
    assert cbsa.adjusted_rand_index(clustering, [["a", "b"], ["c", "d"]]) == pytest.approx(1.0)
    # reference {a,c},{b,d}: every pair disagrees -> ARI = -0.5 (sklearn's value)
    assert cbsa.adjusted_rand_index(clustering, [["a", "c"], ["b", "d"]]) == pytest.approx(-0.5)
    with pytest.raises(ConfigError, match="unknown class 'e'"):
        cbsa.adjusted_rand_index(clustering, [["e"]])


def test_warmup_never_reads_unlabeled_images(world, tmp_path):
    """Two catalogs with the same labeled images but different unlabeled ones: identical
    warm-up; different semi-supervised phase."""
    root = world[0]
    truth = grouped_truth(48, 0)
    labels = np.full_like(truth, -1)
    labeled = np.arange(0, 48, 4)
    labels[labeled] = truth[labeled]
    other_truth = grouped_truth(48, 7)
    other_truth[labeled] = truth[labeled]
    names_a = write_images(root / "wa", truth, 0)
    names_b = write_images(root / "wb", other_truth, 9, prefix="u")
    names_b = [f"../wa/{names_a[i]}" if i in labeled else n for i, n in enumerate(names_b)]
    cats = {}
    for key, names, t in (("a", names_a, truth), ("b", names_b, other_truth)):
        folder = root / f"w{key}"
        cats[key] = Catalog(names, [f"c{c}" for c in range(C)], labels, true_labels=t,
                            root=str(folder), split="train").save(root / f"w{key}.zip")
    models = {}
    for key in ("a", "b"):
        cfg = make_cfg(world, tmp_path, f"data.train_catalog={cats[key]}", "data.regime=given",
                       "optim.epochs=1", run=key)
        runs.run(cfg)
        models[key] = {ph: load_checkpoint(tmp_path / key / ph / LAST)["model"]
                       for ph in ("warmup", "semi")}
    for name, value in models["a"]["warmup"].items():
        assert torch.equal(value, models["b"]["warmup"][name]), name
    assert any(not torch.equal(v, models["b"]["semi"][k]) for k, v in models["a"]["semi"].items())


# ---- ablation switches -------------------------------------------------------------------------
def test_context_disabled_has_no_context_head(world, tmp_path):
    runs.run(make_cfg(world, tmp_path, "context.enabled=false"))
    state = load_checkpoint(tmp_path / "run" / "semi" / LAST)["model"]
    assert state and not any(k.startswith("context_head") for k in state)
    saved = results(tmp_path)
    assert saved["context"] is None and not (tmp_path / "run" / "contexts.json").exists()
    log = [json.loads(line) for line in (tmp_path / "run" / "semi" / "metrics.jsonl").open()]
    assert all("loss_ctx_l" not in rec for rec in log)


@pytest.mark.parametrize("unlabeled, targets", [(True, "pseudo_labels"), (False, "pseudo_labels"),
                                                (True, "cap")])
def test_context_on_labeled_only_drops_the_unlabeled_term(world, tmp_path, unlabeled, targets):
    runs.run(make_cfg(world, tmp_path, f"context.unlabeled={str(unlabeled).lower()}",
                        f"context.targets={targets}", "optim.epochs=1"))
    rec = [json.loads(line) for line in (tmp_path / "run" / "semi" / "metrics.jsonl").open()][0]
    assert rec["loss_ctx_l"] > 0
    assert (rec["loss_ctx_u"] > 0) == unlabeled


def test_global_feature_changes_the_model(world, tmp_path):
    a = runs.run(make_cfg(world, tmp_path, "optim.epochs=0", run="a"))
    b = runs.run(make_cfg(world, tmp_path, "optim.epochs=0", "model.feature=global", run="b"))
    assert results(tmp_path, "b")["feature"] == "global"
    assert a.test_map != b.test_map


def test_fixed_threshold_pseudo_labels(world, tmp_path):
    runs.run(make_cfg(world, tmp_path, "pseudo.method=fixed", "optim.epochs=1"))
    saved = np.load(tmp_path / "run" / "semi" / "pseudo_last.npz")
    assert saved["mask"].all()
    np.testing.assert_array_equal(saved["labels"], (saved["scores"] >= 0.5).astype(np.int8))


def test_zero_shot_prior_is_fused_into_the_teachers_scores(world, tmp_path):
    alone = runs.run(make_cfg(world, tmp_path, "optim.epochs=1", run="alone"))
    cfg = make_cfg(world, tmp_path, "optim.epochs=1", "pseudo.prior_weight=1.5", run="prior")
    fused = runs.run(cfg)
    teacher = np.load(tmp_path / "alone" / "semi" / "pseudo_last.npz")  # same warm-up teacher
    saved = np.load(tmp_path / "prior" / "semi" / "pseudo_last.npz")
    train = Catalog.load(cfg.data.train_catalog)
    prior = cbsa.zero_shot_prior(cfg, encoders.load(cfg.encoder.name, cfg.encoder.pretrained),
                                 train)
    assert prior.shape == (48, C)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(saved["rows"], teacher["rows"])
    np.testing.assert_allclose(saved["scores"],
                               fuse_prior(teacher["scores"], prior[saved["rows"]], 1.5),
                               rtol=1e-5, atol=1e-6)
    rec_alone, rec_fused = alone.history[-1], fused.history[-1]
    assert rec_fused["teacher_pl_pos_precision"] == rec_alone["pl_pos_precision"]
    assert results(tmp_path, "prior")["prior_weight"] == 1.5
    assert rec_fused["pl_score_map"] != rec_fused["teacher_pl_score_map"]
    assert "teacher alone: score_map" in (tmp_path / "prior" / "report.md").read_text()


def test_a_prior_of_the_wrong_shape_is_refused(world, tmp_path):
    cfg = make_cfg(world, tmp_path)
    splits = load_splits(cfg.data)
    with pytest.raises(DataError, match=r"prior has shape \(3, 4\).*\(48, 4\)"):
        build_loop(cfg, None, None, splits, tmp_path, torch.device("cpu"),
                   prior=np.zeros((3, 4), dtype=np.float32))


def test_k_sweep_and_auto(world, tmp_path):
    runs.run(make_cfg(world, tmp_path, "context.k=3", "optim.epochs=0", run="k3"))
    assert json.loads((tmp_path / "k3" / "contexts.json").read_text())["k"] == 3
    state = load_checkpoint(tmp_path / "k3" / "warmup" / LAST)["model"]
    assert state["context_head.fc.weight"].shape[0] == 3
    runs.run(make_cfg(world, tmp_path, "context.k=auto", "optim.epochs=0", run="auto"))
    auto = json.loads((tmp_path / "auto" / "contexts.json").read_text())
    assert auto["k_method"] == "eigengap" and auto["k"] == 2  # two planted blocks


def test_labeled_val_selection_holds_out_labeled_images(world, tmp_path):
    result = runs.run(make_cfg(world, tmp_path, "data.selection=labeled_val",
                                 "data.val_frac=0.25", "optim.log_test_map=true"))
    saved = results(tmp_path)
    assert saved["n_holdout"] == 3 and saved["n_labeled"] == 9
    history = result.history
    assert all(r["select"] == r["val_map"] for r in history)
    assert all(0 <= r["test_map_monitor"] <= 100 for r in history)  # logged, never selected on
    best = max(history, key=lambda r: r["select"])
    assert result.best_epoch == best["epoch"] and saved["val_map"] == best["val_map"]


# ---- resume -------------------------------------------------------------------------------------
def test_resume_after_kill_reproduces(world, tmp_path, monkeypatch):
    full = runs.run(make_cfg(world, tmp_path, run="full"))
    original = interrupt_semi_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        runs.run(make_cfg(world, tmp_path, run="killed"))
    assert load_checkpoint(tmp_path / "killed" / "semi" / LAST)["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = runs.run(make_cfg(world, tmp_path, run="killed"))
    assert resumed.test_map == full.test_map
    assert without_timing(resumed.history) == without_timing(full.history)


# ---- configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, error, message", [
    ("model.feature=globl", ConfigError, "label_specific"),
    ("pseudo.method=capp", ConfigError, "cap"),
    ("context.k=1", ConfigError, "context.k"),
    ("pseudo.prior_weight=-1", ConfigError, "pseudo.prior_weight"),
    ("data.train_catalog=null", ConfigError, "data.root"),
    ("optim.warmup_epochs=0", None, None),
])
def test_bad_config_fails_before_work(world, tmp_path, override, error, message):
    overrides = [override, "optim.epochs=0"]
    overrides += ["data.dataset=voc2012"] if "catalog" in override else []
    if error is None:  # nothing to train at all
        with pytest.raises(ConfigError, match="nothing to train"):
            runs.run(make_cfg(world, tmp_path, *overrides))
    else:
        with pytest.raises(error, match=message):
            runs.run(make_cfg(world, tmp_path, *overrides))
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_lists_choices(world, tmp_path):
    cfg = make_cfg(world, tmp_path, "data.train_catalog=null", "data.dataset=vocc",
                   "data.root=/x")
    with pytest.raises(UnknownNameError, match="voc2012"):
        runs.run(cfg)


def test_recipes_are_registered():
    assert recipes.get("cbsa") is cbsa and recipes.get("cbsa").Config is cbsa.CBSAConfig
