"""`vlml demo`: the whole pipeline on the embedded toy world, offline, in a few CPU minutes.

toy scenes -> single-positive labels -> tiny-CLIP features (cached once) -> zero-shot mAP ->
VLPL pseudo-labels (precision/recall vs theta) -> AN, EM, VLPL and full-label training ->
report (Markdown + PNG) and `metrics.json`; with `ssmll=True` also CBSA vs CAP vs labeled-only
at 5% labelled data.

>>> from vlml.demo import run_demo
>>> metrics = run_demo("demo-out", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlml.demo.report import write_report
from vlml.demo.spml import SPMLSettings, clip_stage, save_catalogs, train_methods
from vlml.demo.tagging import tag_fresh_scenes
from vlml.demo.world import ToyWorld, make_world
from vlml.fileio import write_json_atomic


@dataclass(frozen=True)
class DemoSize:
    """How big the demo world is and how long it trains."""

    n_pool: int
    n_test: int
    spml: SPMLSettings


FULL = DemoSize(5000, 2000, SPMLSettings())
QUICK = DemoSize(1500, 600, SPMLSettings(epochs=10))


def _json_safe(obj: Any) -> Any:
    """NaN and inf become None so `metrics.json` is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _stage(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


def _spml_metrics(seed: int, quick: bool, clip: dict[str, Any], spml: dict[str, Any]
                  ) -> dict[str, Any]:
    keys = ("world", "zero_shot_map", "zero_shot_map_cosine", "chance_map", "tau",
            "pseudo_label")
    return {"seed": seed, "quick": quick, **{k: clip[k] for k in keys},
            "pseudo_label_sweep": clip["theta_sweep"],
            "test_map": {m: r["test_map"] for m, r in spml.items()}, "spml": spml}


def _ssmll_metrics(world: ToyWorld, out: Path, work: Path, seed: int, progress: bool
                   ) -> dict[str, Any]:
    from vlml.demo.ssmll import run_ssmll

    metrics = run_ssmll(world, work, work / "cache", seed, progress=progress)
    plot = metrics["context"]["plot"]
    if plot:  # relative to the report, which lives in `out`
        metrics["context"]["plot"] = (work / plot).relative_to(out).as_posix()
    return metrics


def run_demo(out: str | Path, seed: int = 0, ssmll: bool = False, quick: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo into `out`; returns the metrics also written to `out/metrics.json`.

    Re-running with the same arguments reuses the generated scenes, the feature cache and the
    finished runs, and gives the same numbers. `quick` shrinks the world and the training (for
    tests); the methods' ranking is the same.
    """
    t0 = time.perf_counter()
    size = QUICK if quick else FULL
    out = Path(out)
    work = out / f"work-seed{seed}{'-quick' if quick else ''}"
    cache = work / "cache"
    threads = torch.get_num_threads()
    # Results depend on the thread count, so each stage pins it: the CLIP image tower gains from
    # two threads, the small heads train fastest on one (thread hand-offs dominate otherwise).
    torch.set_num_threads(min(threads, 2))
    try:
        n = 5 if ssmll else 4
        _stage(progress, f"[1/{n}] toy world (seed {seed}) -> {work / 'world'}")
        world = make_world(work / "world", seed, size.n_pool, size.n_test, progress)
        cats = save_catalogs(world, work)
        _stage(progress, f"[2/{n}] tiny CLIP: features (cached once), zero-shot, pseudo-labels")
        clip = clip_stage(cats, cache, progress)
        _stage(progress, f"[3/{n}] single-positive training: AN, EM, VLPL, full labels")
        torch.set_num_threads(1)
        spml = train_methods(cats, work, cache, seed, size.spml, progress)
        metrics = _spml_metrics(seed, quick, clip, spml)
        metrics["tagging"] = tag_fresh_scenes(work / "runs" / "vlpl", out, seed)
        if ssmll:
            _stage(progress, f"[4/{n}] semi-supervised training: labeled-only, CAP, CBSA")
            metrics["ssmll"] = _ssmll_metrics(world, out, work, seed, progress)
        metrics["wall_seconds"] = time.perf_counter() - t0
        metrics = _json_safe(metrics)
        _stage(progress, f"[{n}/{n}] report")
        write_json_atomic(out / "metrics.json", metrics)
        write_report(metrics, out)
    finally:
        torch.set_num_threads(threads)
    return metrics


__all__ = ["run_demo", "DemoSize", "FULL", "QUICK"]
