"""The run lifecycle: folders claimed by one config, self-describing runs reloaded in a fresh
process with bit-identical scores, numbers independent of what is cached or ran before."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from spml_world import make_cfg, make_world, ssmll_base
from vlml import config, recipes, runs
from vlml.errors import ConfigError
from vlml.runs import RunFolderError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


SPML_MODES = {
    "linear_clip": (),
    "linear_clip_mlp": ("model.hidden=32",),
    "linear_backbone": ("model.features=backbone", "loss.name=an", "loss.params={}"),
    "end_to_end": ("model.mode=end_to_end", "loss.name=em", "optim.epochs=1"),
    "linear_init": ("model.mode=linear_init", "model.linear_epochs=1", "optim.epochs=1",
                    "loss.name=an", "loss.params={}"),
}


SSMLL_RUNS = {
    "cbsa_cache": ("cbsa", ("model.n_ctx=4", "context.k=2")),
    "cbsa_images": ("cbsa", ("model.n_ctx=4", "context.enabled=false", "model.inputs=images")),
    "cap_linear_clip": ("cap", ("model.mode=linear", "model.features=clip", "model.hidden=16")),
    "cap_linear_backbone": ("cap", ("model.mode=linear", "model.features=backbone")),
    "cap_end_to_end": ("cap", ("model.mode=end_to_end", "optim.epochs=1")),
}


def ssmll_cfg(world, out, recipe, *overrides):
    base = {**ssmll_base(world, out), "recipe": recipe}
    base["optim"] = {**base["optim"], "warmup_epochs": 1}
    if recipe == "cap":
        base["model"] = {"backbone": "test_resnet", "pretrained": False, "image_size": 32}
    return config.build(recipes.get(recipe).Config, base, list(overrides))


def _reload_scores(run_dirs, test_catalog, out):
    """Scores of each run, reloaded by `vlml.runs.load` in a fresh Python process."""
    script = textwrap.dedent(f"""
        import numpy as np
        from vlml import runs
        from vlml.types import Catalog
        test = Catalog.load({str(test_catalog)!r})
        for i, d in enumerate({[str(d) for d in run_dirs]!r}):
            np.save({str(out)!r} + f"/{{i}}.npy", runs.load(d).scores(test))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    return [np.load(out / f"{i}.npy") for i in range(len(run_dirs))]


@pytest.fixture(scope="module")
def every_kind(world, tmp_path_factory):
    """One finished run of every recipe and mode: SPML linear (CLIP / MLP / backbone),
    end_to_end, linear_init; CBSA from cached tokens and from images; CAP linear (CLIP /
    backbone) and end_to_end."""
    tmp_path = tmp_path_factory.mktemp("kinds")
    dirs = []
    for name, overrides in SPML_MODES.items():
        cfg = make_cfg(world, tmp_path, *overrides, f"out_dir={tmp_path / name}")
        dirs.append(runs.run(cfg).run_dir)
    for name, (recipe, overrides) in SSMLL_RUNS.items():
        dirs.append(runs.run(ssmll_cfg(world, tmp_path / name, recipe, *overrides)).run_dir)
    return dirs


def test_reloaded_runs_give_bit_identical_scores_in_a_fresh_process(world, every_kind,
                                                                     tmp_path):
    reloaded = _reload_scores(every_kind, world[1]["test"], tmp_path)
    for d, scores in zip(every_kind, reloaded, strict=True):
        saved = np.load(d / "test_scores.npy")
        assert scores.dtype == saved.dtype and np.array_equal(scores, saved), d.name


def test_image_models_recompute_the_saved_test_scores_from_pixels(world, every_kind):
    """`Run.image_model()`: encoder forward + head from images, in the precision the run's
    cache stored (CBSA's float16 tokens), equals the run's own test scores to 1e-6."""
    from PIL import Image

    from vlml.types import Catalog

    test = Catalog.load(world[1]["test"])
    kinds = set()
    for d in every_kind:
        im = runs.load(d).image_model()
        kinds.add(im.kind)
        x = torch.stack([im.preprocess(Image.open(p).convert("RGB")) for p in test.full_paths()])
        with torch.no_grad():
            probs = im.module(x).numpy()
        saved = np.load(d / "test_scores.npy")
        assert probs.shape == saved.shape and np.abs(probs - saved).max() < 1e-6, d.name
    assert kinds == {"clip_head", "backbone_head", "net", "cbsa"}


