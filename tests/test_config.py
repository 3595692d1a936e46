from dataclasses import dataclass, field

import pytest

from vlml import config
from vlml.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-5
    epochs: int = 10
    name: str = "adam"


@dataclass
class Cfg:
    optim: Optim = field(default_factory=Optim)
    seed: int = 0
    tag: str | None = None
    params: dict = field(default_factory=dict)


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.001\n  epochs: 3\nseed: 5\n")
    cfg = config.load(Cfg, path, ["optim.epochs=7", "params.beta=0.5", "tag=x"])
    assert cfg.optim == Optim(lr=0.001, epochs=7, name="adam")
    assert (cfg.seed, cfg.tag, cfg.params) == (5, "x", {"beta": 0.5})


def test_int_accepted_for_float():
    assert config.build(Cfg, {"optim": {"lr": 1}}).optim.lr == 1.0


def test_exponent_without_dot_is_a_float():
    # YAML 1.1 reads 1e-4 as a string; a float field must still take it
    assert config.build(Cfg, {}, ["optim.lr=1e-4"]).optim.lr == 1e-4
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        config.build(Cfg, {}, ["optim.lr=fast"])


@pytest.mark.parametrize("data, overrides, message", [
    ({"optim": {"lrr": 1.0}}, [], "unknown key optim.'lrr'.*Did you mean 'lr'"),
    ({}, ["sed=3"], "unknown key 'sed'.*Did you mean 'seed'"),
    ({}, ["optim.epochs=ten"], "optim.epochs: expected int, got 'ten'"),
    ({}, ["seed"], "expected KEY=VALUE"),
    ({"optim": 3}, [], "expected a mapping"),
])
def test_bad_configs_are_explained(data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.build(Cfg, data, overrides)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        config.load(Cfg, path)
    with pytest.raises(ConfigError, match="not found"):
        config.load(Cfg, tmp_path / "none.yaml")


def test_save_round_trip(tmp_path):
    cfg = config.build(Cfg, {}, ["optim.lr=0.5", "params.k=[1, 2]"])
    config.save(cfg, tmp_path / "resolved.yaml")
    assert config.load(Cfg, tmp_path / "resolved.yaml") == cfg
