from pathlib import Path

import pytest

from vlml import config, recipes
from vlml.cli.train import recipe_of
from vlml.errors import ConfigError
from vlml.recipes.ssmll import cap, cbsa
from vlml.recipes.ssmll.config import (
    effective_regime,
    effective_selection,
    validate_cap,
    validate_cbsa,
)

ROOT = Path(__file__).resolve().parents[1] / "src" / "vlml" / "configs" / "ssmll"
USER_DIRS = ("own", "toy")  # configs for a user's own labels (regime given), not table cells
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name not in USER_DIRS)
USER_CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name in USER_DIRS)
METHODS = {"cbsa", "cap", "labeled_only", "labeled_only_resnet50"}
P_TAGS = {"p05": 0.05, "p10": 0.10, "p15": 0.15, "p20": 0.20}


def load(path: Path):
    recipe = recipe_of(path, None).__name__.rsplit(".", 1)[1]
    cfg = config.load(recipes.get(recipe).Config, path, ["data.root=/datasets"])
    return recipe, (validate_cbsa if recipe == "cbsa" else validate_cap)(cfg)


def test_one_config_per_dataset_method_and_fraction():
    cells = {(p.parent.name, p.stem) for p in CONFIGS if p.parent.name != "ablations"}
    expected = {(d, f"{m}_{t}") for d in ("voc2012", "coco2014", "nuswide")
                for m in METHODS for t in P_TAGS}
    assert cells == expected


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_is_valid_and_follows_the_protocol(path):
    recipe, cfg = load(path)
    method, tag = path.stem.rsplit("_", 1)
    assert cfg.data.p == P_TAGS[tag]
    assert recipe == ("cap" if method in ("cap", "labeled_only_resnet50") else "cbsa")
    assert (cfg.optim.epochs == 0) == method.startswith("labeled_only")
    lb, ub = {0.05: (4, 60), 0.10: (8, 56), 0.15: (12, 52), 0.20: (16, 48)}[cfg.data.p]
    if cfg.data.dataset == "voc2012":
        lb, ub = lb // 2, ub // 2
    assert (cfg.optim.labeled_batch_size, cfg.optim.unlabeled_batch_size) == (lb, ub)
    assert effective_selection(cfg.data) == "last" and cfg.pseudo.method in ("cap", "fixed")
    assert effective_regime(cfg.data) == "semi_supervised"
    assert cfg.optim.warmup_epochs == 12 and cfg.optim.lr == 1e-4
    assert cfg.out_dir.endswith(str(path.relative_to(ROOT).with_suffix("")))


def test_ablations_change_exactly_one_switch():
    _, base = load(ROOT / "voc2012" / "cbsa_p05.yaml")
    expected = {  # the switch (with the parameters of a switched pseudo-labeller)
        "global_feature": {"model.feature": "global"},
        "no_context": {"context.enabled": False},
        "context_labeled_only": {"context.unlabeled": False},
        "fixed_threshold": {"pseudo.method": "fixed", "pseudo.params.threshold": 0.5},
        **{f"k{k}": {"context.k": k} for k in (2, 4, 6, 8)},
        "zero_shot_prior": {"pseudo.prior_weight": 0.5},
    }
    found = {}
    for path in sorted((ROOT / "voc2012" / "ablations").glob("*.yaml")):
        _, cfg = load(path)
        flat = config.to_dict(cfg)
        found[path.stem.removesuffix("_p05")] = {
            key: _get(flat, key) for key in config.result_diff(base, cfg)}
    assert found == expected


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def test_the_cli_takes_the_recipe_from_the_config(tmp_path):
    assert recipe_of(ROOT / "voc2012" / "cbsa_p05.yaml", None) is cbsa
    assert recipe_of(ROOT / "voc2012" / "cap_p05.yaml", None) is cap
    spml = ROOT.parent / "spml" / "voc2007" / "vlpl.yaml"
    assert recipe_of(spml, None) is recipes.get("spml")  # no key: the SPML recipe
    assert recipe_of(spml, "cbsa") is cbsa  # --recipe wins


def test_a_config_run_by_the_wrong_recipe_is_refused():
    cfg = config.load(cap.Config, ROOT / "voc2012" / "cap_p05.yaml",
                      ["data.root=/datasets", "recipe=cbsa"])
    with pytest.raises(ConfigError, match="recipe: 'cbsa' is not one of cap"):
        validate_cap(cfg)


def test_the_zero_shot_prior_is_cbsa_only():
    cfg = config.load(cap.Config, ROOT / "voc2012" / "cap_p05.yaml",
                      ["data.root=/datasets", "pseudo.prior_weight=1"])
    with pytest.raises(ConfigError, match="pseudo.prior_weight.*CBSA"):
        validate_cap(cfg)
    cfg = config.load(cbsa.Config, ROOT / "voc2012" / "cbsa_p05.yaml",
                      ["data.root=/datasets", "pseudo.prior_weight=1"])
    assert validate_cbsa(cfg).pseudo.prior_weight == 1.0


@pytest.mark.parametrize("path", USER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_user_configs_take_labels_as_given(path):
    from vlml import recipes as _recipes

    recipe = config.read_yaml(path)["recipe"]
    cfg = config.load(_recipes.get(recipe).Config, path, ["data.train_catalog=tags.zip"])
    _recipes.get(recipe).validate(cfg)
    assert cfg.data.regime == "given" and cfg.data.train_catalog == "tags.zip"
    assert (cfg.encoder.name == "toy-clip") == (path.parent.name == "toy")

