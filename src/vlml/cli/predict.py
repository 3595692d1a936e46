"""`vlml predict`: tag images with a trained run, or zero-shot with a CLIP, into JSONL or CSV.

Every argument is checked before a model is loaded or a file written: the output extension,
the threshold, top-k, the class list, the inputs (at least one image). torch and the models
are imported inside the command only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vlml.cli.common import add_command, say
from vlml.errors import ConfigError

USAGE = """vlml predict RUN_DIR INPUT [INPUT ...] --out FILE [options]
       vlml predict --zero-shot --encoder NAME (--classes A,B,C | --classes-file FILE)
                    INPUT [INPUT ...] --out FILE [options]"""

EXAMPLES = ("vlml predict runs/vlpl photos/new --out preds.jsonl\n"
            "  vlml predict runs/cbsa 'photos/new/*.png' --top-k 3 --threshold 0 --out top3.csv\n"
            "  vlml predict --zero-shot --encoder toy-clip --classes-file photos/classes.txt "
            "photos/new --out zs.jsonl")

DESCRIPTION = """Tag images: one row per image with its tags and a score per class.

INPUT: image files, folders (images inside, recursively), glob patterns (quote them) or catalog
files (.zip), any number and mix. --out FILE.jsonl writes {"path", "tags", "scores": {class:
p}} per line; FILE.csv writes path, tags (joined by |) and one column per class.

