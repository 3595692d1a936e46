"""Per-entry losses with no state: bce, an, an_ls, wan, focal, asl, masked_asl, entmin; helpers.

Notation of methods.md section 2: `p = sigmoid(logit)`, `nl(x) = -log(x + 1e-5)` (the epsilon
inside the log is kept for parity with the reference code), `H(p) = p nl(p) + (1-p) nl(1-p)`.
`observed` is a (B, C) integer tensor in the label convention (1 positive, 0 negative,
-1 unknown). Every loss returns the mean of a (B, C) loss matrix over all B*C entries
(`masked_asl` by default its sum, as the semi-supervised reference code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlml.errors import ConfigError, DataError
from vlml.types import as_labels, validate_labels

LOG_EPSILON = 1e-5


def nl(x: Tensor) -> Tensor:
    """`-log(x + 1e-5)`, elementwise; `x` holds probabilities in [0, 1]."""
    return -torch.log(x + LOG_EPSILON)


def entropy(p: Tensor) -> Tensor:
    """Binary entropy in nats with the `nl` epsilon: `p nl(p) + (1-p) nl(1-p)`, elementwise."""
    return p * nl(p) + (1.0 - p) * nl(1.0 - p)


def check_batch(logits: Tensor, observed: Any, what: str = "observed") -> tuple[Tensor, Tensor]:
    """Validate a batch and return `(logits, observed)` with `observed` as a long tensor.

    Args:
        logits: (B, C) float tensor of raw scores.
        observed: (B, C) integer tensor or array with values in {1, 0, -1}.
        what: the argument's name, used in error messages.

    Raises:
        DataError: wrong type, dtype or shape, an empty batch, or a value outside {1, 0, -1}.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        got = (f"{logits.dtype} tensor of shape {tuple(logits.shape)}"
               if isinstance(logits, Tensor) else type(logits).__name__)
        raise DataError(f"expected a 2-D float tensor (B, C), got {got}", "logits")
    obs = observed if isinstance(observed, Tensor) else torch.as_tensor(np.asarray(observed))
    if obs.is_floating_point() or obs.is_complex() or obs.dtype == torch.bool:
        raise DataError(f"expected an integer tensor with values in {{1, 0, -1}}, got dtype "
                        f"{obs.dtype}", what)
    if tuple(obs.shape) != tuple(logits.shape):
        raise DataError(f"shape {tuple(obs.shape)} does not match logits "
                        f"{tuple(logits.shape)}; expected (B, C)", what)
    if logits.numel() == 0:
        raise DataError(f"empty batch of shape {tuple(logits.shape)}", "logits")
    obs = obs.to(device=logits.device, dtype=torch.long)
    bad = (obs < -1) | (obs > 1)
    if bool(bad.any()):
        r, c = (int(v) for v in torch.nonzero(bad)[0])
        raise DataError(f"value {int(obs[r, c])} at row {r}, column {c}; expected one of "
                        "[-1, 0, 1] (unknown, negative, positive)", what)
    return logits, obs


