"""CBSA: one semi-supervised epoch from cached dense tokens against the same epoch from images.

Both sides run the real recipe (`vlml.runs.run`, recipe `cbsa`) on the same toy scenes (p labeled,
the rest unlabeled), the same seeded tiny open_clip model (frozen), the same prompts, heads,
batch sizes, loss and optimiser, one warm-up epoch then `--epochs` semi-supervised epochs:

- tokens (`model.inputs: cache`): the frozen image encoder writes every train image's dense
  tokens (plain and flipped) and the test images' once into the feature cache; an epoch reads
  them (weak view = cached plain/flip, strong view = token dropout + feature noise).
- images (`model.inputs: images`): every epoch decodes the images, augments them (weak = flip
  + resize; strong = flip + cutout + RandAugment + resize) and runs the frozen encoder on every
  batch: once over the unlabeled images for the EMA pseudo-labels, once per training step.

One epoch = the pseudo-labelling pass + the training pass (`pseudo_seconds + train_seconds`
of the phase's `metrics.jsonl`); the fastest of the semi-supervised epochs counts on each
side. The one-time extraction of the token side is reported separately (it is paid once per
dataset and encoder, not per epoch or run). PASS when images / tokens >= `--target` (5x, the
issue "Semi-supervised multi-label learning: CBSA and the CAP baseline").

The ratio grows with the encoder's cost (a real CLIP ViT-B/16 at 224 px costs far more per
image than the tiny model here) and shrinks with the head's (classes x tokens x width).

    python benchmarks/bench_cbsa_tokens.py               # ~1-2 minutes on 2 idle CPU cores
    python benchmarks/bench_cbsa_tokens.py --threads 1   # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import work_folder

from vlml import config, runs
from vlml.data.toy import generate_toy
from vlml.encoders.tiny import make_tiny_checkpoint
from vlml.recipes.ssmll import cbsa


def make_cfg(args: argparse.Namespace, catalogs: dict[str, Path], arch: str, ckpt: Path,
             out_dir: Path, cache_dir: Path, inputs: str) -> cbsa.CBSAConfig:
    base = {"data": {"dataset": "toy", "train_catalog": str(catalogs["train"]),
                     "test_catalog": str(catalogs["test"]), "p": args.p,
                     "regime": "semi_supervised"},
            "encoder": {"name": arch, "pretrained": str(ckpt), "batch_size": args.eval_batch},
            "model": {"inputs": inputs, "n_ctx": args.n_ctx},
            "context": {"k": 4},
            "optim": {"warmup_epochs": 1, "epochs": args.epochs, "warmup_batch_size": 16,
                      "labeled_batch_size": args.labeled_batch,
                      "unlabeled_batch_size": args.unlabeled_batch,
                      "eval_batch_size": args.eval_batch, "ema_decay": 0.99,
                      "num_workers": args.num_workers},
            "device": "cpu", "out_dir": str(out_dir), "cache_dir": str(cache_dir),
            "progress": False}
    return config.build(cbsa.CBSAConfig, base)


def epoch_seconds(run_dir: Path) -> list[float]:
    log = [json.loads(line) for line in (run_dir / "semi" / "metrics.jsonl").open()]
    return [rec["train_seconds"] + rec["pseudo_seconds"] for rec in log]


def run(args: argparse.Namespace, tmp: Path) -> int:
    t = time.perf_counter()
    kw = {"size": args.data_size, "progress": False}
    catalogs = {"train": generate_toy(tmp / "world", args.n_train, seed=1, split="train",
                                      **kw).save(tmp / "train.zip"),
                "test": generate_toy(tmp / "world", args.n_test, seed=3, split="test",
                                     **kw).save(tmp / "test.zip")}
    arch, ckpt = make_tiny_checkpoint(tmp / "clip", "vit", args.clip_size,
                                      width=args.clip_width, embed_dim=args.embed_dim)
    print(f"world: {args.n_train} train ({args.p:.0%} labeled) + {args.n_test} test scenes of "
          f"{args.data_size} px, CLIP {arch} ({time.perf_counter() - t:.1f} s)")
    seconds = {}
    for inputs in ("cache", "images"):
        out = tmp / f"run-{inputs}"
        t = time.perf_counter()
        result = runs.run(make_cfg(args, catalogs, arch, ckpt, out, tmp / "cache", inputs))
        total = time.perf_counter() - t
        per_epoch = epoch_seconds(out)
        seconds[inputs] = min(per_epoch)
        print(f"{inputs:>6}: semi epochs {', '.join(f'{s:.2f}' for s in per_epoch)} s; whole run "
              f"{total:.1f} s (test mAP {result.test_map:.1f})")
        if inputs == "cache":
            t = time.perf_counter()
            runs.run(make_cfg(args, catalogs, arch, ckpt, tmp / "run-cache-hit",
                                tmp / "cache", inputs))
            hit = time.perf_counter() - t
            print(f"        same run with the cache already filled: {hit:.1f} s, so the one-time "
                  f"token extraction took about {max(total - hit, 0.0):.1f} s")
    ratio = seconds["images"] / seconds["cache"]
    print(f"one semi-supervised epoch: tokens {seconds['cache']:.2f} s, images "
          f"{seconds['images']:.2f} s -> ratio {ratio:.1f}x (target {args.target:.0f}x)")
    if ratio >= args.target:
        print(f"PASS: cached-token epoch is {ratio:.1f}x faster than from images")
        return 0
    print(f"FAIL: cached-token epoch is only {ratio:.1f}x faster (needs {args.target:.0f}x)")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--p", type=float, default=0.1, help="labeled fraction")
    ap.add_argument("--data-size", type=int, default=96, help="toy image side, pixels")
    ap.add_argument("--clip-size", type=int, default=96, help="CLIP input side, pixels")
    ap.add_argument("--clip-width", type=int, default=128, help="CLIP ViT width")
    ap.add_argument("--embed-dim", type=int, default=64, help="CLIP joint-space size D")
    ap.add_argument("--n-ctx", type=int, default=4, help="prompt context tokens")
    ap.add_argument("--epochs", type=int, default=2, help="semi-supervised epochs per side")
    ap.add_argument("--labeled-batch", type=int, default=8)
    ap.add_argument("--unlabeled-batch", type=int, default=56)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (images)")
    ap.add_argument("--target", type=float, default=5.0, help="required images/tokens ratio")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with work_folder(args.work_dir, "vlml-bench-cbsa-") as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    sys.exit(main())