Thresholds: a run's calibrated per-class thresholds (thresholds.json) when it has them, else
0.5 for every class; zero-shot: 0.3 (VLPL's pseudo-label threshold on the softmax scores).
--threshold FLOAT uses one for every class; --threshold calibrated requires the run's own.

Rows stream to FILE.partial; an interrupted run (Ctrl-C, a crash) re-run with the same
arguments resumes where it stopped, and FILE appears only when complete. An unreadable image
stops the run naming every bad image of its batch, unless --skip-bad-images: then the rest are
tagged and the bad ones listed in FILE.bad.json."""


def add_parsers(subparsers: Any) -> None:
    """Register the command."""
    p = add_command(subparsers, "predict", "tag images with a trained run or a zero-shot CLIP",
                    EXAMPLES, description=DESCRIPTION)
    p.usage = USAGE
    p.add_argument("inputs", nargs="+", metavar="[RUN_DIR] INPUT",
                   help="the run folder (not with --zero-shot), then images, folders, globs, "
                        "catalogs")
    p.add_argument("--out", required=True, type=Path, help="output file: .jsonl or .csv")
    p.add_argument("--threshold", help="'calibrated' or a number in [0, 1] for every class "
                                       "(default: calibrated when the run has them, else 0.5)")
    p.add_argument("--top-k", type=int, help="at most K tags per image, the best above the "
                                             "threshold (--threshold 0 --top-k K: the K best)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", help="cpu, cuda, ... (default: the run's, else cuda if "
                                    "available)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="tag the readable images and list the unreadable ones in FILE.bad.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    z = p.add_argument_group("zero-shot")
    z.add_argument("--zero-shot", action="store_true",
                   help="a CLIP's zero-shot scores instead of a run (no RUN_DIR)")
    z.add_argument("--encoder", help="open_clip architecture, ARCH:TAG, or toy-clip")
    z.add_argument("--pretrained", help="pretrained tag (e.g. openai) or local checkpoint file")
    z.add_argument("--classes", help='class names separated by commas: "cat,dog,bicycle"')
    z.add_argument("--classes-file", type=Path, help="class names, one per line")
    z.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help='prompt template with {name} (repeatable = ensemble) or a set name; '
                        'default "a photo of a {name}."')
    z.add_argument("--tau", type=float, default=0.03, help="softmax temperature (VLPL: 0.03)")
    p.set_defaults(func=run_predict)


def _class_names(args: argparse.Namespace) -> tuple[str, ...]:
    from vlml.data.manifest import read_class_list
    from vlml.predict.tagger import check_class_names

    if (args.classes is None) == (args.classes_file is None):
        raise ConfigError("--zero-shot needs the class names: give --classes \"a,b,c\" or "
                          "--classes-file FILE (one of the two)")
    if args.classes_file is not None:
        return check_class_names(list(read_class_list(args.classes_file)),
                                 f"--classes-file {args.classes_file}")
    return check_class_names([c.strip() for c in args.classes.split(",")], "--classes")


def _split_inputs(args: argparse.Namespace) -> tuple[Path | None, list[str]]:
    """(run folder or None, inputs) from the positional arguments."""
    if args.zero_shot:
        return None, list(args.inputs)
    zero_shot_only = [f"--{n.replace('_', '-')}" for n in ("encoder", "pretrained", "classes",
                                                           "classes_file", "templates")
                      if getattr(args, n) is not None]
    if zero_shot_only:
        raise ConfigError(f"{', '.join(zero_shot_only)} only apply with --zero-shot (a run "
                          "folder brings its own model and classes)")
    if len(args.inputs) < 2:
        raise ConfigError("expected RUN_DIR and at least one INPUT (images, folders, globs or "
                          "catalogs), or --zero-shot with INPUTs")
    return Path(args.inputs[0]), list(args.inputs[1:])


def run_predict(args: argparse.Namespace) -> int:
    from vlml.predict.output import output_format, side_files
    from vlml.predict.sources import resolve_images
    from vlml.predict.tags import CALIBRATED, check_top_k, parse_threshold

    # every check before a model is loaded or a file written
    output_format(args.out)
    threshold = parse_threshold(args.threshold)
    check_top_k(args.top_k)
    for name in ("batch_size", "num_workers"):
        value, low = getattr(args, name), int(name == "batch_size")
        if value < low:
            raise ConfigError(f"--{name.replace('_', '-')} {value}; expected an integer >= {low}")
    run_dir, inputs = _split_inputs(args)
    if args.zero_shot:
        if not args.encoder:
            raise ConfigError("--zero-shot needs --encoder NAME (e.g. toy-clip, ViT-B-32 with "
                              "--pretrained openai)")
        names = _class_names(args)
        if threshold == CALIBRATED:
            raise ConfigError("--threshold calibrated: a zero-shot tagger has no calibrated "
                              "thresholds; give a number (default 0.3)")
    elif not (run_dir / "run.json").is_file():
        raise ConfigError(f"{run_dir} is not a finished vlml run folder (no run.json); give the "
                          "run folder first, or --zero-shot")
    sources = resolve_images(inputs)

    from vlml.predict.output import write_predictions
    from vlml.predict.tagger import Tagger

    if args.zero_shot:
        tagger = Tagger.zero_shot(args.encoder, names, args.templates, tau=args.tau,
                                  pretrained=args.pretrained, device=args.device)
        model = f"zero-shot {args.encoder} over {len(names)} classes (tau {args.tau:g})"
    else:
        tagger = Tagger.from_run(run_dir, device=args.device)
        model = f"run {run_dir} ({tagger.model.kind}, {len(tagger.class_names)} classes)"
    _, described = tagger.resolve_thresholds(threshold)
    say(f"model: {model}, on {tagger.device}")
    say(f"thresholds: {described}")
    if args.top_k:
        say(f"top-k: at most {args.top_k} tag{'s' if args.top_k > 1 else ''} per image")
    say(f"images: {len(sources)}", flush=True)
    partial = side_files(args.out)[0]
    try:
        result = write_predictions(tagger, sources, args.out, threshold=threshold,
                                   top_k=args.top_k, batch_size=args.batch_size,
                                   num_workers=args.num_workers, skip_bad=args.skip_bad_images,
                                   progress=not args.quiet, log=say)
    except BaseException:
        if partial.exists():
            say(f"the rows done so far are kept in {partial}; run the same command again "
                  "to resume", file=sys.stderr)
        raise
    for path, reason in result.bad[:20]:
        say(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
    if len(result.bad) > 20:
        say(f"... and {len(result.bad) - 20} more", file=sys.stderr)
    bad = f"; {len(result.bad)} unreadable image(s) skipped, listed in {result.bad_file}" \
        if result.bad else ""
    say(f"wrote {result.n_rows} rows to {result.out}{bad}")
    return 0
