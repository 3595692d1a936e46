"""`vlml demo`: the whole pipeline on the embedded toy world, ending in a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command


def add_parsers(subparsers: Any) -> None:
    d = add_command(subparsers, "demo",
                    "run the whole pipeline on the embedded toy world (offline, CPU, minutes)",
                    "vlml demo --out demo-out --seed 0 --ssmll",
                    description="Generate toy scenes, draw single-positive labels, cache "
                    "tiny-CLIP features, pseudo-label, train AN, EM and VLPL (and, with "
                    "--ssmll, CBSA vs CAP vs labeled-only at 5% labelled), and write "
                    "report.md, PNG plots and metrics.json. Re-running resumes.")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
    d.add_argument("--seed", type=int, default=0, help="which toy world (and training seed)")
    d.add_argument("--ssmll", action="store_true",
                   help="also run the semi-supervised methods (CBSA, CAP, labeled-only)")
    d.add_argument("--quick", action="store_true", help="a smaller world and shorter training")
    d.set_defaults(func=run_demo)

    s = add_command(subparsers, "sample-photos",
                    "write toy photos with a user's kind of tags, to try the own-images path",
                    "vlml sample-photos --out photos",
                    description="Write toy scenes as PNG files with the labels a user has: "
                    "train/tags.csv (one tag per photo), train/tags_few.csv (5% fully tagged, "
                    "the rest untagged), test/tags.csv (every present class tagged), new/ "
                    "(untagged), val/tags.csv (a few more fully tagged, to calibrate "
                    "thresholds) and classes.txt. No catalog and no ground truth is written "
                    "beside them. See the README section 'Your own images'.")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="which toy world (the demo's seeds)")
    s.add_argument("--n-train", type=int, default=1500, help="training photos")
    s.add_argument("--n-test", type=int, default=600, help="test photos")
    s.add_argument("--n-val", type=int, default=200,
                   help="fully tagged photos to calibrate thresholds on (val/)")
    s.set_defaults(func=run_sample_photos)


def run_demo(args: argparse.Namespace) -> int:
    from vlml.demo import run_demo as demo

    metrics = demo(args.out, seed=args.seed, ssmll=args.ssmll, quick=args.quick,
                   progress=not args.quiet)
    print("test mAP: " + ", ".join(f"{m} {v:.2f}" for m, v in metrics["test_map"].items()))
    if "ssmll" in metrics:
        print("semi-supervised test mAP: " + ", ".join(
            f"{m} {r['test_map']:.2f}" for m, r in metrics["ssmll"]["methods"].items()))
    print(f"report: {(args.out / 'report.md').resolve()}")
    print(f"metrics: {(args.out / 'metrics.json').resolve()}  "
          f"({metrics['wall_seconds']:.0f} s)")
    return 0


def run_sample_photos(args: argparse.Namespace) -> int:
    from vlml.demo.photos import write_sample_photos

    out = write_sample_photos(args.out, seed=args.seed, n_train=args.n_train,
                              n_test=args.n_test, n_val=args.n_val, progress=not args.quiet)
    print(f"sample photos: {out.resolve()} (train/tags.csv: one tag per photo; "
          "train/tags_few.csv: 5% fully tagged; test/tags.csv, val/tags.csv: every tag; new/: "
          "untagged; classes.txt)")
    return 0
