"""Label statistics of a catalog: what `vlml data stats` prints, and the one-line summary of
where the labels come from that `vlml data prepare` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vlml.data.manifest import UNLISTED_MEANING
from vlml.types import LABELS_GIVEN, LABELS_GROUND_TRUTH, NEGATIVE, POSITIVE, UNKNOWN, Catalog


@dataclass(frozen=True)
class CatalogStats:
    """Counts per class (length C lists) and per-image summaries of a label matrix."""

    n_images: int
    n_classes: int
    class_names: list[str]
    positives: list[int]
    negatives: list[int]
    unknowns: list[int]
    positives_per_image_mean: float
    positives_per_image_min: int
    positives_per_image_max: int
    images_without_positive: int
    unknown_share: float
    has_ground_truth: bool
    labels_source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def catalog_stats(catalog: Catalog) -> CatalogStats:
    """Summarise `catalog.labels` (observed labels; ground truth is only flagged)."""
    y = catalog.labels
    per_image = (y == POSITIVE).sum(axis=1)
    n = max(y.size, 1)
    return CatalogStats(
        n_images=catalog.n_images,
        n_classes=catalog.n_classes,
        class_names=list(catalog.class_names),
        positives=(y == POSITIVE).sum(axis=0).tolist(),
        negatives=(y == NEGATIVE).sum(axis=0).tolist(),
        unknowns=(y == UNKNOWN).sum(axis=0).tolist(),
        positives_per_image_mean=float(per_image.mean()) if y.shape[0] else 0.0,
        positives_per_image_min=int(per_image.min()) if y.shape[0] else 0,
        positives_per_image_max=int(per_image.max()) if y.shape[0] else 0,
        images_without_positive=int((per_image == 0).sum()),
        unknown_share=float((y == UNKNOWN).sum() / n),
        has_ground_truth=catalog.ground_truth is not None,
        labels_source=catalog.labels_source,
    )


def describe_labels(catalog: Catalog) -> str:
    """One line: where the labels come from (a reader's unlisted-class policy) and the share of
    unknown entries, e.g. "labels: unlisted classes -> unknown (-1); 93.8% of entries unknown"."""
    reader = next((s for s in catalog.provenance if s.get("step") in ("read", "generate")), {})
    if reader.get("unlisted") in UNLISTED_MEANING:
        how = f"unlisted classes -> {UNLISTED_MEANING[reader['unlisted']]}"
    elif reader.get("dataset") == "images":
        how = "untagged images, every label unknown (-1)"
    elif catalog.labels_source == LABELS_GROUND_TRUTH:
        how = "ground truth from the dataset's annotations"
    elif catalog.labels_source == LABELS_GIVEN:
        how = "as given"
    else:
        how = "as stored"
    y = catalog.labels
    if y.size == 0:
        share = f"no label entries ({catalog.n_classes} classes, {catalog.n_images} images)"
    else:
        share = f"{100 * float((y == UNKNOWN).mean()):.1f}% of entries unknown"
    return f"labels: {how}; {share}"


def format_stats(stats: CatalogStats) -> str:
    """A plain-text table: one row per class, then the per-image summary."""
    width = max([12, *(len(c) for c in stats.class_names)])
    lines = [f"{'class':<{width}} {'pos':>8} {'neg':>8} {'unknown':>8}"]
    for name, p, ng, u in zip(stats.class_names, stats.positives, stats.negatives,
                              stats.unknowns, strict=True):
        lines.append(f"{name:<{width}} {p:>8} {ng:>8} {u:>8}")
    lines += [
        "",
        f"images: {stats.n_images}   classes: {stats.n_classes}",
        f"positives per image: mean {stats.positives_per_image_mean:.3f}, "
        f"min {stats.positives_per_image_min}, max {stats.positives_per_image_max}",
        f"images without a positive: {stats.images_without_positive}",
        f"unknown share: {100 * stats.unknown_share:.2f}%",
        f"ground truth kept: {'yes' if stats.has_ground_truth else 'no'}"
        + (f" (labels: {stats.labels_source})" if stats.labels_source else ""),
    ]
    return "\n".join(lines)
