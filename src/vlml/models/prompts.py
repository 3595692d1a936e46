"""Class text features for the alignment head: fixed prompts or learned prompt contexts.

Two sources of (C, D) unit class text features, both `nn.Module`s whose `forward()` returns
`(positive, negative)` with `negative` None for a single prompt:

- `FixedPrompts`: hand-written templates encoded once by the frozen CLIP ("a photo of a {name}.");
  stored as buffers, nothing to learn.
- `PromptLearner`: CoOp / DualCoOp prompt learning (docs/methods.md 5.2). Each prompt is
  `[ctx_1 ... ctx_M] {name}.` where the M context vectors are learned word embeddings; there is a
  positive and (by default) a negative context. The prompt is tokenised with M placeholder
  words ("X X ... X {name}."), the placeholders' token embeddings are replaced by the context
  vectors, and the frozen CLIP text transformer encodes the result, pooled at the end-of-text
  token exactly as `encode_text` does. Only the context vectors are parameters.

The frozen text transformer is held by `FrozenTextTower`, outside the module tree: it is not in
`parameters()` or `state_dict()` (checkpoints hold only the contexts), and copies of the learner
(e.g. timm's `ModelEmaV3` deep copy) share it instead of duplicating the CLIP text weights. The
learner must therefore live on the encoder's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from vlml.encoders import prompts as templates_mod
from vlml.errors import ConfigError

DEFAULT_N_CTX = 16
INIT_STD = 0.02
PLACEHOLDER = "X"

TextPair = tuple[torch.Tensor, torch.Tensor | None]


class FrozenTextTower:
    """The frozen text transformer of an open_clip model, run on given token embeddings.

    Supports `open_clip.CLIP` and `CustomTextCLIP` with a plain `TextTransformer` (no CoCa class
    token, causal mask). Its weights get `requires_grad=False`. Deep copies return the same
    object: the tower is shared, never duplicated.
    """

    def __init__(self, model: nn.Module) -> None:
        text = getattr(model, "text", None)
        src = text if text is not None else model
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        missing = [n for n in needed if not hasattr(src, n)]
        if missing or getattr(src, "cls_emb", None) is not None or getattr(
                src, "use_pad_mask", False):
            raise ConfigError(f"prompt learning needs a CLIP-style text transformer; "
                              f"{type(model).__name__} has a text tower of type "
                              f"{type(src).__name__} (missing {missing or 'nothing'}, or a "
                              "class token / padding mask)")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = getattr(src, "text_projection", None)
        self.attn_mask = getattr(src, "attn_mask", None)
        self.pool_type = getattr(src, "text_pool_type", None) or getattr(src, "pool_type", "argmax")
        self.eos_id = getattr(src, "text_eos_id", None) or getattr(src, "eos_id", None)
        for part in (self.token_embedding, self.transformer, self.ln_final):
            part.requires_grad_(False)
        for t in (self.positional_embedding, self.text_projection):
            if isinstance(t, torch.Tensor):
                t.requires_grad_(False)
            elif isinstance(t, nn.Module):
                t.requires_grad_(False)

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenTextTower:
        return self

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    @property
    def width(self) -> int:
        """W, the width of the token embeddings (not the joint-space size D)."""
        return int(self.positional_embedding.shape[1])

    @property
    def device(self) -> torch.device:
        return self.positional_embedding.device

    @torch.no_grad()
    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, n) token ids -> (N, n, W) float32 token embeddings (no positions)."""
        return self.token_embedding(token_ids.to(self.device)).float()

    def __call__(self, embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, n, W) token embeddings + their (N, n) ids -> (N, D) float32, not normalised.

        Mirrors open_clip's `CLIP.encode_text` after the token-embedding lookup; `token_ids`
        only locate the pooled (end-of-text) token. Differentiable w.r.t. `embeddings`.
        """
        cast = self.transformer.get_cast_dtype()
        x = embeddings.to(cast) + self.positional_embedding.to(cast)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, token_ids, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return x.float()


class FixedPrompts(nn.Module):
    """Hand-written prompts: forward() -> (positive (C, D), negative (C, D) or None), unit rows.

    Build with `from_encoder`, or pass precomputed features. The features are persistent
    buffers (they are part of a trained model's state).
    """

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor | None = None) -> None:
        super().__init__()
        if positive.ndim != 2 or (negative is not None and negative.shape != positive.shape):
            raise ConfigError(f"expected (C, D) positive and matching negative text features, got "
                              f"{tuple(positive.shape)} and "
                              f"{None if negative is None else tuple(negative.shape)}")
        self.register_buffer("positive", F.normalize(positive.detach().float(), dim=-1))
        self.register_buffer("negative", None if negative is None
                             else F.normalize(negative.detach().float(), dim=-1))

    @classmethod
    def from_encoder(cls, encoder: Any, class_names: Sequence[str],
                     templates: templates_mod.Templates = templates_mod.DEFAULT_TEMPLATES,
                     negative_templates: templates_mod.Templates | None = None) -> FixedPrompts:
        """Encode the class prompts with `encoder.encode_classes` (template ensemble).

        `negative_templates` (e.g. "a photo without a {name}.") gives the dual-prompt form.
        """
        pos = encoder.encode_classes(class_names, templates)
        neg = (None if negative_templates is None
               else encoder.encode_classes(class_names, negative_templates))
        return cls(pos.clone(), None if neg is None else neg.clone())

    @property
    def dual(self) -> bool:
        return self.negative is not None

    @property
    def num_classes(self) -> int:
        return int(self.positive.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.positive.shape[1])

    def forward(self) -> TextPair:
        return self.positive, self.negative


class PromptLearner(nn.Module):
    """Learned prompt contexts `[ctx_1 ... ctx_M] {name}.` through the frozen CLIP text encoder.

    forward() -> (t_pos (C, D), t_neg (C, D) or None), unit rows, differentiable w.r.t. the
    contexts only.

    Args:
        encoder: a `vlml.encoders.Encoder` (anything with `.model`, an open_clip model, and
            `.tokenizer`, its CLIP tokenizer).
        class_names: the C class names, used as written.
        n_ctx: M, context vectors per prompt (docs/methods.md: 16).
        init: None = N(0, 0.02) random contexts; a phrase (e.g. "a photo of a") = its token
            embeddings in the last P of the M positions (the first M - P random), so
            `n_ctx = P` is exactly CoOp's initialisation. Needs P <= M.
        negative: also learn a negative context (DualCoOp); False = single prompt.
        class_specific: one context per class (C, M, W) (the default, docs/methods.md 5.2) or one
            context shared by all classes (M, W) (CoOp's and DualCoOp's default).
        seed: seeds the random initialisation.

    Raises `ConfigError` when a prompt does not fit the text encoder's context length or the
    tokenizer is not CLIP-style (start token, one token per placeholder).
    """

    def __init__(self, encoder: Any, class_names: Sequence[str], *, n_ctx: int = DEFAULT_N_CTX,
                 init: str | None = None, negative: bool = True, class_specific: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        names = list(class_names)
        if not names:
            raise ConfigError("PromptLearner needs at least one class name")
        if not isinstance(n_ctx, int) or n_ctx < 1:
            raise ConfigError(f"n_ctx={n_ctx!r}; expected a positive integer")
        self.tower = FrozenTextTower(encoder.model)
        self.class_names = names
        self.n_ctx = n_ctx
        self.init = init
        self.class_specific = class_specific
        tokenizer = encoder.tokenizer
        prompts = [f"{' '.join([PLACEHOLDER] * n_ctx)} {n}." for n in names]
        ids = self._tokenize(tokenizer, prompts, names)
        emb = self.tower.embed_tokens(ids)
        # Recomputed from the class names at construction, so not saved with the contexts.
        self.register_buffer("token_ids", ids.to(self.tower.device), persistent=False)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)

        gen = torch.Generator().manual_seed(seed)
        shape = (len(names), n_ctx, self.tower.width) if class_specific else (
            n_ctx, self.tower.width)
        ctx = [self._init_context(tokenizer, shape, gen) for _ in range(2 if negative else 1)]
        device = self.tower.device
        self.ctx_pos = nn.Parameter(ctx[0].to(device))
        self.ctx_neg = nn.Parameter(ctx[1].to(device)) if negative else None

    def _tokenize(self, tokenizer: Any, prompts: list[str], names: list[str]) -> torch.Tensor:
        n_len = self.tower.context_length
        ids = tokenizer(prompts, context_length=n_len)
        long = tokenizer(prompts, context_length=n_len + 256)
        fits = (long[:, n_len:] == 0).all(dim=1)
        if not bool(fits.all()):
            bad = names[int((~fits).nonzero()[0, 0])]
            raise ConfigError(f"the prompt for class {bad!r} with n_ctx={self.n_ctx} context "
                              f"tokens does not fit the text encoder's {n_len} tokens; use a "
                              "smaller n_ctx or a shorter class name")
        probe = tokenizer([PLACEHOLDER], context_length=n_len)[0]
        if not bool((ids[:, 0] == probe[0]).all() and (ids[:, 1:1 + self.n_ctx] == probe[1]).all()):
            raise ConfigError("prompt learning needs a CLIP-style tokenizer (a start token, then "
                              f"one token per placeholder {PLACEHOLDER!r}); "
                              f"{type(tokenizer).__name__} does not tokenise that way")
        return ids

    def _init_context(self, tokenizer: Any, shape: tuple[int, ...],
                      gen: torch.Generator) -> torch.Tensor:
        ctx = torch.randn(shape, generator=gen) * INIT_STD
        if self.init:
            ids = tokenizer([self.init], context_length=self.tower.context_length)[0]
            words = ids[1:int(ids.argmax())]  # between the start and end-of-text tokens
            if len(words) > self.n_ctx:
                raise ConfigError(f"init phrase {self.init!r} has {len(words)} tokens, more than "
                                  f"n_ctx={self.n_ctx}")
            phrase = self.tower.embed_tokens(words[None])[0].cpu()
            ctx[..., self.n_ctx - len(words):, :] = phrase
        return ctx

    @property
    def dual(self) -> bool:
        return self.ctx_neg is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompt_embeddings(self, ctx: torch.Tensor) -> torch.Tensor:
        """Splice a context (M, W) or (C, M, W) into the prompts: (C, n, W) token embeddings."""
        if ctx.ndim == 2:
            ctx = ctx.unsqueeze(0).expand(self.num_classes, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def forward(self) -> TextPair:
        contexts = [self.ctx_pos] + ([self.ctx_neg] if self.ctx_neg is not None else [])
        x = torch.cat([self.prompt_embeddings(c) for c in contexts])
        ids = self.token_ids.repeat(len(contexts), 1)
        feats = F.normalize(self.tower(x, ids), dim=-1)
        c = self.num_classes
        return feats[:c], (feats[c:] if self.ctx_neg is not None else None)

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, n_ctx={self.n_ctx}, init={self.init!r}, "
                f"dual={self.dual}, class_specific={self.class_specific}")


__all__ = ["FrozenTextTower", "FixedPrompts", "PromptLearner", "DEFAULT_N_CTX", "INIT_STD"]
