"""`vlml export RUN_DIR --format onnx|torchscript --out DIR`: the run as one model file from
preprocessed pixels to per-class probabilities, with tagger.json (`vlml.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command

FORMATS = ("onnx", "torchscript")  # vlml.export.FORMATS (not imported: it imports numpy)


def add_parsers(subparsers: Any) -> None:
    """Register the command."""
    p = add_command(
        subparsers, "export", "export a finished run (encoder + head) as ONNX or TorchScript",
        "vlml export runs/voc2007-vlpl --format onnx --out voc-tagger",
        description="Export a finished run as one graph from a preprocessed image batch "
                    "(B, 3, H, W) float32 to per-class probabilities (B, C), with tagger.json "
                    "beside it: class names, thresholds, preprocessing, input/output names. "
                    "The exported model is checked against PyTorch on a seeded random batch; "
                    "the export fails when they differ by more than 1e-4. ONNX needs the "
                    "export extra: pip install 'vlml[export]'.")
    p.add_argument("run_dir", type=Path, help="a finished run folder (with run.json)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (model.onnx, opset 20; default) or torchscript (model.pt)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="the export folder: missing, empty, or a previous export (replaced)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from vlml import export

    done = export.export(args.run_dir, args.format, out_dir=args.out)
    info = done.tagger
    size = done.model_file.stat().st_size / 2**20
    th = info["thresholds"]
    print(f"wrote {done.model_file} ({size:.1f} MiB, {info['model']['exporter']}"
          f"{', opset ' + str(info['model']['opset']) if 'opset' in info['model'] else ''}) "
          f"and {done.tagger_file}")
    print(f"  input {info['input']['name']!r} {info['input']['shape']} float32 -> output "
          f"{info['output']['name']!r} {info['output']['shape']}; {len(info['class_names'])} "
          f"classes; thresholds: {th['description']}")
    check = info["verification"]
    print(f"  max abs difference vs PyTorch: {done.max_abs_diff:.3g} (tolerance "
          f"{check['tolerance']:g}; {check['runtime']}, seeded random batches of "
          f"{', '.join(map(str, check['batch_sizes']))})")
    return 0
