#!/usr/bin/env bash
# GPU check of vlml on a machine with CUDA GPUs (issue 20, part 6): one command, one table.
#
#   scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --cpu-smoke     # the same steps on CPU at tiny shapes (tested in CI)
#   options: --workdir DIR (default: a fresh temp folder), --keep (leave it), --dry-run
#   environment: PYTHON=/path/to/python picks the interpreter (default: $VIRTUAL_ENV, ./.venv,
#   then python3 on PATH)
#
# Steps (each a row of the table; a failed step does not stop the others; exit status 1 when
# any failed):
#   1. the tests marked `cuda` (pytest -m cuda);
#   2. one AMP epoch at the papers' shapes with random-init models: SPML end to end on timm
#      resnet50 at 448 px (batch 32), and CBSA on open_clip ViT-L-14-336 (`pretrained:
#      random`, tokens computed from images, warm-up + semi-supervised epoch);
#   3. feature extraction throughput (ViT-L-14-336, plain view) with 0, 4, 8 and 16 DataLoader
#      workers, on generated JPEGs;
#   4. with two or more GPUs: a 2-process NCCL run (torchrun) of linear VLPL against one
#      process (largest train-loss difference, test mAP difference) and one end-to-end AMP
#      epoch of resnet50 with optim.sync_bn.
# Sized to finish within 5 minutes on one GPU. Nothing is downloaded (random-init weights; the
# embedded toy CLIP for pseudo-labels). --cpu-smoke swaps in test_resnet at 64 px, the toy CLIP,
# 48 small JPEGs, 0/2 workers and a 2-process gloo run, so the script itself is tested on CPU.
set -uo pipefail

SMOKE=0 KEEP=0 DRY=0 WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE=1 ;;
        --keep) KEEP=1 ;;
        --dry-run) DRY=1 ;;
        --workdir) WORK="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"  # the interpreter to use, when given
elif [ -n "${VIRTUAL_ENV:-}" ]; then PY="$VIRTUAL_ENV/bin/python"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="$(command -v python3 || command -v python)"; fi
if [ -z "$WORK" ]; then WORK="$(mktemp -d "${TMPDIR:-/tmp}/vlml-gpu-check.XXXXXX")"; fi
mkdir -p "$WORK"
[ "$KEEP" = 1 ] || [ "$DRY" = 1 ] || trap 'rm -rf "$WORK/photos" "$WORK/runs" "$WORK/cache"' EXIT
TABLE="$WORK/table.tsv"
: >"$TABLE"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1
unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu NGPU=0 NPHOTOS=48 PHOTO_W=96 PHOTO_H=72 WORKERS="0 2" NW=0
    BACKBONE=test_resnet SIZE=64 BATCH=8 ENCODER=toy-clip ENC_PRETRAINED=null
    CBSA_BATCHES="optim.warmup_batch_size=4 optim.labeled_batch_size=2 optim.unlabeled_batch_size=8"
    NPROC=2
else
    DEVICE=cuda NPHOTOS=768 PHOTO_W=500 PHOTO_H=375 WORKERS="0 4 8 16" NW=8
    NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
    BACKBONE=resnet50 SIZE=448 BATCH=32 ENCODER=ViT-L-14-336 ENC_PRETRAINED=random
    CBSA_BATCHES="optim.warmup_batch_size=16 optim.labeled_batch_size=4 optim.unlabeled_batch_size=60"
    NPROC=2
fi
VLML=("$PY" -m vlml)
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")

# ---- the Python side: photos, throughput, run summaries ---------------------------------------
HELPER="$WORK/gpu_check_helper.py"
cat >"$HELPER" <<'PYEOF'
"""Helpers of scripts/gpu_check.sh: photos | extract | summary | compare."""
import json
import sys
import time
from pathlib import Path

import numpy as np


