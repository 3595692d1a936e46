"""One `predict` for every model: sigmoid scores of a model over batches, in batch order.

A batch is a dict {"x": (B, ...) tensor, "rows": (B,) int64 catalog rows, ...}. A model's
forward returns class logits (B, C), or a tuple (class logits (B, C), context logits (B, K) or
None) (the SSMLL models). `model.prepare_eval()`, when defined, returns keyword arguments computed
once for the whole pass (e.g. CBSA's class text features).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlml.errors import DataError
from vlml.progress import bar


@dataclass(frozen=True)
class Predictions:
    """rows (N,) int64, probs (N, C) float32, context (N, K) float32 or None."""

    rows: np.ndarray
    probs: np.ndarray
    context: np.ndarray | None = None


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[dict[str, Any]], device: torch.device,
            *, desc: str | None = None, progress: bool = False) -> Predictions:
    """Sigmoid scores of `model` over `batches`; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    extra = model.prepare_eval() if hasattr(model, "prepare_eval") else {}
    rows, probs, ctx = [], [], []
    for b in bar(batches, enabled=progress, desc=desc, unit="batch", leave=False):
        out = model(b["x"].to(device, non_blocking=True), **extra)
        logits, c = out if isinstance(out, tuple) else (out, None)
        rows.append(b["rows"].cpu().numpy())
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        if c is not None:
            ctx.append(torch.sigmoid(c.float()).cpu().numpy())
    model.train(was_training)
    if not rows:
        raise DataError("nothing to score: the row set is empty", "predict")
    return Predictions(np.concatenate(rows).astype(np.int64), np.concatenate(probs),
                       np.concatenate(ctx) if ctx else None)
