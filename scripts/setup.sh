#!/usr/bin/env bash
# Create .venv and install vlml with its test tools and the export and slurm extras. Safe to
# re-run.
# The torch/torchvision pins are the builds this project is tested with; on another machine any
# torch >= 2.1 works (pyproject.toml declares ranges), e.g. a CPU or CUDA build of your choice.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "installing torch and torchvision (about 1.5 min)..."
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
echo "installing vlml, its dependencies and the export and slurm extras (onnx, onnxruntime, submitit)..."
.venv/bin/python -m pip install -q -e '.[dev,export,slurm]'
echo "set-up done: $(.venv/bin/vlml --version)"
