"""The demo's semi-supervised part: labeled-only vs CAP vs CBSA at 5% labelled data.

Protocol (docs/methods.md 1.2 on the toy world): the first `int(0.05 n)` images of
`RandomState(1).permutation(n)` of the pool keep all their labels, the others none; clean test
scenes. Everything trains on cached frozen tiny-CLIP outputs (dense tokens for CBSA, global
embeddings for CAP), extracted once into the shared feature cache:

- "labeled_only": the CBSA model's supervised warm-up on the labelled images only
  (`optim.epochs: 0` of the CBSA recipe, i.e. exactly the first phase of the "cbsa" run);
- "cap": the CAP recipe on the same frozen tiny CLIP (`model.mode: linear`,
  `model.features: clip`: a linear head on the global embeddings), warm-up then CAP
  pseudo-labels;
- "cbsa": the full CBSA recipe (label-specific alignment with learned prompts, context
  task, CAP pseudo-labels from an EMA teacher whose scores are fused with the tiny CLIP's
  zero-shot scores, `pseudo.prior_weight`).

Each method gets a learning rate and a warm-up long enough for its labelled-only phase to
converge (measured: the linear head on unit-norm features needs a larger rate than the prompts,
and both plateau well within `warmup_epochs`), so no baseline is handicapped by under-training.
Both semi-supervised methods use an EMA decay of 0.99: the demo's semi-supervised phase is
200-500 steps, and at docs/methods.md's 0.9997 the teacher (and the evaluated EMA model) would stay
mostly the warm-up model. Runs live in `out_dir/ssmll/<method>` and are resumable: a second
call reuses finished runs. Results depend on the torch thread count (the demo pins it); same
seed and threads, same numbers.

The CBSA head here is the single-prompt form (class bias), `s1 = 5` and the token adapter,
all options docs/methods.md 5 marks as choices: on this world they beat the dual prompt with
`s1 = 20` by 2-5 mAP. Measured (see `tests/test_demo_ssmll.py` and the README): the context
task recovers the planted groups, and CBSA is ahead of its labelled-only warm-up and of CAP
on seeds 0-2 (quick world by 1.3-3.7 mAP, full world by 0.5-0.9), thanks to the zero-shot prior
in its pseudo-labels; without it CBSA falls below its warm-up.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlml import config, encoders, runs
from vlml.demo.world import ToyWorld
from vlml.errors import ConfigError
from vlml.recipes.ssmll import cap, cbsa

ENCODER = "toy-clip"
P_LABELED = 0.05
LABEL_SEED = 1                     # the CAP/D2L protocol's permutation seed
METHODS = ("labeled_only", "cap", "cbsa")


@dataclass(frozen=True)
class SSMLLSettings:
    """Training budget and optimisation of the demo's semi-supervised runs.

    Shared by the three methods: warm-up length and batch, semi-supervised epochs, batch mix
    (4 labelled + 60 unlabelled per step, the CAP reference ratio at p = 0.05), EMA decay of
    the teacher (and of the evaluated model). Per model: the learning rate (prompts through
    the text tower vs a linear head on unit-norm features); for CBSA the prompt contexts, the
    head's choices (`dual`, `s1`, `adapter`; docs/methods.md 5.2-5.4 and 5.7) and the weight of the
    zero-shot prior in its pseudo-labels (`prior_weight`, `vlml.pseudo.prior`).
    """

    warmup_epochs: int = 20
    epochs: int = 8
    warmup_batch_size: int = 16
    labeled_batch_size: int = 4
    unlabeled_batch_size: int = 60
    ema_decay: float = 0.99
    cbsa_lr: float = 3e-3
    cap_lr: float = 1e-2
    n_ctx: int = 4
    prompt_init: str | None = "a photo of a"
    dual: bool = False
    s1: float = 5.0
    adapter: bool = True
    context_k: int | str = "auto"
    prior_weight: float = 0.5


SETTINGS = SSMLLSettings()  # the quick demo only shrinks the world


def _catalog_files(world: ToyWorld, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return (world.pool.save(folder / "pool.catalog.zip"),
            world.test.save(folder / "test.catalog.zip"))


def _common(paths: tuple[Path, Path], cache_dir: Path, seed: int, s: SSMLLSettings,
            progress: bool) -> dict[str, Any]:
    return {
        "data": {"dataset": "toy", "train_catalog": str(paths[0]), "test_catalog": str(paths[1]),
                 "regime": "semi_supervised", "p": P_LABELED, "label_seed": LABEL_SEED,
                 "selection": "last"},
        "encoder": {"name": ENCODER, "pretrained": None, "batch_size": 256},
        "optim": {"warmup_epochs": s.warmup_epochs, "epochs": s.epochs,
                  "warmup_batch_size": s.warmup_batch_size,
                  "labeled_batch_size": s.labeled_batch_size,
                  "unlabeled_batch_size": s.unlabeled_batch_size, "ema_decay": s.ema_decay,
                  "eval_batch_size": 1024, "num_workers": 0},
        "seed": seed, "device": "cpu", "cache_dir": str(cache_dir), "progress": progress,
    }


def method_config(method: str, paths: tuple[Path, Path], run_dir: Path, cache_dir: Path,
                  seed: int, settings: SSMLLSettings, progress: bool = False
                  ) -> cbsa.Config | cap.Config:
    """The recipe config of one demo method ("labeled_only", "cap" or "cbsa")."""
    base = _common(paths, cache_dir, seed, settings, progress)
    base["name"] = f"demo-ssmll-{method}"
    base["out_dir"] = str(run_dir)
    if method == "cap":
        base["optim"]["lr"] = settings.cap_lr
        base["model"] = {"mode": "linear", "features": "clip", "hidden": 0}
        return config.build(cap.Config, base)
    if method not in ("labeled_only", "cbsa"):
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    base["optim"]["lr"] = settings.cbsa_lr
    if method == "labeled_only":
        base["optim"]["epochs"] = 0
    base["model"] = {"inputs": "cache", "prompts": "learned", "n_ctx": settings.n_ctx,
                     "prompt_init": settings.prompt_init, "dual": settings.dual,
                     "s1": settings.s1, "adapter": settings.adapter,
                     "feature": "label_specific"}
    base["context"] = {"enabled": True, "k": settings.context_k, "unlabeled": True}
    base["pseudo"] = {"method": "cap", "params": {}, "prior_weight": settings.prior_weight}
    return config.build(cbsa.Config, base)


def extract(paths: tuple[Path, Path], cache_dir: Path, progress: bool) -> None:
    """Embeddings and dense tokens of the pool (plain + flip) and test (plain), cached once."""
    from vlml.types import Catalog

    encoder = encoders.load(ENCODER, device="cpu")
    for path, views in ((paths[0], ("plain", "flip")), (paths[1], ("plain",))):
        encoders.extract_features(Catalog.load(path), encoder, cache_dir, views=views,
                                  dense=True, batch_size=256, progress=progress)


def train_method(method: str, paths: tuple[Path, Path], runs_dir: Path, cache_dir: Path,
                 seed: int, settings: SSMLLSettings, progress: bool = False) -> dict[str, Any]:
    """Train (or reuse) one method's run under `runs/<method>`; its numbers for the report."""
    t0 = time.perf_counter()
    cfg = method_config(method, paths, runs_dir / method, cache_dir, seed, settings, progress)
    result = runs.run(cfg)
    saved = json.loads((result.run_dir / "results.json").read_text())
    out: dict[str, Any] = {"test_map": float(result.test_map),
                           "per_class_ap": saved["test_per_class_ap"],
                           "phase": result.phase,
                           "wall_seconds": time.perf_counter() - t0}
    if saved["pseudo_quality"]:
        last = saved["pseudo_quality"][-1]
        out["pseudo_label_precision"] = last.get("pl_pos_precision")
        out["pseudo_label_recall"] = last.get("pl_pos_recall")
        out["pseudo_score_map"] = last.get("pl_score_map")
        first = saved["pseudo_quality"][0]
        if "teacher_pl_score_map" in first:  # the warm-up teacher alone vs with the prior
            out["first_epoch_score_map"] = first["pl_score_map"]
            out["first_epoch_teacher_score_map"] = first["teacher_pl_score_map"]
    if saved.get("context"):
        out["context"] = saved["context"]
    return out


