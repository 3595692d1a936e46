"""`vlml predict` throughput against a plain loop, and its peak memory over 100k vs 10k images.

The model: the shipped tiny CLIP (`encoders.load("toy-clip")`, 64 px) with a seeded linear head
on its embeddings (`ImageModel.from_clip_head`, what an SPML `linear` run on CLIP features
tags with), 16 classes. The images: small generated PNGs (48 x 40, a few coloured boxes),
written once into `--work-dir` (default: a temp folder), 10,000 per sub-folder.

- speed: over the first `--n-speed` images, in alternation, best of `--repeats`:
  plain loop: per batch, PIL open + `encoder.preprocess` + open_clip `encode_image` + the head,
  scores kept in a list (no file written); `Tagger.tag` (the Python API); and
  `write_predictions` (what `vlml predict` runs: DataLoader, decisions, JSONL rows streamed to
  `<out>.partial`, state records, the final rename). Same batch size, no DataLoader workers.
  Target: `write_predictions` at most 10% slower than the plain loop.
- memory: `write_predictions` over 10,000 and over `--n-memory` (100,000) images, each in its
  own fresh process reporting its own peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`);
  a third process loads the model and tags 64 images (the baseline). The parent imports
  neither numpy nor torch, so the peak it had at the fork (which Linux folds into a child's
  ru_maxrss) stays small. Target: the 100k peak within 10% of the 10k peak.

    python benchmarks/bench_predict.py                      # ~3-4 min on 2 CPU cores
    python benchmarks/bench_predict.py --n-memory 30000     # quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common
from _common import peak_rss_bytes, work_folder

PER_FOLDER = 10_000
N_CLASSES = 16
MB = 1e6


def folders(work: Path, n: int) -> list[str]:
    """The sub-folders that hold the first `n` images (`n` a multiple of `PER_FOLDER`)."""
    return [str(work / "images" / f"part{k:02d}") for k in range(-(-n // PER_FOLDER))]


# ---- children --------------------------------------------------------------------------------
def prepare(work: Path, n: int) -> dict:
    """`n` small PNGs, `PER_FOLDER` per sub-folder (kept when already there)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    made = 0
    for k, folder in enumerate(folders(work, n)):
        folder = Path(folder)
        count = min(PER_FOLDER, n - k * PER_FOLDER)
        done = folder / ".done"
        if done.is_file() and int(done.read_text()) >= count:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = np.full((40, 48, 3), rng.integers(0, 256, 3), np.uint8)
            for _ in range(3):
                y, x = rng.integers(0, 32), rng.integers(0, 40)
                img[y:y + 8, x:x + 8] = rng.integers(0, 256, 3)
            Image.fromarray(img).save(folder / f"{i:05d}.png", compress_level=1)
            made += 1
        done.write_text(str(count))
    return {"made": made}


def build_tagger():  # noqa: ANN201 - a Tagger
    import torch

    from vlml import encoders
    from vlml.models import image_model
    from vlml.predict import Tagger
    from vlml.thresholds import Thresholds

    enc = encoders.load("toy-clip")
    torch.manual_seed(0)
    head = torch.nn.Linear(enc.embed_dim, N_CLASSES).eval()
    names = [f"class{c:02d}" for c in range(N_CLASSES)]
    model = image_model.from_clip_head(enc, head)
    return enc, head, Tagger(model, names, Thresholds.constant(names, 0.5), device=enc.device,
                             identity={"bench": "toy-clip + linear head"}, source="run")


