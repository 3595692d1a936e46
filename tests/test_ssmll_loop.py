"""The semi-supervised loop takes parts (model, views, loss, labeller, settings), not a config:
a labeller it never names runs through the registry flags, and the SSMLL config's `pseudo`
section (method + params) is translated once for every recipe (`recipes.ssmll.parts`)."""

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from vlml import config, losses, pseudo
from vlml.contexts import ContextClustering
from vlml.errors import ConfigError
from vlml.recipes.ssmll import cap, cbsa
from vlml.recipes.ssmll.config import make_labeller, ssmll_labellers
from vlml.recipes.ssmll.data import ArrayViews, SSMLLSplits
from vlml.recipes.ssmll.loop import (
    ContextTask,
    RunSettings,
    SemiSettings,
    SemiSupervisedLoop,
    WarmupSettings,
    fit_and_label,
)
from vlml.recipes.ssmll.parts import context_task, phase_settings
from vlml.types import Catalog

N, C, D = 40, 3, 6


class Linear(nn.Module):
    """forward(x) -> (logits, None): the loop's model interface."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(D, C)

    def forward(self, x):
        return self.fc(x), None


def splits_and_views():
    rng = np.random.default_rng(0)
    truth = (rng.random((N, C)) < 0.4).astype(np.int8)
    truth[0] = 1
    feats = (truth @ rng.normal(size=(C, D)) + 0.3 * rng.normal(size=(N, D))).astype(np.float32)
    labels = np.full_like(truth, -1)
    labeled = np.arange(0, N, 4)
    labels[labeled] = truth[labeled]
    names = [f"{i}.png" for i in range(N)]
    train = Catalog(names, [f"c{c}" for c in range(C)], labels, true_labels=truth, split="train")
    test = Catalog(names[:8], train.class_names, truth[:8], split="test")
    splits = SSMLLSplits(train, test, labeled, np.setdiff1d(np.arange(N), labeled),
                         np.zeros(0, dtype=np.int64))
    return splits, ArrayViews(feats, feats[:, ::-1].copy(), 0)


def test_a_labeller_the_loop_never_names_runs_from_the_registry(tmp_path):
    """top-k (no targets, -1 entries) plugs in as a part; the mask drops its -1 entries."""
    splits, views = splits_and_views()
    loop = SemiSupervisedLoop(
        Linear(), views, splits, tmp_path, torch.device("cpu"),
        loss=partial(losses.masked_asl, reduction="mean"), labeller=pseudo.create("topk", k=1),
        warmup=WarmupSettings(epochs=1, lr=1e-2, batch_size=5),
        semi=SemiSettings(epochs=2, lr=1e-2, ema_decay=0.5, labeled_batch_size=5,
                          unlabeled_batch_size=10),
        settings=RunSettings(seed=3))
    result = loop.run()
    assert result.phase == "semi" and result.best_epoch == 2
    saved = np.load(tmp_path / "semi" / "pseudo_last.npz")
    assert (saved["labels"] == 1).sum(axis=1).tolist() == [1] * (N - 10)
    np.testing.assert_array_equal(saved["mask"], saved["labels"] == 1)
    assert result.best["pl_used_fraction"] == pytest.approx(1 / C)


def test_fit_and_label_passes_what_the_flags_ask_for():
    scores_l = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6]])
    targets_l = np.array([[1, 0], [0, 1], [1, 0]])
    scores_u = np.array([[0.65, 0.7], [0.3, 0.1]])
    labels, mask = fit_and_label(pseudo.create("mat"), scores_u, scores_l, targets_l)
    expected = pseudo.create("mat").fit(scores_l, targets_l).transform(scores_u)
    np.testing.assert_array_equal(labels, expected.labels)
    assert mask.all()
    labels, mask = fit_and_label(pseudo.create("cap"), scores_u, None, targets_l)
    cap_out = pseudo.create("cap").fit(None, targets_l).transform(scores_u)
    np.testing.assert_array_equal(labels, cap_out.labels)
    np.testing.assert_array_equal(mask, cap_out.mask)
    labels, mask = fit_and_label(pseudo.create("fixed"), scores_u)   # needs nothing
    assert labels.tolist() == [[1, 1], [0, 0]] and mask.all()
    with pytest.raises(ConfigError, match="'mat' needs the labeled images' scores"):
        fit_and_label(pseudo.create("mat"), scores_u, None, targets_l)
    with pytest.raises(ConfigError, match="'cap' needs the labeled images' labels"):
        fit_and_label(pseudo.create("cap"), scores_u)


def test_a_context_labeller_needing_labeled_scores_is_refused(tmp_path):
    splits, views = splits_and_views()
    task = ContextTask(ContextClustering(np.array([0, 0, 1]), ("c0", "c1", "c2")),
                       loss=losses.masked_asl, labeller=pseudo.create("mat"))
    with pytest.raises(ConfigError, match="context pseudo-labeller 'mat'"):
        SemiSupervisedLoop(Linear(), views, splits, tmp_path, torch.device("cpu"),
                           loss=losses.masked_asl, labeller=pseudo.create("cap"),
                           warmup=WarmupSettings(1), semi=SemiSettings(1), context=task)


def test_settings_come_from_the_shared_config_sections():
    cfg = config.build(cap.Config, {}, ["optim.warmup_epochs=3", "optim.epochs=5",
                                        "optim.ema_decay=0.9", "augment.warmup_cutout=0.25",
                                        "loss.unlabeled_weight=0.5",
                                        "save_pseudo=all", "seed=7"])
    warmup, semi, settings = phase_settings(cfg)
    assert (warmup.epochs, warmup.ema_decay, warmup.cutout, warmup.batch_size) == (3, None, 0.25,
                                                                                   16)
    assert (semi.epochs, semi.ema_decay, semi.unlabeled_weight) == (5, 0.9, 0.5)
    assert (semi.labeled_batch_size, semi.unlabeled_batch_size, semi.lr) == (4, 60, 1e-4)
    assert settings == RunSettings(seed=7, progress=True, eval_batch_size=64, save_pseudo="all")


def test_pseudo_section_is_method_plus_params():
    cfg = config.build(cbsa.Config, {}, [])
    assert (cfg.pseudo.method, cfg.pseudo.params) == ("cap", {})
    assert make_labeller(cfg.pseudo).get_params() == {"a": 1.0, "b": 0.998}
    fixed = config.build(cbsa.Config, {}, ["pseudo.method=fixed", "pseudo.params.threshold=0.6"])
    assert make_labeller(fixed.pseudo).threshold == 0.6
    assert make_labeller(config.build(cbsa.Config, {}, ["pseudo.method=mat"]).pseudo).beta == 0.5
    assert ssmll_labellers() == pseudo.list_pseudo_labelers(needs_similarities=False)
    assert "vlpl" not in ssmll_labellers() and {"cap", "fixed", "mat"} <= set(ssmll_labellers())
    for overrides, message in ((["pseudo.method=vlpl"], "pseudo.method: 'vlpl' is not one of"),
                               (["pseudo.params.beta=0.5"], "pseudo.params: .*no parameter"),
                               (["pseudo.params.b=1.5"], "pseudo.params: b must lie")):
        with pytest.raises(ConfigError, match=message):
            make_labeller(config.build(cbsa.Config, {}, overrides).pseudo)


def test_context_cap_targets_share_the_class_cap_params():
    clustering = ContextClustering(np.array([0, 0, 1]), ("c0", "c1", "c2"))
    cfg = config.build(cbsa.Config, {}, ["context.targets=cap", "pseudo.params.a=0.5"])
    task = context_task(cfg.context, cfg.loss, cfg.pseudo, clustering)
    assert task.labeller.get_params() == {"a": 0.5, "b": 0.998}
    fixed = config.build(cbsa.Config, {}, ["context.targets=cap", "pseudo.method=fixed"])
    assert context_task(fixed.context, fixed.loss, fixed.pseudo,
                        clustering).labeller.get_params() == {"a": 1.0, "b": 0.998}
    plain = config.build(cbsa.Config, {}, [])
    assert context_task(plain.context, plain.loss, plain.pseudo, clustering).labeller is None
