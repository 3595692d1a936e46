"""`vlml config show/init` and `vlml train --dry-run`: configs a person can discover, start
from and check before spending any time."""

import pytest
import yaml

from vlml import config, config_docs, recipes
from vlml.cli.main import main


@pytest.mark.parametrize("recipe", ["spml", "cbsa", "cap"])
def test_show_lists_every_key_with_default_type_and_meaning(recipe, capsys):
    assert main(["config", "show", recipe]) == 0
    out = capsys.readouterr().out
    docs = [d for d in config_docs.describe(recipes.get(recipe).Config) if not d.section]
    assert len(docs) > 30
    for d in docs:
        line = next(ln for ln in out.splitlines() if f"{d.key} = " in ln)
        assert d.type in line and d.help in line
    assert "data.regime = auto  (str; auto, given," in out


def test_show_takes_a_config_name_for_its_recipe(capsys):
    assert main(["config", "show", "ssmll/toy/cbsa"]) == 0
    assert "recipe 'cbsa'" in capsys.readouterr().out


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("params", "options", "state_params"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("recipe", ["spml", "cbsa", "cap"])
def test_init_writes_every_key_and_loads_back_to_the_defaults(recipe, tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    assert main(["config", "init", recipe, "--out", str(out)]) == 0
    cls = recipes.get(recipe).Config
    written = config.read_yaml(out)
    keys = {d.key for d in config_docs.describe(cls) if not d.section}
    assert set(_flat(written)) == keys
    cfg = config.load(cls, out)
    assert cfg.name == "mine" and cfg.out_dir == "runs/mine"
    assert config.result_diff(config.to_dict(cls()), cfg) == []
    assert "# " in out.read_text()  # commented


def test_init_from_every_shipped_config_keeps_its_values(tmp_path):
    """Every shipped config: the file `init --from` writes loads to the same config, except
    the run's name and folder, which are the new file's."""
    for name in config.list_shipped():
        recipe = str(config.read_yaml(config.resolve(name)).get("recipe", "spml"))
        out = tmp_path / "x.yaml"
        assert main(["config", "init", recipe, "--from", name, "--out", str(out),
                     "--force"]) == 0, name
        cls = recipes.get(recipe).Config
        assert config.result_diff(config.load(cls, name), config.load(cls, out)) == [], name


def test_init_refuses_to_overwrite_and_wrong_recipes(tmp_path, capsys):
    out = tmp_path / "a.yaml"
    out.write_text("mine")
    assert main(["config", "init", "spml", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["config", "init", "cbsa", "--from", "spml/toy/vlpl",
                 "--out", str(tmp_path / "b.yaml")]) == 2
    assert "is a 'spml' config" in capsys.readouterr().err
    assert main(["config", "init", "nope", "--out", str(tmp_path / "c.yaml")]) == 2
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "c.yaml").exists()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from vlml.demo.photos import write_sample_photos

    root = tmp_path_factory.mktemp("photos")
    write_sample_photos(root / "photos", seed=0, n_train=120, n_test=60, progress=False)
    cats = {}
    for name, extra in (("train", []), ("test", ["--option", "unlisted=negative"])):
        assert main(["data", "prepare", "manifest", "--root",
                     str(root / f"photos/{name}/tags.csv"), "--classes-file",
                     str(root / "photos/classes.txt"), "--out", str(root / name), *extra]) == 0
        cats[name] = root / name / "all.catalog.zip"
    return cats


@pytest.mark.integration
def test_an_init_file_used_unchanged_trains(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "spml", "--from", "spml/toy/vlpl", "--out", "mine.yaml"]) == 0
    assert main(["train", "mine.yaml", f"data.train_catalog={photos['train']}",
                 f"data.test_catalog={photos['test']}", "optim.epochs=2",
                 "progress=false"]) == 0
    assert (tmp_path / "runs/mine/results.json").is_file()


def test_dry_run_does_no_work_and_says_what_would_run(photos, tmp_path, capsys):
    args = ["train", "spml/toy/vlpl", f"data.train_catalog={photos['train']}",
            f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "run"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out.split("# effective")[0])
    assert resolved["out_dir"] == str(tmp_path / "run") and resolved["loss"]["name"] == "vlpl"
    assert "loss.params: {alpha: 0.2, beta: 0.7, eps: 0.9, gamma: 0.0}" in out
    assert f"run folder: {tmp_path / 'run'} (new run)" in out
    assert "weights: available" in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert main([*args[:-1], "optim.lr=-1", "--dry-run"]) == 2  # validated
