"""Export a run (or any `ImageModel`) as one graph from preprocessed pixels to per-class
probabilities, with a `tagger.json` saying how to feed it and read it.

>>> from vlml import export
>>> done = export.export("runs/voc2007-vlpl", "onnx", out_dir="tagger")   # doctest: +SKIP
>>> done.max_abs_diff                                                     # doctest: +SKIP

What is written (into a temporary folder beside `out_dir`, renamed into place at the end)::

    out_dir/
      model.onnx | model.pt   input "images" (B, 3, H, W) float32, preprocessed, B dynamic
                              -> output "probs" (B, C) float32 in [0, 1]
      model.onnx.data         only for ONNX models over 2 GB (the weights, beside the graph)
      tagger.json             class names, thresholds, preprocessing, input/output names and
                              shapes, recipe, encoder identity, vlml version, parity check

Formats:

- `"onnx"`: `torch.onnx.export(..., dynamo=True)`, the `torch.export`-based exporter (torch's
  default since 2.9), ONNX opset `OPSET` (20; onnxruntime >= 1.17 runs it), batch axis named
  "batch". The legacy TorchScript-based exporter (`dynamo=False`) is not used: on torch 2.14
  it fails on two of the model kinds: open_clip's ViT attention (eval-mode
  `nn.MultiheadAttention` takes the fused `aten::_native_multi_head_attention` kernel, which
  has no ONNX symbolic) and the CLIP-ResNet dense tokens of CBSA (the positional-embedding
  interpolation reads tensor shapes as Python numbers, which that tracer turns into tensors).
  The dynamo exporter handles every kind. Needs onnx, onnxscript and onnxruntime: the `export`
  extra, `pip install 'vlml[export]'`.
- `"torchscript"`: `torch.jit.trace` -> `model.pt`, loaded with `torch.jit.load` (Python or
  C++ libtorch; no extra needed). TorchScript is deprecated upstream; ONNX is the recommended
  format. A model whose tracing fails is refused with an error that says to use ONNX.

Verification: the exported file is loaded back (onnxruntime's CPU provider for ONNX,
`torch.jit.load` for TorchScript) and run on seeded random batches whose sizes differ from the
traced one (so the dynamic batch axis is exercised); its outputs are compared with the PyTorch
module's. The largest absolute difference goes into `tagger.json` ("verification"); above
`tolerance` (default 1e-4, on probabilities) the export fails and nothing is written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vlml.errors import DataError, UnknownChoiceError, VlmlError
from vlml.fileio import write_json_atomic

FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
TAGGER_FILE = "tagger.json"
TAGGER_FORMAT = "vlml-tagger"
TAGGER_VERSION = 1
OPSET = 20
TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "probs"
EXAMPLE_BATCH = 2  # the batch size traced / exported with
CHECK_BATCHES = (3, 1)  # the batch sizes verified (both differ from EXAMPLE_BATCH)
CHECK_SEED = 0
EXTRA_HINT = "pip install 'vlml[export]'"
# every file an export folder may hold: a folder with only these (and a tagger.json of ours)
# is a previous export, replaced by a new one; any other folder is refused
_EXPORT_FILES = frozenset({TAGGER_FILE, "model.onnx", "model.onnx.data", "model.pt"})
_NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export",
                  "torch._dynamo", "torch.fx.experimental.symbolic_shapes")

_OUTPUT_MEANING = {
    "zero_shot": "per-class scores: softmax over the classes of cosine(image, class text) / tau",
}
_DEFAULT_MEANING = "per-class probabilities: sigmoid of the class logits, independent per class"
_RESIZE = {
    "shortest": "resize so the shorter side matches the target (keeping the aspect ratio), "
                "then centre-crop to size",
    "squash": "resize to size exactly (aspect ratio not kept)",
    "longest": "resize so the longer side matches the target (keeping the aspect ratio), then "
               "pad to size with fill_color, centred",
}


class ExportError(VlmlError):
    """The export cannot be made or did not reproduce the PyTorch model (the message says
    which, and what to do), or its output folder holds something else."""


@dataclass(frozen=True)
class Exported:
    """What `export` / `export_image_model` wrote.

    Attributes:
        out_dir: the export folder.
        model_file: `out_dir/model.onnx` or `out_dir/model.pt`.
        tagger_file: `out_dir/tagger.json`.
        format: "onnx" or "torchscript".
        max_abs_diff: largest |exported - PyTorch| over the verification batches
            (probabilities, so unitless in [0, 1]).
        tagger: the contents of `tagger.json`.
    """

    out_dir: Path
    model_file: Path
    tagger_file: Path
    format: str
    max_abs_diff: float
    tagger: dict[str, Any]


def export(run_dir: str | Path, format: str = "onnx", *, out_dir: str | Path,
           tolerance: float = TOLERANCE) -> Exported:
    """Export the finished run in `run_dir` (encoder + head, one graph) into `out_dir`.

    Thresholds: the run's `thresholds.json` when `vlml.thresholds.load` finds one, else 0.5
    for every class; `tagger.json` says which.

    Raises:
        UnknownChoiceError: `format` is not one of `FORMATS`.
        ExportError: `out_dir` is a file or a non-empty folder that is not a previous export;
            onnx / onnxruntime / onnxscript missing (ONNX); export or parity check failed.
        DataError: not a finished run, or thresholds for other classes.
    """
    _check_format(format)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    if format == "onnx":
        _require_onnx()
    from vlml import runs, thresholds

    run = runs.load(run_dir, device="cpu")
    record = run.record
    return export_image_model(
        run.image_model(), run.class_names, thresholds.load(run_dir), format, out_dir,
        recipe=record.get("recipe"), encoder=encoder_entry(record),
        source={"run_dir": str(Path(run_dir).resolve()), "run_created": record.get("created"),
                "run_vlml_version": record.get("vlml_version"), "weights": record.get("weights")},
        tolerance=tolerance)


def export_image_model(image_model: Any, class_names: Sequence[str], thresholds: Any,
                       format: str = "onnx", out_dir: str | Path | None = None, *,
                       recipe: str | None = None, encoder: dict[str, Any] | None = None,
                       source: dict[str, Any] | None = None,
                       tolerance: float = TOLERANCE) -> Exported:
    """Export an `ImageModel` (`vlml.models.image_model`) with its class names.

    Args:
        image_model: `.module` maps (B, 3, H, W) float32 preprocessed images to (B, C)
            probabilities; `.preprocess_spec` and `.kind` go into tagger.json. The module is
            exported from the CPU (a copy is moved there when it is elsewhere).
        class_names: the C class names, in output order.
        thresholds: a `vlml.thresholds.Thresholds` for these classes, or None (0.5 each).
        format: "onnx" or "torchscript".
        out_dir: the export folder (missing, empty, or a previous export, which is replaced).
        recipe, encoder, source: provenance written to tagger.json as given (JSON-ready).
        tolerance: the largest allowed |exported - PyTorch| on the verification batches.

    Raises: as `export`.
    """
    _check_format(format)
    if out_dir is None:
        raise ExportError("export_image_model needs out_dir (the folder to write)")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    if format == "onnx":
        _require_onnx()
    import torch

    names = [str(n) for n in class_names]
    values, calibrated, th_info = _threshold_values(thresholds, names)
    module = _cpu_eval(image_model.module)
    h, w = image_model.image_size
    example = torch.randn((EXAMPLE_BATCH, 3, h, w), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        n_out = tuple(module(example).shape)
    if n_out != (EXAMPLE_BATCH, len(names)):
        raise DataError(f"the model gives outputs of shape {n_out} for a batch of "
                        f"{EXAMPLE_BATCH}; expected ({EXAMPLE_BATCH}, {len(names)}) for "
                        f"{len(names)} class names", "class_names")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model_file = tmp / MODEL_FILES[format]
        writer = _write_onnx if format == "onnx" else _write_torchscript
        how = writer(module, example, model_file, image_model.kind)
        check = _verify(module, model_file, format, (h, w), tolerance)
        tagger = {
            "format": TAGGER_FORMAT, "format_version": TAGGER_VERSION,
            "vlml_version": _vlml_version(), "torch_version": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"file": model_file.name, "format": format, "kind": image_model.kind,
                      **how},
            "files": sorted([*(p.name for p in tmp.iterdir()), TAGGER_FILE]),
            "class_names": names,
            "thresholds": {**th_info, "values": values, "calibrated": calibrated},
            "preprocess": preprocess_entry(image_model.preprocess_spec),
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "dtype": "float32",
                      "layout": "NCHW, RGB channels, preprocessed as in 'preprocess'"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", len(names)], "dtype": "float32",
                       "meaning": _OUTPUT_MEANING.get(image_model.kind, _DEFAULT_MEANING),
                       "classes": "in the order of class_names"},
            "recipe": recipe, "encoder": encoder, "source": source,
            "verification": check,
        }
        write_json_atomic(tmp / TAGGER_FILE, tagger)
        _install(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out_dir, out_dir / model_file.name, out_dir / TAGGER_FILE, format,
                    check["max_abs_diff"], tagger)


# ---- what tagger.json says -------------------------------------------------------------------
def encoder_entry(record: dict[str, Any]) -> dict[str, Any] | None:
    """The image encoder of a run (`run.json`), as tagger.json records it: the frozen CLIP
    (name, weights, identity), a frozen timm backbone (name, identity), or the timm network
    trained end to end (name; its weights are the export's)."""
    enc, spec = record.get("encoder"), record.get("model") or {}
    if enc:
        return {"type": "open_clip (frozen)", "name": enc.get("name"),
                "pretrained": enc.get("pretrained"), "identity": enc.get("identity")}
    if "backbone_identity" in spec:
        return {"type": "timm backbone (frozen)", "name": spec.get("backbone"),
                "identity": spec["backbone_identity"]}
    if spec.get("backbone"):
        return {"type": "timm network (trained end to end)", "name": spec["backbone"],
                "image_size": spec.get("image_size")}
    return None


def preprocess_entry(spec: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing as another runtime needs it: the spec (size [H, W], mean, std,
    interpolation, resize_mode, ...) with JSON types, and the steps in words."""
    out = {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in sorted(spec.items())}
    mode = out.get("resize_mode") or out.get("resize") or "shortest"
    out["resize_mode"] = mode
    out.pop("resize", None)
    out["steps"] = [
        "decode the image, convert to RGB",
        f"{_RESIZE.get(mode, mode)}; size is [H, W] = {out['size']}, interpolation "
        f"{out.get('interpolation', 'bilinear')} (PIL, antialiased)",
        "to float32 in [0, 1] (divide by 255), channels first (3, H, W)",
        "per channel: (x - mean) / std",
        "stack images into a (B, 3, H, W) batch",
    ]
    return out


def _threshold_values(thresholds: Any, names: list[str]
                      ) -> tuple[list[float], list[bool], dict[str, Any]]:
    """(C thresholds, C calibrated flags, where they come from) in the order of `names`."""
    from vlml.thresholds import DEFAULT

    if thresholds is None:
        return ([DEFAULT] * len(names), [False] * len(names),
                {"source": "default", "description": f"no thresholds.json in the run: "
                 f"{DEFAULT} for every class", "default": DEFAULT})
    have = list(thresholds.class_names)
    if sorted(have) != sorted(names):
        raise DataError(f"thresholds are for classes {have[:5]}... but the model has "
                        f"{names[:5]}... ({len(have)} vs {len(names)} classes); re-run "
                        "`vlml calibrate` on this run", "thresholds.json")
    order = [have.index(n) for n in names]
    values = [float(thresholds.values[i]) for i in order]
    calibrated = [bool(thresholds.calibrated[i]) for i in order]
    n_cal = sum(calibrated)
    return values, calibrated, {
        "source": "thresholds.json",
        "description": f"the run's thresholds.json: {n_cal} of {len(names)} classes "
                       f"calibrated (target {thresholds.target})"
                       + (f", the others {thresholds.default}" if n_cal < len(names) else ""),
        "target": thresholds.target, "fitted_on": thresholds.source,
        "default": float(thresholds.default)}


def _vlml_version() -> str:
    from vlml import __version__

    return __version__


# ---- checks ----------------------------------------------------------------------------------
def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise UnknownChoiceError(f"export format {format!r}; expected one of {FORMATS}")


def _require_onnx() -> None:
    """onnx, onnxscript (the exporter's) and onnxruntime (the check's), else a clear error."""
    import importlib

    import torch

    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)} (not installed); install "
                          f"the export extra: {EXTRA_HINT}")
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if (major, minor) < (2, 6):
        raise ExportError(f"ONNX export uses torch.onnx.export(dynamo=True), which needs "
                          f"torch >= 2.6; this is torch {torch.__version__}")


def is_export_folder(path: str | Path) -> bool:
    """True for a folder written by this module: a tagger.json of ours and only export files."""
    path = Path(path)
    if not (path / TAGGER_FILE).is_file():
        return False
    if any(p.name not in _EXPORT_FILES for p in path.iterdir()):
        return False
    try:
        data = json.loads((path / TAGGER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == TAGGER_FORMAT


def _check_out_dir(out_dir: Path) -> None:
    """A missing or empty folder, or a previous export (replaced); anything else is refused."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: the export folder is a file; expected a missing or "
                          "empty folder, or a previous export")
    entries = sorted(p.name for p in out_dir.iterdir())
    if entries and not is_export_folder(out_dir):
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise ExportError(f"{out_dir}: not empty and not a previous vlml export (it holds "
                          f"{shown}); expected a missing or empty folder, or a folder written "
                          f"by `vlml export` (only {', '.join(sorted(_EXPORT_FILES))}). "
                          "Choose another --out")


def _install(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temporary folder to `out_dir`, replacing an empty folder or a
    previous export (moved aside first, restored if the rename fails)."""
    _check_out_dir(out_dir)  # again: something may have appeared while exporting
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old",
                                    dir=out_dir.parent))
        old.rmdir()
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---- writing and checking the model ----------------------------------------------------------
def _cpu_eval(module: Any) -> Any:
    """The module in eval mode on the CPU (a copy when it lives elsewhere)."""
    import torch

    tensors = [*module.parameters(), *module.buffers()]
    if any(t.device != torch.device("cpu") for t in tensors):
        module = copy.deepcopy(module).to("cpu")
    return module.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress logs and deprecation / tracer warnings; the verification
    says whether the result is right."""
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _write_onnx(module: Any, example: Any, path: Path, kind: str) -> dict[str, Any]:
    import torch

    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            program = torch.onnx.export(
                module, (example,), None, dynamo=True, opset_version=OPSET, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},))
            program.save(str(path))  # weights over 2 GB go to model.onnx.data beside it
    except ExportError:
        raise
    except Exception as e:  # the exporter raises many types; say what failed, keep the cause
        raise ExportError(f"torch.onnx.export (dynamo=True, opset {OPSET}) failed for this "
                          f"{kind} model: {type(e).__name__}: {str(e)[:2000]}") from e
    return {"exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET}


def _write_torchscript(module: Any, example: Any, path: Path, kind: str) -> dict[str, Any]:
    import torch

    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as e:  # tracing fails with many types; say what failed, keep the cause
        raise ExportError(f"torch.jit.trace failed for this {kind} model "
                          f"({type(e).__name__}: {str(e)[:500]}); export it as ONNX instead "
                          "(--format onnx)") from e
    return {"exporter": "torch.jit.trace", "inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}


def _run_exported(path: Path, format: str) -> tuple[Any, str]:
    """A function numpy (B, 3, H, W) -> numpy (B, C) running the exported file, and what runs
    it (for tagger.json)."""
    if format == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or isinstance(inputs[0].shape[0], int):
            found = [(i.name, i.shape) for i in inputs]
            raise ExportError(f"the exported graph's inputs are {found}; expected one input "
                              f"{INPUT_NAME!r} with a dynamic batch axis")
        return (lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
                f"onnxruntime {ort.__version__} (CPUExecutionProvider)")
    import torch

    with _quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return run, f"torch.jit.load (torch {torch.__version__})"


def _verify(module: Any, path: Path, format: str, size: tuple[int, int],
            tolerance: float) -> dict[str, Any]:
    """Run the exported file and the PyTorch module on seeded random batches; the largest
    absolute difference, or `ExportError` above `tolerance`."""
    import torch

    run, runtime = _run_exported(path, format)
    gen = torch.Generator().manual_seed(CHECK_SEED)
    worst = 0.0
    for b in CHECK_BATCHES:
        x = torch.randn((b, 3, *size), generator=gen)
        with torch.no_grad():
            want = module(x).float().numpy()
        got = np.asarray(run(x.numpy()))
        if got.shape != want.shape:
            raise ExportError(f"the exported model gives shape {got.shape} for a batch of {b}, "
                              f"PyTorch {want.shape}")
        diff = float(np.abs(got.astype(np.float64) - want).max())
        worst = max(worst, diff) if np.isfinite(diff) else float("inf")
    if not worst <= tolerance:
        raise ExportError(f"the exported model differs from PyTorch by up to {worst:.3g} on a "
                          f"seeded random batch (tolerance {tolerance:g}); nothing was written")
    return {"runtime": runtime, "batch_sizes": list(CHECK_BATCHES), "seed": CHECK_SEED,
            "input": "standard normal (B, 3, H, W) from torch.Generator().manual_seed(seed)",
            "max_abs_diff": worst, "tolerance": tolerance}


__all__ = ["export", "export_image_model", "Exported", "ExportError", "encoder_entry",
           "preprocess_entry", "is_export_folder", "FORMATS", "OPSET", "TOLERANCE"]
