"""One `predict` for every model: sigmoid scores of a model over batches, in batch order.

A batch is a dict {"x": (B, ...) tensor, "rows": (B,) int64 catalog rows, ...}. A model's
forward returns class logits (B, C), or a tuple (class logits (B, C), context logits (B, K) or
None) (the SSMLL models). `model.prepare_eval()`, when defined, returns keyword arguments computed
once for the whole pass (e.g. CBSA's class text features).

Under DDP (`vlml.distributed`), a pass over N rows is split: each rank scores its contiguous,
batch-aligned shard (`local_rows` / `vlml.distributed.shard`) and `predict(..., gather=True)`
concatenates the ranks' scores in rank order, so every rank holds the scores of all N rows in
their original order, the same arrays on every rank (metrics, model selection and
pseudo-labels then agree across ranks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlml import distributed
from vlml.errors import DataError
from vlml.progress import bar


@dataclass(frozen=True)
class Predictions:
    """rows (N,) int64, probs (N, C) float32, context (N, K) float32 or None."""

    rows: np.ndarray
    probs: np.ndarray
    context: np.ndarray | None = None


def local_rows(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """This rank's contiguous shard of `rows` (whole batches of `batch_size`; all of `rows` in
    one process), for a `predict(..., gather=True)` pass."""
    part = distributed.shard(len(rows), batch_size)
    return rows[part.start:part.stop]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (scoring needs no collective)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[dict[str, Any]], device: torch.device,
            *, desc: str | None = None, progress: bool = False,
            gather: bool = False) -> Predictions:
    """Sigmoid scores of `model` over `batches`; the model's train/eval mode is restored.

    `gather`: `batches` hold this rank's shard of the rows (`local_rows`, or an inputs'
    `eval_batches(shard=True)`); the result is every rank's, concatenated in rank order. Every
    rank must call it (it is a collective); a rank's shard may be empty.
    """
    model = _unwrap(model)
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
    local = (np.concatenate(rows).astype(np.int64) if rows else None,
             np.concatenate(probs) if probs else None, np.concatenate(ctx) if ctx else None)
    if gather and distributed.is_initialized():
        local = tuple(distributed.gather_rows(*local))
    if local[0] is None:
        raise DataError("nothing to score: the row set is empty", "predict")
    return Predictions(*local)
