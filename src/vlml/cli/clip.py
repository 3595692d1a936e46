"""`vlml features`, `vlml zero-shot`, `vlml pseudo-label`: the frozen CLIP's work, cached."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vlml import encoders, metrics
from vlml.cli.common import add_command, parse_options, say
from vlml.errors import DataError
from vlml.fileio import write_json_atomic
from vlml.outputs import check_suffix, write_named
from vlml.types import LABELS_GIVEN, UNKNOWN, Catalog

# `vlml.pseudo.clip_scores.SCORE_MODES`, spelled out so that building the parser imports no
# torch (a test keeps them equal)
SCORE_MODES = ("softmax", "cosine")


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
    check = f.add_mutually_exclusive_group()
    check.add_argument("--verify", action="store_true",
                       help="only check the existing caches' checksums in full (nothing is "
                            "extracted); exit 2 naming the files and rows when any differ")
    check.add_argument("--repair", action="store_true",
                       help="check the existing caches in full and re-extract only the blocks "
                            "of rows whose checksums differ")
    f.set_defaults(func=run_features)

    z = add_command(subparsers, "zero-shot",
                    "score a catalog zero-shot and report its mAP (against the ground truth, "
                    "else the known given labels; classes without both a known positive and a "
                    "known negative are left out, and the output says why)",
                    "vlml zero-shot --catalog test.catalog.zip --encoder toy-clip --cache cache")
    _encoder_args(z)
    _text_args(z)
    z.add_argument("--mode", choices=SCORE_MODES, default="softmax",
                   help="softmax over the classes (needs 2 or more) or the raw cosine")
    z.add_argument("--tau", type=float, default=0.01, help="softmax temperature")
    z.add_argument("--scores-out", type=Path,
                   help="save the (N, C) scores with their image paths and class names: .npz, "
                        ".csv, .jsonl, or .npy (with a .names.json beside it)")
    z.set_defaults(func=run_zero_shot)

    p = add_command(subparsers, "pseudo-label",
                    "pseudo-label a catalog from CLIP similarities, with a quality report",
                    "vlml pseudo-label --catalog spml.catalog.zip --encoder toy-clip --cache cache "
                    "--out pseudo --param tau=0.03 --param theta=0.3")
    _encoder_args(p)
    _text_args(p)
    p.add_argument("--out", required=True, type=Path, help="folder for labels and report")
    p.add_argument("--method", default="vlpl",
                   help="a registered labeller fitted on the similarities alone (vlpl, "
                        "class_threshold, fixed, topk, ...: vlml.pseudo.list_pseudo_labelers("
                        "needs_targets=False)); cap and mat need labelled targets: the "
                        "semi-supervised recipes and the Python API use them")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="labeller parameter, e.g. tau=0.03 theta=0.3")
    p.add_argument("--views", default="plain,flip", help="comma list of plain, flip")
    p.set_defaults(func=run_pseudo_label)


def similarity_labellers() -> list[str]:
    """The registered labellers `vlml pseudo-label` offers: those whose fit needs no targets."""
    from vlml import pseudo

    return pseudo.list_pseudo_labelers(needs_targets=False)


def _check_method(method: str) -> None:
    import difflib

    from vlml import pseudo
    from vlml.errors import UnknownChoiceError

    names = similarity_labellers()
    if method not in names:
        close = difflib.get_close_matches(method, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        needs = " (it needs labelled targets)" if method in pseudo.list_pseudo_labelers() else ""
        raise UnknownChoiceError(f"--method {method!r}{needs}: expected one of "
                                 f"{', '.join(map(repr, names))}.{hint}")


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


def _load_catalog(args: argparse.Namespace, command: str) -> Catalog:
    """The catalog, refused before any work when it has no class to score."""
    catalog = Catalog.load(args.catalog)
    if not catalog.n_classes:
        raise DataError(f"the catalog has no class names, so `vlml {command}` has nothing to "
                        "score; prepare it with the class names (e.g. `vlml data prepare images "
                        "--classes-file FILE`)", str(args.catalog))
    return catalog


def _load_encoder(args: argparse.Namespace) -> encoders.Encoder:
    return encoders.load(args.encoder, args.pretrained, device=args.device)


def _no_ground_truth_reason(catalog: Catalog) -> str:
    """Why `catalog.ground_truth` is None, in words."""
    if catalog.labels_source == LABELS_GIVEN:
        return ("its labels were given by a user (provenance: labels 'given'), not ground "
                "truth")
    return "it keeps no ground truth (no true labels, and its labels have unknown entries)"


def _views(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _class_text(args: argparse.Namespace, encoder: encoders.Encoder, catalog: Catalog):
    templates = args.templates or encoders.DEFAULT_TEMPLATES
    return encoder.encode_classes(catalog.class_names, templates).cpu().numpy()


def run_features(args: argparse.Namespace) -> int:
    from vlml import distributed

    catalog, encoder = _load(args)
    if args.verify:  # under torchrun: rank 0 checks, the others have nothing to do
        return _verify_features(args, catalog, encoder) if distributed.is_main() else 0
    caches = encoders.extract_features(catalog, encoder, args.out, views=_views(args.views),
                                       dense=args.dense, batch_size=args.batch_size,
                                       num_workers=args.workers, skip_bad=args.skip_bad_images,
                                       repair=args.repair)
    for view, cache in caches.items():
        bad = f", {len(cache.bad_images)} unreadable (listed in state.json)" \
            if cache.bad_images else ""
        say(f"{view}: {cache.path}  ({cache.n_images} images, dim {cache.embed_dim}{bad})")
    return 0


def _verify_features(args: argparse.Namespace, catalog: Catalog,
                     encoder: encoders.Encoder) -> int:
    """`vlml features --verify`: one line per view (OK, NOT CHECKED or what is wrong); 2 when
    any cache is missing or damaged."""
    from vlml.encoders import cache as feature_cache
    from vlml.encoders.cache_integrity import corrupt_error

    failed = []
    for view in _views(args.views):
        key = feature_cache.FeatureKey.of(encoder, catalog, view)
        try:
            cache = feature_cache.FeatureCache.open(args.out, key, dense=args.dense)
        except (feature_cache.CacheMissError, DataError) as e:
            print(f"{view}: NOT USABLE: {e}")
            failed.append(view)
            continue
        if cache.legacy:
            print(f"{view}: NOT CHECKED {cache.path}: it has no checksums (written by an older "
                  "vlml); header and size are fine. Delete the folder and run `vlml features` "
                  "again to rebuild it with checksums")
            continue
        t = time.perf_counter()
        bad = cache.verify()
        if bad:
            print(f"{view}: DAMAGED {corrupt_error(cache.path, bad)}")
            failed.append(view)
            continue
        files = list(cache.meta["arrays"].values())
        size = sum((cache.path / f["file"]).stat().st_size for f in files)
        print(f"{view}: OK {cache.path} ({cache.n_images} rows of "
              f"{' + '.join(f['file'] for f in files)} in blocks of {cache.block_rows}, "
              f"{size / 1e6:.1f} MB checked in {time.perf_counter() - t:.2f} s)")
    if failed:
        print(f"vlml features --verify: {', '.join(failed)} failed; --repair re-extracts "
              "damaged rows, a missing or unreadable cache is rebuilt by `vlml features` "
              "without --verify (after deleting its folder)", file=sys.stderr)
        return 2
    return 0


def run_zero_shot(args: argparse.Namespace) -> int:
    """Print one JSON line: `map` (percent, null when no class can be scored), what it was
    computed against, the skipped classes' count and, when any, a `note` saying why (also on
    stderr)."""
    from vlml.pseudo.clip_scores import catalog_embeddings, similarities, zero_shot_scores

    catalog = _load_catalog(args, "zero-shot")
    if args.scores_out:
        check_suffix(args.scores_out, "--scores-out")
    # the mode, tau and the class count (softmax needs 2 classes) before any encoding work
    zero_shot_scores(np.zeros((0, catalog.n_classes), np.float32), args.mode, args.tau)
    encoder = _load_encoder(args)
    emb = catalog_embeddings(catalog, encoder, args.cache, batch_size=args.batch_size)["plain"]
    scores = zero_shot_scores(similarities(emb, _class_text(args, encoder, catalog)),
                              args.mode, args.tau)
    if args.scores_out:
        written = write_named(args.scores_out, scores, _image_names(catalog),
                              catalog.class_names)
        print(f"scores: {', '.join(map(str, written))}", file=sys.stderr)
    if catalog.ground_truth is not None:
        truth, against = catalog.ground_truth, "ground truth"
    else:
        truth = catalog.labels
        against = ("the catalog's known labels, not ground truth: "
                   f"{_no_ground_truth_reason(catalog)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the note below says the same, once
        report = metrics.map_report(scores, truth, class_names=list(catalog.class_names))
    result = {"catalog": str(args.catalog), "encoder": args.encoder, "mode": args.mode,
              "map": metrics.finite_or_none(report.map), "evaluated_against": against,
              "n_skipped_classes": report.n_skipped}
    if report.note():
        result["note"] = report.note()
        print(f"vlml zero-shot: {report.note()}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def _image_names(catalog: Catalog) -> list[str]:
    return [str(p) for p in catalog.full_paths()]


def run_pseudo_label(args: argparse.Namespace) -> int:
    from vlml import pseudo
    from vlml.pseudo.clip_scores import catalog_embeddings, similarities
    from vlml.report import write_pseudo_label_report

    _check_method(args.method)
    catalog = _load_catalog(args, "pseudo-label")
    labeller = pseudo.create(args.method, **parse_options(args.param))
    # settings and class count (VLPL's softmax needs 2 classes) before any encoding work
    labeller.fit(np.zeros((0, catalog.n_classes), np.float32))
    encoder = _load_encoder(args)
    text = _class_text(args, encoder, catalog)
    views = catalog_embeddings(catalog, encoder, args.cache, _views(args.views), args.batch_size)
    results = {}
    for view, emb in views.items():
        sims = similarities(emb, text)
        out = labeller.fit(sims).transform(sims)
        labels = results[view] = pseudo.combine_with_observed(catalog.labels, out)
        write_named(args.out / f"pseudo_{view}.npy", labels, _image_names(catalog),
                    catalog.class_names)
        write_json_atomic(args.out / f"pseudo_{view}.json", out.provenance)
        print(f"{view}: {int((labels == 1).sum())} pseudo-positives, "
              f"{int((labels == 0).sum())} pseudo-negatives -> {args.out / f'pseudo_{view}.npy'}")
    if catalog.ground_truth is None:  # quality is measured against ground truth only
        print(f"pseudo-label quality: not computed: {_no_ground_truth_reason(catalog)}; "
              "precision and recall need labels known to be true")
        return 0
    if not (catalog.labels == UNKNOWN).any():
        print("pseudo-label quality: not computed: every label of the catalog is observed, so "
              "no entry was pseudo-labelled")
        return 0
    first = next(iter(results))
    quality = metrics.pseudo_label_quality(results[first], catalog.ground_truth,
                                           list(catalog.class_names),
                                           mask=catalog.labels == UNKNOWN)
    print(f"quality report ({first} view): "
          f"{write_pseudo_label_report(args.out, quality, out.provenance)}")
    return 0
