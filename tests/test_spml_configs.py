from pathlib import Path

import pytest

from vlml import config, losses
from vlml.recipes.spml.config import SPMLConfig, validate

ROOT = Path(__file__).resolve().parents[1] / "src" / "vlml" / "configs" / "spml"
USER_DIRS = ("own", "toy")  # configs for a user's own labels (regime given), not table cells
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name not in USER_DIRS)
USER_CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name in USER_DIRS)


def test_one_config_per_table_cell():
    datasets = {p.parent.name for p in CONFIGS}
    assert datasets == {"voc2007", "voc2012", "coco2014", "nuswide", "cub"}
    for d in datasets:
        methods = {p.stem for p in CONFIGS if p.parent.name == d}
        # every registered loss is a cell, except the semi-supervised recipes' masked ASL
        assert set(losses.list_losses()) - {"masked_asl"} <= methods
        assert {"vlpl_convnext_xl_in22k", "vlpl_clip_vit_l"} <= methods


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_is_valid_and_complete(path):
    cfg = validate(config.load(SPMLConfig, path, ["data.root=/datasets"]))
    entry = losses.get(cfg.loss.name)
    params = {**entry.params(cfg.data.dataset), **cfg.loss.params}
    # every published hyper-parameter the loss needs resolves for this dataset
    needed = {"em": {"alpha"}, "vlpl": {"alpha"}, "epr": {"k"}, "role": {"k"},
              "em_apl": {"alpha", "beta", "warmup_epoch"}}.get(cfg.loss.name, set())
    assert needed <= set(params)
    assert cfg.optim.lr == (1e-4 if cfg.data.dataset == "cub" else 1e-5)
    assert (cfg.data.regime == "full") == (cfg.loss.name == "bce")


@pytest.mark.parametrize("path", USER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_user_configs_take_labels_as_given(path):
    from vlml import recipes as _recipes

    recipe = config.read_yaml(path)["recipe"]
    cfg = config.load(_recipes.get(recipe).Config, path, ["data.train_catalog=tags.zip"])
    _recipes.get(recipe).validate(cfg)
    assert cfg.data.regime == "given" and cfg.data.train_catalog == "tags.zip"
    assert (cfg.encoder.name == "toy-clip") == (path.parent.name == "toy")

