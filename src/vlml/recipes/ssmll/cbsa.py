"""The CBSA recipe: context-based semantic-aware alignment for SSMLL (docs/methods.md 5).

semi-supervised catalog -> frozen CLIP dense tokens (cached once, plain and flipped views; or
computed per batch from images) -> label-specific alignment head with learned dual prompts
(+ context head on the global token) -> contexts from the labeled labels' co-occurrence
(spectral clustering; saved as contexts.json/contexts.png, adjusted Rand index against known
groups) -> warm-up on labeled images, then semi-supervised epochs with CAP pseudo-labels from
the EMA model (`recipes/ssmll/loop.py`; optionally fused with the frozen CLIP's zero-shot scores,
`pseudo.prior_weight`) -> test mAP, CF1/OF1, per-class AP in results.json.

Ablations (docs/methods.md 5.8), each a config flag: `model.feature: global`,
`context.enabled: false`, `context.unlabeled: false`, `pseudo.method: fixed`, `context.k`.
`optim.epochs: 0` is the labeled-only warm-up baseline.

>>> from vlml import config, runs
>>> from vlml.recipes.ssmll import cbsa
>>> cfg = config.load(cbsa.Config, "ssmll/voc2012/cbsa_p05", ["data.root=~/data"])  # doctest: +SKIP
>>> result = runs.run(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlml import distributed, encoders
from vlml.contexts import ContextClustering, identify_contexts, save_contexts
from vlml.data.transforms import strong_tokens
from vlml.engine import seeded
from vlml.errors import ConfigError
from vlml.models import ContextHead, FixedPrompts, LabelSpecificHead, PromptLearner, image_model
from vlml.pseudo.clip_scores import catalog_embeddings, similarities, zero_shot_scores
from vlml.recipes.base import Fitted, Inference, encoder_record, load_recorded_encoder
from vlml.recipes.ssmll.config import CBSAConfig, validate_cbsa
from vlml.recipes.ssmll.data import (
    ArrayViews,
    ImageViews,
    SSMLLSplits,
    Views,
    load_splits,
)
from vlml.recipes.ssmll.parts import build_loop, check_batch_sizes, context_task
from vlml.recipes.ssmll.results import loop_fitted
from vlml.report.contexts import plot_contexts
from vlml.types import Catalog

Config = CBSAConfig  # every recipe module names its config `Config`

validate = validate_cbsa

__all__ = ["Config", "CBSAConfig", "CBSANet", "validate", "load_splits", "fit", "load_model",
           "build_model", "make_contexts", "zero_shot_prior",
           "adjusted_rand_index"]


class CBSANet(nn.Module):
    """forward(tokens (B, L + 1, D), text=None) -> (class logits (B, C), context logits (B, K)
    or None). The context head reads the global token 0."""

    def __init__(self, head: LabelSpecificHead, context_head: ContextHead | None = None) -> None:
        super().__init__()
        self.head = head
        self.context_head = context_head

    def forward(self, tokens: Tensor, text: Any = None) -> tuple[Tensor, Tensor | None]:
        logits = self.head(tokens, text)
        ctx = self.context_head(tokens[:, 0]) if self.context_head is not None else None
        return logits, ctx

    @torch.no_grad()
    def prepare_eval(self) -> dict[str, Any]:
        """The text features once for a whole evaluation pass."""
        return {"text": self.head.text_features()}


def build_model(cfg: CBSAConfig, encoder: encoders.Encoder, class_names: list[str],
                n_contexts: int | None) -> CBSANet:
    """Prompts + alignment head (+ context head when `n_contexts`), seeded by `cfg.seed`."""
    m = cfg.model
    with seeded(cfg.seed):
        if m.prompts == "learned":
            prompts: nn.Module = PromptLearner(encoder, class_names, n_ctx=m.n_ctx,
                                               init=m.prompt_init, negative=m.dual,
                                               class_specific=m.class_specific, seed=cfg.seed)
        else:
            prompts = FixedPrompts.from_encoder(encoder, class_names, m.templates,
                                                m.negative_templates)
        head = LabelSpecificHead(prompts, s1=m.s1, s2=m.s2, feature=m.feature,
                                 include_global=m.include_global,
                                 normalize_tokens=m.normalize_tokens, adapter=m.adapter)
        ctx = ContextHead(head.embed_dim, n_contexts) if n_contexts else None
    return CBSANet(head, ctx).to(encoder.device)


# ---- contexts --------------------------------------------------------------------------------
def _reference_groups(cfg: CBSAConfig, train: Catalog) -> list[list[str]] | None:
    if cfg.context.reference_groups is not None:
        return cfg.context.reference_groups
    if any(step.get("dataset") == "toy" for step in train.provenance):
        try:
            from vlml.data.toy import TOY_GROUPS
        except ImportError:
            return None
        return [list(g) for g in TOY_GROUPS]
    return None


def adjusted_rand_index(clustering: ContextClustering, groups: list[list[str]]) -> float:
    """Adjusted Rand index (scikit-learn) of the contexts against reference groups of class
    names; classes in no group count as groups of their own."""
    from sklearn.metrics import adjusted_rand_score

    names = list(clustering.class_names)
    ref = np.full(len(names), -1, dtype=np.int64)
    for g, members in enumerate(groups):
        for name in members:
            if name not in names:
                raise ConfigError(f"context.reference_groups: unknown class {name!r}; classes "
                                  f"are {names[:10]}{' ...' if len(names) > 10 else ''}")
            ref[names.index(name)] = g
    alone = np.flatnonzero(ref < 0)
    ref[alone] = len(groups) + np.arange(alone.size)
    return float(adjusted_rand_score(ref, clustering.clusters))


def make_contexts(cfg: CBSAConfig, splits: SSMLLSplits, run_dir: Path
                  ) -> tuple[ContextClustering, dict[str, Any]]:
    """Cluster the classes on the labeled training images' co-occurrence; save contexts.json
    and contexts.png; return the clustering and its report (K, members, ARI when known)."""
    c = cfg.context
    train = splits.train
    clustering = identify_contexts(train.labels[splits.labeled], train.class_names, k=c.k,
                                   seed=c.seed, k_max=c.k_max)
    if distributed.is_main():  # every rank clusters the same way; rank 0 writes
        save_contexts(run_dir / "contexts.json", clustering)
        plot_contexts(clustering.affinity, clustering.clusters, clustering.class_names,
                      run_dir / "contexts.png")
    report: dict[str, Any] = {"k": clustering.k, "k_method": clustering.k_method,
                              "contexts": clustering.members()}
    groups = _reference_groups(cfg, train)
    if groups is not None:
        report["adjusted_rand_index"] = adjusted_rand_index(clustering, groups)
        report["reference_groups"] = groups
    return clustering, report


# ---- inputs ----------------------------------------------------------------------------------
def _token_caches(cfg: CBSAConfig, encoder: encoders.Encoder, catalog: Catalog,
                  views: tuple[str, ...]) -> dict[str, np.ndarray]:
    caches = encoders.extract_features(catalog, encoder, cfg.cache_dir, views=views, dense=True,
                                       batch_size=cfg.encoder.batch_size,
                                       progress=cfg.progress)
    return {v: c.tokens for v, c in caches.items()}


def _image_views(cfg: CBSAConfig, encoder: encoders.Encoder, catalog: Catalog) -> ImageViews:
    def encode(x: Tensor) -> Tensor:
        return encoder.dense_tokens(x).clone()  # clone: a normal tensor out of inference mode

    return ImageViews(catalog, encoder.preprocess, None, cfg.augment, cfg.seed, encode,
                      cfg.optim.num_workers)


def eval_views(cfg: CBSAConfig, encoder: encoders.Encoder, catalog: Catalog) -> Views:
    """Plain views of a catalog's images: cached tokens or images (`model.inputs`)."""
    if cfg.model.inputs == "cache":
        return ArrayViews(_token_caches(cfg, encoder, catalog, ("plain",))["plain"], None,
                          cfg.seed)
    return _image_views(cfg, encoder, catalog)


