"""Integration tests of `vlml demo` on the toy world, with margins from measured runs.

Measured (quick world, seeds 0/1/2): tiny-CLIP zero-shot mAP 87.5/87.8/86.8 (chance 15.4-15.9);
VLPL pseudo-positive precision 0.78/0.77/0.77 at theta 0.1; test mAP (re-measured with the
seeded head init) AN 85.56/85.51/85.87, VLPL 88.84/89.31/90.09. Full world: see
`test_full_demo` and the README.
The margins are about half the smallest measured gap.
"""

import json
import math

import pytest

from vlml.cli.main import main
from vlml.demo import run_demo
from vlml.errors import ConfigError

pytestmark = pytest.mark.integration

VLPL_OVER_AN_QUICK = 1.5
VLPL_OVER_AN_FULL = 0.7
ZERO_SHOT_OVER_CHANCE = 50.0
PSEUDO_PRECISION_FLOOR = 0.70
# Seed-0 test mAP as measured after model init stopped following the global RNG (issue "one run
# lifecycle": the MLP head is now seeded from the run's seed): a change of these numbers is a
# change of behaviour, to be re-measured and explained. The tolerance allows for float
# differences between CPUs, not for a different training run.
PINNED_QUICK_SEED0 = {"AN": 85.56, "EM": 86.34, "VLPL": 88.84, "full labels (BCE)": 92.36}
PINNED_FULL_SEED0 = {"AN": 87.40, "EM": 86.92, "VLPL": 89.06, "full labels (BCE)": 94.13}
PIN_TOLERANCE = 0.02
STABLE_KEYS = ("zero_shot_map", "zero_shot_map_cosine", "chance_map", "pseudo_label",
               "pseudo_label_sweep", "test_map", "world")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, seed=0, quick=True, ssmll=True, progress=False)


def test_methods_show_their_effects(quick_demo):
    _, m = quick_demo
    assert m["zero_shot_map"] > m["chance_map"] + ZERO_SHOT_OVER_CHANCE
    assert m["pseudo_label"]["precision"] > PSEUDO_PRECISION_FLOOR
    maps = m["test_map"]
    assert maps["VLPL"] > maps["AN"] + VLPL_OVER_AN_QUICK
    assert maps["full labels (BCE)"] > maps["VLPL"]  # the upper bound stays above


def test_seed0_numbers_are_pinned(quick_demo):
    maps = quick_demo[1]["test_map"]
    for method, value in PINNED_QUICK_SEED0.items():
        assert maps[method] == pytest.approx(value, abs=PIN_TOLERANCE), method


def test_theta_trades_recall_for_precision(quick_demo):
    sweep = quick_demo[1]["pseudo_label_sweep"]
    recalls = [s["recall"] for s in sweep]
    assert recalls == sorted(recalls, reverse=True)
    assert sweep[-1]["precision"] > sweep[0]["precision"]


def test_report_and_metrics_are_written(quick_demo):
    out, m = quick_demo
    report = (out / "report.md").read_text()
    for png in ("per_class_ap.png", "pseudo_labels_vs_theta.png", "training_curves.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
    assert f"{m['test_map']['VLPL']:.2f}" in report
    on_disk = json.loads((out / "metrics.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert on_disk["test_map"] == m["test_map"]
    assert set(m["spml"]) == {"AN", "EM", "VLPL", "full labels (BCE)"}
    assert all(math.isfinite(v) for v in m["test_map"].values())


def test_the_trained_vlpl_model_tags_fresh_scenes(quick_demo):
    """The demo ends by tagging unseen scenes with calibrated thresholds, shown in the report."""
    out, m = quick_demo
    tagging = m["tagging"]
    assert tagging["n"] == 12 and len(tagging["rows"]) == 12
    assert "calibrated per class" in tagging["thresholds"]
    assert tagging["mean_f1"] > 0.6, tagging["mean_f1"]
    assert (out / "tagging.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Tagging fresh scenes" in report and "](tagging.png)" in report


def test_same_seed_same_numbers_and_rerun_resumes(quick_demo, tmp_path):
    out, first = quick_demo
    again = run_demo(tmp_path, seed=0, quick=True, progress=False)
    resumed = run_demo(out, seed=0, quick=True, ssmll=True, progress=False)
    for key in STABLE_KEYS:
        assert again[key] == first[key], key
        assert resumed[key] == first[key], key
    maps = [{k: r["test_map"] for k, r in run["ssmll"]["methods"].items()}
            for run in (first, resumed)]
    assert maps[0] == maps[1]


def test_ssmll_part_is_in_the_report(quick_demo):
    out, m = quick_demo
    report = (out / "report.md").read_text()
    assert "Semi-supervised training" in report
    for method, r in m["ssmll"]["methods"].items():
        assert f"| {method} | {r['test_map']:.2f} |" in report
    plot = m["ssmll"]["context"]["plot"]
    assert f"]({plot})" in report and (out / plot).stat().st_size > 1000
    assert m["ssmll"]["context"]["ari"] > 0.8
    cbsa = m["ssmll"]["methods"]["cbsa"]
    assert (f"from {cbsa['first_epoch_teacher_score_map']:.2f} (teacher alone) to "
            f"{cbsa['first_epoch_score_map']:.2f}") in report


def test_cli_prints_where_the_report_is(quick_demo, capsys):
    out, m = quick_demo
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert str((out / "report.md").resolve()) in text
    assert f"VLPL {m['test_map']['VLPL']:.2f}" in text


@pytest.mark.parametrize("seed", [-1, 5000])
def test_bad_seed_is_refused_before_work(tmp_path, seed):
    with pytest.raises(ConfigError, match="--seed"):
        run_demo(tmp_path, seed=seed, quick=True, progress=False)
    assert not any(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_full_demo(tmp_path):
    m = run_demo(tmp_path, seed=0, progress=False)
    assert m["zero_shot_map"] > m["chance_map"] + ZERO_SHOT_OVER_CHANCE
    assert m["pseudo_label"]["precision"] > PSEUDO_PRECISION_FLOOR
    assert m["test_map"]["VLPL"] > m["test_map"]["AN"] + VLPL_OVER_AN_FULL
    for method, value in PINNED_FULL_SEED0.items():
        assert m["test_map"][method] == pytest.approx(value, abs=PIN_TOLERANCE), method
    assert m["wall_seconds"] < 300