def run_ssmll(world: ToyWorld, out_dir: Path, cache_dir: Path, seed: int,
              progress: bool = True) -> dict[str, Any]:
    """Labeled-only, CAP and CBSA on `world.pool` at p = 0.05, evaluated on `world.test`.

    Returns (JSON-serialisable) `{"p", "n_labeled", "n_unlabeled", "settings", "methods":
    {method: {"test_map" (percent), "per_class_ap" (class -> AP in [0, 1]), "wall_seconds",
    ...}}, "context": {"ari", "k", "clusters", "plot"}, "feature_seconds", "wall_seconds"}`;
    `context.plot` (CBSA's clustered label-correlation matrix) is relative to `out_dir`.
    """
    t0 = time.perf_counter()
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    settings = SETTINGS
    runs_dir = out_dir / "ssmll"
    paths = _catalog_files(world, runs_dir)
    t_feat = time.perf_counter()
    extract(paths, cache_dir, progress)
    feature_seconds = time.perf_counter() - t_feat
    methods = {}
    for method in METHODS:
        if progress:
            print(f"  training {method} ...", flush=True)
        methods[method] = train_method(method, paths, runs_dir, cache_dir, seed, settings, progress)
    ctx = methods["cbsa"].pop("context")
    methods["labeled_only"].pop("context", None)
    saved = json.loads((runs_dir / "cbsa" / "results.json").read_text())
    plot = runs_dir / "cbsa" / "contexts.png"
    return {
        "p": P_LABELED, "n_labeled": int(saved["n_labeled"]),
        "n_unlabeled": int(saved["n_unlabeled"]), "settings": asdict(settings),
        "methods": methods,
        "context": {"ari": ctx.get("adjusted_rand_index"), "k": int(ctx["k"]),
                    "k_method": ctx.get("k_method"), "clusters": ctx["contexts"],
                    "plot": plot.relative_to(out_dir).as_posix() if plot.is_file() else None},
        "feature_seconds": feature_seconds,
        "wall_seconds": time.perf_counter() - t0,
    }


__all__ = ["run_ssmll", "SSMLLSettings", "SETTINGS", "METHODS", "method_config",
           "train_method", "extract"]
