"""The loss registry: one small record per loss, listable without importing torch.

A record names its function as "module:attr" (or holds the callable itself, for a loss
registered at run time) and imports it on first use, so `list_losses()`, a record's
description, defaults, per-dataset defaults, batch inputs and flags cost no torch import (a CLI
lists them instantly). Calling the record, `fn`, `state` and `make_state` import the module.

Adding a loss: write the function in its family's module, add one `register_loss(...)` line
below. The registry-driven contract tests (tests/test_contracts.py) then check it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vlml.errors import ConfigError
from vlml.registry import Registry

DATASET_FAMILIES = ("voc", "coco", "nuswide", "cub")
_PREFIXES = {"voc": "voc", "coco": "coco", "nus": "nuswide", "cub": "cub"}
UNKNOWN_HANDLING = ("refused", "ignored", "label_free", "used")
BATCH_INPUTS = ("pseudo", "epoch", "indices", "state")


def dataset_family(dataset: str | None) -> str | None:
    """Map a dataset name (voc2007, voc2012, coco, coco2014, nuswide, cub, ...) to the family
    whose published hyper-parameters apply; None for any other dataset."""
    if dataset is None:
        return None
    low = str(dataset).lower()
    for prefix, family in _PREFIXES.items():
        if low.startswith(prefix):
            return family
    return None


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """The object a "package.module:attr" reference names (imported now); a callable as is."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"bad reference {ref!r}; expected 'package.module:attr'")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def _keywords(fn: Callable[..., Any], skip: int) -> tuple[frozenset[str], frozenset[str]]:
    """(accepted, required) keyword names of `fn` after its first `skip` positional ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    accepted = frozenset(p.name for p in params)
    required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
    return accepted, required


def _freeze(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class LossEntry:
    """A registered loss.

    Attributes:
        name: registry name.
        function: "module:attr" of the pure function `(logits, observed, **params) -> scalar
            tensor` (or the function itself); `fn` imports it.
        description: one line.
        defaults: dataset-independent parameter values (for the function and for the state).
        dataset_defaults: family (voc, coco, nuswide, cub) -> published values.
        state_factory: "module:attr" of the state class `(observed_all, **params)` (or the
            class itself), None for pure losses; `state` imports it.
        batch_inputs: keyword arguments the training loop passes with every batch, from
            `BATCH_INPUTS`: `pseudo` ((B, C) pseudo-labels in {1, 0, -1}), `epoch` (1-based),
            `indices` (the batch's rows in the training set), `state` (from `make_state`).
        unknown: what the loss does with unknown (-1) entries of `observed`, with its default
            parameters; one of `UNKNOWN_HANDLING`:
            - "refused": a batch with any unknown entry is a `DataError` (full labels only);
            - "ignored": unknown entries take no part at all: the loss's gradient with respect
              to the logit of an unknown entry is exactly 0;
            - "label_free": the per-entry term ignores unknown entries, but a batch term that
              reads no labels (EPR's expected-positive regulariser, on every entry's
              probability) touches them: the gradient at an unknown entry is not 0, does not
              depend on `observed` (it equals the gradient of the same logits with every
              label unknown) and moves with the other entries' logits;
            - "used": unknown entries have a per-entry term of their own (as negatives, an
              entropy, a pseudo-label, a label estimate, ...).
    """

    name: str
    function: str | Callable[..., Any]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    state_factory: str | Callable[..., Any] | None = None
    batch_inputs: tuple[str, ...] = ()
    unknown: str = "used"

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_HANDLING:
            raise ConfigError(f"loss {self.name!r}: unknown={self.unknown!r}; expected one of "
                              f"{', '.join(UNKNOWN_HANDLING)}")
        bad = sorted(set(self.batch_inputs) - set(BATCH_INPUTS))
        if bad:
            raise ConfigError(f"loss {self.name!r}: batch input(s) {bad}; expected a subset of "
                              f"{', '.join(BATCH_INPUTS)}")
        if ("state" in self.batch_inputs) != (self.state_factory is not None):
            raise ConfigError(f"loss {self.name!r}: a state factory and the batch input "
                              "'state' go together")

    @property
    def ignores_unknown(self) -> bool:
        """True when unknown entries get exactly zero gradient (`unknown == "ignored"`)."""
        return self.unknown == "ignored"

    @property
    def has_state(self) -> bool:
        """Whether the loss needs a state object (`make_state`); no import needed."""
        return self.state_factory is not None

    @property
    def fn(self) -> Callable[..., Any]:
        """The loss function (imports its module)."""
        return resolve(self.function)

    @property
    def state(self) -> Callable[..., Any] | None:
        """The state class `(observed_all, **params)`, or None (imports its module)."""
        return None if self.state_factory is None else resolve(self.state_factory)

    def params(self, dataset: str | None = None) -> dict[str, Any]:
        """Default parameters for `dataset` (generic ones if it has no published values)."""
        out = dict(self.defaults)
        out.update(self.dataset_defaults.get(dataset_family(dataset) or "", {}))
        return out

    def __call__(self, logits: Any, observed: Any, *, dataset: str | None = None,
                 **params: Any) -> Any:
        """The loss of one batch, a scalar tensor; see `vlml.losses`."""
        fn = self.fn
        kwargs = self._resolve(fn, 2, dataset, params, "loss")
        return fn(logits, observed, **kwargs)

    def make_state(self, observed_all: Any, *, dataset: str | None = None,
                   **params: Any) -> Any:
        """A fresh state object for the whole training set's (N, C) label matrix."""
        state = self.state
        if state is None:
            raise ConfigError(f"loss {self.name!r} has no state")
        kwargs = self._resolve(state, 1, dataset, params, "state")
        return state(observed_all, **kwargs)

    def _resolve(self, fn: Callable[..., Any], skip: int, dataset: str | None,
                 given: dict[str, Any], what: str) -> dict[str, Any]:
        accepted, required = _keywords(fn, skip)
        unknown = sorted(set(given) - accepted)
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=2, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"{self.name} {what}: unknown parameter(s) "
                              f"{', '.join(unknown)}.{hint} Valid: {', '.join(sorted(accepted))}")
        kwargs = {k: v for k, v in self.params(dataset).items() if k in accepted}
        kwargs.update(given)
        missing = sorted(required - set(kwargs))
        if missing:
            raise ConfigError(self._missing_message(missing, dataset, what))
        return kwargs

    def _missing_message(self, missing: list[str], dataset: str | None, what: str) -> str:
        parts = []
        for name in missing:
            if name in self.batch_inputs:
                parts.append(f"{name}= (passed with every batch)")
                continue
            published = {fam: v[name] for fam, v in self.dataset_defaults.items() if name in v}
            known = (f"; published values {published}, used when dataset= is one of "
                     f"{', '.join(DATASET_FAMILIES)}" if published else "")
            seen = f" (dataset={dataset!r} has none)" if dataset is not None and published else ""
            parts.append(f"{name}={known}{seen}")
        return f"{self.name} {what} needs " + "; ".join(parts)


