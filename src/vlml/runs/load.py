"""Load a finished run back, ready for inference, from its folder alone.

>>> from vlml import runs
>>> run = runs.load("runs/voc2007-vlpl")                 # doctest: +SKIP
>>> scores = run.scores(test_catalog)                    # (N, C) sigmoid scores  # doctest: +SKIP

The folder's `config.yaml` (the resolved config) and `run.json` (class names, encoder identity,
model spec, weights file, versions) rebuild the model; the recipe's `load_model` refuses an
encoder whose weights differ from the recorded ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlml import config, recipes
from vlml.device import resolve_device
from vlml.engine.checkpoint import describe_load_error, load_weights
from vlml.engine.predict import predict
from vlml.errors import ConfigError, DataError
from vlml.runs.folder import CONFIG_FILE
from vlml.runs.lifecycle import RECORD_FILE, evaluate_scores
from vlml.types import Catalog


@dataclass
class Run:
    """A finished run: its folder, resolved config, record and model (eval mode, weights
    loaded, on `device`)."""

    path: Path
    config: Any
    record: dict[str, Any]
    model: torch.nn.Module
    device: torch.device
    _batches: Callable[[Catalog], Iterable[dict[str, Any]]]
    _image_model: Callable[[], Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.record["class_names"])

    def scores(self, catalog: Catalog) -> np.ndarray:
        """(N, C) float32 sigmoid scores of the catalog's images, in catalog order."""
        if list(catalog.class_names) != self.class_names:
            raise DataError(f"catalog classes {list(catalog.class_names)[:5]}... differ from the "
                            f"run's {self.class_names[:5]}...", str(self.path))
        return predict(self.model, self._batches(catalog), self.device).probs

    def image_model(self) -> Any:
        """The run's model from pixels (`vlml.models.image_model.ImageModel`): the frozen
        encoder's forward and the head, for tagging and export."""
        return self._image_model()


RECORD_KEYS = {"recipe": str, "weights": str, "class_names": list}


def _read_record(path: Path) -> dict[str, Any]:
    """The run record of run folder `path`, checked: `DataError` naming the folder or file when
    it is not a finished run's (missing, a file, no or a malformed run.json, no weights)."""
    import json

    if not path.exists():
        raise DataError("run folder not found; expected the folder of a finished run (its "
                        "out_dir)", str(path))
    if not path.is_dir():
        raise DataError("is a file; expected the folder of a finished run (its out_dir)",
                        str(path))
    file = path / RECORD_FILE
    if not file.is_file():
        raise DataError(f"no {RECORD_FILE}: not a finished vlml run (or one written before run "
                        "records existed; re-run it)", str(path))
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{RECORD_FILE} is not valid JSON ({e})", str(file)) from None
    except OSError as e:
        raise DataError(f"cannot read {RECORD_FILE} ({e.strerror or e})", str(file)) from None
    if not isinstance(record, dict):
        raise DataError(f"holds a JSON {type(record).__name__}; expected the run record object "
                        "vlml writes when a run ends", str(file))
    for key, kind in RECORD_KEYS.items():
        if key not in record:
            raise DataError(f"lacks the field {key!r}; expected the run record vlml writes when "
                            "a run ends (the file is damaged: re-run the run)", str(file))
        if not isinstance(record[key], kind):
            raise DataError(f"field {key!r} is {record.get(key)!r:.80}; expected a "
                            f"{kind.__name__} (the file is damaged or not a vlml run record: "
                            "re-run the run)", str(file))
    if not (path / CONFIG_FILE).is_file():
        raise DataError(f"no {CONFIG_FILE}: the run's resolved config is missing", str(path))
    weights = path / record["weights"]
    if not weights.is_file():
        raise DataError(f"the run's weights file {record['weights']} is missing (expected it "
                        "beside run.json: the run did not finish, or the file was moved)",
                        str(path))
    return record


def _run_device(recorded: str) -> torch.device:
    """The device the run was trained on when this machine has it, else the default one (a run
    trained on a GPU can be evaluated on a CPU-only machine)."""
    try:
        return resolve_device(recorded)
    except ConfigError:
        return resolve_device("auto")


def load(path: str | Path, *, device: str | torch.device | None = None) -> Run:
    """The finished run in folder `path`, its model ready for inference."""
    path = Path(path)
    record = _read_record(path)
    recipe = recipes.get(record["recipe"])
    cfg = config.load(recipe.Config, path / CONFIG_FILE, ["progress=false"])
    dev = resolve_device(device) if device is not None else _run_device(cfg.device)
    weights = path / record["weights"]
    state = load_weights(weights, dev)
    inference = recipe.load_model(cfg, record, dev)
    try:
        inference.model.load_state_dict(state)
    except RuntimeError as e:
        raise DataError(f"the weights do not fit the run's model ({describe_load_error(e)}); "
                        "expected the weights this run wrote", str(weights)) from None
    inference.model.to(dev).eval()
    return Run(path, cfg, record, inference.model, dev, inference.batches,
               inference.image_model)


def evaluate_run(path: str | Path, catalog: str | Path | None = None) -> dict[str, Any]:
    """Re-score a finished run from its folder on `catalog` (a catalog file), else on its
    config's test split: test mAP, per-class AP, CF1/OF1."""
    run = load(path)
    if catalog is not None:
        test = Catalog.load(catalog, require_images=True)
    else:
        test = recipes.get(run.record["recipe"]).load_splits(run.config.data).test
        if test is None:
            raise DataError("the run has no test catalog (its config names no "
                            "data.test_catalog); pass one with --catalog FILE", str(path))
    return evaluate_scores(run.scores(test), test)
