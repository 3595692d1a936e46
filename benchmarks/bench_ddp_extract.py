"""Sharded feature extraction: `torchrun --nproc_per_node 2` (1 thread each) against one process
with 2 threads, on the same JPEG images, plus the CPU's JPEG decode rate. One process with 1
thread runs too, as the scaling reference.

Both sides run `vlml.encoders.extract_features` (plain + flipped view, a tiny random-init
open_clip ViT) in a fresh process into a fresh folder, with the same batch size; the time
counted is the extraction's (from a barrier after the model is loaded to the finished,
verified cache on rank 0), and the launch (imports, model load) is reported beside it, with
the CPU seconds of the extraction summed over the processes (less sensitive than wall time to
other jobs on the machine). Each side runs `--repeats` times in alternation and the fastest
run counts.

The images are COCO-like JPEGs (640 x 480 by default, smooth content with noise, quality 90).
The decode rate (one core: open + decode, then also CLIP's resize + centre crop to 224 and to
336 px) feeds the paper-scale projection in the README (COCO with ViT-L/14-336 on 8 GPUs).

    python benchmarks/bench_ddp_extract.py                 # ~2 minutes on 2 CPU cores
    python benchmarks/bench_ddp_extract.py --n-images 256 --repeats 1

Exit status 1 (FAIL) when a run fails, the two caches differ by more than 1e-5, or the
speed-up is under `--min-ratio`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


# ---- the worker: one extraction, run by this script in a fresh process ----------------------
def worker(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from vlml import distributed
    from vlml.encoders import add_model_config, extract_features, load
    from vlml.types import Catalog

    distributed.init()
    arch = add_model_config(args.config)
    enc = load(arch, pretrained=str(args.checkpoint), device="cpu")
    catalog = Catalog.load(args.catalog)
    distributed.barrier()
    t, cpu = time.perf_counter(), time.process_time()
    caches = extract_features(catalog, enc, args.out, batch_size=args.batch_size,
                              num_workers=args.workers, progress=False)
    seconds = time.perf_counter() - t
    cpu_all = sum(distributed.all_gather_object(time.process_time() - cpu))
    if distributed.is_main():
        Path(args.result).write_text(json.dumps(
            {"seconds": seconds, "cpu": cpu_all,
             "folders": {v: str(c.path) for v, c in caches.items()}}))
    distributed.destroy()
    return 0


# ---- the parent ------------------------------------------------------------------------------
def make_jpegs(folder: Path, n: int, width: int, height: int, seed: int) -> list[str]:
    """Smooth colour fields with noise: decode costs close to photos' (pure noise is slower)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    names = []
    for i in range(n):
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        ph = rng.uniform(0, 6.3, size=3)
        img = np.stack([127 + 100 * np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c])
                        for c in range(3)], axis=-1)
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90)
        names.append(f"{i:05d}.jpg")
    return names


def decode_rates(paths: list[Path]) -> dict[str, float]:
    """Images per second on one core: decode; decode + CLIP preprocessing at 224 and 336."""
    import open_clip
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    out = {}
    steps = {"decode": None,
             "decode+preprocess 224": open_clip.image_transform(224, is_train=False),
             "decode+preprocess 336": open_clip.image_transform(336, is_train=False)}
    for name, transform in steps.items():
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for p in paths:
                with Image.open(p) as im:
                    rgb = im.convert("RGB")
                    if transform is not None:
                        transform(rgb)
            best = min(best, time.perf_counter() - t)
        out[name] = len(paths) / best
    return out


