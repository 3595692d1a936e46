"""Configs of the semi-supervised (SSMLL) recipes `cbsa` and `cap` (docs/methods.md 1.2, 4, 5).

Both recipes share the data, pseudo-label, loss, augmentation and optimisation sections; CBSA
adds the CLIP prompt/alignment model and the context task, CAP a timm backbone (or a head on
cached features). Defaults are the CAP reference code's (xiemk/SSMLL-CAP: 12 warm-up epochs,
AdamW lr 1e-4 wd 1e-4, one-cycle with pct_start 0.2, ASL gamma- 4 clip 0.05 summed, EMA
0.9997, a = 1, b = 0.998, labeled/unlabeled batches 4/60 at p = 0.05) and docs/methods.md 5.

Model selection (`data.selection`): the reference code keeps the epoch with the best mAP on the
test split; we never look at the test split. "last" (default) reports the last epoch;
"labeled_val" holds out `data.val_frac` of the labeled images (excluded from training, from the
class priors and from the contexts) and keeps the epoch with the best mAP on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlml import config, data
from vlml.config import RunConfig, names_from, section, setting
from vlml.errors import ConfigError
from vlml.recipes.sections import DataSource, FrozenEncoder, resolve_regime

if TYPE_CHECKING:
    from vlml.pseudo import PseudoLabeler

SELECTIONS = ("auto", "last", "labeled_val", "val_catalog")
DATA_REGIMES = ("auto", "given", "semi_supervised")
REDUCTIONS = ("sum", "mean")
CBSA_INPUTS = ("cache", "images")
PROMPTS = ("learned", "fixed")
CONTEXT_TARGETS = ("pseudo_labels", "cap")
CONTEXT_LOSSES = ("bce", "asl")
FEATURES = ("label_specific", "global")  # as vlml.models.alignment.FEATURES
CAP_MODES = ("end_to_end", "linear")  # as the SPML recipe's model.mode
CAP_FEATURES = ("backbone", "clip")
SAVE_PSEUDO = ("last", "all", "none")


@dataclass(frozen=True)
class DataConfig(DataSource):
    """Where images and labels come from, which are labelled, and how the epoch is selected.

    `regime`: "given" uses the training labels exactly as they are (a user's own tags):
    fully observed rows are the labelled images, all-unknown rows the unlabelled pool, and
    partly observed rows count as labelled with their unknown entries masked out of every
    loss, of the class priors and of the label co-occurrence. "semi_supervised" draws the
    benchmark split from a fully labelled catalog or dataset (`p` labelled, `label_seed`;
    docs/methods.md 1.2). "auto" = "given" when `train_catalog` is named, else "semi_supervised".
    `selection`: "val_catalog" (clean mAP on the fully labelled `val_catalog`), "labeled_val"
    (mAP on `val_frac` of the labelled images held out, their observed entries), "last"; "auto"
    = "val_catalog" when one is named, else "last" (the reference protocol).
    `test_catalog` is optional with "given" (no test scores without it).
    """

    dataset: str = setting("voc2012", help="registered dataset read from root (with catalogs: "
                                           "any name)")
    train_split: str = setting("train", help="split read for training")
    test_split: str = setting("val", help="split read for the test set")
    val_catalog: str | None = setting(None, help="fully labelled validation catalog")
    regime: str = setting("auto", choices=DATA_REGIMES,
                          help="training labels: given as they are, or a semi_supervised draw; "
                               "auto = given with a train_catalog")
    p: float = setting(0.05, low=0, low_open=True, high=1,
                       help="labelled fraction of the semi_supervised draw")
    label_seed: int = setting(1, low=0, help="seed of the labeled/unlabeled draw")
    selection: str = setting("auto", choices=SELECTIONS,
                             help="epoch kept: best on val_catalog, best on held-out labelled "
                                  "images, or the last; auto = val_catalog if named, else last")
    val_frac: float = setting(0.2, low=0, high=1, high_open=True,
                              help="share of the labeled images held out (labeled_val)")
    split_seed: int = setting(1200, low=0, help="seed of that hold-out")


def effective_regime(d: DataConfig) -> str:
    """`d.regime` with "auto" resolved: "given" with a train catalog, else "semi_supervised"."""
    return resolve_regime(d.regime, d.train_catalog, "semi_supervised")


def effective_selection(d: DataConfig) -> str:
    """`d.selection` with "auto" resolved: "val_catalog" when one is named, else "last"."""
    if d.selection != "auto":
        return d.selection
    return "val_catalog" if d.val_catalog is not None else "last"


@dataclass(frozen=True)
class EncoderConfig(FrozenEncoder):
    """The frozen CLIP (CBSA; CAP with `model.features: clip`)."""


@dataclass(frozen=True)
class PseudoConfig:
    """Pseudo-labels of the unlabeled images, recomputed every semi-supervised epoch from the
    EMA model's weak-view scores by the registered labeller `method` (`vlml.pseudo`; any whose
    input is not restricted to CLIP similarities, `ssmll_labellers()`) built with `params`
    (empty = the method's defaults). E.g. "cap" (docs/methods.md 4; a 1, b 0.998), "fixed" (score
    >= threshold, every entry used; the ablation; threshold 0.5), "mat" (D2L's F-beta
    thresholds fitted on the labeled images' scores, every entry used; beta 0.5).

    `prior_weight` > 0 (CBSA only; docs/methods.md 5, a choice): before thresholding, fuse the
    teacher's scores with the frozen CLIP's zero-shot softmax (`prior_tau`, the model's
    `templates`; mean of the plain and flipped view) by `vlml.pseudo.prior.fuse_prior`.
    0 = the teacher alone."""

    method: str = setting("cap", choices=names_from("vlml.recipes.ssmll.config:ssmll_labellers"),
                          help="pseudo-labeller name (ssmll_labellers())")
    params: dict[str, Any] = setting({}, help="its parameters; empty = the method's defaults")
    prior_weight: float = setting(0.0, low=0, help="weight of the zero-shot prior (CBSA; 0 = off)")
    prior_tau: float = setting(0.03, low=0, low_open=True,
                               help="softmax temperature of the zero-shot prior")


def ssmll_labellers() -> list[str]:
    """The registered pseudo-labellers `pseudo.method` accepts: those that take any scores
    (the teacher's probabilities), not only CLIP similarities."""
    from vlml import pseudo

    return pseudo.list_pseudo_labelers(needs_similarities=False)


def make_labeller(p: PseudoConfig) -> PseudoLabeler:
    """The labeller `p.method` built with `p.params`, its settings checked (`ConfigError`
    naming `pseudo.method` / `pseudo.params` otherwise)."""
    from vlml import pseudo

    _choice(p.method, tuple(ssmll_labellers()), "pseudo.method")
    if not isinstance(p.params, dict):
        raise ConfigError(f"pseudo.params: expected a mapping of parameters, got {p.params!r}")
    try:
        labeller = pseudo.create(p.method, **p.params)
        labeller.check_params()
    except ConfigError as exc:
        raise ConfigError(f"pseudo.params: {exc}") from None
    return labeller


@dataclass(frozen=True)
class LossConfig:
    """ASL (Ridnik et al.) on labeled and (masked) on pseudo-labeled entries; "sum" over
    entries as the reference code and CBSA's `sum ASL`, or "mean" over all B x C entries."""

    gamma_pos: float = setting(0.0, low=0, help="ASL focusing of positives")
    gamma_neg: float = setting(4.0, low=0, help="ASL focusing of negatives")
    clip: float = setting(0.05, low=0, high=1, high_open=True,
                          help="ASL probability margin of negatives")
    reduction: str = setting("sum", choices=REDUCTIONS, help="sum over entries, or mean")
    unlabeled_weight: float = setting(1.0, low=0, help="weight of the pseudo-labeled loss")


@dataclass(frozen=True)
class AugmentConfig:
    """Weak and strong views (docs/methods.md 5.7).

    From images: weak = flip + resize; strong = flip + resize + cutout (`cutout`, share of the
    side; 0 = off) + RandAugment (`randaugment_ops` ops of `randaugment_magnitude`; 0 ops =
    off). From cached tokens or features (documented deviation): weak = the cached plain or
    flipped view; strong = that view with `token_drop` of the spatial tokens dropped and
    Gaussian noise of `noise` times each token's (or feature's) RMS added.
    `warmup_cutout`: the reference warm-up uses no cutout (its default 0).
    """

    cutout: float = setting(0.5, low=0, high=1, help="cutout side share of the strong view")
    warmup_cutout: float = setting(0.0, low=0, high=1, help="cutout side share in warm-up")
    randaugment_ops: int = setting(2, low=0, help="RandAugment ops of the strong view (0 off)")
    randaugment_magnitude: int = setting(9, low=0, help="RandAugment magnitude")
    token_drop: float = setting(0.3, low=0, high=1, high_open=True,
                                help="share of cached spatial tokens dropped (strong view)")
    noise: float = setting(0.1, low=0, help="Gaussian noise on cached inputs, times their RMS")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + one-cycle per phase. `warmup_epochs` on labeled images only (batch
    `warmup_batch_size`), then `epochs` semi-supervised epochs; each semi-supervised step takes
    `labeled_batch_size` labeled and `unlabeled_batch_size` unlabeled images (an epoch is one
    pass over the unlabeled images). `epochs: 0` is the labeled-only baseline."""

    lr: float = setting(1e-4, low=0, low_open=True, help="AdamW learning rate (peak)")
    weight_decay: float = setting(1e-4, low=0, help="AdamW weight decay")
    pct_start: float = setting(0.2, low=0, high=1, low_open=True, high_open=True,
                               help="one-cycle share of rising steps")
    warmup_epochs: int = setting(12, low=0, help="epochs on labeled images only")
    warmup_batch_size: int = setting(16, low=1, help="batch size of the warm-up")
    epochs: int = setting(28, low=0, help="semi-supervised epochs (0 = labeled-only)")
    labeled_batch_size: int = setting(4, low=1, help="labeled images per semi-supervised step")
    unlabeled_batch_size: int = setting(60, low=1,
                                        help="unlabeled images per semi-supervised step")
    eval_batch_size: int = setting(64, low=1, affects_results=False,
                                   help="batch size of evaluation and feature extraction")
    ema_decay: float | None = setting(0.9997, low=0, high=1, high_open=True,
                                      help="EMA teacher decay (null = off)")
    eval_ema: bool = setting(True, help="evaluate the EMA model")
    amp: bool = setting(False, help="mixed precision (on CUDA)")
    num_workers: int = setting(2, low=0, affects_results=False, help="DataLoader workers")
    log_test_map: bool = setting(False, affects_results=False,
                                 help="log the test mAP every epoch (never used to select)")
    # DDP (issue 20): under torchrun, BatchNorm statistics over the global batch (CUDA only)
    sync_bn: bool = setting(False, help="SyncBatchNorm under torchrun (end-to-end, CUDA)")


@dataclass(frozen=True)
class CBSAModelConfig:
    """Label-specific alignment on dense CLIP tokens (docs/methods.md 5.1-5.4, 5.7).

    `inputs`: "cache" (tokens extracted once, the image encoder frozen) or "images" (the
    frozen encoder computes the tokens of every batch). `prompts`: "learned" contexts
    (`n_ctx`, `prompt_init` phrase or random, `dual` positive/negative, `class_specific`) or
    "fixed" hand-written `templates` (dual with `negative_templates`).
    """

    inputs: str = setting("cache", choices=CBSA_INPUTS,
                          help="cached dense tokens, or tokens computed from images")
    prompts: str = setting("learned", choices=PROMPTS, help="learned contexts or templates")
    n_ctx: int = setting(16, low=1, help="learned context tokens")
    prompt_init: str | None = setting(None, help="phrase initialising the contexts (null: "
                                                 "random)")
    dual: bool = setting(True, help="positive and negative prompts")
    class_specific: bool = setting(True, help="contexts per class")
    templates: list[str] = setting(["a photo of a {name}."],
                                   help="fixed prompt templates with a {name} field")
    negative_templates: list[str] | None = setting(None, help="fixed negative templates")
    feature: str = setting("label_specific", choices=FEATURES,
                           help="label-specific token alignment, or the global embedding")
    s1: float = setting(20.0, low=0, low_open=True, help="alignment softmax scale")
    s2: float = setting(5.0, low=0, low_open=True, help="logit scale")
    include_global: bool = setting(True, help="add the global token to the dense tokens")
    normalize_tokens: bool = setting(False, help="unit-normalise the dense tokens")
    adapter: bool = setting(False, help="a trained adapter on the tokens")


@dataclass(frozen=True)
class ContextConfig:
    """The context identification task (docs/methods.md 5.5-5.6).

    `k`: number of contexts or "auto" (eigengap). `unlabeled`: also train it on unlabeled
    images (false = the "labeled only" ablation). `targets` of unlabeled images: derived from
    the class pseudo-labels ("pseudo_labels"), or CAP thresholds on the context head with
    context priors from the labeled images ("cap"). `reference_groups`: known class groups
    (lists of class names) to score the clustering with the adjusted Rand index; for a toy
    catalog the planted groups are used when this is null.
    """

    enabled: bool = setting(True, help="train the context identification task")
    k: int | str = setting("auto", choices=("auto",), low=2,
                           help="number of contexts (>= 2), or auto (eigengap)")
    k_max: int | None = setting(None, low=2, help="largest k auto considers (null: default)")
    unlabeled: bool = setting(True, help="also train it on unlabeled images")
    targets: str = setting("pseudo_labels", choices=CONTEXT_TARGETS,
                           help="unlabeled targets: from class pseudo-labels, or CAP")
    weight: float = setting(1.0, low=0, help="weight of the context loss")
    loss: str = setting("bce", choices=CONTEXT_LOSSES, help="context loss")
    seed: int = setting(0, low=0, help="seed of the context clustering")
    reference_groups: list[list[str]] | None = setting(
        None, help="known class groups to score the clustering (ARI)")


@dataclass(frozen=True)
class CAPModelConfig:
    """CAP's classifier: a timm `backbone` + linear head trained from images ("end_to_end"),
    or a head on cached frozen `features` ("linear", as in the SPML recipe: "backbone" = the
    frozen timm backbone, "clip" = the CLIP global embeddings, i.e. CAP from the same features
    as CBSA); `hidden` > 0 makes that head a one-hidden-layer MLP."""

    mode: str = setting("end_to_end", choices=CAP_MODES,
                        help="train from images, or a head on frozen features")
    features: str = setting("backbone", choices=CAP_FEATURES,
                            help="frozen features of mode linear: the backbone's or CLIP's")
    backbone: str = setting("resnet50", help="timm model name")
    pretrained: bool | str = setting(True, help="true: timm's ImageNet weights; false or "
                                     "random: random init (from seed); or a checkpoint file")
    image_size: int = setting(224, low=1, help="input side in pixels")
    hidden: int = setting(0, low=0, help="hidden units of the head (0 = linear)")


@dataclass(frozen=True)
class SSMLLConfig(RunConfig):
    """The sections every semi-supervised recipe shares; CBSA and CAP add encoder and model
    (and CBSA the context task)."""

    data: DataConfig = section(DataConfig, help="images and labels")
    pseudo: PseudoConfig = section(PseudoConfig, help="pseudo-labels")
    loss: LossConfig = section(LossConfig, help="ASL")
    augment: AugmentConfig = section(AugmentConfig, help="weak and strong views")
    optim: OptimConfig = section(OptimConfig, help="optimisation")
    save_pseudo: str = setting("last", choices=SAVE_PSEUDO, affects_results=False,
                               help="pseudo-labels written: last epoch's, every epoch's, none")


@dataclass(frozen=True)
class CBSAConfig(SSMLLConfig):
    """A CBSA run: CLIP prompt alignment, context task and pseudo-labels."""

    recipe: str = setting("cbsa", choices=("cbsa",), help="recipe")
    name: str = setting("cbsa", affects_results=False, help="run name shown in reports")
    out_dir: str = setting("runs/ssmll/cbsa", affects_results=False, help="run folder")
    encoder: EncoderConfig = section(EncoderConfig, help="frozen CLIP")
    model: CBSAModelConfig = section(CBSAModelConfig, help="alignment model")
    context: ContextConfig = section(ContextConfig, help="context task")


@dataclass(frozen=True)
class CAPConfig(SSMLLConfig):
    """A CAP run: a timm backbone (or a head on frozen features) with CAP pseudo-labels."""

    recipe: str = setting("cap", choices=("cap",), help="recipe")
    name: str = setting("cap", affects_results=False, help="run name shown in reports")
    out_dir: str = setting("runs/ssmll/cap", affects_results=False, help="run folder")
    encoder: EncoderConfig = section(EncoderConfig, help="frozen CLIP (features: clip)")
    model: CAPModelConfig = section(CAPModelConfig, help="classifier")


# ---- validation ------------------------------------------------------------------------------
def _choice(value: Any, choices: tuple[str, ...], key: str) -> None:
    """`value` must be one of `choices` (for `make_labeller`; fields declare their choices)."""
    config.check_value(key, value, Any, config.Setting(choices=tuple(choices)))


def validate_common(cfg: CBSAConfig | CAPConfig) -> None:
    """Every field (`vlml.config.validate`), then the rules between the shared sections, and
    what a run would otherwise find out late: the device is there, cache_dir can be a folder,
    reader options are ones the reader takes, the catalogs named are readable and hold images."""
    from vlml.device import check_device
    from vlml.fileio import check_folder_path

    config.validate(cfg)
    d, o = cfg.data, cfg.optim
    check_device(cfg.device, "device")
    check_folder_path(cfg.cache_dir, "cache_dir")
    data.check_source_options(d.dataset, d.options)
    if d.train_catalog is None:
        data.DATASETS.get(d.dataset)
        if not d.root:
            raise ConfigError("data.root: set the dataset folder, or give data.train_catalog")
    elif d.test_catalog is None and effective_regime(d) != "given":
        raise ConfigError("data.test_catalog is required with data.train_catalog and "
                          "data.regime: semi_supervised (the benchmark reports test mAP)")
    selection = effective_selection(d)
    if selection == "labeled_val" and d.val_frac == 0:
        raise ConfigError("data.val_frac must be > 0 with data.selection: labeled_val")
    if (selection == "val_catalog") != (d.val_catalog is not None):
        raise ConfigError(f"data.selection: {d.selection} with data.val_catalog "
                          f"{d.val_catalog!r}; val_catalog selection needs a val_catalog, and "
                          "a val_catalog is only read by that selection (auto picks it)")
    make_labeller(cfg.pseudo)
    if o.warmup_epochs + o.epochs == 0:
        raise ConfigError("optim.warmup_epochs and optim.epochs are both 0: nothing to train")
    data.check_catalog_settings(d)


def validate_cbsa(cfg: CBSAConfig) -> CBSAConfig:
    """Every field, then CBSA's rules between fields; errors list the valid choices."""
    validate_common(cfg)
    m, c = cfg.model, cfg.context
    if not m.templates:
        raise ConfigError("model.templates: give at least one template with a {name} field")
    nothing_learned = (m.prompts == "fixed" and m.negative_templates is not None
                       and not m.adapter and not c.enabled)
    if nothing_learned:
        raise ConfigError("nothing to train: fixed dual prompts without an adapter or context "
                          "head; set model.adapter: true, context.enabled: true, or "
                          "model.prompts: learned")
    return cfg


def validate_cap(cfg: CAPConfig) -> CAPConfig:
    """Every field, then CAP's rules between fields; errors list the valid choices."""
    validate_common(cfg)
    m = cfg.model
    if m.mode == "end_to_end" or m.features == "backbone":
        from vlml.models import check_backbone_name

        check_backbone_name(m.backbone)
    if cfg.pseudo.prior_weight:
        raise ConfigError("pseudo.prior_weight: the zero-shot prior needs CBSA's text encoder; "
                          "CAP takes 0")
    return cfg


__all__ = ["CBSAConfig", "CAPConfig", "DataConfig", "EncoderConfig", "PseudoConfig",
           "LossConfig", "AugmentConfig", "OptimConfig", "CBSAModelConfig", "ContextConfig",
           "CAPModelConfig", "validate_cbsa", "validate_cap", "validate_common",
           "ssmll_labellers", "make_labeller"]
