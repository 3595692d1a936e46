"""The SPML recipe's config: typed sections with the ResNet-50 defaults of methods.md 1.1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlml import data, losses, pseudo
from vlml.errors import ConfigError
from vlml.models import TRAINING_MODES, check_backbone_name

OPTIMIZERS = ("adam", "adamw", "sgd")
DATA_REGIMES = ("single_positive", "full")
LINEAR_FEATURES = ("backbone", "clip")


@dataclass
class DataConfig:
    """Where the images and labels come from.

    Either a registered dataset read from `root` (train split -> `regime` ("single_positive",
    or "full" for the full-label upper bound) -> 80/20 train/val split; test split clean), or
    prepared catalog files.
    `dataset` also picks the published per-dataset hyper-parameters (voc*, coco*, nus*, cub).
    """

    dataset: str = "voc2007"
    root: str = ""
    train_split: str = "trainval"
    test_split: str = "test"
    options: dict[str, Any] = field(default_factory=dict)
    train_catalog: str | None = None
    val_catalog: str | None = None
    test_catalog: str | None = None
    regime: str = "single_positive"
    spml_seed: int = 1200
    val_frac: float = 0.2
    split_seed: int = 1200


@dataclass
class EncoderConfig:
    """The frozen vision-language model used for pseudo-labels (and `features: clip`)."""

    name: str = "ViT-L-14-336"
    pretrained: str | None = "openai"
    templates: list[str] = field(default_factory=lambda: ["a photo of a {name}."])
    batch_size: int = 64


@dataclass
class PseudoConfig:
    """Pseudo-labeller (any `vlml.pseudo` name) and its parameters; empty params = paper values."""

    method: str = "vlpl"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """`mode`: end_to_end, linear (train a head on frozen `features`: backbone or clip), or
    linear_init. `hidden` > 0 makes the `linear`-mode head an MLP with one hidden layer."""

    mode: str = "end_to_end"
    backbone: str = "resnet50"
    pretrained: bool = True
    image_size: int = 448
    features: str = "backbone"
    linear_epochs: int = 5
    linear_lr: float = 1e-3
    hidden: int = 0


@dataclass
class LossConfig:
    """Loss name (`vlml.losses.list_losses()`), its parameters, and its state's parameters."""

    name: str = "vlpl"
    params: dict[str, Any] = field(default_factory=dict)
    state_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    optimizer: str = "adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    batch_size: int = 8
    eval_batch_size: int = 64
    epochs: int = 10
    grad_accum: int = 1
    amp: bool = False
    ema_decay: float | None = None
    early_stop_patience: int | None = None
    num_workers: int = 2


@dataclass
class SPMLConfig:
    recipe: str = "spml"
    name: str = "spml"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/spml"
    cache_dir: str = "cache"
    progress: bool = True


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def validate(cfg: SPMLConfig) -> SPMLConfig:
    """Check every name and range before any work; errors list the valid choices."""
    _choice(cfg.recipe, ("spml", "vlpl"), "recipe")
    if cfg.data.train_catalog is None:
        data.DATASETS.get(cfg.data.dataset)
        if not cfg.data.root:
            raise ConfigError("data.root: set the dataset folder, or give data.train_catalog")
    _choice(cfg.data.regime, DATA_REGIMES, "data.regime")
    losses.get(cfg.loss.name)
    _choice(cfg.model.mode, TRAINING_MODES, "model.mode")
    _choice(cfg.model.features, LINEAR_FEATURES, "model.features")
    if cfg.model.hidden and cfg.model.mode != "linear":
        raise ConfigError(f"model.hidden={cfg.model.hidden} needs model.mode: linear (the other "
                          "modes train the backbone's linear head)")
    if cfg.model.hidden < 0:
        raise ConfigError(f"model.hidden must be >= 0 (0 = linear head), got {cfg.model.hidden}")
    if cfg.model.mode != "linear" or cfg.model.features == "backbone":
        check_backbone_name(cfg.model.backbone)
    if needs_pseudo_labels(cfg):
        pseudo.get(cfg.pseudo.method)
    _choice(cfg.optim.optimizer, OPTIMIZERS, "optim.optimizer")
    for key in ("lr", "batch_size", "epochs", "grad_accum", "eval_batch_size"):
        if getattr(cfg.optim, key) <= 0:
            raise ConfigError(f"optim.{key} must be > 0, got {getattr(cfg.optim, key)}")
    if not 0.0 <= cfg.data.val_frac < 1.0:
        raise ConfigError(f"data.val_frac must be in [0, 1), got {cfg.data.val_frac}")
    return cfg


def needs_pseudo_labels(cfg: SPMLConfig) -> bool:
    return "pseudo" in losses.get(cfg.loss.name).batch_inputs


def needs_clip(cfg: SPMLConfig) -> bool:
    return needs_pseudo_labels(cfg) or (cfg.model.mode == "linear"
                                        and cfg.model.features == "clip")
