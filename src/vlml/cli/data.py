"""`vlml data prepare|stats`: read datasets into catalogs, summarise catalogs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlml import data
from vlml.cli.common import add_command, parse_options, print_json
from vlml.data.images import verify_images
from vlml.data.stats import catalog_stats, describe_labels, format_stats
from vlml.errors import ConfigError
from vlml.fileio import check_folder_path
from vlml.types import Catalog

DEFAULT_SPLITS = {
    "voc2007": ("trainval", "test"), "voc2012": ("train", "val"),
    "coco": ("train2014", "val2014"), "cub": ("train", "test"),
    "nuswide": ("train", "val"), "cole": ("train", "val"),
    "manifest": (None,), "folder": (None,), "images": (None,),
}
# The reader option that a --classes-file goes to, by the first one a reader takes.
CLASSES_OPTIONS = ("classes", "class_names")


class _DatasetArgument(argparse.Action):
    """Stores the dataset name and makes a later `--help` describe that dataset: its reader's
    options and, for the readers of a user's own files, the format they read."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        if values in data.DATASETS:
            parser.epilog = _dataset_epilog(data.DATASETS.get(values), parser.epilog or "")


def _dataset_epilog(entry: data.DatasetEntry, epilog: str) -> str:
    options = ", ".join(entry.options) or "none"
    parts = [f"dataset {entry.name}: {entry.description}",
             f"reader options (--option KEY=VALUE): {options}"]
    if entry.format_help:
        parts.append(entry.format_help)
    else:
        parts.append(epilog)
    return "\n\n".join(parts)


def add_parsers(subparsers: Any) -> None:
    group = add_command(subparsers, "data", "read datasets into catalogs and inspect them",
                        "vlml data stats out/voc2007/trainval.catalog.zip")
    sub = group.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = add_command(sub, "prepare", "read a dataset's real layout and write one catalog per split",
                    "vlml data prepare voc2007 --root ~/datasets --out catalogs/voc2007")
    p.add_argument("dataset", action=_DatasetArgument,
                   help=f"one of: {', '.join(data.list_datasets())} "
                        "(`vlml data prepare DATASET --help` describes its options and format)")
    p.add_argument("--root", required=True, type=Path,
                   help="where the dataset lies (for manifest: the manifest file; for images: "
                        "the folder of images)")
    p.add_argument("--out", required=True, type=Path, help="folder for <split>.catalog.zip files")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="split to read (repeatable); default: the dataset's usual splits")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="reader option, e.g. difficult=ignore (VOC), version=em_apl (NUS-WIDE) "
                        "or unlisted=negative (manifest, folder)")
    p.add_argument("--classes-file", type=Path, metavar="FILE",
                   help="class names, one per line, in column order (manifest, images, cole, "
                        "nuswide)")
    p.add_argument("--no-verify-images", action="store_true",
                   help="skip opening every image to check it decodes")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop unreadable images (listed in the provenance) instead of failing")
    p.set_defaults(func=run_prepare)

    s = add_command(sub, "stats", "counts per class, labels per image, unknown share",
                    "vlml data stats catalogs/voc2007/trainval.catalog.zip --json")
    s.add_argument("catalog", type=Path)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_stats)


def run_prepare(args: argparse.Namespace) -> int:
    entry = data.DATASETS.get(args.dataset)
    check_folder_path(args.out, "--out")
    options = parse_options(args.option)
    entry.check_options(options)
    if args.classes_file is not None:
        key = next((k for k in CLASSES_OPTIONS if k in entry.options), None)
        if key is None:
            raise ConfigError(f"--classes-file: dataset {entry.name!r} takes no class list (its "
                              "class names come from the dataset itself)")
        if key in options:
            raise ConfigError(f"--classes-file and --option {key}=... both give the class "
                              "names; pass one")
        options[key] = str(args.classes_file)
    splits = args.splits or list(DEFAULT_SPLITS.get(entry.name, entry.splits))
    # Read (and check) every split before writing any, so a failure leaves nothing half-done.
    catalogs: list[Catalog] = []
    for split in splits:
        catalog = data.load(entry.name, args.root, split, **options)
        if not args.no_verify_images:
            catalog, bad = verify_images(catalog, skip_bad=args.skip_bad_images)
            for path, reason in bad:
                print(f"skipped unreadable image {path}: {reason}")
        catalogs.append(catalog)
    for catalog in catalogs:
        path = catalog.save(args.out / f"{catalog.split or 'all'}.catalog.zip")
        print(f"wrote {path}  ({catalog.n_images} images, {catalog.n_classes} classes)")
        print(f"  {describe_labels(catalog)}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    stats = catalog_stats(Catalog.load(args.catalog, require_images=True))
    if args.json:
        print_json(stats.to_dict())
    else:
        print(format_stats(stats))
    return 0