def launch(cmd: list[str], env: dict[str, str], result: Path) -> dict:
    result.unlink(missing_ok=True)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return {**json.loads(result.read_text()), "wall": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=512)
    ap.add_argument("--jpeg-size", default="640x480", help="WIDTHxHEIGHT of the images")
    ap.add_argument("--image-size", type=int, default=64, help="the tiny ViT's input size")
    ap.add_argument("--width", type=int, default=128, help="the tiny ViT's width")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--decode-images", type=int, default=100)
    ap.add_argument("--min-ratio", type=float, default=1.0,
                    help="FAIL when one process's time / torchrun's is below this")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("config", "checkpoint", "catalog", "out", "result"):
        ap.add_argument(f"--{name}", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    from vlml.encoders.tiny import make_tiny_checkpoint
    from vlml.types import Catalog

    width, height = (int(v) for v in args.jpeg_size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="vlml-bench-ddp-"))
    try:
        t = time.perf_counter()
        names = make_jpegs(tmp, args.n_images, width, height, seed=0)
        catalog_file = Catalog(names, ["x"], np.zeros((len(names), 1), np.int8),
                               root=str(tmp)).save(tmp / "c.zip")
        arch, ckpt = make_tiny_checkpoint(tmp / "model", "vit", args.image_size,
                                          width=args.width, embed_dim=args.width)
        mb = sum((tmp / n).stat().st_size for n in names) / len(names) / 1e3
        print(f"{args.n_images} JPEGs of {width}x{height} ({mb:.0f} kB each) and {arch} "
              f"made in {time.perf_counter() - t:.1f} s")

        rates = decode_rates([tmp / n for n in names[:args.decode_images]])
        for name, rate in rates.items():
            print(f"one core, {name:<22}: {rate:7.1f} images/s ({1e3 / rate:5.2f} ms/image)")

        common = ["--config", str(tmp / "model" / f"{arch}.json"), "--checkpoint", str(ckpt),
                  "--catalog", str(catalog_file), "--batch-size", str(args.batch_size),
                  "--workers", str(args.workers)]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE",
                                                                 "LOCAL_RANK")}
        torchrun = Path(sys.executable).with_name("torchrun")
        launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m",
                                                               "torch.distributed.run"]
        sides = {
            "one process, 2 threads": ([sys.executable, str(HERE), "--worker", "--threads",
                                        "2"], {**env, "OMP_NUM_THREADS": "2"}),
            "one process, 1 thread": ([sys.executable, str(HERE), "--worker", "--threads",
                                       "1"], {**env, "OMP_NUM_THREADS": "1"}),
            "torchrun 2 x 1 thread": ([*launcher, "--nproc_per_node", "2", "--standalone",
                                       str(HERE), "--worker", "--threads", "1"],
                                      {**env, "OMP_NUM_THREADS": "1"}),
        }
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for i in range(args.repeats):
            for side, (cmd, side_env) in sides.items():
                out, result = tmp / f"out-{i}-{side.split(',')[-1].strip()[:1]}-{side[:3]}", \
                    tmp / "result.json"
                run = launch([*cmd, *common, "--out", str(out), "--result", str(result)],
                             side_env, result)
                runs[side].append(run)
                print(f"  run {i + 1} {side:<24}: extraction {run['seconds']:6.2f} s "
                      f"({2 * args.n_images / run['seconds']:6.1f} image-views/s, "
                      f"{run['cpu']:5.2f} CPU s), launch to exit {run['wall']:6.2f} s")
        best = {s: min(r, key=lambda x: x["seconds"]) for s, r in runs.items()}
        one, ddp = best["one process, 2 threads"], best["torchrun 2 x 1 thread"]
        ratio = one["seconds"] / ddp["seconds"]
        for side, run in best.items():
            print(f"best {side:<24}: {run['seconds']:6.2f} s, "
                  f"{args.n_images / run['seconds']:6.1f} images/s (x2 views), "
                  f"{1e3 * min(r['cpu'] for r in runs[side]) / args.n_images:5.2f} CPU ms/image")
        print(f"speed-up of torchrun 2 x 1 thread over one process with 2 threads: {ratio:.2f}x")
        single = best["one process, 1 thread"]["seconds"]
        print(f"(over one process with 1 thread: {single / ddp['seconds']:.2f}x; one process "
              f"with 2 threads over 1 thread: {single / one['seconds']:.2f}x)")

        worst = 0.0
        for view, folder in one["folders"].items():
            a = np.load(Path(folder) / "embeddings.npy")
            b = np.load(Path(ddp["folders"][view]) / "embeddings.npy")
            worst = max(worst, float(np.abs(a - b).max()))
            same = "bit for bit" if np.array_equal(a, b) else f"max |diff| {worst:.2e}"
            print(f"{view}: caches agree {same} (threads per process differ: 2 vs 1)")
        failed = []
        if worst > 1e-5:
            failed.append(f"the caches differ by {worst:.2e} > 1e-5")
        if ratio < args.min_ratio:
            failed.append(f"speed-up {ratio:.2f}x < {args.min_ratio}x")
        print(f"FAIL: {'; '.join(failed)}" if failed else
              f"PASS: torchrun 2 x 1 thread {ratio:.2f}x one process with 2 threads")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
