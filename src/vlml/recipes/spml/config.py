"""The SPML recipe's config: typed sections with the ResNet-50 defaults of docs/methods.md 1.1.

Every field declares its choices, range and help once (`vlml.config.setting`) and is checked by
`vlml.config.validate`; `validate` here adds the rules between fields. Importing this module
imports no torch (registries are asked for their names at validation time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlml import config
from vlml.config import RunConfig, names_from, section, setting
from vlml.errors import ConfigError
from vlml.recipes.sections import DataSource, FrozenEncoder, resolve_regime

OPTIMIZERS = ("adam", "adamw", "sgd")
DATA_REGIMES = ("auto", "given", "single_positive", "full")
TRAINING_MODES = ("end_to_end", "linear", "linear_init")  # as vlml.models.TRAINING_MODES
LINEAR_FEATURES = ("backbone", "clip")


@dataclass(frozen=True)
class DataConfig(DataSource):
    """Where the images and labels come from, and which labels the model learns from.

    `regime`: "given" uses the training labels exactly as they are (1 observed positive,
    0 observed negative, -1 unknown; a user's own tags, no ground truth read); the simulators
    draw them from a fully labelled dataset for benchmarks: "single_positive" (Cole et al.'s
    draw, `label_seed`) or "full" (the upper bound). "auto" = "given" when `train_catalog` is
    named, else "single_positive".
    Validation: `val_catalog` (fully labelled: clean mAP); else `val_frac` of the training
    images held out (`split_seed`): with a simulated regime they get their clean labels (the
    protocol), with "given" their observed labels only (selection on observed mAP, or on
    observed-positive recall@`recall_k` when no negative is observed).
    `test_catalog` (with `train_catalog`) is optional for "given": no test scores without it.
    `dataset` also picks the published per-dataset hyper-parameters (voc*, coco*, nus*, cub).
    """

    val_catalog: str | None = setting(None, help="fully labelled validation catalog")
    regime: str = setting("auto", choices=DATA_REGIMES,
                          help="training labels: given as they are, or drawn from ground truth "
                               "(single_positive, full); auto = given with a train_catalog")
    label_seed: int = setting(1200, low=0, help="seed of the single-positive draw")
    val_frac: float = setting(0.2, low=0, high=1, high_open=True,
                              help="share of the training images held out for validation")
    split_seed: int = setting(1200, low=0, help="seed of the train/val split")
    recall_k: int = setting(3, low=1, help="k of observed-positive recall@k (selection on "
                                           "held-out images with positive tags only)")


def effective_regime(d: DataConfig) -> str:
    """`d.regime` with "auto" resolved: "given" with a train catalog, else "single_positive"."""
    return resolve_regime(d.regime, d.train_catalog, "single_positive")


@dataclass(frozen=True)
class EncoderConfig(FrozenEncoder):
    """The frozen vision-language model used for pseudo-labels (and `features: clip`)."""

    name: str = setting("ViT-L-14-336", help="open_clip architecture or registered encoder")
    templates: list[str] = setting(["a photo of a {name}."],
                                   help="prompt templates with a {name} field, averaged")


def spml_labellers() -> list[str]:
    """The registered pseudo-labellers `pseudo.method` accepts: those that need no labelled
    targets (the training images have one observed positive each)."""
    from vlml import pseudo

    return pseudo.list_pseudo_labelers(needs_targets=False)


@dataclass(frozen=True)
class PseudoConfig:
    """Pseudo-labeller (a `vlml.pseudo` name needing no labelled targets) and its parameters;
    empty params = paper values."""

    method: str = setting("vlpl", choices=names_from("vlml.recipes.spml.config:spml_labellers"),
                          help="pseudo-labeler name (vlml.pseudo.list_pseudo_labelers())")
    params: dict[str, Any] = setting({}, help="its parameters; empty = the paper's values")


@dataclass(frozen=True)
class ModelConfig:
    """`mode`: end_to_end, linear (train a head on frozen `features`: backbone or clip), or
    linear_init. `hidden` > 0 makes the `linear`-mode head an MLP with one hidden layer."""

    mode: str = setting("end_to_end", choices=TRAINING_MODES,
                        help="train everything, a head on frozen features, or head then all")
    backbone: str = setting("resnet50", help="timm model name")
    pretrained: bool | str = setting(True, help="true: timm's ImageNet weights; false or "
                                     "random: random init (from seed); or a checkpoint file")
    image_size: int = setting(448, low=1, help="input side in pixels")
    features: str = setting("backbone", choices=LINEAR_FEATURES,
                            help="frozen features of mode linear: the backbone's or CLIP's")
    linear_epochs: int = setting(5, low=0, help="head-only epochs of mode linear_init")
    linear_lr: float = setting(1e-3, low=0, low_open=True,
                               help="learning rate of those head-only epochs")
    hidden: int = setting(0, low=0, help="hidden units of the linear-mode head (0 = linear)")


@dataclass(frozen=True)
class LossConfig:
    """Loss name (`vlml.losses.list_losses()`), its parameters, and its state's parameters."""

    name: str = setting("vlpl", choices=names_from("vlml.losses:list_losses"),
                        help="loss name (vlml.losses.list_losses())")
    params: dict[str, Any] = setting({}, help="loss parameters over the published defaults")
    state_params: dict[str, Any] = setting({}, help="parameters of the loss's state, if any")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, batches and epochs of the training loop."""

    optimizer: str = setting("adam", choices=OPTIMIZERS, help="optimiser")
    lr: float = setting(1e-5, low=0, low_open=True, help="learning rate")
    weight_decay: float = setting(0.0, low=0, help="weight decay")
    batch_size: int = setting(8, low=1, help="training batch size")
    eval_batch_size: int = setting(64, low=1, affects_results=False,
                                   help="batch size of evaluation and feature extraction")
    epochs: int = setting(10, low=1, help="training epochs")
    grad_accum: int = setting(1, low=1, help="batches accumulated per optimiser step")
    amp: bool = setting(False, help="mixed precision (on CUDA)")
    ema_decay: float | None = setting(None, low=0, high=1, high_open=True,
                                      help="EMA of the weights (null = off)")
    early_stop_patience: int | None = setting(None, low=1,
                                              help="epochs without val gain before stopping")
    num_workers: int = setting(2, low=0, affects_results=False, help="DataLoader workers")
    # DDP (issue 20): under torchrun, BatchNorm statistics over the global batch (CUDA only)
    sync_bn: bool = setting(False, help="SyncBatchNorm under torchrun (end-to-end, CUDA)")


@dataclass(frozen=True)
class SPMLConfig(RunConfig):
    """A single-positive run: data, encoder, pseudo-labels, model, loss and optimisation."""

    recipe: str = setting("spml", choices=("spml", "vlpl"), help="recipe (vlpl is an alias)")
    name: str = setting("spml", affects_results=False, help="run name shown in reports")
    out_dir: str = setting("runs/spml", affects_results=False, help="run folder")
    data: DataConfig = section(DataConfig, help="images and labels")
    encoder: EncoderConfig = section(EncoderConfig, help="frozen CLIP")
    pseudo: PseudoConfig = section(PseudoConfig, help="pseudo-labels")
    model: ModelConfig = section(ModelConfig, help="trained model")
    loss: LossConfig = section(LossConfig, help="loss")
    optim: OptimConfig = section(OptimConfig, help="optimisation")


def validate(cfg: SPMLConfig) -> SPMLConfig:
    """Every field (`vlml.config.validate`), then the rules between fields; errors list the
    valid choices."""
    config.validate(cfg)
    check_rules(cfg)
    return cfg


def check_rules(cfg: SPMLConfig) -> None:
    """Rules between fields: a dataset read from root, hidden units only in mode linear, a timm
    backbone where one is trained or used; then what a run would otherwise find out late: the
    device is there, cache_dir can be a folder, reader options, pseudo-labeller and loss
    parameters are ones they take, prompt templates have a {name} field, and the catalogs
    named are readable and hold images."""
    from vlml import data
    from vlml.device import check_device
    from vlml.fileio import check_folder_path
    from vlml.models import check_backbone_name

    check_device(cfg.device, "device")
    check_folder_path(cfg.cache_dir, "cache_dir")
    data.check_source_options(cfg.data.dataset, cfg.data.options)
    if cfg.data.train_catalog is None:
        data.DATASETS.get(cfg.data.dataset)
        if not cfg.data.root:
            raise ConfigError("data.root: set the dataset folder, or give data.train_catalog")
    if cfg.model.hidden and cfg.model.mode != "linear":
        raise ConfigError(f"model.hidden={cfg.model.hidden} needs model.mode: linear (the other "
                          "modes train the backbone's linear head)")
    if cfg.model.mode != "linear" or cfg.model.features == "backbone":
        check_backbone_name(cfg.model.backbone)
    if needs_clip(cfg):
        from vlml.encoders.prompts import resolve_templates

        try:
            resolve_templates(cfg.encoder.templates)
        except ConfigError as e:
            raise ConfigError(f"encoder.templates: {e}") from None
    if needs_pseudo_labels(cfg):
        _check_labeller(cfg)
    _check_loss_params(cfg)
    data.check_catalog_settings(cfg.data)


def _check_labeller(cfg: SPMLConfig) -> None:
    """The pseudo-labeller `pseudo.method` builds from `pseudo.params` with valid settings."""
    from vlml.recipes.spml.recipe import make_pseudo_labeler

    try:
        make_pseudo_labeler(cfg).check_params()
    except ConfigError as e:
        text = str(e)
        raise ConfigError(text if text.startswith("pseudo.") else f"pseudo.params: {text}"
                          ) from None


def _check_loss_params(cfg: SPMLConfig) -> None:
    """`loss.params` and `loss.state_params` name only parameters the loss (and its state)
    take."""
    import inspect

    from vlml import losses

    entry = losses.get(cfg.loss.name)
    checks = [("loss.params", entry.fn, 2, cfg.loss.params, set(entry.batch_inputs))]
    if entry.state is not None:
        checks.append(("loss.state_params", entry.state, 1, cfg.loss.state_params, set()))
    elif cfg.loss.state_params:
        raise ConfigError(f"loss.state_params: loss {cfg.loss.name!r} keeps no state, so it takes "
                          f"none; got {dict(cfg.loss.state_params)}")
    for key, fn, skip, given, passed in checks:
        params = list(inspect.signature(fn).parameters.values())[skip:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            continue
        accepted = {p.name for p in params} - passed - {"dataset"}
        unknown = sorted(set(given) - accepted)
        if unknown:
            raise ConfigError(f"{key}: loss {cfg.loss.name!r} takes no parameter(s) "
                              f"{', '.join(unknown)}; valid: {', '.join(sorted(accepted))}")


def needs_pseudo_labels(cfg: SPMLConfig) -> bool:
    from vlml import losses

    return "pseudo" in losses.get(cfg.loss.name).batch_inputs


def needs_clip(cfg: SPMLConfig) -> bool:
    return needs_pseudo_labels(cfg) or (cfg.model.mode == "linear"
                                        and cfg.model.features == "clip")
