"""Dense image tokens in CLIP's joint image-text space (docs/methods.md 5.1).

Two image towers are supported, both from open_clip:

- `VisionTransformer`: the tokens after the last transformer block, passed through `ln_post`
  and the output projection `proj`. Shape (B, 1 + gh * gw, D) with gh = H // p, gw = W // p for
  patch size p. Token 0 is the pooled token exactly as `encode_image` computes it (the class
  token for `pool_type="tok"`, the patch mean for `"avg"`), so for a ViT
  `normalize(tokens[:, 0]) == encode_image(x, normalize=True)` up to float rounding.
- `ModifiedResNet` (CLIP RN50, RN101, ...): token 0 is the attention-pool output, i.e. the
  global embedding `encode_image` returns; tokens 1.. are the attention-pool value path
  `c_proj(v_proj(x + pos))` applied to every spatial token of the last feature map
  (MaskCLIP-style). Shape (B, 1 + h * w, D) with h, w the final feature-map size (H // 32,
  W // 32 for sizes divisible by 32). So for both towers token 0 is the model's own global
  image feature (the context head of docs/methods.md 5.6 reads it), and the spatial tokens are in
  the same joint space.

Positional embeddings are interpolated (bicubic, as open_clip does when it resizes checkpoints)
when the input is not the model's native size, so larger images give more tokens.
Tokens are returned unnormalised; compare them with cosine similarity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from vlml.errors import ConfigError


def supports_dense(visual: torch.nn.Module) -> bool:
    """True for the image towers `dense_tokens` handles (see `dense_tokens`)."""
    if isinstance(visual, VisionTransformer):
        return visual.attn_pool is None and visual.pool_type in ("tok", "avg")
    return isinstance(visual, ModifiedResNet)


def interpolate_positions(pos: torch.Tensor, grid: tuple[int, int],
                          source: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize a (1 + s0 * s1, C) positional embedding (one prefix token, then a row-major
    s0 x s1 grid; square when `source` is None) to (1 + grid[0] * grid[1], C).
    Returned unchanged when the grid already matches."""
    n = pos.shape[0] - 1
    if source is None:
        side = math.isqrt(int(n))  # int arithmetic: traceable (TorchScript)
        source = (side, side)
    if source[0] * source[1] != n:
        raise ConfigError(f"positional embedding has {n} spatial rows, not a {source} grid")
    if tuple(source) == tuple(grid):
        return pos
    prefix, spatial = pos[:1], pos[1:]
    spatial = spatial.reshape(1, source[0], source[1], -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial.float(), size=tuple(grid), mode="bicubic",
                            align_corners=False, antialias=True).to(pos.dtype)
    spatial = spatial.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([prefix, spatial], dim=0)


def vit_dense_tokens(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + (H // p) * (W // p), D): pooled token then patch tokens."""
    if not supports_dense(visual):
        raise ConfigError("dense tokens need a ViT with class-token or average pooling and no "
                          "attentional pooler (CoCa-style towers are not supported)")
    x = visual.conv1(images)  # (B, width, gh, gw)
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, gh * gw, width)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_positions(visual.positional_embedding, grid,
                                  tuple(visual.grid_size)).to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    x = visual.transformer(x)
    if visual.final_ln_after_pool:
        pooled, patches = _pool_vit(visual, x)
        pooled, patches = visual.ln_post(pooled), visual.ln_post(patches)
    else:
        pooled, patches = _pool_vit(visual, visual.ln_post(x))
    tokens = torch.cat([pooled[:, None], patches], dim=1)
    return tokens @ visual.proj if visual.proj is not None else tokens


def _pool_vit(visual: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if visual.pool_type == "avg":
        return x[:, 1:].mean(dim=1), x[:, 1:]
    return x[:, 0], x[:, 1:]


def resnet_feature_map(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, C, h, w), the input of the attention pool."""
    x = visual.stem(images)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def resnet_dense_tokens(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + h * w, D): attention-pool output, then each cell's value path."""
    fmap = resnet_feature_map(visual, images)
    pool = visual.attnpool
    grid = (fmap.shape[-2], fmap.shape[-1])
    x = fmap.flatten(2).permute(2, 0, 1)  # (h * w, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + interpolate_positions(pool.positional_embedding, grid)[:, None].to(x.dtype)
    pooled, _ = F.multi_head_attention_forward(
        query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    values = pool.c_proj(pool.v_proj(x[1:]))  # (h * w, B, D)
    return torch.cat([pooled, values], dim=0).transpose(0, 1)


def dense_tokens(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Dense tokens of an open_clip image tower; see the module docstring for shapes."""
    if isinstance(visual, VisionTransformer):
        return vit_dense_tokens(visual, images)
    if isinstance(visual, ModifiedResNet):
        return resnet_dense_tokens(visual, images)
    raise ConfigError(f"dense tokens are implemented for open_clip VisionTransformer and "
                      f"ModifiedResNet image towers; this model has {type(visual).__name__}")
