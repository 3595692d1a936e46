"""The CBSA recipe: context-based semantic-aware alignment for SSMLL (methods.md 5).

semi-supervised catalog -> frozen CLIP dense tokens (cached once, plain and flipped views; or
computed per batch from images) -> label-specific alignment head with learned dual prompts
(+ context head on the global token) -> contexts from the labeled labels' co-occurrence
(spectral clustering; saved as contexts.json/contexts.png, adjusted Rand index against known
groups) -> warm-up on labeled images, then semi-supervised epochs with CAP pseudo-labels from
the EMA model (`ssmll_loop`; optionally fused with the frozen CLIP's zero-shot scores,
`pseudo.prior_weight`) -> test mAP, CF1/OF1, per-class AP in results.json.

Ablations (methods.md 5.8), each a config flag: `model.feature: global`,
`context.enabled: false`, `context.unlabeled: false`, `pseudo.method: fixed`, `context.k`.
`optim.epochs: 0` is the labeled-only warm-up baseline.

>>> from vlml import config
>>> from vlml.recipes.ssmll import cbsa
>>> cfg = config.load(cbsa.Config, "configs/ssmll/voc2012/cbsa_p05.yaml")   # doctest: +SKIP
>>> result = cbsa.train(cfg)                                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlml import config, encoders
from vlml.engine import resolve_device
from vlml.errors import ConfigError
from vlml.models import (
    ContextClustering,
    ContextHead,
    FixedPrompts,
    LabelSpecificHead,
    PromptLearner,
    identify_contexts,
    plot_contexts,
    save_contexts,
)
from vlml.pseudo.clip_scores import catalog_embeddings, similarities, zero_shot_scores
from vlml.recipes.ssmll.config import CBSAConfig, validate_cbsa
from vlml.recipes.ssmll.data import (
    ArrayViews,
    ImageViews,
    SSMLLSplits,
    Views,
    load_splits,
    strong_tokens,
)
from vlml.recipes.ssmll.loop import (
    ContextTask,
    RunResult,
    SemiSupervisedLoop,
    evaluate_saved,
    finish_run,
)
from vlml.types import Catalog

Config = CBSAConfig  # every recipe module names its config `Config`

__all__ = ["Config", "CBSAConfig", "CBSANet", "train", "evaluate_run", "build_model",
           "make_contexts", "zero_shot_prior", "adjusted_rand_index", "RunResult"]


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
    torch.manual_seed(cfg.seed)
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


def make_views(cfg: CBSAConfig, encoder: encoders.Encoder, splits: SSMLLSplits
               ) -> tuple[Views, Views]:
    """(train views, test views) from cached tokens or from images (`model.inputs`)."""
    if cfg.model.inputs == "cache":
        train = _token_caches(cfg, encoder, splits.train, ("plain", "flip"))
        test = _token_caches(cfg, encoder, splits.test, ("plain",))
        return (ArrayViews(train["plain"], train["flip"], cfg.seed, strong_tokens(cfg.augment)),
                ArrayViews(test["plain"], None, cfg.seed))

    def encode(x: Tensor) -> Tensor:
        return encoder.dense_tokens(x).clone()  # clone: a normal tensor out of inference mode

    def views(catalog: Catalog) -> ImageViews:
        return ImageViews(catalog, encoder.preprocess, None, cfg.augment, cfg.seed, encode,
                          cfg.optim.num_workers)
    return views(splits.train), views(splits.test)


def zero_shot_prior(cfg: CBSAConfig, encoder: encoders.Encoder, train: Catalog) -> np.ndarray:
    """(N, C) float32 zero-shot softmax (`pseudo.prior_tau`, `model.templates`) of every train
    image, the mean over its plain and flipped view; embeddings from the feature cache."""
    emb = catalog_embeddings(train, encoder, cfg.cache_dir, ("plain", "flip"),
                             batch_size=cfg.encoder.batch_size, progress=cfg.progress)
    text = encoder.encode_classes(list(train.class_names), cfg.model.templates).cpu().numpy()
    scores = [zero_shot_scores(similarities(e, text), "softmax", cfg.pseudo.prior_tau)
              for e in emb.values()]
    return (sum(scores) / len(scores)).astype(np.float32)


def _load_encoder(cfg: CBSAConfig, device: torch.device) -> encoders.Encoder:
    encoder = encoders.load(cfg.encoder.name, cfg.encoder.pretrained, device=device)
    if not encoder.supports_dense:
        raise ConfigError(f"encoder {cfg.encoder.name!r} gives no dense tokens (needs an "
                          "open_clip ViT or CLIP-ResNet image tower)")
    return encoder


# ---- the recipe ------------------------------------------------------------------------------
def train(cfg: CBSAConfig) -> RunResult:
    """Run the whole recipe; resumable (re-running the same config continues the run)."""
    t0 = time.perf_counter()
    validate_cbsa(cfg)
    run_dir = Path(cfg.out_dir)
    splits = load_splits(cfg.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run_dir / "config.yaml")
    device = resolve_device(cfg.device)
    clustering, ctx_report = (make_contexts(cfg, splits, run_dir) if cfg.context.enabled
                              else (None, {}))
    encoder = _load_encoder(cfg, device)
    train_views, test_views = make_views(cfg, encoder, splits)
    model = build_model(cfg, encoder, list(splits.train.class_names),
                        clustering.k if clustering is not None else None)
    task = None if clustering is None else ContextTask(
        clustering, cfg.context.weight, cfg.context.unlabeled, cfg.context.targets,
        cfg.context.loss)
    prior = None
    if cfg.pseudo.prior_weight > 0 and cfg.optim.epochs > 0:
        prior = zero_shot_prior(cfg, encoder, splits.train)
    loop = SemiSupervisedLoop(cfg, model, train_views, splits, run_dir, device, task,
                              test_views, prior).run()
    extra = {"recipe": "cbsa", "inputs": cfg.model.inputs, "feature": cfg.model.feature,
             "pseudo_method": cfg.pseudo.method, "prior_weight": cfg.pseudo.prior_weight,
             "context": ctx_report or None}
    return finish_run(cfg, model, test_views, splits, loop, run_dir, device, t0, extra)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-evaluate a finished run from its saved config, contexts and selected weights."""
    run_dir = Path(run_dir)
    cfg = config.load(CBSAConfig, run_dir / "config.yaml")
    cfg.progress = False
    splits = load_splits(cfg.data)
    device = resolve_device(cfg.device)
    k = None
    if cfg.context.enabled:
        k = json.loads((run_dir / "contexts.json").read_text())["k"]
    encoder = _load_encoder(cfg, device)
    model = build_model(cfg, encoder, list(splits.train.class_names), k)
    _, test_views = make_views(cfg, encoder, splits)
    return evaluate_saved(model, run_dir, cfg, test_views, splits.test, device)
