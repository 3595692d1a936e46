"""The demo's semi-supervised part (labeled-only vs CAP vs CBSA at 5% labelled) on the toy world.

Measured with `run_ssmll` (1 torch thread; test mAP in percent; ARI of the contexts):

    world  seed  labeled_only    cap    cbsa   ARI
    quick   0       87.66       85.00  87.53  0.821
    quick   1       89.01       89.31  88.93  1.000
    quick   2       89.12       88.25  89.04  1.000
    full    0       90.57       91.10  90.34  1.000
    full    1       90.86       91.29  90.75  1.000
    full    2       92.09       92.12  92.22  1.000

What holds: the context task finds the planted groups (K = 4 by the eigengap; ARI 1.0 on the
full world, >= 0.82 on the quick one), every method learns (chance mAP ~15), and CBSA stays
within 0.25 mAP of its own labelled-only warm-up. What does not hold on this world: CBSA ahead
of that warm-up by a margin (it gains -0.23 to +0.13), and CBSA ahead of CAP's linear head on
the same frozen features by a margin on every seed (CBSA - CAP: quick +2.5, -0.4, +0.8; full
-0.8, -0.5, +0.1). The recipe loop is not the cause: with oracle pseudo-labels the same
semi-supervised phase lifted CBSA from 86.0 to 89.2 (earlier dual-prompt head). With CAP
pseudo-labels (precision ~0.8) there is little to gain on this world: even 10x the labelled
images (p = 0.5) lifts the labelled-only CBSA head only from 90.6 to 92.4 (CAP's linear head
from 91.1 to 92.7). Those claims are kept as strict
xfails so that a change that makes them true is noticed.
"""

import pytest

from vlml.demo.ssmll import SETTINGS, run_ssmll, train_method
from vlml.demo.world import make_world
from vlml.types import Catalog

MAP_FLOOR = 80.0                 # every method learns (chance ~15, measured >= 85.0)
ARI_FLOOR_QUICK = 0.8            # measured 0.821 on quick seed 0
ARI_FLOOR_FULL = 0.99            # measured 1.0 on every full seed
CBSA_MARGIN = 0.5                # the claims need CBSA ahead by a margin
CBSA_WARMUP_SLACK = 1.0          # measured: CBSA - its warm-up in [-0.23, +0.13]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(root, quick):
    world = make_world(root / "world", 0, 1500 if quick else 5000, 600 if quick else 2000,
                       progress=False)
    return world, run_ssmll(world, root / "work", root / "cache", seed=0, progress=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssmll")
    return (root, *_run(root, quick=True))


def _check_report(root, m, n_pool, ari_floor):
    assert m["p"] == 0.05
    assert m["n_labeled"] == int(0.05 * n_pool) and m["n_labeled"] + m["n_unlabeled"] == n_pool
    assert set(m["methods"]) == {"labeled_only", "cap", "cbsa"}
    for name, r in m["methods"].items():
        assert r["test_map"] > MAP_FLOOR, name
        assert len(r["per_class_ap"]) == 16 and all(0 <= v <= 1 for v in r["per_class_ap"].values())
    assert m["methods"]["labeled_only"]["phase"] == "warmup"
    assert m["methods"]["cbsa"]["phase"] == m["methods"]["cap"]["phase"] == "semi"
    ctx = m["context"]
    assert ctx["k"] == 4 and ctx["ari"] >= ari_floor
    assert sorted(n for c in ctx["clusters"] for n in c) == sorted(r["per_class_ap"])
    assert (root / "work" / ctx["plot"]).stat().st_size > 1000


def test_quick_reports_methods_and_finds_the_contexts(quick_run):
    root, _, m = quick_run
    _check_report(root, m, 1500, ARI_FLOOR_QUICK)


def test_quick_is_deterministic(quick_run, tmp_path):
    root, _, m = quick_run
    ssmll = root / "work" / "ssmll"
    paths = (ssmll / "pool.catalog.zip", ssmll / "test.catalog.zip")
    assert Catalog.load(paths[0]).n_images == 1500
    again = train_method("labeled_only", paths, tmp_path, root / "cache", 0, SETTINGS)
    assert again["test_map"] == m["methods"]["labeled_only"]["test_map"]


def test_quick_cbsa_keeps_its_warmup(quick_run):
    maps = {k: r["test_map"] for k, r in quick_run[2]["methods"].items()}
    assert maps["cbsa"] > maps["labeled_only"] - CBSA_WARMUP_SLACK


@pytest.mark.xfail(strict=True, reason="measured: CBSA ties its labelled-only warm-up on the "
                   "quick toy world (-0.13 to -0.08 mAP; module docstring)")
def test_quick_cbsa_beats_labeled_only(quick_run):
    maps = {k: r["test_map"] for k, r in quick_run[2]["methods"].items()}
    assert maps["cbsa"] > maps["labeled_only"] + CBSA_MARGIN


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssmll_full")
    return (root, *_run(root, quick=False))


@pytest.mark.slow
def test_full_reports_methods_and_finds_the_contexts(full_run):
    root, _, m = full_run
    _check_report(root, m, 5000, ARI_FLOOR_FULL)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: CBSA is within 0.25 mAP of its labelled-only "
                   "warm-up and -0.8 to +0.1 from CAP on the full toy world (module docstring)")
def test_full_cbsa_beats_labeled_only_and_cap(full_run):
    maps = {k: r["test_map"] for k, r in full_run[2]["methods"].items()}
    assert maps["cbsa"] > maps["labeled_only"] + CBSA_MARGIN
    assert maps["cbsa"] > maps["cap"] + CBSA_MARGIN