def test_run_record_describes_the_model(world, tmp_path):
    run_dir = runs.run(make_cfg(world, tmp_path, "model.hidden=32")).run_dir
    record = json.loads((run_dir / "run.json").read_text())
    assert record["recipe"] == "spml" and record["class_names"] == ["c0", "c1", "c2", "c3"]
    assert record["model"] == {"kind": "head", "features": "clip", "in_features": 32,
                               "hidden": 32, "n_classes": 4}
    assert record["encoder"]["identity"]["weights"].startswith("sha256:")
    assert record["weights"] == "best.safetensors" and record["vlml_version"]
    # the effective per-dataset parameters: alpha given, beta/eps/gamma the loss defaults
    assert record["effective"]["loss"]["params"] == {"alpha": 0.1, "beta": 0.7, "eps": 0.9,
                                                     "gamma": 0.0}
    assert record["effective"]["pseudo"]["method"] == "vlpl"
    assert record["effective"]["pseudo"]["params"]["theta"] == 0.3


def test_reload_refuses_other_encoder_weights(world, tmp_path):
    from vlml.encoders.tiny import make_tiny_checkpoint

    run_dir = runs.run(make_cfg(world, tmp_path)).run_dir
    _, other = make_tiny_checkpoint(tmp_path / "other", "vit", 32, seed=5)
    saved = json.loads((run_dir / "run.json").read_text())
    saved["encoder"]["pretrained"] = str(other)
    (run_dir / "run.json").write_text(json.dumps(saved))
    with pytest.raises(Exception, match="differs from the one the run was trained with"):
        runs.load(run_dir)


def test_same_config_resumes_other_config_is_refused(world, tmp_path):
    first = runs.run(make_cfg(world, tmp_path))
    # keys that do not affect results: the same run, resumed (nothing left to train)
    again = runs.run(make_cfg(world, tmp_path, "progress=true", "device=cpu",
                              "optim.num_workers=1"))
    assert again.test_map == first.test_map
    with pytest.raises(RunFolderError, match=r"optim\.lr: 0\.01 \(saved\) -> 0\.02"):
        runs.run(make_cfg(world, tmp_path, "optim.lr=0.02"))
    with pytest.raises(RunFolderError, match="loss.name"):
        runs.run(make_cfg(world, tmp_path, "loss.name=an", "loss.params={}"))
    saved = config.read_yaml(tmp_path / "run" / "config.yaml")
    assert saved["optim"]["lr"] == 0.01  # the refused config wrote nothing


def test_new_and_overwrite_are_explicit(world, tmp_path):
    runs.run(make_cfg(world, tmp_path))
    other = runs.run(make_cfg(world, tmp_path, "optim.lr=0.02"), new=True)
    assert other.run_dir == tmp_path / "run-2"
    assert config.read_yaml(other.run_dir / "config.yaml")["out_dir"] == str(other.run_dir)
    again = runs.run(make_cfg(world, tmp_path, "optim.lr=0.03"), new=True)
    assert again.run_dir == tmp_path / "run-3"
    (tmp_path / "run" / "marker").write_text("old")
    runs.run(make_cfg(world, tmp_path, "optim.lr=0.02"), overwrite=True)
    assert not (tmp_path / "run" / "marker").exists()
    assert config.read_yaml(tmp_path / "run" / "config.yaml")["optim"]["lr"] == 0.02
    with pytest.raises(ConfigError):
        runs.run(make_cfg(world, tmp_path), new=True, overwrite=True)


