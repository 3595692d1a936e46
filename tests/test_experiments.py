"""`vlml sweep` / `vlml table` (vlml.experiments): grid files, validation before any run, a
2 x 2 x 2 grid end to end on a tiny world (shared caches extracted once, re-runs that do no
work, a failing cell recorded while the others go on, a killed sweep finished with the same
numbers, N processes and submitit giving the numbers of one process), tables and published
numbers, and the shipped grids."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from spml_world import make_world
from vlml import config, losses
from vlml.cli.experiments import _tables_text
from vlml.cli.main import main
from vlml.errors import ConfigError
from vlml.experiments import grid as grids
from vlml.experiments import published, record
from vlml.experiments.plan import plan
from vlml.experiments.sweep import run_sweep
from vlml.experiments.table import build_tables, render
from vlml.recipes.spml.config import SPMLConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = ("toy", "vlpl_table1", "vlpl_table2", "cbsa_main", "cbsa_ablations")
ROOTS = {"voc2012": "/data/voc", "coco2014": "/data/coco", "nuswide": "/data/nus",
         "cub": "/data/cub"}


def tiny_grid(worlds: dict[str, Path], extra_methods: dict | None = None) -> dict:
    """2 methods x 2 datasets (two tiny worlds) x 2 seeds, a linear head on toy-clip."""
    datasets = {name: {"data": {"dataset": "toy", "train_catalog": str(root / "train.zip"),
                                "test_catalog": str(root / "test.zip")}}
                for name, root in worlds.items()}
    return {
        "name": "tiny", "seeds": [0, 1], "threads": 1,
        "set": {"device": "cpu",
                "encoder": {"name": "toy-clip", "pretrained": None, "batch_size": 64},
                "pseudo": {"params": {"tau": 0.03, "theta": 0.3}},
                "model": {"mode": "linear", "features": "clip"},
                "optim": {"lr": 0.01, "batch_size": 8, "epochs": 2, "num_workers": 0}},
        "axes": {"method": {"an": {"loss.name": "an", "label": "AN"},
                            "vlpl": {"loss": {"name": "vlpl", "params": {"alpha": 0.1}}},
                            **(extra_methods or {})},
                 "dataset": datasets},
        "table": {"rows": "method", "columns": ["dataset"]},
    }


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    out = {}
    for name in ("a", "b"):
        make_world(root / name)
        out[name] = root / name
    return out


def write_grid(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def maps(out: Path) -> dict[str, float]:
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    return {cid: record.test_map(out / c["run_dir"]) for cid, c in cells.items()}


@pytest.fixture(scope="module")
def swept(worlds, tmp_path_factory):
    """The 2 x 2 x 2 grid, run once in this process: (grid, out, report)."""
    tmp = tmp_path_factory.mktemp("sweep")
    grid = grids.load(write_grid(tmp / "tiny.yaml", tiny_grid(worlds)))
    out = tmp / "out"
    report = run_sweep(grid, out)
    return grid, out, report


# ---- the grid end to end ---------------------------------------------------------------------
def test_two_by_two_by_two_grid_runs_every_cell(swept):
    grid, out, report = swept
    assert report.cells == 8 and report.ran == 8 and report.ok
    values = maps(out)
    assert sorted(values) == sorted(f"tiny/{m}/{d}/seed{s}" for m in ("an", "vlpl")
                                    for d in ("a", "b") for s in (0, 1))
    assert all(v is not None and 0 <= v <= 100 for v in values.values())
    # seeds change the training only: the same data, different initialisation
    cfg0 = config.read_yaml(out / "runs/tiny/an/a/seed0/config.yaml")
    cfg1 = config.read_yaml(out / "runs/tiny/an/a/seed1/config.yaml")
    assert config.result_diff(cfg0, cfg1, schema=SPMLConfig) == ["seed"]


def test_caches_are_shared_and_extracted_before_any_cell(swept):
    _, out, _ = swept
    folders = sorted(p.name for p in (out / "cache").iterdir())
    # two worlds x (train plain + flip, val plain, test plain), one folder each, for 8 cells
    assert len(folders) == 8
    for name in folders:
        stamp = (out / "cache" / name / "meta.json").stat().st_mtime
        first_run = min((out / "runs").rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
        assert stamp <= first_run.stat().st_mtime


def test_table_has_mean_and_std_over_seeds(swept):
    _, out, _ = swept
    (table,) = build_tables(out)
    values = maps(out)
    an_a = [values[f"tiny/an/a/seed{s}"] for s in (0, 1)]
    assert table.stats["an"]["a"].values == tuple(an_a)
    md = render(table, "md")
    assert "| AN |" in md and "±" in md and md.count("**") >= 4   # best of each column
    csv_text = render(table, "csv")
    assert csv_text.splitlines()[0].startswith("part,row,row_label,column")
    assert len(csv_text.splitlines()) == 1 + 4
    assert r"\pm" in render(table, "latex") and r"\textbf{" in render(table, "latex")


def test_rerun_does_no_work_and_a_killed_sweep_finishes_with_the_same_numbers(swept):
    grid, out, _ = swept
    before = maps(out)
    again = run_sweep(grid, out)
    assert again.ran == 0 and again.finished_before == 8
    # "kill": one cell never started, one stopped after claiming its folder (no results)
    shutil.rmtree(out / "runs/tiny/vlpl/b/seed1")
    (out / "runs/tiny/an/a/seed0/results.json").unlink()
    resumed = run_sweep(grid, out)
    assert resumed.ran == 2 and resumed.finished_before == 6
    assert maps(out) == before


@pytest.mark.integration  # child processes: ~20 s of Python imports
def test_jobs_and_submitit_give_the_numbers_of_one_process(swept, tmp_path):
    pytest.importorskip("submitit")  # the `slurm` extra
    grid, out, _ = swept
    reference = maps(out)
    only = {"dataset": ["a"], "method": ["an"]}
    two = run_sweep(grid, tmp_path / "jobs2", jobs=2, only=only)
    assert two.ran == 2 and two.ok
    sub = run_sweep(grid, tmp_path / "submitit", executor="submitit-local", jobs=2,
                    only={"dataset": ["a"], "method": ["vlpl"]}, seeds=[0])
    assert sub.ran == 1 and sub.ok, sub.failed
    for folder in ("jobs2", "submitit"):
        for cid, value in maps(tmp_path / folder).items():
            assert value == pytest.approx(reference[cid], abs=1e-9), cid


def test_a_failing_cell_is_recorded_and_the_others_go_on(worlds, tmp_path):
    bad = {"broken": {"loss": {"name": "an"}, "data": {"val_catalog": "${out}/nothing.zip"}}}
    data = tiny_grid({"a": worlds["a"]}, bad)
    data["seeds"] = [0]
    grid = grids.load(write_grid(tmp_path / "g.yaml", data))
    # the missing test catalog is found before anything runs
    with pytest.raises(ConfigError, match="broken.*nothing.zip"):
        run_sweep(grid, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()
    # a cell that fails while it runs (a loss parameter of the wrong type): recorded, the
    # others finish
    data["axes"]["method"]["broken"] = {"loss": {"name": "em", "params": {"alpha": "oops"}}}
    grid = grids.load(write_grid(tmp_path / "g.yaml", data))
    broken = tmp_path / "out2"
    report = run_sweep(grid, broken, only={"method": ["an", "broken"]})
    assert report.ran == 1 and list(report.failed) == ["tiny/broken/a/seed0"]
    cells = json.loads((broken / "sweep.json").read_text())["cells"]
    assert cells["tiny/broken/a/seed0"]["status"] == "failed"
    assert cells["tiny/broken/a/seed0"]["error"]
    assert cells["tiny/an/a/seed0"]["status"] == "done"


# ---- validation before any run ---------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda g: g.update(seedz=[0]), r"unknown key 'seedz'.*Did you mean 'seeds'"),
    (lambda g: g["axes"]["method"]["an"].update({"optim.lrr": 0.1}),
     r"axes\.method\.an: unknown key optim\.'lrr'.*Did you mean 'lr'.*Valid keys"),
    (lambda g: g["axes"]["method"]["an"].update({"loss.name": "ann"}),
     r"'ann' is not one of .*an_ls.*Did you mean 'an'"),
    (lambda g: g["axes"]["method"]["an"].update({"seed": 3}), r"'seed' is set by the sweep"),
    (lambda g: g["table"].update(rows="methods"), r"unknown axis 'methods'.*Did you mean"),
    (lambda g: g["set"].update(recipe="cbsaa"), r"unknown recipe 'cbsaa'.*cbsa"),
])
def test_bad_grid_fails_before_any_run_with_the_choices(worlds, tmp_path, change, message):
    data = tiny_grid(worlds)
    change(data)
    with pytest.raises(ConfigError, match=message):
        run_sweep(grids.load(write_grid(tmp_path / "g.yaml", data)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_method_or_dataset_of_a_shipped_grid_names_the_valid_ones(tmp_path):
    data = yaml.safe_load((grids.shipped_root() / "vlpl_table1.yaml").read_text())
    data["axes"]["method"]["vlpll"] = None
    grid = grids.parse(data, "g.yaml", "g")
    with pytest.raises(ConfigError, match=r"unknown method 'vlpll'.*Did you mean 'vlpl'.*an_ls"):
        plan(grid, tmp_path, seeds=[0], roots=ROOTS)
    data["axes"]["method"].pop("vlpll")
    data["axes"]["dataset"]["voc2077"] = None
    grid = grids.parse(data, "g.yaml", "g")
    with pytest.raises(ConfigError, match=r"unknown dataset 'voc2077'.*'voc2007'.*coco2014"):
        plan(grid, tmp_path, seeds=[0], roots=ROOTS)
    with pytest.raises(ConfigError, match=r"--only: unknown method 'em_aple'.*'em_apl'"):
        grids.load("vlpl_table1").cells(only={"method": ["em_aple"]})
    with pytest.raises(ConfigError, match=r"data\.root.*--root voc2012=PATH"):
        plan(grids.load("vlpl_table1"), tmp_path, seeds=[0], only={"dataset": ["voc2012"]})
    with pytest.raises(ConfigError, match=r"--root: unknown dataset 'voc2021'.*'voc2012'"):
        plan(grids.load("cbsa_ablations"), tmp_path, seeds=[0],
             roots={"voc2012": "/x", "cub": "/y", "voc2021": "/z"})


# ---- shipped grids and published numbers -----------------------------------------------------
def test_shipped_grids_plan_every_cell(tmp_path):
    assert set(SHIPPED) <= set(grids.list_shipped())
    counts = {}
    for name in SHIPPED:
        grid = grids.load(name)
        cells = plan(grid, tmp_path / name, seeds=[0], roots=ROOTS)
        counts[name] = len(cells)
        for p in grid.parts:
            if p.table.published:
                published.load(p.table.published)
    assert counts == {"toy": 16 + 9, "vlpl_table1": 16 * 4, "vlpl_table2": 4 * 4,
                      "cbsa_main": 4 * 3 * 4, "cbsa_ablations": 10}
    assert len(grids.load("toy").cells()) == 75   # x 3 seeds


def test_toy_grid_has_every_spml_loss_and_the_demo_settings(tmp_path):
    from vlml.demo import QUICK, spml, ssmll

    grid = grids.load("toy")
    assert set(grid.part("spml").axis("method").names()) == set(losses.list_losses()) - {
        "masked_asl"}
    cells = {p.id: p.cfg for p in plan(grid, tmp_path, seeds=[0])}
    for method, (loss, _) in spml.METHODS.items():
        demo = spml.method_config(method, spml.Catalogs(*(Path("x"),) * 4), tmp_path,
                                  tmp_path, 0, QUICK.spml, False)
        diff = config.result_diff(cells[f"spml/{loss}/seed0"], demo)
        assert all(k.startswith(("data.", "encoder.templates")) for k in diff), (method, diff)
    for method in ssmll.METHODS:
        demo = ssmll.method_config(method, (Path("p"), Path("t")), tmp_path, tmp_path, 0,
                                   ssmll.SETTINGS)
        diff = config.result_diff(cells[f"ssmll/{method}/p05/seed0"], demo)
        assert all(k.startswith("data.") and "catalog" in k for k in diff), (method, diff)


def test_published_numbers_and_compare(swept, tmp_path):
    t1 = published.load("spml_resnet50")
    assert t1.value("vlpl", "voc2012") == 89.10 and t1.value("an", "cub") == 18.31
    assert t1.value("wan", "coco2014") is None and "aevlp" in t1.rows
    ss = published.load("ssmll_resnet50")
    assert ss.value("cap", "coco2014/p05") == 62.88 and ss.value("cbsa", "voc2012/p05") is None
    _, out, _ = swept
    mine = {"columns": {"a": "A", "b": "B"}, "rows": {"an": {"values": {"a": 50.0}},
                                                      "other": {"label": "Other paper",
                                                                "values": {"b": 1.0}}}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(mine))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["table", str(out), "--compare", str(path)]) == 0
    text = buf.getvalue()
    assert "a paper" in text and "| Other paper |" in text and "50.00" in text
    an = build_tables(out)[0].stats["an"]["a"].mean
    assert f"{an - 50:+.2f}" in text
    assert (out / "tables/tiny.md").is_file() and (out / "tables/tiny.png").is_file()
    with pytest.raises(ConfigError, match="no published numbers"):
        _tables_text(out, "md", "auto", [], plot=False)


def test_cli_sweep_and_table(worlds, tmp_path):
    data = tiny_grid({"a": worlds["a"]})
    data["seeds"] = [0]
    path = write_grid(tmp_path / "g.yaml", data)
    out = tmp_path / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["sweep", str(path), "--out", str(out), "--quiet", "--dry-run"]) == 0
        assert not out.exists()
        assert main(["sweep", str(path), "--out", str(out), "--quiet",
                     "optim.epochs=1"]) == 0
        assert main(["table", str(out), "--format", "csv", "--no-plot"]) == 0
    text = buf.getvalue()
    assert "2 would run" in text and "2 of 2 cells done" in text
    assert "tiny,an,AN,a,a," in text
    assert config.read_yaml(out / "runs/tiny/an/a/seed0/config.yaml")["optim"]["epochs"] == 1
    assert main(["sweep", "vlpl_tabel1", "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_slurm_resources_become_the_sbatch_script(tmp_path, monkeypatch):
    """No cluster here: a stand-in `srun` lets submitit build its SLURM executor, whose sbatch
    script must carry the grid's resources."""
    pytest.importorskip("submitit")  # the `slurm` extra
    from vlml.experiments.executors import Submitit, submitit_parameters

    slurm = {"partition": "gpu", "gpus": 1, "cpus": 8, "time": "1-02:30:00", "mem": "64G",
             "array_parallelism": 16, "setup": ["module load cuda"],
             "additional": {"gres": "gpu:a100:1"}}
    assert submitit_parameters(slurm, "local", "n") == {
        "name": "n", "gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 1590,
        "mem_gb": 64.0}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    ex = Submitit("slurm", tmp_path / "jobs", slurm)._executor("vlml-test")
    make = getattr(ex._executor, "_make_submission_file_text", None)
    if make is None:
        pytest.skip("this submitit does not expose its sbatch text")
    text = make("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=1590",
                 "--mem=64GB", "--gres=gpu:a100:1", "--job-name=vlml-test", "module load cuda"):
        assert line in text, line
    with pytest.raises(ConfigError, match=r"unknown key 'partion'.*'partition'"):
        grids.parse({"slurm": {"partion": "gpu"}, "axes": {"m": ["a"]}}, "g.yaml", "g")
