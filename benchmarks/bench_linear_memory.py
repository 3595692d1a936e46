"""Peak memory of `linear` mode on a COCO-size problem: memory-mapped fp16 features, 10 epochs.

The problem: 82,000 x 768 float16 train features (the plain view and its flip), 16,400 x 768
val and 40,000 x 768 test features (COCO val2014 size), random unit vectors written with
`np.lib.format.open_memmap`; 80 classes; one random observed positive per train image and
random clean val/test labels. The training is the SPML recipe's own linear phase: VLPL
pseudo-labels for both train views from the features and random class-text vectors
(`vlml.recipes.spml.recipe.clip_pseudo_labels`), `FeatureInputs` over the memory maps, a
`LinearHead` trained by `vlml.recipes.spml.recipe._train_phase` (the `vlml.engine.Trainer`,
clean-val mAP every epoch, checkpoints) with the `vlpl` loss, then test scores with the best
weights - what `vlml.runs.run` runs for `model.mode: linear, model.features: clip` after the
features exist.

Each part runs in its own fresh Python process, and each process reports its own peak
resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`; pages of the memory-mapped
files it touched count too). This parent process imports neither numpy nor torch, so the
peak it had when it started the child (which Linux folds into a child's ru_maxrss) stays small.

- prepare: write the arrays (not measured);
- baseline: `import torch, vlml.recipes.spml` and nothing else;
- train: the run above, `--epochs` epochs (default 10);
- naive (unless `--no-naive`): the same run with every array loaded into RAM as float32, for
  `--naive-epochs` epochs (the peak is reached when the arrays are loaded).

The batch size is `--batch-size` (default 256, not the recipe's default 8: at 8 an epoch is
10,250 steps, about 16 s here, so 10 epochs take minutes without changing the peak); the
script reports steps/s, and the peak reached once the pseudo-labels exist (before training).
PASS when the train run's peak is under `--limit-gb` GB (10^9 bytes; default 2, the issue
"Training engine, every SPML loss, and the VLPL recipe"), FAIL (exit 1) otherwise.

    python benchmarks/bench_linear_memory.py                 # ~1 minute on 2 idle CPU cores
    python benchmarks/bench_linear_memory.py --batch-size 8 --epochs 1   # the recipe's batch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common
from _common import peak_rss_bytes, work_folder

ARRAYS = ("train_plain", "train_flip", "val", "test")
GB = 1e9


# ---- child: write the problem ----------------------------------------------------------------
def prepare(folder: Path, args: argparse.Namespace) -> None:
    """Unit-norm fp16 features (flip = plain + noise, renormalised) and int8 labels as .npy."""
    import numpy as np

    from vlml.fileio import save_npy_atomic

    rng = np.random.default_rng(args.seed)
    sizes = {"train_plain": args.n_train, "val": args.n_val, "test": args.n_test}
    chunk = 8192
    for name, n in sizes.items():
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float16,
                                        shape=(n, args.dim))
        flip = (np.lib.format.open_memmap(folder / "train_flip.npy", mode="w+",
                                          dtype=np.float16, shape=(n, args.dim))
                if name == "train_plain" else None)
        for a in range(0, n, chunk):
            x = rng.standard_normal((min(chunk, n - a), args.dim), dtype=np.float32)
            out[a:a + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
            if flip is not None:
                x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
                flip[a:a + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        if flip is not None:
            flip.flush()
            del flip
    c = args.n_classes
    observed = np.full((args.n_train, c), -1, dtype=np.int8)
    observed[np.arange(args.n_train), rng.integers(0, c, args.n_train)] = 1
    save_npy_atomic(folder / "train_labels.npy", observed)
    for name in ("val", "test"):
        truth = (rng.random((sizes[name], c)) < 2.9 / c).astype(np.int8)  # COCO: ~2.9 per image
        truth[np.arange(sizes[name]), rng.integers(0, c, sizes[name])] = 1
        save_npy_atomic(folder / f"{name}_labels.npy", truth)


# ---- child: train ----------------------------------------------------------------------------
class _TextVectors:
    """Stands in for a CLIP encoder where `clip_pseudo_labels` only asks for class texts."""

    def __init__(self, n_classes: int, dim: int, seed: int) -> None:
        import numpy as np
        import torch

        t = np.random.default_rng(seed + 1).standard_normal((n_classes, dim)).astype(np.float32)
        self.vectors = torch.from_numpy(t / np.linalg.norm(t, axis=1, keepdims=True))

    def encode_classes(self, class_names, templates):  # noqa: ANN001, ANN201 - duck type
        return self.vectors


def train(folder: Path, args: argparse.Namespace, naive: bool) -> dict:
    """The recipe's linear phase on the arrays in `folder`; returns timings and counts."""
    import numpy as np
    import torch

    from vlml import config
    from vlml.engine import BEST, load_weights, predict
    from vlml.models import LinearHead
    from vlml.recipes.spml import recipe as vlpl
    from vlml.recipes.spml.data import SPMLSplits
    from vlml.runs import evaluate_scores
    from vlml.types import Catalog

    t0 = time.perf_counter()

    def features(name: str) -> np.ndarray:
        x = np.load(folder / f"{name}.npy", mmap_mode="r")
        return np.asarray(x, dtype=np.float32) if naive else x

    feats = {"train": {"plain": features("train_plain"), "flip": features("train_flip")},
             "val": {"plain": features("val")}, "test": {"plain": features("test")}}
    classes = [f"class{c:02d}" for c in range(args.n_classes)]

    def catalog(name: str, labels: np.ndarray) -> Catalog:
        return Catalog([f"{name}/{i:06d}.jpg" for i in range(len(labels))], classes, labels,
                       split=name)

    splits = {"train": catalog("train", np.load(folder / "train_labels.npy")),
              "val": catalog("val", np.load(folder / "val_labels.npy")),
              "test": catalog("test", np.load(folder / "test_labels.npy"))}
    epochs = args.naive_epochs if naive else args.epochs
    run_dir = folder / ("run-naive" if naive else "run")
    cfg = config.build(vlpl.SPMLConfig, {
        "data": {"dataset": "coco2014"},
        "model": {"mode": "linear", "features": "clip"},
        "loss": {"name": "vlpl"},
        "optim": {"lr": args.lr, "batch_size": args.batch_size,
                  "eval_batch_size": args.eval_batch_size, "epochs": epochs},
        "device": "cpu", "seed": args.seed, "out_dir": str(run_dir), "progress": False})
    device = torch.device("cpu")
    text = _TextVectors(args.n_classes, args.dim, args.seed)
    pseudo_views, _ = vlpl.clip_pseudo_labels(cfg, text, feats["train"], splits["train"])
    t_setup = time.perf_counter() - t0
    peak_pseudo = peak_rss_bytes()
    inputs = vlpl._feature_inputs(cfg, feats)
    model = LinearHead(args.dim, args.n_classes)
    t1 = time.perf_counter()
    fit = vlpl._train_phase(cfg, model, inputs, SPMLSplits(**splits), pseudo_views, run_dir,
                            epochs, cfg.optim.lr, device)
    t_fit = time.perf_counter() - t1
    model.load_state_dict(load_weights(run_dir / BEST, device))
    test = evaluate_scores(predict(model, inputs["test"].eval_batches(), device).probs,
                           splits["test"])
    steps = epochs * -(-args.n_train // args.batch_size)
    return {"epochs": epochs, "steps": steps, "fit_seconds": t_fit, "setup_seconds": t_setup,
            "total_seconds": time.perf_counter() - t0, "steps_per_s": steps / t_fit,
            "best_epoch": fit.best_epoch, "val_map": fit.best["val_map"],
            "test_map": test["test_map"], "peak_after_pseudo": peak_pseudo}


def child(role: str, folder: Path, args: argparse.Namespace) -> None:
    result: dict = {}
    if role == "prepare":
        prepare(folder, args)
    elif role == "baseline":
        import torch  # noqa: F401

        import vlml.recipes.spml  # noqa: F401
    else:
        result = train(folder, args, naive=role == "naive")
    print(json.dumps({**result, "peak_rss": peak_rss_bytes()}))


# ---- parent ----------------------------------------------------------------------------------
def spawn(role: str, folder: Path, argv: list[str]) -> dict:
    return _common.spawn(__file__, role, folder, argv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=82_000)
    ap.add_argument("--n-val", type=int, default=16_400)
    ap.add_argument("--n-test", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=768, help="feature size (ViT-L/14: 768)")
    ap.add_argument("--n-classes", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-epochs", type=int, default=1)
    ap.add_argument("--no-naive", action="store_true", help="skip the float32-in-RAM run")
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--child", choices=("prepare", "baseline", "train", "naive"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, Path(args.work_dir), args)
        return 0

    passed = list(sys.argv[1:] if argv is None else argv)
    with work_folder(args.work_dir, "vlml-bench-mem-") as folder:
        t = time.perf_counter()
        spawn("prepare", folder, passed)
        size = sum((folder / f"{a}.npy").stat().st_size for a in ARRAYS)
        print(f"problem: {args.n_train:,} x {args.dim} fp16 train features (plain + flip), "
              f"{args.n_val:,} val, {args.n_test:,} test, {args.n_classes} classes; "
              f"{size / GB:.2f} GB on disk, written in {time.perf_counter() - t:.0f}s")
        base = spawn("baseline", folder, passed)
        print(f"baseline (import torch + vlml): peak {base['peak_rss'] / GB:.2f} GB")
        run = spawn("train", folder, passed)
        extra = (run["peak_rss"] - base["peak_rss"]) / GB
        print(f"train ({run['epochs']} epoch(s), batch {args.batch_size}, {run['steps']:,} steps): "
              f"peak {run['peak_rss'] / GB:.2f} GB (+{extra:.2f} over baseline); pseudo-labels "
              f"{run['setup_seconds']:.1f}s, fit "
              f"{run['fit_seconds']:.1f}s ({run['steps_per_s']:.0f} steps/s), total "
              f"{run['total_seconds']:.1f}s; best epoch {run['best_epoch']}, "
              f"test mAP {run['test_map']:.2f} (random labels: chance level)")
        print(f"  peak once the pseudo-labels were made (before training): "
              f"{run['peak_after_pseudo'] / GB:.2f} GB")
        if not args.no_naive:
            naive = spawn("naive", folder, passed)
            print(f"naive (all arrays in RAM as float32, {naive['epochs']} epoch(s)): peak "
                  f"{naive['peak_rss'] / GB:.2f} GB "
                  f"(+{(naive['peak_rss'] - base['peak_rss']) / GB:.2f} over baseline)")
    peak = run["peak_rss"] / GB
    if peak < args.limit_gb:
        print(f"PASS: peak {peak:.2f} GB < {args.limit_gb} GB")
        return 0
    print(f"FAIL: peak {peak:.2f} GB >= {args.limit_gb} GB")
    return 1


if __name__ == "__main__":
    sys.exit(main())