def check_label_matrix(labels: Any, what: str = "observed_all") -> np.ndarray:
    """Return the whole training label matrix as int8 numpy (N, C), checked against section 0."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise DataError(f"expected an integer matrix with values in {{1, 0, -1}}, got dtype "
                        f"{arr.dtype}", what)
    return validate_labels(as_labels(arr), what=what)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}; expected one of {', '.join(map(repr, choices))}")


def bce(logits: Tensor, observed: Tensor, *, unknown: str = "error") -> Tensor:
    """Full-label BCE (the upper bound): positive nl(p), negative nl(1-p).

    The reference code refuses unknown entries; so does `unknown="error"` (default).
    `unknown="ignore"` gives them loss 0 (still averaged over all B*C entries).
    """
    check_choice("unknown", unknown, ("error", "ignore"))
    logits, obs = check_batch(logits, observed)
    if unknown == "error" and bool((obs == -1).any()):
        n = int((obs == -1).sum())
        raise DataError(f"bce needs full labels but got {n} unknown (-1) entries; use a "
                        "single-positive loss such as 'an', or pass unknown='ignore'", "observed")
    p = torch.sigmoid(logits)
    zero = torch.zeros_like(p)
    mat = torch.where(obs == 1, nl(p), torch.where(obs == 0, nl(1.0 - p), zero))
    return mat.mean()


def an(logits: Tensor, observed: Tensor) -> Tensor:
    """Assume negative: positive nl(p); negative and unknown nl(1-p)."""
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    return torch.where(obs == 1, nl(p), nl(1.0 - p)).mean()


def an_ls(logits: Tensor, observed: Tensor, *, ls: float = 0.1) -> Tensor:
    """Assume negative with label smoothing `ls`.

    positive (1-ls) nl(p) + ls nl(1-p); negative and unknown (1-ls) nl(1-p) + ls nl(p).
    """
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    lp, ln = nl(p), nl(1.0 - p)
    pos = (1.0 - ls) * lp + ls * ln
    neg = (1.0 - ls) * ln + ls * lp
    return torch.where(obs == 1, pos, neg).mean()


def wan(logits: Tensor, observed: Tensor) -> Tensor:
    """Weak assume negative: positive nl(p), negative nl(1-p), unknown nl(1-p) / (C-1)."""
    logits, obs = check_batch(logits, observed)
    n_classes = obs.shape[1]
    if n_classes < 2:
        raise DataError("wan weights unknowns by 1/(C-1) and needs at least 2 classes, got 1",
                        "observed")
    p = torch.sigmoid(logits)
    ln = nl(1.0 - p)
    mat = torch.where(obs == 1, nl(p), torch.where(obs == 0, ln, ln / float(n_classes - 1)))
    return mat.mean()


def focal(logits: Tensor, observed: Tensor, *, gamma: float = 2.0) -> Tensor:
    """Focal loss: positive (1-p)^gamma nl(p); negative and unknown p^gamma nl(1-p).

    The focusing weights carry no gradient.
    """
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    w = p.detach()
    pos = (1.0 - w) ** gamma * nl(p)
    neg = w**gamma * nl(1.0 - p)
    return torch.where(obs == 1, pos, neg).mean()


def asl(logits: Tensor, observed: Tensor, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
        clip: float = 0.05, unknown: str = "negative") -> Tensor:
    """Asymmetric loss (Ridnik et al. 2021).

    positive (1-p)^gamma_pos nl(p); negative p_m^gamma_neg nl(1-p_m) with the probability margin
    p_m = max(p - clip, 0). Unknown entries count as negative (`unknown="negative"`) or are
    masked to 0 (`unknown="ignore"`). The focusing weights carry no gradient.
    """
    check_choice("unknown", unknown, ("negative", "ignore"))
    if not 0.0 <= clip < 1.0:
        raise ConfigError(f"asl clip={clip}; expected a probability margin in [0, 1)")
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    p_m = (p - clip).clamp(min=0.0)
    pos = (1.0 - p.detach()) ** gamma_pos * nl(p)
    neg = p_m.detach() ** gamma_neg * nl(1.0 - p_m)
    is_neg = (obs == 0) | (obs == -1) if unknown == "negative" else obs == 0
    mat = torch.where(obs == 1, pos, torch.where(is_neg, neg, torch.zeros_like(p)))
    return mat.mean()


BCE_PARAMS = {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}  # masked_asl with these is BCE


def masked_asl(logits: Tensor, observed: Tensor, mask: Tensor | None = None, *,
               reduction: str = "sum", gamma_pos: float = 0.0, gamma_neg: float = 4.0,
               clip: float = 0.05) -> Tensor:
    """The masked ASL of the semi-supervised recipes (methods.md 5.5): sum_{i,c} m_ic ASL_ic.

    ASL_ic is `asl` with `unknown="ignore"` on entry (i, c); m_ic = mask_ic and observed_ic != -1,
    so entries with mask False or observed -1 contribute 0 (and no gradient). With
    `BCE_PARAMS` (gamma_pos = gamma_neg = clip = 0) it is the masked BCE.

    Args:
        logits: (B, C) float tensor (computed in float32 whatever its dtype).
        observed: (B, C) integer tensor in {1, 0, -1}: labels or pseudo-labels.
        mask: (B, C) bool tensor of the entries to use, or None for all of them.
        reduction: "sum" adds the entries (the reference code's `criterion(...).sum()`);
            "mean" divides that sum by B * C, masked entries included.

    Returns:
        A scalar tensor.
    """
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"reduction {reduction!r}; expected 'sum' or 'mean'")
    if mask is not None:
        observed = torch.where(mask, observed, torch.full_like(observed, -1))
    mean = asl(logits.float(), observed, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip,
               unknown="ignore")
    return mean * logits.numel() if reduction == "sum" else mean


def entmin(logits: Tensor, observed: Tensor, *, alpha: float = 1.0) -> Tensor:
    """Entropy minimisation baseline: positive nl(p), negative nl(1-p), unknown +alpha H(p)."""
    logits, obs = check_batch(logits, observed)
    p = torch.sigmoid(logits)
    mat = torch.where(obs == 1, nl(p), torch.where(obs == 0, nl(1.0 - p), alpha * entropy(p)))
    return mat.mean()


def check_indices(indices: Any, batch_size: int, n_images: int) -> Tensor:
    """Return the batch's training-set row indices as a 1-D long tensor of length `batch_size`.

    Raises `DataError` if they are not integers, have the wrong length or fall outside
    [0, n_images).
    """
    idx = indices if isinstance(indices, Tensor) else torch.as_tensor(np.asarray(indices))
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise DataError(f"expected integer image indices, got dtype {idx.dtype}", "indices")
    idx = idx.reshape(-1).to(torch.long)
    if idx.numel() != batch_size:
        raise DataError(f"got {idx.numel()} image indices for a batch of {batch_size} rows",
                        "indices")
    bad = (idx < 0) | (idx >= n_images)
    if bool(bad.any()):
        raise DataError(f"image index {int(idx[bad][0])} is outside the training set "
                        f"[0, {n_images})", "indices")
    return idx


def check_state_batch(loss: str, logits: Tensor, observed: Any, indices: Any, state: Any,
                      state_type: type) -> tuple[Tensor, Tensor, Tensor]:
    """`(logits, observed, indices)` of a batch of a loss with per-image state, checked.

    `state` must be a `state_type` whose `shape` is (N images, C classes); the batch is checked
    as by `check_batch` (logits (B, C) float, observed (B, C) long) and must have C classes,
    and `indices` as by `check_indices` ((B,) long rows of [0, N)). `loss` names the loss in
    errors. Raises `ConfigError` for a wrong state, `DataError` for a bad batch.
    """
    if not isinstance(state, state_type):
        raise ConfigError(f"{loss} needs state={state_type.__name__}(...), got "
                          f"{type(state).__name__}")
    logits, obs = check_batch(logits, observed)
    n_images, n_classes = state.shape
    if n_classes != obs.shape[1]:
        raise ConfigError(f"{state_type.__name__} has {n_classes} classes, the batch "
                          f"{obs.shape[1]}")
    return logits, obs, check_indices(indices, obs.shape[0], n_images)
