"""Entropy-maximisation losses: em, em_apl (with `APLState`) and vlpl (the seed's eq. 6).

Unknown entries are pushed towards p = 0.5 by the term `-alpha H(p)`, so these losses can be
negative by design.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlml.errors import ConfigError, DataError
from vlml.losses.basic import check_batch, check_label_matrix, check_state_batch, entropy, nl


def em(logits: Tensor, observed: Tensor, *, alpha: float) -> Tensor:
    """Entropy maximisation (Zhou et al. 2022): positive nl(p), negative nl(1-p),
    unknown -alpha H(p)."""
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    mat = torch.where(obs == 1, nl(p), torch.where(obs == 0, nl(1.0 - p), -alpha * entropy(p)))
    return mat.mean()


class APLState:
    """Asymmetric pseudo-labelling: soft negatives for the whole training set.

    Call `update(scores_all, epoch)` once at the end of every epoch with the model's scores
    (probabilities) on the whole training set. From epoch `warmup_epoch` on (the reference
    code's `epoch >= warmup_epoch`, so they take effect from epoch warmup_epoch + 1), each call
    turns, per class c, the `int(theta * n_unknown_c / (num_epochs - warmup_epoch))`
    lowest-scoring entries that are still unknown into soft negatives with target s = their
    current score. `n_unknown_c` is the number of unknown entries of class c at the start.
    Targets are fixed once assigned.

    Args:
        observed_all: (N, C) int8 label matrix of the whole training set.
        warmup_epoch: T_w (VOC 5, COCO 5, NUS-WIDE 4, CUB 3).
        theta: fraction of the unknowns that end up as soft negatives (0.9).
        num_epochs: T, the number of training epochs (10).
    """

    def __init__(self, observed_all: Any, *, warmup_epoch: int, theta: float = 0.9,
                 num_epochs: int = 10) -> None:
        if not 0.0 <= theta <= 1.0:
            raise ConfigError(f"APL theta={theta}; expected a fraction in [0, 1]")
        if num_epochs <= warmup_epoch:
            raise ConfigError(f"APL needs num_epochs > warmup_epoch, got num_epochs="
                              f"{num_epochs}, warmup_epoch={warmup_epoch}")
        labels = check_label_matrix(observed_all)
        self.warmup_epoch = int(warmup_epoch)
        self.theta = float(theta)
        self.num_epochs = int(num_epochs)
        self.unknown = torch.from_numpy(labels == -1)
        self.n_unknown = self.unknown.sum(dim=0)
        self.soft_mask = torch.zeros(labels.shape, dtype=torch.bool)
        self.soft_target = torch.zeros(labels.shape, dtype=torch.float32)
        self.last_epoch = 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.soft_mask.shape)  # type: ignore[return-value]

    def per_epoch(self) -> np.ndarray:
        """(C,) number of new soft negatives per class and epoch (before capping)."""
        n = self.n_unknown.numpy().astype(np.float64)
        return (self.theta * n / (self.num_epochs - self.warmup_epoch)).astype(np.int64)

    def update(self, scores_all: Any, epoch: int) -> int:
        """Assign this epoch's soft negatives; returns how many entries were assigned.

        Args:
            scores_all: (N, C) probabilities in [0, 1] of the model on the whole training set,
                rows in training-set order.
            epoch: the epoch that just ended, 1-based; must increase from call to call.
        """
        if epoch <= self.last_epoch:
            raise ConfigError(f"APL update for epoch {epoch} after epoch {self.last_epoch}; "
                              "call it once per epoch, in order")
        scores = (scores_all.detach().cpu().numpy() if isinstance(scores_all, Tensor)
                  else np.asarray(scores_all)).astype(np.float64)
        if scores.shape != self.shape:
            raise DataError(f"shape {scores.shape} does not match the training set "
                            f"{self.shape}; expected scores for every training image",
                            "scores_all")
        if not np.all(np.isfinite(scores)) or scores.min() < 0.0 or scores.max() > 1.0:
            raise DataError("expected probabilities in [0, 1] (apply sigmoid to logits)",
                            "scores_all")
        self.last_epoch = int(epoch)
        if epoch < self.warmup_epoch:
            return 0
        still = (self.unknown & ~self.soft_mask).numpy()
        take = np.minimum(self.per_epoch(), still.sum(axis=0))
        order = np.argsort(np.where(still, scores, np.inf), axis=0, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(scores.shape[0])[:, None], axis=0)
        chosen = (rank < take[None, :]) & still
        self.soft_mask |= torch.from_numpy(chosen)
        self.soft_target[torch.from_numpy(chosen)] = torch.from_numpy(
            scores[chosen].astype(np.float32))
        return int(chosen.sum())

    def batch(self, indices: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """(mask, target) of the soft negatives of the batch rows `indices`, each (B, C)."""
        idx = indices.cpu()
        return self.soft_mask[idx].to(device), self.soft_target[idx].to(device)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint (safetensors-compatible)."""
        return {"soft_mask": self.soft_mask.clone(), "soft_target": self.soft_target.clone(),
                "last_epoch": torch.tensor(self.last_epoch)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for key in ("soft_mask", "soft_target"):
            if tuple(state[key].shape) != self.shape:
                raise DataError(f"{key} has shape {tuple(state[key].shape)}, expected "
                                f"{self.shape}", "APLState checkpoint")
        self.soft_mask = state["soft_mask"].to(torch.bool).clone()
        self.soft_target = state["soft_target"].to(torch.float32).clone()
        self.last_epoch = int(state["last_epoch"])


def em_apl(logits: Tensor, observed: Tensor, *, alpha: float, beta: float, indices: Any,
           state: APLState) -> Tensor:
    """EM with asymmetric pseudo-labelling: as `em`, except that unknown entries that `state`
    made soft negatives with target s contribute beta [s nl(p) + (1-s) nl(1-p)]."""
    logits, obs, idx = check_state_batch("em_apl", logits, observed, indices, state, APLState)
    soft, s = state.batch(idx, logits.device)
    s = s.to(logits.dtype)
    p = torch.sigmoid(logits)
    unknown_term = torch.where(soft, beta * (s * nl(p) + (1.0 - s) * nl(1.0 - p)),
                               -alpha * entropy(p))
    mat = torch.where(obs == 1, nl(p), torch.where(obs == 0, nl(1.0 - p), unknown_term))
    return mat.mean()


def vlpl(logits: Tensor, observed: Tensor, *, pseudo: Any, alpha: float, beta: float = 0.7,
         eps: float = 0.9, gamma: float = 0.0) -> Tensor:
    """VLPL loss (methods.md section 2, the section 4.6 form of the paper's eq. 6).

    `pseudo` is a (B, C) integer tensor: 1 pseudo-positive, 0 pseudo-negative, -1 none. An
    observed label always wins over a pseudo-label. Entry losses:
    observed positive nl(p); observed negative nl(1-p);
    unknown and pseudo-positive beta [eps nl(p) + (1-eps) nl(1-p)];
    unknown and pseudo-negative gamma [eps nl(1-p) + (1-eps) nl(p)];
    unknown otherwise -alpha H(p).
    """
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"vlpl eps={eps}; expected a label-smoothing weight in [0, 1]")
    logits, obs = check_batch(logits, observed)
    _, pl = check_batch(logits, pseudo, what="pseudo")
    p = torch.sigmoid(logits)
    lp, ln = nl(p), nl(1.0 - p)
    unknown_term = torch.where(
        pl == 1, beta * (eps * lp + (1.0 - eps) * ln),
        torch.where(pl == 0, gamma * (eps * ln + (1.0 - eps) * lp), -alpha * entropy(p)))
    mat = torch.where(obs == 1, lp, torch.where(obs == 0, ln, unknown_term))
    return mat.mean()