def test_a_folder_that_is_not_a_run_is_never_used_or_wiped(world, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("precious")
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(RunFolderError, match="not a vlml run folder"):
            runs.run(make_cfg(world, tmp_path), **kw)
    assert (tmp_path / "run" / "thesis.tex").read_text() == "precious"


def test_invalid_config_leaves_no_folder(world, tmp_path):
    with pytest.raises(ConfigError):
        runs.run(make_cfg(world, tmp_path, "optim.lr=-1"))
    assert not (tmp_path / "run").exists()


def test_cold_and_warm_cache_give_identical_scores(world, tmp_path):
    """The MLP head's init no longer follows the global RNG that extraction draws from."""
    root = world[0]
    cold = runs.run(make_cfg(world, tmp_path, "model.hidden=32", f"out_dir={tmp_path / 'a'}",
                             f"cache_dir={tmp_path / 'cache'}"))
    torch.manual_seed(123)
    torch.rand(1000)  # whatever ran before in the process
    warm = runs.run(make_cfg(world, tmp_path, "model.hidden=32", f"out_dir={tmp_path / 'b'}",
                             f"cache_dir={tmp_path / 'cache'}"))
    assert root.exists()
    a, b = (np.load(r.run_dir / "test_scores.npy") for r in (cold, warm))
    assert np.array_equal(a, b)


def test_cli_claims_folders_and_eval_rescores(world, tmp_path, capsys):
    from vlml.cli.main import main

    cfg = make_cfg(world, tmp_path)
    path = tmp_path / "my.yaml"
    config.save(cfg, path)
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {tmp_path / 'run'}" in out.splitlines()[0]
    assert main(["train", str(path), "optim.lr=0.05"]) == 2
    assert "optim.lr: 0.01 (saved) -> 0.05 (now)" in capsys.readouterr().err
    assert main(["train", str(path), "optim.lr=0.05", "--new"]) == 0
    assert (tmp_path / "run-2" / "run.json").is_file()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert printed["test_map"] == pytest.approx(saved["test_map"], abs=1e-9)


def test_ssmll_record_holds_the_effective_labeller_settings(world, tmp_path):
    run_dir = runs.run(ssmll_cfg(world, tmp_path / "cap", "cap", "model.mode=linear",
                                 "model.features=clip")).run_dir
    record = json.loads((run_dir / "run.json").read_text())
    assert record["recipe"] == "cap" and record["weights"] == "semi/best.safetensors"
    # pseudo.params left empty in the config: the record says what CAP used
    assert record["effective"]["pseudo"]["params"] == {"a": 1.0, "b": 0.998}
    assert record["effective"]["loss"]["gamma_neg"] == 4.0
    assert record["model"]["in_features"] == 32 and record["encoder"]["model_config"]


def test_tagger_from_every_run_kind_recomputes_the_saved_test_scores(world, every_kind):
    """`vlml.predict.Tagger.from_run(d).tag(image paths)`, the path `vlml predict` takes, gives
    every run kind's own test scores to 1e-6, with the run's thresholds (calibrated when the
    run has them, else 0.5)."""
    from vlml import thresholds
    from vlml.predict import Tagger
    from vlml.types import Catalog

    test = Catalog.load(world[1]["test"])
    paths = [str(p) for p in test.full_paths()]
    for d in every_kind:
        tagger = Tagger.from_run(d)
        tags = tagger.tag(paths, batch_size=8)
        saved = np.load(d / "test_scores.npy")
        assert tags.paths == paths and tags.class_names == tuple(test.class_names), d.name
        assert tags.scores.shape == saved.shape and np.abs(tags.scores - saved).max() < 1e-6, \
            d.name
        stored = thresholds.load(d)
        expected = stored.values if stored is not None else np.full(len(test.class_names), 0.5)
        assert np.array_equal(tags.thresholds, expected), d.name
        assert np.array_equal(tags.selected, tags.scores >= expected), d.name


def test_a_run_that_fails_before_saving_anything_leaves_no_folder(world, tmp_path,
                                                                  monkeypatch):
    from vlml.recipes.spml import recipe as spml_recipe

    def broken(*args, **kwargs):
        raise RuntimeError("boom before any epoch")

    monkeypatch.setattr(spml_recipe, "fit", broken)
    with pytest.raises(RuntimeError, match="boom"):
        runs.run(make_cfg(world, tmp_path))
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_later_is_marked_failed_and_resumes(world, tmp_path, monkeypatch):
    from vlml.recipes.spml import recipe as spml_recipe

    real_fit = spml_recipe.fit

    def fit_then_fail(cfg, splits, run_dir, device):
        real_fit(cfg, splits, run_dir, device)  # epochs and checkpoints are on disk
        raise RuntimeError("boom after training")

    monkeypatch.setattr(spml_recipe, "fit", fit_then_fail)
    with pytest.raises(RuntimeError):
        runs.run(make_cfg(world, tmp_path))
    run_dir = tmp_path / "run"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "boom after training" in status["error"]
    assert not (run_dir / "results.json").exists() and not (run_dir / "run.json").exists()
    monkeypatch.setattr(spml_recipe, "fit", real_fit)
    result = runs.run(make_cfg(world, tmp_path))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert result.test_map is not None and (run_dir / "results.json").is_file()


SIGTERM_AFTER_EPOCH_1 = """
import sys, time
import vlml.engine.trainer as trainer
from vlml.cli.main import main
from vlml.encoders import add_model_config

save = trainer.save_checkpoint
add_model_config(sys.argv.pop(1))  # the test world's tiny CLIP

def save_then_pause(path, state):
    save(path, state)
    print("checkpoint", flush=True)
    time.sleep(60.0)  # the test sends SIGTERM in this window

trainer.save_checkpoint = save_then_pause
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_a_run_as_interrupted_and_it_resumes(world, tmp_path):
    """SIGTERM (a scheduler's preemption; torchrun stopping a job's other processes) stops
    `vlml train` as Ctrl-C does: exit 143, one line, `status.json` says interrupted, and the
    same command resumes."""
    import os
    import signal

    cfg = make_cfg(world, tmp_path)
    config.save(cfg, tmp_path / "cfg.yaml")
    arch_json = world[3].parent / f"{world[2]}.json"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_AFTER_EPOCH_1, str(arch_json), "train",
                             str(tmp_path / "cfg.yaml"), "--quiet"], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = iter(proc.stdout.readline, "")
        assert any(line.startswith("checkpoint") for line in lines), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("vlml: stopped by SIGTERM; run the same command "
                                            "again to resume"), err
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "results.json").exists()
    runs.run(cfg)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