LOSSES: Registry[LossEntry] = Registry("loss")


def register_loss(name: str, function: str | Callable[..., Any], description: str, *,
                  unknown: str = "used", defaults: Mapping[str, Any] | None = None,
                  dataset_defaults: Mapping[str, Mapping[str, Any]] | None = None,
                  state: str | Callable[..., Any] | None = None,
                  batch_inputs: tuple[str, ...] = ()) -> LossEntry:
    """Register a loss (see `LossEntry` for the fields); a taken name is a `ValueError`.

    `LOSSES.registered(entry)` registers one only for the duration of a `with` block.
    """
    entry = make_entry(name, function, description, unknown=unknown, defaults=defaults,
                       dataset_defaults=dataset_defaults, state=state,
                       batch_inputs=batch_inputs)
    return LOSSES.register(name, entry)


def make_entry(name: str, function: str | Callable[..., Any], description: str, *,
               unknown: str = "used", defaults: Mapping[str, Any] | None = None,
               dataset_defaults: Mapping[str, Mapping[str, Any]] | None = None,
               state: str | Callable[..., Any] | None = None,
               batch_inputs: tuple[str, ...] = ()) -> LossEntry:
    """A `LossEntry` with frozen mappings, not registered."""
    return LossEntry(name, function, description, _freeze(defaults or {}),
                     _freeze({k: _freeze(v) for k, v in (dataset_defaults or {}).items()}),
                     state, tuple(batch_inputs), unknown)


def list_losses() -> list[str]:
    """Registered loss names, sorted."""
    return LOSSES.names()


def get(name: str) -> LossEntry:
    """The registered loss `name`; `UnknownNameError` with close names on a miss."""
    return LOSSES.get(name)


