"""Configs of the semi-supervised (SSMLL) recipes `cbsa` and `cap` (methods.md 1.2, 4, 5).

Both recipes share the data, pseudo-label, loss, augmentation and optimisation sections; CBSA
adds the CLIP prompt/alignment model and the context task, CAP a timm backbone (or a head on
cached features). Defaults are the CAP reference code's (xiemk/SSMLL-CAP: 12 warm-up epochs,
AdamW lr 1e-4 wd 1e-4, one-cycle with pct_start 0.2, ASL gamma- 4 clip 0.05 summed, EMA
0.9997, a = 1, b = 0.998, labeled/unlabeled batches 4/60 at p = 0.05) and methods.md 5.

Model selection (`data.selection`): the reference code keeps the epoch with the best mAP on the
test split; we never look at the test split. "last" (default) reports the last epoch;
"labeled_val" holds out `data.val_frac` of the labeled images (excluded from training, from the
class priors and from the contexts) and keeps the epoch with the best mAP on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlml import data
from vlml.errors import ConfigError
from vlml.models import check_backbone_name
from vlml.models.alignment import FEATURES

SELECTIONS = ("last", "labeled_val")
PSEUDO_METHODS = ("cap", "fixed", "mat")
REDUCTIONS = ("sum", "mean")
CBSA_INPUTS = ("cache", "images")
PROMPTS = ("learned", "fixed")
CONTEXT_TARGETS = ("pseudo_labels", "cap")
CONTEXT_LOSSES = ("bce", "asl")
CAP_MODES = ("end_to_end", "features")
CAP_FEATURES = ("backbone", "clip")
SAVE_PSEUDO = ("last", "all", "none")


@dataclass
class DataConfig:
    """Where images and labels come from.

    Either a registered dataset read from `root` (train split -> `semi_supervised(p,
    label_seed)`; test split clean), or catalog files: `train_catalog` with full labels (then
    `p` draws the labeled part) or already semi-supervised labels (`p: null`: rows with any
    known label are the labeled images and must be fully labeled; the others all -1; keep
    `true_labels` to get pseudo-label quality), and a clean `test_catalog`.
    """

    dataset: str = "voc2012"
    root: str = ""
    train_split: str = "train"
    test_split: str = "val"
    options: dict[str, Any] = field(default_factory=dict)
    train_catalog: str | None = None
    test_catalog: str | None = None
    p: float | None = 0.05
    label_seed: int = 1
    selection: str = "last"
    val_frac: float = 0.2
    split_seed: int = 1200


@dataclass
class EncoderConfig:
    """The frozen CLIP (CBSA; CAP with `model.features: clip`)."""

    name: str = "ViT-B-16"
    pretrained: str | None = "openai"
    batch_size: int = 64


@dataclass
class PseudoConfig:
    """Pseudo-labels of the unlabeled images, recomputed every semi-supervised epoch from the
    EMA model's weak-view scores: "cap" (methods.md 4, a and b), "fixed" (score >= threshold,
    every entry used; the ablation), "mat" (D2L's F-beta thresholds fitted on the labeled
    images' scores, every entry used).

    `prior_weight` > 0 (CBSA only; methods.md 5, a choice): before thresholding, fuse the
    teacher's scores with the frozen CLIP's zero-shot softmax (`prior_tau`, the model's
    `templates`; mean of the plain and flipped view) by `vlml.pseudo.prior.fuse_prior`.
    0 = the teacher alone."""

    method: str = "cap"
    a: float = 1.0
    b: float = 0.998
    threshold: float = 0.5
    beta: float = 0.5
    prior_weight: float = 0.0
    prior_tau: float = 0.03


@dataclass
class LossConfig:
    """ASL (Ridnik et al.) on labeled and (masked) on pseudo-labeled entries; "sum" over
    entries as the reference code and CBSA's `sum ASL`, or "mean" over all B x C entries."""

    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    reduction: str = "sum"
    unlabeled_weight: float = 1.0


@dataclass
class AugmentConfig:
    """Weak and strong views (methods.md 5.7).

    From images: weak = flip + resize; strong = flip + resize + cutout (`cutout`, share of the
    side; 0 = off) + RandAugment (`randaugment_ops` ops of `randaugment_magnitude`; 0 ops =
    off). From cached tokens or features (documented deviation): weak = the cached plain or
    flipped view; strong = that view with `token_drop` of the spatial tokens dropped and
    Gaussian noise of `noise` times each token's (or feature's) RMS added.
    `warmup_cutout`: the reference warm-up uses no cutout (its default 0).
    """

    cutout: float = 0.5
    warmup_cutout: float = 0.0
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    token_drop: float = 0.3
    noise: float = 0.1


@dataclass
class OptimConfig:
    """AdamW + one-cycle per phase. `warmup_epochs` on labeled images only (batch
    `warmup_batch_size`), then `epochs` semi-supervised epochs; each semi-supervised step takes
    `labeled_batch_size` labeled and `unlabeled_batch_size` unlabeled images (an epoch is one
    pass over the unlabeled images). `epochs: 0` is the labeled-only baseline."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    pct_start: float = 0.2
    warmup_epochs: int = 12
    warmup_batch_size: int = 16
    epochs: int = 28
    labeled_batch_size: int = 4
    unlabeled_batch_size: int = 60
    eval_batch_size: int = 64
    ema_decay: float | None = 0.9997
    eval_ema: bool = True
    amp: bool = False
    num_workers: int = 2
    log_test_map: bool = False


@dataclass
class CBSAModelConfig:
    """Label-specific alignment on dense CLIP tokens (methods.md 5.1-5.4, 5.7).

    `inputs`: "cache" (tokens extracted once, the image encoder frozen) or "images" (the
    frozen encoder computes the tokens of every batch). `prompts`: "learned" contexts
    (`n_ctx`, `prompt_init` phrase or random, `dual` positive/negative, `class_specific`) or
    "fixed" hand-written `templates` (dual with `negative_templates`).
    """

    inputs: str = "cache"
    prompts: str = "learned"
    n_ctx: int = 16
    prompt_init: str | None = None
    dual: bool = True
    class_specific: bool = True
    templates: list[str] = field(default_factory=lambda: ["a photo of a {name}."])
    negative_templates: list[str] | None = None
    feature: str = "label_specific"
    s1: float = 20.0
    s2: float = 5.0
    include_global: bool = True
    normalize_tokens: bool = False
    adapter: bool = False


@dataclass
class ContextConfig:
    """The context identification task (methods.md 5.5-5.6).

    `k`: number of contexts or "auto" (eigengap). `unlabeled`: also train it on unlabeled
    images (false = the "labeled only" ablation). `targets` of unlabeled images: derived from
    the class pseudo-labels ("pseudo_labels"), or CAP thresholds on the context head with
    context priors from the labeled images ("cap"). `reference_groups`: known class groups
    (lists of class names) to score the clustering with the adjusted Rand index; for a toy
    catalog the planted groups are used when this is null.
    """

    enabled: bool = True
    k: int | str = "auto"
    k_max: int | None = None
    unlabeled: bool = True
    targets: str = "pseudo_labels"
    weight: float = 1.0
    loss: str = "bce"
    seed: int = 0
    reference_groups: list[list[str]] | None = None


@dataclass
class CAPModelConfig:
    """CAP's classifier: a timm `backbone` + linear head trained from images ("end_to_end"),
    or a head on cached frozen `features` ("features": "backbone" = the frozen timm backbone,
    "clip" = the CLIP global embeddings, i.e. CAP from the same features as CBSA);
    `hidden` > 0 makes that head a one-hidden-layer MLP."""

    mode: str = "end_to_end"
    features: str = "backbone"
    backbone: str = "resnet50"
    pretrained: bool = True
    image_size: int = 224
    hidden: int = 0


@dataclass
class CBSAConfig:
    recipe: str = "cbsa"
    name: str = "cbsa"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: CBSAModelConfig = field(default_factory=CBSAModelConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/ssmll/cbsa"
    cache_dir: str = "cache"
    progress: bool = True
    save_pseudo: str = "last"


@dataclass
class CAPConfig:
    recipe: str = "cap"
    name: str = "cap"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: CAPModelConfig = field(default_factory=CAPModelConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/ssmll/cap"
    cache_dir: str = "cache"
    progress: bool = True
    save_pseudo: str = "last"


# ---- validation ------------------------------------------------------------------------------
def _choice(value: Any, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _positive(section: Any, prefix: str, *keys: str, allow_zero: tuple[str, ...] = ()) -> None:
    for key in keys:
        value = getattr(section, key)
        low_ok = key in allow_zero
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                value < 0 if low_ok else value <= 0):
            raise ConfigError(f"{prefix}.{key} must be {'>= 0' if low_ok else '> 0'}, "
                              f"got {value!r}")


def _unit(value: Any, key: str, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
    if not ok:
        raise ConfigError(f"{key} must be in [0, 1{']' if closed else ')'}, got {value!r}")


def validate_common(cfg: CBSAConfig | CAPConfig) -> None:
    """Check the shared sections before any work."""
    d = cfg.data
    if d.train_catalog is None:
        data.DATASETS.get(d.dataset)
        if not d.root:
            raise ConfigError("data.root: set the dataset folder, or give data.train_catalog")
        if d.p is None:
            raise ConfigError("data.p: a dataset read from data.root needs the labeled fraction p")
    elif d.test_catalog is None:
        raise ConfigError("data.test_catalog is required with data.train_catalog")
    if d.p is not None and (isinstance(d.p, bool) or not 0.0 < float(d.p) <= 1.0):
        raise ConfigError(f"data.p must be in (0, 1], got {d.p!r}")
    _choice(d.selection, SELECTIONS, "data.selection")
    if d.selection == "labeled_val":
        _unit(d.val_frac, "data.val_frac")
        if d.val_frac == 0:
            raise ConfigError("data.val_frac must be > 0 with data.selection: labeled_val")
    _choice(cfg.pseudo.method, PSEUDO_METHODS, "pseudo.method")
    _unit(cfg.pseudo.a, "pseudo.a", closed=True)
    _unit(cfg.pseudo.b, "pseudo.b", closed=True)
    _unit(cfg.pseudo.threshold, "pseudo.threshold", closed=True)
    _positive(cfg.pseudo, "pseudo", "beta", "prior_weight", "prior_tau",
              allow_zero=("prior_weight",))
    _choice(cfg.loss.reduction, REDUCTIONS, "loss.reduction")
    _unit(cfg.loss.clip, "loss.clip")
    _positive(cfg.loss, "loss", "gamma_pos", "gamma_neg", "unlabeled_weight",
              allow_zero=("gamma_pos", "gamma_neg", "unlabeled_weight"))
    a = cfg.augment
    _unit(a.cutout, "augment.cutout", closed=True)
    _unit(a.warmup_cutout, "augment.warmup_cutout", closed=True)
    _unit(a.token_drop, "augment.token_drop")
    _positive(a, "augment", "randaugment_ops", "randaugment_magnitude", "noise",
              allow_zero=("randaugment_ops", "randaugment_magnitude", "noise"))
    o = cfg.optim
    _positive(o, "optim", "lr", "warmup_batch_size", "labeled_batch_size",
              "unlabeled_batch_size", "eval_batch_size", "warmup_epochs", "epochs",
              "weight_decay", "num_workers",
              allow_zero=("warmup_epochs", "epochs", "weight_decay", "num_workers"))
    for key in ("warmup_epochs", "epochs", "num_workers"):
        if not isinstance(getattr(o, key), int):
            raise ConfigError(f"optim.{key} must be an integer, got {getattr(o, key)!r}")
    if o.warmup_epochs + o.epochs == 0:
        raise ConfigError("optim.warmup_epochs and optim.epochs are both 0: nothing to train")
    if not 0.0 < o.pct_start < 1.0:
        raise ConfigError(f"optim.pct_start must be in (0, 1), got {o.pct_start!r}")
    if o.ema_decay is not None:
        _unit(o.ema_decay, "optim.ema_decay")
    _choice(cfg.save_pseudo, SAVE_PSEUDO, "save_pseudo")


def validate_cbsa(cfg: CBSAConfig) -> CBSAConfig:
    """Every name and range of a CBSA config; errors list the valid choices."""
    _choice(cfg.recipe, ("cbsa",), "recipe")
    validate_common(cfg)
    m = cfg.model
    _choice(m.inputs, CBSA_INPUTS, "model.inputs")
    _choice(m.prompts, PROMPTS, "model.prompts")
    _choice(m.feature, FEATURES, "model.feature")
    _positive(m, "model", "n_ctx", "s1", "s2")
    if not m.templates:
        raise ConfigError("model.templates: give at least one template with a {name} field")
    c = cfg.context
    if c.enabled:
        k = c.k
        if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 2)):
            raise ConfigError(f"context.k: {k!r}; expected 'auto' or an integer >= 2")
        _choice(c.targets, CONTEXT_TARGETS, "context.targets")
        _choice(c.loss, CONTEXT_LOSSES, "context.loss")
        _positive(c, "context", "weight", allow_zero=("weight",))
        if c.reference_groups is not None and not all(
                isinstance(g, list) and all(isinstance(n, str) for n in g)
                for g in c.reference_groups):
            raise ConfigError("context.reference_groups: expected a list of lists of class names")
    nothing_learned = (m.prompts == "fixed" and m.negative_templates is not None
                       and not m.adapter and not c.enabled)
    if nothing_learned:
        raise ConfigError("nothing to train: fixed dual prompts without an adapter or context "
                          "head; set model.adapter: true, context.enabled: true, or "
                          "model.prompts: learned")
    return cfg


def validate_cap(cfg: CAPConfig) -> CAPConfig:
    """Every name and range of a CAP config; errors list the valid choices."""
    _choice(cfg.recipe, ("cap",), "recipe")
    validate_common(cfg)
    m = cfg.model
    _choice(m.mode, CAP_MODES, "model.mode")
    _choice(m.features, CAP_FEATURES, "model.features")
    if m.mode == "end_to_end" or m.features == "backbone":
        check_backbone_name(m.backbone)
    _positive(m, "model", "image_size", "hidden", allow_zero=("hidden",))
    if cfg.pseudo.prior_weight:
        raise ConfigError("pseudo.prior_weight: the zero-shot prior needs CBSA's text encoder; "
                          "CAP takes 0")
    return cfg


__all__ = ["CBSAConfig", "CAPConfig", "DataConfig", "EncoderConfig", "PseudoConfig",
           "LossConfig", "AugmentConfig", "OptimConfig", "CBSAModelConfig", "ContextConfig",
           "CAPModelConfig", "validate_cbsa", "validate_cap", "validate_common"]
