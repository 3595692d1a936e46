"""Large-loss modification (Kim et al. 2022): ll_r, ll_ct, ll_cp (with `LLCpState`).

Every entry uses BCE with logits against the assume-negative target (observed positive 1,
observed negative and unknown 0), computed exactly like the reference's
`binary_cross_entropy_with_logits` (no 1e-5 epsilon). In epoch e the clean rate is
`1 - (e-1) delta`, and the `k = ceil(B C (1 - clean_rate))` unknown entries of the batch with
the largest loss are rejected (`ll_r`), get target 1 for this batch (`ll_ct`) or are flipped to
positive permanently in `LLCpState` (`ll_cp`, the paper's intent; the released code never runs
that branch). k is capped at the batch's number of unknown entries; exactly k entries are
chosen (ties broken by `torch.topk`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlml.errors import ConfigError, DataError
from vlml.losses.basic import check_batch, check_choice, check_label_matrix, check_state_batch


def clean_rate(epoch: int, delta: float) -> float:
    """`1 - (epoch - 1) * delta` for a 1-based `epoch`."""
    if int(epoch) != epoch or epoch < 1:
        raise ConfigError(f"epoch={epoch}; expected a 1-based epoch number")
    if delta < 0:
        raise ConfigError(f"large-loss delta={delta}; expected a rate >= 0 (e.g. 0.002)")
    rate = 1.0 - (epoch - 1) * delta
    if rate < 0:
        raise ConfigError(f"clean rate 1 - (epoch-1) * delta = {rate:.4f} < 0 at epoch {epoch} "
                          f"with delta {delta}; lower delta")
    return rate


def num_large(n_entries: int, rate: float) -> int:
    """`ceil(n_entries * (1 - rate))`, rounded to 9 decimals first so that float noise in
    `1 - rate` (e.g. 160 * 0.025 = 4.000000000000001) does not add an entry."""
    return math.ceil(round(n_entries * (1.0 - rate), 9))


def large_unknown_mask(loss_mat: Tensor, unknown: Tensor, k: int) -> Tensor:
    """Bool (B, C) mask of the `k` unknown entries with the largest `loss_mat` (no gradient)."""
    k = min(int(k), int(unknown.sum()))
    mask = torch.zeros(unknown.numel(), dtype=torch.bool, device=unknown.device)
    if k > 0:
        scores = loss_mat.detach().masked_fill(~unknown, float("-inf")).flatten()
        mask[torch.topk(scores, k).indices] = True
    return mask.view_as(unknown)


def _an_bce(logits: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
    """BCE matrices against the assume-negative target and against target 1."""
    return (F.binary_cross_entropy_with_logits(logits, (obs == 1).to(logits.dtype),
                                               reduction="none"),
            F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                               reduction="none"))


def ll_r(logits: Tensor, observed: Tensor, *, epoch: int, delta: float = 0.002) -> Tensor:
    """LL-R: the batch's k largest unknown losses are dropped (loss 0)."""
    logits, obs = check_batch(logits, observed)
    loss, _ = _an_bce(logits, obs)
    big = large_unknown_mask(loss, obs == -1, num_large(obs.numel(), clean_rate(epoch, delta)))
    return torch.where(big, torch.zeros_like(loss), loss).mean()


def ll_ct(logits: Tensor, observed: Tensor, *, epoch: int, delta: float = 0.002) -> Tensor:
    """LL-Ct: the batch's k largest unknown losses get target 1 for this batch only."""
    logits, obs = check_batch(logits, observed)
    loss, loss_to_1 = _an_bce(logits, obs)
    big = large_unknown_mask(loss, obs == -1, num_large(obs.numel(), clean_rate(epoch, delta)))
    return torch.where(big, loss_to_1, loss).mean()


class LLCpState:
    """LL-Cp's corrected label matrix for the whole training set, indexed by image index.

    Starts as the observed matrix; `ll_cp` sets unknown entries to 1 permanently. Corrections
    persist across batches and epochs for as long as this object lives (checkpoint it with
    `state_dict`).

    Args:
        observed_all: (N, C) int8 label matrix of the whole training set.
    """

    def __init__(self, observed_all: Any) -> None:
        labels = check_label_matrix(observed_all)
        self.labels = torch.from_numpy(labels.copy())
        self.originally_unknown = self.labels == -1

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def n_corrected(self) -> int:
        """Number of entries flipped from unknown to positive so far."""
        return int((self.originally_unknown & (self.labels == 1)).sum())

    def batch(self, indices: Tensor, device: torch.device) -> Tensor:
        """Corrected labels (B, C) of the batch rows `indices`, as long."""
        return self.labels[indices.cpu()].to(device=device, dtype=torch.long)

    def correct(self, rows: Tensor, cols: Tensor) -> None:
        """Set entries (rows[i], cols[i]) to positive; `rows` are training-set indices."""
        self.labels[rows.cpu(), cols.cpu()] = 1

    def state_dict(self) -> dict[str, Tensor]:
        return {"labels": self.labels.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        labels = state["labels"]
        if tuple(labels.shape) != self.shape:
            raise DataError(f"labels have shape {tuple(labels.shape)}, expected {self.shape}",
                            "LLCpState checkpoint")
        self.labels = labels.to(torch.int8).clone()


def ll_cp(logits: Tensor, observed: Tensor, *, epoch: int, indices: Any, state: LLCpState,
          delta: float = 0.002, k_rule: str = "clean_rate") -> Tensor:
    """LL-Cp: the batch's k largest unknown losses get target 1 now and are flipped to positive
    permanently in `state`; entries flipped earlier count as positives.

    `k_rule="clean_rate"` (default, methods.md): k = ceil(B C (1 - clean_rate)).
    `k_rule="delta"` (the released code's LL-Cp branch): k = ceil(B C delta) from epoch 2 on.
    """
    check_choice("k_rule", k_rule, ("clean_rate", "delta"))
    logits, obs, idx = check_state_batch("ll_cp", logits, observed, indices, state, LLCpState)
    obs = torch.where(obs == -1, state.batch(idx, obs.device), obs)
    rate = clean_rate(epoch, delta)
    if k_rule == "clean_rate":
        k = num_large(obs.numel(), rate)
    else:
        k = 0 if epoch == 1 else num_large(obs.numel(), 1.0 - delta)
    loss, loss_to_1 = _an_bce(logits, obs)
    big = large_unknown_mask(loss, obs == -1, k)
    if bool(big.any()):
        rows, cols = torch.nonzero(big, as_tuple=True)
        state.correct(idx[rows.cpu()], cols)
    return torch.where(big, loss_to_1, loss).mean()
