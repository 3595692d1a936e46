"""Label-specific alignment head of CBSA (docs/methods.md 5.1-5.4).

Dense CLIP tokens `v_l` (B, L + 1, D) and class text features `t_c` (C, D) give, per image,

    a_cl    = softmax_l(s1 * cos(v_l, t_c+))            text-guided attention over tokens
    z_c     = sum_l a_cl v_l                            label-specific feature of class c
    logit_c = s2 * (cos(z_c, t_c+) - cos(z_c, t_c-))    dual prompt: two-way softmax log-odds
    logit_c = s2 * cos(z_c, t_c) + b_c                  single prompt, learnable bias b_c

Each class's feature is aligned with its own text feature only (one-to-one alignment), instead
of one global image feature against all class texts. Everything is vectorised over batch and
classes (einsum); memory is O(B C L) for the attention and O(B C D) for `z`.

Options (docs/methods.md marks them as choices):
- `s1` = 20, `s2` = 5: the attention and logit scales.
- `include_global` (default True): attend over l = 0..L, i.e. the global token 0 competes with
  the spatial tokens (docs/methods.md writes l = 0..L); False attends over the spatial tokens only.
- `feature="global"`: the ablation that uses the global token v_0 for every class (no
  attention, so `s1` is unused).
- `normalize_tokens` (default False): pool unit-length tokens, as DualCoOp does, instead of the
  raw tokens. Only relative token norms change `cos(z_c, t)`.
- `adapter` (default off): a residual linear map on the tokens, initialised to the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlml.errors import ConfigError, DataError
from vlml.models.prompts import FixedPrompts, PromptLearner, TextPair

FEATURES = ("label_specific", "global")
DEFAULT_S1 = 20.0
DEFAULT_S2 = 5.0


def token_attention(tokens: torch.Tensor, text: torch.Tensor, s1: float) -> torch.Tensor:
    """a (B, C, L) = softmax over l of s1 * cos(tokens[b, l], text[c]).

    tokens (B, L, D), text (C, D); any norms (both are normalised here).
    """
    sims = torch.einsum("bld,cd->bcl", F.normalize(tokens, dim=-1), F.normalize(text, dim=-1))
    return torch.softmax(s1 * sims, dim=-1)


def label_specific_features(tokens: torch.Tensor, text: torch.Tensor,
                            s1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z (B, C, D) = sum_l a_cl tokens_l, and the attention a (B, C, L) it used."""
    attn = token_attention(tokens, text, s1)
    return torch.einsum("bcl,bld->bcd", attn, tokens), attn


def alignment_logits(features: torch.Tensor, positive: torch.Tensor,
                     negative: torch.Tensor | None, s2: float,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """One-to-one alignment scores (B, C).

    features: (B, C, D) label-specific features z_c, or (B, 1, D) one feature for all classes.
    positive, negative: (C, D) text features (negative None for the single-prompt form).
    Dual: s2 * (cos(z_c, t_c+) - cos(z_c, t_c-)); single: s2 * cos(z_c, t_c) + bias_c.
    """
    z = F.normalize(features, dim=-1)
    logits = s2 * (z * F.normalize(positive, dim=-1)).sum(-1)
    if negative is not None:
        logits = logits - s2 * (z * F.normalize(negative, dim=-1)).sum(-1)
    if bias is not None:
        logits = logits + bias
    return logits


class TokenAdapter(nn.Module):
    """v -> v + W v (+ b), W and b initialised to zero so it starts as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.linear(tokens)


class LabelSpecificHead(nn.Module):
    """forward(tokens (B, L + 1, D), text=None) -> logits (B, C) (see the module docstring).

    Args:
        prompts: where the class text features come from: `FixedPrompts` (hand-written) or
            `PromptLearner` (learned contexts); dual when it yields a negative feature.
        s1, s2: attention and logit scales.
        feature: "label_specific" (z_c per class) or "global" (token 0 for every class).
        include_global: attention over tokens 0..L (True) or 1..L (False).
        normalize_tokens: pool L2-normalised tokens instead of raw ones.
        adapter: add a `TokenAdapter` on the tokens.
        bias: learn a per-class bias b_c; default (None) = on for a single prompt, off for dual.

    `text` lets a caller compute `text_features()` once (e.g. under `torch.no_grad()` for
    evaluation) instead of running the prompt learner's text transformer for every batch.
    Tokens of any float dtype (the float16 cache) are computed in float32.
    """

    def __init__(self, prompts: FixedPrompts | PromptLearner, *, s1: float = DEFAULT_S1,
                 s2: float = DEFAULT_S2, feature: str = "label_specific",
                 include_global: bool = True, normalize_tokens: bool = False,
                 adapter: bool = False, bias: bool | None = None) -> None:
        super().__init__()
        if feature not in FEATURES:
            raise ConfigError(f"feature={feature!r}; expected one of {FEATURES}")
        for name, value in (("s1", s1), ("s2", s2)):
            if not float(value) > 0:
                raise ConfigError(f"{name}={value!r}; expected a positive scale")
        self.prompts = prompts
        self.s1 = float(s1)
        self.s2 = float(s2)
        self.feature = feature
        self.include_global = include_global
        self.normalize_tokens = normalize_tokens
        with torch.no_grad():
            pos, neg = prompts()
        self.num_classes, self.embed_dim = int(pos.shape[0]), int(pos.shape[1])
        self.dual = neg is not None
        use_bias = not self.dual if bias is None else bias
        self.bias = nn.Parameter(torch.zeros(self.num_classes, device=pos.device)) \
            if use_bias else None
        self.adapter = TokenAdapter(self.embed_dim).to(pos.device) if adapter else None

    def text_features(self) -> TextPair:
        """(t_pos (C, D), t_neg (C, D) or None) from the prompts."""
        return self.prompts()

    def _tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim or tokens.shape[1] < 2:
            raise DataError(f"expected dense tokens (B, L + 1, {self.embed_dim}) with L >= 1, "
                            f"got shape {tuple(tokens.shape)}", "tokens")
        x = tokens.float()
        return self.adapter(x) if self.adapter is not None else x

    def features(self, tokens: torch.Tensor, text: TextPair | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z (B, C, D) or (B, 1, D) for `feature="global"`, attention (B, C, L') or None)."""
        pos, _ = text if text is not None else self.text_features()
        v = self._tokens(tokens)
        if self.feature == "global":
            return v[:, :1], None
        pooled = v if self.include_global else v[:, 1:]
        keys = F.normalize(pooled, dim=-1) if self.normalize_tokens else pooled
        return label_specific_features(keys, pos, self.s1)

    def attention(self, tokens: torch.Tensor, text: TextPair | None = None) -> torch.Tensor:
        """a (B, C, L') over the attended tokens (L' = L + 1 with the global token, else L)."""
        if self.feature == "global":
            raise ConfigError("feature='global' uses no attention")
        return self.features(tokens, text)[1]

    def forward(self, tokens: torch.Tensor, text: TextPair | None = None) -> torch.Tensor:
        pos, neg = text if text is not None else self.text_features()
        z, _ = self.features(tokens, (pos, neg))
        return alignment_logits(z, pos, neg, self.s2, self.bias)

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, dim={self.embed_dim}, s1={self.s1}, s2={self.s2}, "
                f"feature={self.feature!r}, include_global={self.include_global}, "
                f"normalize_tokens={self.normalize_tokens}, dual={self.dual}")


__all__ = ["LabelSpecificHead", "TokenAdapter", "token_attention", "label_specific_features",
           "alignment_logits", "FEATURES", "DEFAULT_S1", "DEFAULT_S2"]
