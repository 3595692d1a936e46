"""`vlml features`, `vlml zero-shot`, `vlml pseudo-label`: the frozen CLIP's work, cached."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlml import encoders, metrics, pseudo
from vlml.cli.common import add_command, parse_options
from vlml.fileio import save_npy_atomic, write_json_atomic
from vlml.pseudo.clip_scores import SCORE_MODES, catalog_embeddings, similarities, zero_shot_scores
from vlml.report import write_pseudo_label_report
from vlml.types import UNKNOWN, Catalog


def add_parsers(subparsers: Any) -> None:
    f = add_command(subparsers, "features", "extract and cache CLIP embeddings (once per image)",
                    "vlml features --catalog train.catalog.zip --encoder ViT-B-32 "
                    "--pretrained openai --out cache")
    _encoder_args(f)
    f.add_argument("--out", required=True, type=Path, help="cache folder")
    f.add_argument("--views", default="plain,flip", help="comma list of plain, flip")
    f.add_argument("--dense", action="store_true", help="also cache dense tokens")
    f.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    f.add_argument("--skip-bad-images", action="store_true",
                   help="list unreadable images and mark their rows invalid instead of failing")
    f.set_defaults(func=run_features)

    z = add_command(subparsers, "zero-shot", "score a catalog zero-shot and report its mAP",
                    "vlml zero-shot --catalog test.catalog.zip --encoder toy-clip --cache cache")
    _encoder_args(z)
    _text_args(z)
    z.add_argument("--mode", choices=SCORE_MODES, default="softmax")
    z.add_argument("--tau", type=float, default=0.01, help="softmax temperature")
    z.add_argument("--scores-out", type=Path, help="save the (N, C) scores as .npy")
    z.set_defaults(func=run_zero_shot)

    p = add_command(subparsers, "pseudo-label",
                    "pseudo-label a catalog from CLIP similarities, with a quality report",
                    "vlml pseudo-label --catalog spml.catalog.zip --encoder toy-clip --cache cache "
                    "--out pseudo --param tau=0.03 --param theta=0.3")
    _encoder_args(p)
    _text_args(p)
    p.add_argument("--out", required=True, type=Path, help="folder for labels and report")
    with_targets = ", ".join(pseudo.list_pseudo_labelers(needs_targets=True))
    p.add_argument("--method", default="vlpl", choices=similarity_labellers(),
                   help=f"labeller fitted on the similarities alone ({with_targets} need "
                        "labelled targets: the semi-supervised recipes and the Python API use "
                        "them)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="labeller parameter, e.g. tau=0.03 theta=0.3")
    p.add_argument("--views", default="plain,flip", help="comma list of plain, flip")
    p.set_defaults(func=run_pseudo_label)


def similarity_labellers() -> list[str]:
    """The registered labellers `vlml pseudo-label` offers: those whose fit needs no targets."""
    return pseudo.list_pseudo_labelers(needs_targets=False)


def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--encoder", required=True,
                   help="open_clip architecture, ARCH:TAG, or an embedded model (toy-clip)")
    p.add_argument("--pretrained", help="pretrained tag (e.g. openai) or local checkpoint file")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=64)


def _text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=Path("cache"), help="feature cache folder")
    p.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help='prompt template with {name} (repeatable = ensemble), or a set name; '
                        'default "a photo of a {name}."')


def _load(args: argparse.Namespace) -> tuple[Catalog, encoders.Encoder]:
    return Catalog.load(args.catalog), encoders.load(args.encoder, args.pretrained,
                                                     device=args.device)


def _views(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _class_text(args: argparse.Namespace, encoder: encoders.Encoder, catalog: Catalog):
    templates = args.templates or encoders.DEFAULT_TEMPLATES
    return encoder.encode_classes(catalog.class_names, templates).cpu().numpy()


def run_features(args: argparse.Namespace) -> int:
    catalog, encoder = _load(args)
    caches = encoders.extract_features(catalog, encoder, args.out, views=_views(args.views),
                                       dense=args.dense, batch_size=args.batch_size,
                                       num_workers=args.workers, skip_bad=args.skip_bad_images)
    for view, cache in caches.items():
        bad = f", {len(cache.bad_images)} unreadable (listed in state.json)" \
            if cache.bad_images else ""
        print(f"{view}: {cache.path}  ({cache.n_images} images, dim {cache.embed_dim}{bad})")
    return 0


def run_zero_shot(args: argparse.Namespace) -> int:
    catalog, encoder = _load(args)
    emb = catalog_embeddings(catalog, encoder, args.cache, batch_size=args.batch_size)["plain"]
    scores = zero_shot_scores(similarities(emb, _class_text(args, encoder, catalog)),
                              args.mode, args.tau)
    if args.scores_out:
        save_npy_atomic(args.scores_out, scores)
    truth = catalog.ground_truth if catalog.ground_truth is not None else catalog.labels
    report = metrics.map_report(scores, truth, class_names=list(catalog.class_names))
    print(json.dumps({"catalog": str(args.catalog), "encoder": args.encoder, "mode": args.mode,
                      "map": report.map, "n_skipped_classes": report.n_skipped}))
    return 0


def run_pseudo_label(args: argparse.Namespace) -> int:
    catalog, encoder = _load(args)
    text = _class_text(args, encoder, catalog)
    labeller = pseudo.create(args.method, **parse_options(args.param))
    views = catalog_embeddings(catalog, encoder, args.cache, _views(args.views), args.batch_size)
    results = {}
    for view, emb in views.items():
        sims = similarities(emb, text)
        out = labeller.fit(sims).transform(sims)
        labels = results[view] = pseudo.combine_with_observed(catalog.labels, out)
        save_npy_atomic(args.out / f"pseudo_{view}.npy", labels)
        write_json_atomic(args.out / f"pseudo_{view}.json", out.provenance)
        print(f"{view}: {int((labels == 1).sum())} pseudo-positives, "
              f"{int((labels == 0).sum())} pseudo-negatives -> {args.out / f'pseudo_{view}.npy'}")
    if catalog.ground_truth is not None:
        first = next(iter(results))
        quality = metrics.pseudo_label_quality(results[first], catalog.ground_truth,
                                               list(catalog.class_names),
                                               mask=catalog.labels == UNKNOWN)
        print(f"quality report ({first} view): "
              f"{write_pseudo_label_report(args.out, quality, out.provenance)}")
    return 0
