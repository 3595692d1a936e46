"""The context head of CBSA (docs/methods.md 5.6): global image feature -> K context logits.

The contexts themselves (co-occurrence, spectral clustering, context targets, contexts.json)
are in `vlml.contexts`; their plot in `vlml.report.contexts`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlml.errors import ConfigError


class ContextHead(nn.Module):
    """forward(features (B, D)) -> context logits (B, K): a linear layer on the global image
    feature. `normalize=True` L2-normalises the features first, so the raw token 0 and the
    cached unit embeddings give the same input."""

    def __init__(self, in_features: int, num_contexts: int, normalize: bool = True) -> None:
        super().__init__()
        if num_contexts < 1 or in_features < 1:
            raise ConfigError(f"ContextHead({in_features}, {num_contexts}); expected positive "
                              "sizes")
        self.fc = nn.Linear(in_features, num_contexts)
        self.normalize = normalize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        return self.fc(F.normalize(x, dim=-1) if self.normalize else x)


__all__ = ["ContextHead"]