# ---- the registered losses (methods.md section 2) -------------------------------------------
_EM_ALPHA = {"voc": 0.2, "coco": 0.1, "nuswide": 0.1, "cub": 0.01}
_EXPECTED_POS = {"voc": 1.5, "coco": 2.9, "nuswide": 1.9, "cub": 31.4}
_APL_BETA = {"voc": 0.02, "coco": 0.9, "nuswide": 0.2, "cub": 0.4}
_APL_WARMUP = {"voc": 5, "coco": 5, "nuswide": 4, "cub": 3}


def _per_dataset(**tables: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {fam: {k: t[fam] for k, t in tables.items()} for fam in DATASET_FAMILIES}


_B, _E, _L, _R = ("vlml.losses.basic", "vlml.losses.entropy", "vlml.losses.large_loss",
                  "vlml.losses.regularised")

register_loss("bce", f"{_B}:bce", "full-label BCE, the upper bound (unknown entries refused by "
              "default)", unknown="refused", defaults={"unknown": "error"})
register_loss("an", f"{_B}:an", "assume negative: unknown entries are negatives")
register_loss("an_ls", f"{_B}:an_ls", "assume negative with label smoothing 0.1",
              defaults={"ls": 0.1})
register_loss("wan", f"{_B}:wan", "weak assume negative: unknown negatives weighted 1/(C-1)")
register_loss("epr", f"{_R}:epr", "observed entries only + L2 expected-positive regulariser",
              unknown="label_free", dataset_defaults=_per_dataset(k=_EXPECTED_POS))
register_loss("epr_l1", f"{_R}:epr_l1", "observed entries only + L1 expected-positive "
              "regulariser", unknown="label_free",
              dataset_defaults=_per_dataset(k=_EXPECTED_POS))
register_loss("role", f"{_R}:role", "ROLE: jointly learned per-image label estimates + EPR on "
              "both", defaults={"lr_multiplier": 10.0},
              dataset_defaults=_per_dataset(k=_EXPECTED_POS), state=f"{_R}:RoleState",
              batch_inputs=("indices", "state"))
register_loss("em", f"{_E}:em", "entropy maximisation on unknown entries (can be negative)",
              dataset_defaults=_per_dataset(alpha=_EM_ALPHA))
register_loss("em_apl", f"{_E}:em_apl", "EM + asymmetric pseudo-labelling of soft negatives",
              defaults={"theta": 0.9, "num_epochs": 10},
              dataset_defaults=_per_dataset(alpha=_EM_ALPHA, beta=_APL_BETA,
                                            warmup_epoch=_APL_WARMUP),
              state=f"{_E}:APLState", batch_inputs=("indices", "state"))
register_loss("ll_r", f"{_L}:ll_r", "large loss rejection: drop the batch's largest unknown "
              "losses", defaults={"delta": 0.002}, batch_inputs=("epoch",))
register_loss("ll_ct", f"{_L}:ll_ct", "large loss temporary correction: largest unknown "
              "losses -> target 1", defaults={"delta": 0.002}, batch_inputs=("epoch",))
register_loss("ll_cp", f"{_L}:ll_cp", "large loss permanent correction: flip largest unknowns "
              "to positive", defaults={"delta": 0.002, "k_rule": "clean_rate"},
              state=f"{_L}:LLCpState", batch_inputs=("epoch", "indices", "state"))
register_loss("focal", f"{_B}:focal", "focal loss, gamma 2, unknown as negative",
              defaults={"gamma": 2.0})
register_loss("asl", f"{_B}:asl", "asymmetric loss, gamma+ 0, gamma- 4, margin 0.05",
              defaults={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05,
                        "unknown": "negative"})
register_loss("masked_asl", f"{_B}:masked_asl", "masked ASL of CBSA/CAP: -1 or masked-out "
              "entries give 0, summed", unknown="ignored",
              defaults={"reduction": "sum", "gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05})
register_loss("entmin", f"{_B}:entmin", "entropy minimisation on unknown entries (baseline)",
              defaults={"alpha": 1.0})
register_loss("vlpl", f"{_E}:vlpl", "VLPL: EM + label-smoothed pseudo-positives (and optional "
              "negatives)", defaults={"beta": 0.7, "eps": 0.9, "gamma": 0.0},
              dataset_defaults=_per_dataset(alpha=_EM_ALPHA), batch_inputs=("pseudo",))


__all__ = ["LOSSES", "LossEntry", "register_loss", "make_entry", "list_losses", "get",
           "dataset_family", "DATASET_FAMILIES", "UNKNOWN_HANDLING", "BATCH_INPUTS", "resolve"]