def make_views(cfg: CBSAConfig, encoder: encoders.Encoder, splits: SSMLLSplits
               ) -> tuple[Views, Views | None, Views | None]:
    """(train, validation, test) views from cached tokens or from images (`model.inputs`);
    None for a catalog the run does not have."""
    if cfg.model.inputs == "cache":
        train = _token_caches(cfg, encoder, splits.train, ("plain", "flip"))
        augment = strong_tokens(cfg.augment.token_drop, cfg.augment.noise)
        train_views: Views = ArrayViews(train["plain"], train["flip"], cfg.seed, augment)
    else:
        train_views = _image_views(cfg, encoder, splits.train)
    val, test = (None if c is None else eval_views(cfg, encoder, c)
                 for c in (splits.val, splits.test))
    return train_views, val, test


def zero_shot_prior(cfg: CBSAConfig, encoder: encoders.Encoder, train: Catalog) -> np.ndarray:
    """(N, C) float32 zero-shot softmax (`pseudo.prior_tau`, `model.templates`) of every train
    image, the mean over its plain and flipped view; embeddings from the feature cache."""
    emb = catalog_embeddings(train, encoder, cfg.cache_dir, ("plain", "flip"),
                             batch_size=cfg.encoder.batch_size, progress=cfg.progress)
    text = encoder.encode_classes(list(train.class_names), cfg.model.templates).cpu().numpy()
    scores = [zero_shot_scores(similarities(e, text), "softmax", cfg.pseudo.prior_tau)
              for e in emb.values()]
    return (sum(scores) / len(scores)).astype(np.float32)