def speed(work: Path, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from vlml.data.untagged import find_images
    from vlml.predict import write_predictions

    folder = Path(folders(work, args.n_speed)[0]).parent
    paths = [str(folder / p) for p in find_images(folder)][:args.n_speed]
    enc, head, tagger = build_tagger()
    model, bs = enc.model, args.batch_size

    def plain() -> np.ndarray:
        out = []
        with torch.no_grad():
            for a in range(0, len(paths), bs):
                images = []
                for p in paths[a:a + bs]:
                    with Image.open(p) as im:
                        images.append(enc.preprocess(im.convert("RGB")))
                emb = F.normalize(model.encode_image(torch.stack(images)).float(), dim=-1)
                out.append(torch.sigmoid(head(emb)).numpy())
        return np.concatenate(out)

    out_file = work / "speed.jsonl"
    sides = {
        "plain loop": plain,
        "Tagger.tag": lambda: tagger.tag(paths, batch_size=bs).scores,
        "write_predictions": lambda: write_predictions(tagger, paths, out_file, batch_size=bs,
                                                       progress=False),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    results = {}
    for fn in sides.values():  # warm-up (first calls allocate and load libraries)
        fn()
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            results[name] = sides[name]()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    diff = float(np.abs(results["plain loop"] - results["Tagger.tag"]).max())
    with open(out_file) as f:
        rows = sum(1 for _ in f)
    return {"times": times, "cpu": cpu, "n": len(paths), "max_abs_diff": diff, "rows": rows,
            "threads": torch.get_num_threads()}


def memory(work: Path, n: int, args: argparse.Namespace) -> dict:
    from vlml.predict import write_predictions

    _, _, tagger = build_tagger()
    if n == 0:  # the baseline: the model loaded, 64 images tagged
        inputs: list[str] = [folders(work, 1)[0] + f"/{i:05d}.png" for i in range(64)]
    else:
        inputs = folders(work, n)
    t = time.perf_counter()
    result = write_predictions(tagger, inputs, work / f"mem{n}.jsonl",
                               batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - t
    return {"rows": result.n_rows, "seconds": seconds, "images_per_s": result.n_rows / seconds}


def child(role: str, work: Path, args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if role == "prepare":
        result = prepare(work, max(args.n_memory, args.n_speed, PER_FOLDER))
    elif role == "speed":
        result = speed(work, args)
    else:
        result = memory(work, int(role.removeprefix("memory")), args)
    print(json.dumps({**result, "peak_rss": peak_rss_bytes()}))


# ---- parent ----------------------------------------------------------------------------------
def report_speed(s: dict, args: argparse.Namespace) -> bool:
    """Print the speed child's figures; True when the overhead is within the limit."""
    best = {k: min(v) for k, v in s["times"].items()}
    best_cpu = {k: min(v) for k, v in s["cpu"].items()}
    print(f"speed: {s['n']:,} images, toy-clip + linear head ({N_CLASSES} classes), batch "
          f"{args.batch_size}, {s['threads']} threads, best of {args.repeats}; "
          f"plain vs Tagger.tag max |diff| {s['max_abs_diff']:.1e}")
    for name, seconds in best.items():
        over = "" if name == "plain loop" else \
            f"overhead {seconds / best['plain loop'] - 1:+.1%} (CPU time " \
            f"{best_cpu[name] / best_cpu['plain loop'] - 1:+.1%})"
        print(f"  {name:18s}: {seconds:7.3f} s  {s['n'] / seconds:8.1f} images/s  {over}")
    print("  all runs (s): " + "; ".join(f"{k} {[round(x, 2) for x in v]}"
                                        for k, v in s["times"].items()))
    overhead = best["write_predictions"] / best["plain loop"] - 1
    ok = overhead <= args.overhead_limit and s["max_abs_diff"] < 1e-5
    print(f"  write_predictions overhead {overhead:+.1%} (target <= "
          f"+{args.overhead_limit:.0%}): {'PASS' if ok else 'FAIL'}")
    return ok


def spawn(role: str, work: Path, argv: list[str]) -> dict:
    return _common.spawn(__file__, role, work, argv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-speed", type=int, default=2048, help="images of the speed comparison")
    ap.add_argument("--n-memory", type=int, default=100_000,
                    help="the large memory run (a multiple of 10,000); the small one is 10,000")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--overhead-limit", type=float, default=0.10)
    ap.add_argument("--memory-limit", type=float, default=0.10)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--work-dir", default=None, help="image folder to keep (default: temp)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.n_memory % PER_FOLDER or args.n_memory < PER_FOLDER:
        ap.error(f"--n-memory must be a multiple of {PER_FOLDER:,}")
    if args.child:
        child(args.child, Path(args.work_dir), args)
        return 0

    passed = list(sys.argv[1:] if argv is None else argv)
    ok = True
    with work_folder(args.work_dir, "vlml-bench-predict-") as work:
        t = time.perf_counter()
        made = spawn("prepare", work, passed)["made"]
        print(f"images: {max(args.n_memory, args.n_speed):,} PNGs 48x40 ({made:,} written now, "
              f"{time.perf_counter() - t:.0f}s)")
        if not args.skip_speed:
            ok &= report_speed(spawn("speed", work, passed), args)
        if not args.skip_memory:
            base_m = spawn("memory0", work, passed)
            small = spawn(f"memory{PER_FOLDER}", work, passed)
            large = spawn(f"memory{args.n_memory}", work, passed)
            print(f"memory (peak RSS, each in a fresh process): model loaded + 64 images "
                  f"{base_m['peak_rss'] / MB:.0f} MB")
            for name, m in ((f"{PER_FOLDER:,}", small), (f"{args.n_memory:,}", large)):
                print(f"  predict {name:>7s} images: {m['peak_rss'] / MB:7.0f} MB  "
                      f"({m['images_per_s']:.0f} images/s, {m['seconds']:.0f} s, "
                      f"{m['rows']:,} rows)")
            growth = large["peak_rss"] / small["peak_rss"] - 1
            ok &= growth <= args.memory_limit
            verdict = "PASS" if growth <= args.memory_limit else "FAIL"
            print(f"  {args.n_memory:,} vs {PER_FOLDER:,}: {growth:+.1%} (target within "
                  f"+{args.memory_limit:.0%}): {verdict}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