def photos(out, n, w, h):
    """n JPEGs of coloured shapes (16 classes, 1-3 per photo), train/test manifests: one tag
    per train photo (tags.csv), 10% of them fully tagged and the rest untagged (tags_few.csv),
    every tag of each test photo."""
    from PIL import Image, ImageDraw

    out, rng = Path(out), np.random.default_rng(0)
    names = [f"c{i:02d}" for i in range(16)]
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(names) + "\n")
    rows = []
    for i in range(n):
        tags = sorted(rng.choice(16, size=rng.integers(1, 4), replace=False).tolist())
        im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for c in tags:  # class c: a shape of its colour in its own cell of a 4 x 4 grid
            x, y = (c % 4) * w // 4, (c // 4) * h // 4
            colour = (40 + 13 * c, 255 - 11 * c, (97 * c) % 256)
            draw.ellipse([x, y, x + w // 4, y + h // 4], fill=colour)
        im.save(out / "img" / f"{i:05d}.jpg", quality=90)
        rows.append((f"img/{i:05d}.jpg", tags))
    n_test = max(8, n // 6)
    train, test = rows[n_test:], rows[:n_test]
    full = set(rng.choice(len(train), size=max(4, len(train) // 10), replace=False).tolist())

    def line(path, pos, neg=()):
        return f"{path},{'|'.join(names[c] for c in pos)},{'|'.join(names[c] for c in neg)}"

    head = "image,positives,negatives"
    (out / "tags.csv").write_text("\n".join(
        [head] + [line(p, [t[rng.integers(len(t))]]) for p, t in train]) + "\n")
    (out / "tags_few.csv").write_text("\n".join([head] + [
        line(p, t, [c for c in range(16) if c not in t]) if i in full else line(p, [])
        for i, (p, t) in enumerate(train)]) + "\n")
    (out / "test.csv").write_text("\n".join(
        [head] + [line(p, t) for p, t in test]) + "\n")


def extract(catalog, encoder, pretrained, device, cache, workers):
    """Images per second of plain-view extraction, per worker count (the model loaded once)."""
    from vlml import encoders
    from vlml.types import Catalog

    cat = Catalog.load(catalog)
    enc = encoders.load(encoder, None if pretrained == "null" else pretrained, device=device)
    out = []
    for w in workers.split(","):
        t0 = time.perf_counter()
        encoders.extract_features(cat, enc, f"{cache}/w{w}", views=("plain",),
                                  batch_size=128, num_workers=int(w), progress=False)
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        out.append(f"{w} workers {cat.n_images / (time.perf_counter() - t0):.0f} img/s")
    print("; ".join(out))


def _records(run):
    return {str(p.relative_to(run)): [json.loads(x) for x in p.read_text().splitlines()]
            for p in sorted(Path(run).rglob("metrics.jsonl"))}


def summary(run):
    """Train img/s of each phase's last epoch and the test mAP of a finished run."""
    run = Path(run)
    res = json.loads((run / "results.json").read_text())
    speed = ", ".join(f"{Path(k).parent.name or 'train'} {v[-1]['train_items_per_s']:.0f} img/s"
                      for k, v in _records(run).items() if v)
    m = res.get("test_map")
    print(f"{speed}; test mAP {'n/a' if m is None else f'{m:.2f}'}")


def compare(one, two):
    """Largest train-loss difference over epochs and the test mAP difference of two runs."""
    a, b = _records(one), _records(two)
    worst = max(abs(x["train_loss"] - y["train_loss"]) for k in a
                for x, y in zip(a[k], b[k], strict=True))
    maps = [json.loads((Path(r) / "results.json").read_text())["test_map"] for r in (one, two)]
    print(f"largest train-loss difference {worst:.1e}; test mAP {maps[0]:.2f} vs {maps[1]:.2f}")


if __name__ == "__main__":
    {"photos": lambda a: photos(a[0], int(a[1]), int(a[2]), int(a[3])),
     "extract": lambda a: extract(*a), "summary": lambda a: summary(a[0]),
     "compare": lambda a: compare(a[0], a[1])}[sys.argv[1]](sys.argv[2:])
PYEOF

# ---- steps ----------------------------------------------------------------------------------
# step NAME DETAIL -- CMD...: run CMD, its output in $STEP_LOG (under $WORK/logs); then the
# shell text DETAIL (which may read "$STEP_LOG") gives the result column
mkdir -p "$WORK/logs"
N_STEP=0
step() {
    local name="$1" detail="$2"; shift 3
    N_STEP=$((N_STEP + 1))
    STEP_LOG="$WORK/logs/step$N_STEP.log"
    echo "== $name: $*" >&2
    if [ "$DRY" = 1 ]; then
        printf '%s\tDRY\t0\t%s\n' "$name" "$(echo "$*" | tr -s '\n ' '  ')" >>"$TABLE"
        return 0
    fi
    local t0 t1 status result
    t0=$(date +%s%N)
    if "$@" >"$STEP_LOG" 2>&1; then status=PASS; else status=FAIL; fi
    t1=$(date +%s%N)
    if [ "$status" = PASS ]; then
        result="$(eval "$detail" 2>>"$STEP_LOG" | tail -n 1)"
    else
        result="$(grep -v '^[[:space:]]*$' "$STEP_LOG" | tail -n 1 | cut -c1-160) (log: $STEP_LOG)"
    fi
    printf '%s\t%s\t%d\t%s\n' "$name" "$status" $(((t1 - t0 + 500000000) / 1000000000)) \
        "$result" >>"$TABLE"
}
skip() { printf '%s\tSKIP\t0\t%s\n' "$1" "$2" >>"$TABLE"; }

P="$WORK/photos"
step "photos" "echo $NPHOTOS JPEGs ${PHOTO_W}x${PHOTO_H}" -- \
    bash -c "'$PY' '$HELPER' photos '$P' $NPHOTOS $PHOTO_W $PHOTO_H &&
             '$PY' -m vlml data prepare manifest --root '$P/tags.csv' --classes-file '$P/classes.txt' --out '$P/cat' &&
             '$PY' -m vlml data prepare manifest --root '$P/tags_few.csv' --classes-file '$P/classes.txt' --out '$P/few' &&
             '$PY' -m vlml data prepare manifest --root '$P/test.csv' --classes-file '$P/classes.txt' --option unlisted=negative --out '$P/test'"

# 1. the tests marked cuda (the smoke run: those of tests/test_ddp_train.py, skipped on CPU;
#    `-k` on that file's GPU tests while the marker is not registered in pyproject.toml)
TESTS="$ROOT/tests"
[ "$SMOKE" = 1 ] && TESTS="$ROOT/tests/test_ddp_train.py"
MARKERS="$(cd "$ROOT" && "$PY" -m pytest --markers -p no:cacheprovider 2>/dev/null)"
if grep -q '@pytest.mark.cuda' <<<"$MARKERS"; then CUDA_SEL=(-m cuda "$TESTS")
else CUDA_SEL=(-k "cuda or gpus" "$ROOT/tests/test_ddp_train.py"); fi
step "cuda tests" 'grep -E "passed|skipped|failed|deselected|no tests ran" "$STEP_LOG" | tail -n 1' -- \
    bash -c 'cd "$0" && exec "$@"' "$ROOT" "$PY" -m pytest -q -p no:cacheprovider -rs \
    "${CUDA_SEL[@]}"

TRAIN=(data.train_catalog="$P/cat/all.catalog.zip" data.test_catalog="$P/test/all.catalog.zip"
       cache_dir="$WORK/cache" device="$DEVICE" optim.eval_batch_size=128 --quiet)
FEW=(data.train_catalog="$P/few/all.catalog.zip" data.test_catalog="$P/test/all.catalog.zip"
     cache_dir="$WORK/cache" device="$DEVICE" optim.eval_batch_size=128 --quiet)
E2E=(model.mode=end_to_end model.hidden=0 model.backbone="$BACKBONE" model.pretrained=random
     model.image_size="$SIZE" optim.amp=true optim.epochs=1 optim.batch_size="$BATCH"
     optim.num_workers="$NW")
R="$WORK/runs"

# 2. one AMP epoch at the papers' shapes
step "AMP epoch: SPML end to end, $BACKBONE ${SIZE}px, batch $BATCH" \
    "'$PY' '$HELPER' summary '$R/e2e'" -- \
    "${VLML[@]}" train spml/toy/an "${E2E[@]}" "${TRAIN[@]}" out_dir="$R/e2e"
# shellcheck disable=SC2086
step "AMP epoch: CBSA, $ENCODER ($ENC_PRETRAINED) from images" \
    "'$PY' '$HELPER' summary '$R/cbsa'" -- \
    "${VLML[@]}" train ssmll/toy/cbsa encoder.name="$ENCODER" encoder.pretrained="$ENC_PRETRAINED" \
    model.inputs=images optim.amp=true optim.warmup_epochs=1 optim.epochs=1 $CBSA_BATCHES \
    pseudo.prior_weight=0 optim.num_workers="$NW" encoder.batch_size=64 "${FEW[@]}" out_dir="$R/cbsa"

# 3. extraction throughput by DataLoader workers
step "extraction: $ENCODER, workers ${WORKERS// //}" 'tail -n 1 "$STEP_LOG"' -- \
    "$PY" "$HELPER" extract "$P/cat/all.catalog.zip" "$ENCODER" "$ENC_PRETRAINED" "$DEVICE" \
    "$WORK/cache/throughput" "${WORKERS// /,}"

# 4. two processes (NCCL with two GPUs; gloo in the smoke run)
if [ "$SMOKE" = 1 ] || [ "$NGPU" -ge 2 ]; then
    BACKEND=$([ "$SMOKE" = 1 ] && echo gloo || echo NCCL)
    LIN=(optim.batch_size="$BATCH" optim.epochs=5 "${TRAIN[@]}")
    step "2-process $BACKEND: linear VLPL, one process first" "echo ok" -- \
        "${VLML[@]}" train spml/toy/vlpl "${LIN[@]}" out_dir="$R/vlpl-1"
    step "2-process $BACKEND: linear VLPL vs one process" \
        "'$PY' '$HELPER' compare '$R/vlpl-1' '$R/vlpl-2'" -- \
        "${TORCHRUN[@]}" -m vlml train spml/toy/vlpl "${LIN[@]}" out_dir="$R/vlpl-2"
    if [ "$SMOKE" = 0 ]; then
        step "2-process NCCL: end to end $BACKBONE ${SIZE}px, sync_bn" \
            "'$PY' '$HELPER' summary '$R/e2e-sync'" -- \
            "${TORCHRUN[@]}" -m vlml train spml/toy/an "${E2E[@]}" optim.sync_bn=true \
            "${TRAIN[@]}" out_dir="$R/e2e-sync"
    fi
else
    skip "2-process NCCL" "$NGPU GPU(s): needs two"
fi

# ---- the table ------------------------------------------------------------------------------
GPU="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU")' 2>/dev/null)"
echo
echo "vlml GPU check ($([ "$SMOKE" = 1 ] && echo 'CPU smoke' || echo "$GPU, $NGPU GPU(s)"); torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)); work folder $WORK"
echo
echo "| check | status | seconds | result |"
echo "|---|---|---:|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$TABLE"
! grep -q $'\tFAIL\t' "$TABLE"