def preflight(cfg: CBSAConfig) -> None:
    """Before any work: under torchrun the world size divides every batch size, and the CLIP
    encoder's weights can be had (no download tried)."""
    check_batch_sizes(cfg)
    encoders.check_weights(cfg.encoder.name, cfg.encoder.pretrained)


def _check_dense(encoder: encoders.Encoder, cfg: CBSAConfig) -> encoders.Encoder:
    if not encoder.supports_dense:
        raise ConfigError(f"encoder {cfg.encoder.name!r} gives no dense tokens (needs an "
                          "open_clip ViT or CLIP-ResNet image tower)")
    return encoder


# ---- the recipe ------------------------------------------------------------------------------
def fit(cfg: CBSAConfig, splits: SSMLLSplits, run_dir: Path, device: torch.device) -> Fitted:
    """Contexts, then the warm-up and semi-supervised phases in the claimed `run_dir`;
    resumable."""
    if cfg.pseudo.prior_weight > 0 and splits.train.n_classes < 2:
        raise ConfigError("pseudo.prior_weight: the zero-shot prior is a softmax over the "
                          "classes, the same for every image with one class; set "
                          "pseudo.prior_weight: 0")
    clustering, ctx_report = (make_contexts(cfg, splits, run_dir) if cfg.context.enabled
                              else (None, {}))
    encoder = _check_dense(encoders.load(cfg.encoder.name, cfg.encoder.pretrained,
                                         device=device), cfg)
    train_views, val_views, test_views = make_views(cfg, encoder, splits)
    k = clustering.k if clustering is not None else None
    model = build_model(cfg, encoder, list(splits.train.class_names), k)
    task = None if clustering is None else context_task(cfg.context, cfg.loss, cfg.pseudo,
                                                        clustering)
    prior = None
    if cfg.pseudo.prior_weight > 0 and cfg.optim.epochs > 0:
        prior = zero_shot_prior(cfg, encoder, splits.train)
    built = build_loop(cfg, model, train_views, splits, run_dir, device, context=task,
                       prior=prior, test_views=test_views, val_views=val_views)
    loop = built.run()
    extra = {"inputs": cfg.model.inputs, "feature": cfg.model.feature,
             "pseudo_method": cfg.pseudo.method, "prior_weight": cfg.pseudo.prior_weight,
             "context": ctx_report or None}
    return loop_fitted(cfg, model, test_views, splits, loop, run_dir, device,
                       {"kind": "cbsa", "n_contexts": k},
                       encoder_record(encoder, cfg.encoder.name, cfg.encoder.pretrained), extra,
                       validation=built.validation)


def load_model(cfg: CBSAConfig, record: dict[str, Any], device: torch.device) -> Inference:
    """The run's model rebuilt from its record (weights not loaded) and its catalog reader."""
    encoder = _check_dense(load_recorded_encoder(record, device), cfg)
    model = build_model(cfg, encoder, list(record["class_names"]),
                        record["model"]["n_contexts"])
    bs = cfg.optim.eval_batch_size
    return Inference(model, lambda cat: eval_views(cfg, encoder, cat).plain(
        np.arange(cat.n_images), bs),
        lambda: image_model.from_cbsa(encoder, model, cfg.model.inputs == "cache"))
