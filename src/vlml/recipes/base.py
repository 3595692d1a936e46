"""What every recipe hands to the run lifecycle (`vlml.runs`), and how a recipe records and
reloads its frozen encoder.

A recipe module provides `Config`, `validate(cfg)`, `load_splits(data_cfg)` (an object with
`.train` and `.test` catalogs), `fit(cfg, splits, run_dir, device) -> Fitted` and
`load_model(cfg, record, device) -> Inference`; optionally `preflight(cfg)` (fails fast when
weights it needs are not available). The lifecycle writes every run's report.
`vlml.runs.run(cfg)` drives them; recipes never import `vlml.runs` (it sits above them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlml.errors import DataError
from vlml.types import Catalog

Batches = Iterable[dict[str, Any]]


@dataclass
class Fitted:
    """What a recipe's `fit` hands back.

    Attributes:
        model: the selected model (its weights loaded), on the run's device.
        test_batches: (shard) -> batches of the test split for `vlml.engine.predict` (None
            without a test catalog); shard=True: only this rank's batch-aligned shard of the
            rows (`vlml.distributed.shard`), for `predict(..., gather=True)` under DDP.
        best_epoch, val_map, history: model selection (val_map None when nothing was selected
            on validation data); history = the selected phase's per-epoch records.
        model_spec: JSON-ready; with `encoder` and the class names, all `load_model` needs.
        weights: the selected weights file, relative to the run folder.
        encoder: `encoder_record(...)` of the frozen encoder the model reads from (None for a
            model on raw images).
        effective: the parameters actually used where the config left them to defaults
            (per-dataset loss parameters, pseudo-labeller settings, ...).
        results: recipe-specific entries for `results.json`.
        phase: the phase whose model is the result (SSMLL: "warmup" or "semi").
        val_scores: (N_val, C) float32 probabilities of the selected model on the validation
            images, which the lifecycle fits the decision thresholds on (None: no validation
            images).
        val_targets: (N_val, C) int8 labels of those images in {1, 0, -1}, as the selection
            read them (clean labels, or the observed ones).
    """

    model: torch.nn.Module
    test_batches: Callable[[bool], Batches] | None
    best_epoch: int
    val_map: float | None
    history: list[dict[str, Any]]
    model_spec: dict[str, Any]
    weights: str
    encoder: dict[str, Any] | None = None
    effective: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    phase: str | None = None
    val_scores: np.ndarray | None = None
    val_targets: np.ndarray | None = None


@dataclass
class Inference:
    """A rebuilt model (weights not yet loaded), how it reads a catalog, and `image_model()`:
    the same model from pixels (`vlml.models.image_model.ImageModel`), built once the weights
    are loaded."""

    model: torch.nn.Module
    batches: Callable[[Catalog], Batches]
    image_model: Callable[[], Any]


def evaluation_labels(catalog: Catalog) -> np.ndarray | None:
    """The (N, C) 0/1 labels a validation or test catalog is scored against: its ground truth,
    else its own labels when none is unknown (a user's fully tagged catalog: complete by the
    user's word, though not ground truth for pseudo-label quality); None otherwise."""
    truth = catalog.ground_truth
    return truth if truth is not None else catalog.complete_labels


def encoder_record(encoder: Any, name: str, pretrained: str | None) -> dict[str, Any]:
    """The frozen encoder as a run records it: how to load it (name, weights tag or file, and
    the open_clip model config, so a custom architecture needs no other file) and what it must
    be (its identity: architecture, weights hash or tag, preprocessing)."""
    import open_clip

    return {"name": name, "pretrained": pretrained, "identity": encoder.identity,
            "model_config": open_clip.get_model_config(encoder.architecture)}


def check_identity(found: dict[str, Any], recorded: dict[str, Any], what: str) -> None:
    """Refuse an encoder (or frozen backbone) whose identity differs from the recorded one."""
    diff = sorted(k for k in set(found) | set(recorded) if found.get(k) != recorded.get(k))
    if diff:
        detail = "; ".join(f"{k}: recorded {recorded.get(k)!r}, found {found.get(k)!r}"
                           for k in diff)
        raise DataError(f"the {what} differs from the one the run was trained with ({detail}); "
                        "pass the same weights file or tag", what)


def load_recorded_encoder(record: dict[str, Any], device: torch.device) -> Any:
    """The run's frozen CLIP encoder, loaded by its recorded name and weights and checked
    against the recorded identity."""
    from vlml import encoders

    enc = record["encoder"]
    if enc.get("model_config"):
        encoders.registry.ensure_model_config(enc["identity"]["architecture"],
                                              enc["model_config"])
    encoder = encoders.load(enc["name"], enc["pretrained"], device=device)
    check_identity(encoder.identity, enc["identity"], "encoder")
    return encoder
