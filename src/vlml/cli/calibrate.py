"""`vlml calibrate RUN_DIR --catalog LABELLED [--target f1|precision=P|recall=R]`: per-class
decision thresholds fitted on a labelled catalog, saved into the run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command


def add_parsers(subparsers: Any) -> None:
    """Register the command."""
    c = add_command(
        subparsers, "calibrate", "fit per-class decision thresholds of a finished run on a "
        "labelled catalog (writes RUN_DIR/thresholds.json)",
        "vlml calibrate runs/vlpl --catalog catalogs/val/all.catalog.zip --target f1\n"
        "  vlml calibrate runs/vlpl --catalog catalogs/val/all.catalog.zip "
        "--target precision=0.9",
        description="Score the catalog with the run's model and fit one threshold per class on "
                    "the catalog's known labels (1 positive, 0 negative; -1 unknown entries are "
                    "left out): f1 = the threshold of the highest F1; precision=P = the lowest "
                    "threshold whose precision reaches P (the most recall under it); recall=R = "
                    "the highest threshold whose recall reaches R. A class without both a known "
                    "positive and a known negative keeps 0.5. Rewrites thresholds.json and "
                    "report.md of the run.")
    c.add_argument("run_dir", type=Path, help="a finished run folder")
    c.add_argument("--catalog", type=Path, required=True,
                   help="a catalog with the run's classes and known negatives (a fully tagged "
                        "one, e.g. made with `--option unlisted=negative`); not the training "
                        "catalog")
    c.add_argument("--target", default="f1",
                   help="f1 (default), precision=P or recall=R with P, R in (0, 1]")
    c.set_defaults(func=run_calibrate)


def calibration_labels(catalog: Any) -> Any:
    """The (N, C) labels thresholds are fitted on: those `vlml eval` scores against (the
    catalog's ground truth when it keeps one, else its labels when complete), else the labels
    as given with their unknown (-1) entries."""
    from vlml.recipes.base import evaluation_labels

    clean = evaluation_labels(catalog)
    return catalog.labels if clean is None else clean


def _check_calibratable(labels: Any, where: str) -> None:
    """`DataError` unless some class has both a known positive and a known negative."""
    import numpy as np

    from vlml.errors import DataError

    both = ((labels == 1).any(0) & (labels == 0).any(0)) if labels.size else np.zeros(0, bool)
    if not both.any():
        n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
        raise DataError(f"no class has both a known positive and a known negative ({n_pos} "
                        f"positive, {n_neg} negative entries in all), so no threshold can be "
                        "fitted; expected a catalog whose rows list negatives too (e.g. "
                        "`vlml data prepare manifest ... --option unlisted=negative`)", where)


def table(th: Any) -> str:
    """Per class: threshold, precision and recall on the calibration labels, and whether it
    is calibrated (or why not); a short plain-text table."""
    width = max([5, *map(len, th.class_names)])
    lines = [f"{'class':<{width}}  threshold  precision  recall  calibrated"]
    stats = th.stats or tuple({} for _ in th.class_names)
    for name, v, reason, s in zip(th.class_names, th.values, th.reasons, stats, strict=True):
        p, r = (f"{x:.3f}" if x is not None else "n/a"
                for x in (s.get("precision"), s.get("recall")))
        lines.append(f"{name:<{width}}  {v:9.3f}  {p:>9}  {r:>6}  "
                     + ("yes" if reason is None else f"no: {reason}"))
    return "\n".join(lines)


def run_calibrate(args: argparse.Namespace) -> int:
    from vlml import calibrate, runs
    from vlml.report.run_report import write_run_report
    from vlml.runs.lifecycle import RESULTS_FILE
    from vlml.thresholds import CATALOG_SOURCE
    from vlml.types import Catalog

    target = calibrate.parse_target(args.target)  # before any work: a typo writes nothing
    run = runs.load(args.run_dir)
    catalog = Catalog.load(args.catalog)
    labels = calibration_labels(catalog)
    _check_calibratable(labels, str(args.catalog))
    scores = run.scores(catalog)  # refuses other classes
    fitted = calibrate.fit_thresholds(scores, labels, run.class_names, target,
                                      source=f"{CATALOG_SOURCE}{args.catalog} "
                                             f"({catalog.n_images} images)")
    print(table(fitted))
    path = fitted.save(args.run_dir)
    n_cal = int(fitted.calibrated.sum())
    rest = (f"; the others keep {fitted.default:g}" if n_cal < len(fitted.class_names)
            else "")
    print(f"{n_cal} of {len(fitted.class_names)} classes calibrated (target {fitted.target}, "
          f"{catalog.n_images} images){rest}.")
    print(f"wrote {path}")
    results_file = Path(args.run_dir) / RESULTS_FILE
    if results_file.is_file():
        report = write_run_report(args.run_dir, json.loads(results_file.read_text()))
        print(f"wrote {report}")
    return 0
