import dataclasses
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from typing import Any

import pytest

from vlml import config, recipes
from vlml.cli.train import recipe_of
from vlml.config import section, setting
from vlml.errors import ConfigError, UnknownChoiceError, UnknownNameError
from vlml.recipes.spml.config import SPMLConfig
from vlml.recipes.ssmll.config import CAPConfig, CBSAConfig


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


# ---- field metadata, one validator -------------------------------------------------------------
CALLS: list[str] = []


def registry_names() -> list[str]:
    CALLS.append("asked")
    return ["vlpl", "em", "an"]


@dataclass(frozen=True)
class Inner:
    lr: float = setting(1e-3, low=0, low_open=True, help="learning rate")
    loss: str = setting("vlpl", choices=registry_names, help="a registry name")
    reduction: str = setting("sum", choices=("sum", "mean"), help="reduction")
    k: int | str = setting("auto", choices=("auto",), low=2, help="contexts or auto")
    frac: float = setting(0.5, low=0, high=1, high_open=True, help="a share")
    workers: int = setting(2, low=0, affects_results=False, help="workers")
    tags: list[str] = setting(["a"], help="tags")
    params: dict[str, Any] = setting({}, help="parameters")


@dataclass(frozen=True)
class Outer:
    optim: Inner = section(Inner, help="optimisation")
    seed: int = setting(0, low=0, help="seed")
    ratio: float | None = setting(None, low=0, help="optional")
    name: str = setting("run", affects_results=False, help="name")


def test_declared_defaults_validate_and_registries_are_asked_lazily():
    CALLS.clear()
    cfg = Outer()
    assert CALLS == [] and config.validate(cfg) is cfg and CALLS == ["asked"]
    assert Outer().optim.tags is not Outer().optim.tags  # list defaults are copied


@pytest.mark.parametrize("changes, error, message", [
    ({"optim.loss": "vlpll"}, UnknownChoiceError,
     r"optim.loss: 'vlpll' is not one of vlpl, em, an\. Did you mean 'vlpl'"),
    ({"optim.reduction": "avg"}, UnknownChoiceError, "optim.reduction: 'avg' is not one of sum"),
    ({"optim.lr": 0.0}, ConfigError, r"optim.lr must be > 0, got 0.0"),
    ({"optim.frac": 1.0}, ConfigError, r"optim.frac must be in \[0, 1\), got 1.0"),
    ({"optim.k": 1}, ConfigError, "optim.k must be >= 2, got 1"),
    ({"optim.k": "many"}, UnknownChoiceError, "optim.k: 'many' is not one of auto"),
    ({"optim.lr": float("nan")}, ConfigError, "optim.lr: expected a finite number, got nan"),
    ({"ratio": float("inf")}, ConfigError, "ratio: expected a finite number"),
    ({"ratio": -1.0}, ConfigError, "ratio must be >= 0"),
    ({"seed": "3"}, ConfigError, "seed: expected int, got '3'"),
    ({"seed": True}, ConfigError, "seed: expected int, got True"),
    ({"optim.tags": ["a", 1]}, ConfigError, r"optim.tags: expected list\[str\], got \['a', 1\]"),
    ({"optim.workers": 1.5}, ConfigError, "optim.workers: expected int"),
    ({"optim": 3}, ConfigError, "optim: expected a Inner section"),
])
def test_the_validator_names_key_value_and_expectation(changes, error, message):
    with pytest.raises(error, match=message):
        config.validate(config.replace(Outer(), **changes))


def test_accepted_values():
    ok = config.replace(Outer(), **{"optim.k": 4, "optim.lr": 1, "ratio": 0.0,
                                    "optim.params": {"alpha": 0.1}})
    assert config.validate(ok) is ok


def test_a_choice_miss_is_also_an_unknown_name():
    with pytest.raises(UnknownNameError):
        config.validate(config.replace(Outer(), **{"optim.loss": "x"}))


def test_nan_from_yaml_is_refused():
    cfg = config.build(Outer, {}, ["optim.lr=.nan"])
    with pytest.raises(ConfigError, match="optim.lr: expected a finite number"):
        config.validate(cfg)


def test_configs_are_frozen():
    cfg = Outer()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1
    spml = SPMLConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spml.optim.lr = 1.0
    for part in (CBSAConfig().optim, CAPConfig().model, CBSAConfig().context, CAPConfig()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, dataclasses.fields(part)[0].name, 1)


def test_replace_sets_dotted_keys_and_leaves_the_original():
    cfg = Outer()
    new = config.replace(cfg, **{"optim.lr": 0.5, "optim.k": 3, "seed": 7})
    assert (new.optim.lr, new.optim.k, new.seed) == (0.5, 3, 7)
    assert (cfg.optim.lr, cfg.seed) == (1e-3, 0) and new.optim.loss == "vlpl"
    with pytest.raises(ConfigError, match=r"unknown key optim.'lrr'.*Did you mean 'lr'"):
        config.replace(cfg, **{"optim.lrr": 1.0})
    with pytest.raises(ConfigError, match="seed is not a section"):
        config.replace(cfg, **{"seed.x": 1})


