"""Every loss of methods.md section 2, registered by name.

>>> import torch
>>> from vlml import losses
>>> loss = losses.get("em")
>>> logits = torch.zeros(2, 3, requires_grad=True)
>>> observed = torch.tensor([[1, -1, -1], [-1, 0, 1]], dtype=torch.int8)
>>> value = loss(logits, observed, dataset="voc2007")   # alpha = 0.2, the VOC default
>>> value.backward()

`get(name)` returns a `LossEntry`, callable as `(logits, observed, *, dataset=None, **params)`
-> scalar tensor. `observed` is (B, C) int in {1 positive, 0 negative, -1 unknown}. Parameters
come from, in order: the entry's defaults, its published per-dataset defaults for `dataset`
(any name starting with voc/coco/nus/cub), then `params`. Some losses need per-batch inputs
(`entry.batch_inputs`): `pseudo` (vlpl), `epoch` (ll_*), and `indices` (the batch's rows in the
training set) plus `state` for the stateful ones (role, em_apl, ll_cp), whose state object comes
from `entry.make_state(observed_all, dataset=..., **params)`.

The expected-positive regulariser is registered twice: `epr` (L2, Cole et al.'s default) and
`epr_l1`, so there are 16 names (ll_r, ll_ct and ll_cp share one row of the table), plus
`masked_asl`, the loss of the semi-supervised recipes (methods.md 5.5).

Importing this package imports no torch: the records live in `vlml.losses.registry` and name
their functions by module path. `list_losses()`, `get(name).description`, `.defaults`,
`.dataset_defaults`, `.batch_inputs`, `.unknown` (how unknown entries are treated) and
`.has_state` are all available before torch is loaded; calling a loss, `entry.fn`, and the
module attributes below (`vlml.losses.bce`, `vlml.losses.RoleState`, ...) import it.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlml.losses.registry import (
    BATCH_INPUTS,
    DATASET_FAMILIES,
    LOSSES,
    UNKNOWN_HANDLING,
    LossEntry,
    dataset_family,
    get,
    list_losses,
    register_loss,
)

# Helpers and state classes, imported on first access (with torch); every registered loss is
# also reachable as `vlml.losses.<name>`.
_LAZY = {
    "nl": "basic", "entropy": "basic", "BCE_PARAMS": "basic", "check_batch": "basic",
    "expected_positive_reg": "regularised", "RoleState": "regularised",
    "APLState": "entropy", "clean_rate": "large_loss", "LLCpState": "large_loss",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vlml.losses.{_LAZY[name]}"), name)
    if name in LOSSES:
        return LOSSES.get(name).fn
    raise AttributeError(f"module 'vlml.losses' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *LOSSES.names()})


__all__ = [
    "LOSSES", "LossEntry", "list_losses", "get", "register_loss", "dataset_family",
    "DATASET_FAMILIES", "UNKNOWN_HANDLING", "BATCH_INPUTS",
    "nl", "entropy", "expected_positive_reg", "clean_rate", "check_batch", "BCE_PARAMS",
    "bce", "an", "an_ls", "wan", "epr", "epr_l1", "role", "em", "em_apl", "ll_r", "ll_ct",
    "ll_cp", "focal", "asl", "masked_asl", "entmin", "vlpl", "RoleState", "APLState",
    "LLCpState",
]