def test_result_diff_ignores_keys_that_do_not_affect_results():
    a = Outer()
    b = config.replace(a, **{"name": "other", "optim.workers": 0})
    assert config.result_diff(a, b) == []
    c = config.replace(b, **{"optim.lr": 0.1, "optim.params": {"alpha": 1}})
    assert config.result_diff(a, c) == ["optim.lr", "optim.params.alpha"]


def test_result_diff_takes_saved_dicts_and_counts_one_sided_keys(tmp_path):
    cfg = config.replace(SPMLConfig(), **{"progress": False, "out_dir": "x"})
    config.save(SPMLConfig(), tmp_path / "config.yaml")
    saved = config.read_yaml(tmp_path / "config.yaml")
    assert config.result_diff(saved, cfg) == []
    assert config.result_diff(saved, config.replace(cfg, **{"optim.lr": 1e-4})) == ["optim.lr"]
    del saved["seed"]
    saved["optim"]["old_key"] = 1
    assert config.result_diff(saved, cfg) == ["optim.old_key", "seed"]
    assert config.result_diff({"a": 1}, {"a": 2}) == ["a"]  # no schema: every key counts


@pytest.mark.parametrize("cls", [SPMLConfig, CBSAConfig, CAPConfig])
def test_shipped_schemas_declare_every_field(cls):
    """Every field has a one-line help; the keys that never change numbers are marked."""
    missing, neutral = [], []

    def walk(schema, prefix=""):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            spec = config.setting_of(f)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif not spec.help and not (prefix == "pseudo." and cls is not SPMLConfig):
                missing.append(prefix + f.name)  # (SSMLL pseudo.*: declared by pseudo/'s owner)
            if not spec.affects_results:
                neutral.append(prefix + f.name)

    walk(cls)
    assert missing == []
    assert {"name", "device", "out_dir", "cache_dir", "progress", "optim.num_workers",
            "optim.eval_batch_size", "encoder.batch_size"} <= set(neutral)
    assert dataclasses.fields(cls)[0].metadata[config.META].choices  # recipe names its choices


def test_registry_choices_of_a_recipe_config():
    with pytest.raises(UnknownChoiceError, match="loss.name: 'vlpll'.*Did you mean 'vlpl'"):
        config.validate(config.replace(SPMLConfig(), **{"loss.name": "vlpll"}))
    with pytest.raises(UnknownChoiceError, match="model.mode: 'features' is not one of "
                                                  "end_to_end, linear"):
        config.validate(config.replace(CAPConfig(), **{"model.mode": "features"}))


# ---- shipped configs, found by name ----------------------------------------------------------
def test_shipped_configs_are_found_by_name(tmp_path):
    names = config.list_shipped()
    assert {"spml/voc2007/vlpl", "ssmll/voc2012/cbsa_p05",
            "ssmll/voc2012/ablations/k2_p05"} <= set(names)
    assert len(names) == len(list(config.shipped_root().rglob("*.yaml")))
    path = config.resolve("spml/voc2007/vlpl")
    assert path.is_file() and path.parent.parent.parent == config.shipped_root()
    assert config.resolve("spml/voc2007/vlpl.yaml") == path
    assert config.resolve("configs/spml/voc2007/vlpl.yaml") == path  # the old spelling
    assert config.load(SPMLConfig, "spml/voc2007/vlpl").name == "voc2007-vlpl"
    own = tmp_path / "spml" / "voc2007" / "vlpl.yaml"  # an existing file wins
    own.parent.mkdir(parents=True)
    own.write_text("name: mine\n")
    assert config.resolve(own) == own and config.load(SPMLConfig, own).name == "mine"


def test_an_unknown_config_name_suggests_close_ones():
    with pytest.raises(ConfigError, match=r"spml/voc2007/vlpll: config not found.*"
                                          r"Did you mean 'spml/voc2007/vlpl'"):
        config.resolve("spml/voc2007/vlpll")


def test_the_config_module_imports_no_torch():
    code = ("import sys, vlml.config as c; c.resolve('spml/voc2007/vlpl'); c.list_shipped(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recipe_configs_load_and_validate_without_torch():
    code = ("import sys; from vlml import config; "
            "from vlml.recipes.spml.config import SPMLConfig; "
            "from vlml.recipes.ssmll.config import CBSAConfig, validate_cbsa; "
            "config.validate(config.load(SPMLConfig, 'spml/voc2007/vlpl', ['data.root=/d'])); "
            "validate_cbsa(config.load(CBSAConfig, 'ssmll/voc2012/cbsa_p05', ['data.root=/d'])); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_trains_a_shipped_config_by_name():
    assert recipe_of("ssmll/voc2012/cap_p05", None) is recipes.get("cap")
