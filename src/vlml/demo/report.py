"""The demo's report: `report.md` with PNG plots beside it, from the metrics dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlml.fileio import write_text_atomic
from vlml.report import markdown_table
from vlml.report.plots import grouped_bars, line_plot


def _plots(metrics: dict[str, Any], out: Path) -> dict[str, str]:
    spml = metrics["spml"]
    classes = list(next(iter(spml.values()))["per_class_ap"])
    plots = {
        "per_class": grouped_bars(
            classes, {m: [100 * r["per_class_ap"][c] for c in classes] for m, r in spml.items()},
            "Test AP per class (single-positive training)", "AP (%)", out / "per_class_ap.png"),
        "theta": line_plot(
            [s["theta"] for s in metrics["pseudo_label_sweep"]],
            {"precision": [s["precision"] for s in metrics["pseudo_label_sweep"]],
             "recall": [s["recall"] for s in metrics["pseudo_label_sweep"]]},
            f"VLPL pseudo-positives vs theta (tau {metrics['tau']})", "theta", "fraction",
            out / "pseudo_labels_vs_theta.png"),
    }
    epochs = max(len(r["val_curve"]) for r in spml.values())
    plots["curves"] = line_plot(
        list(range(1, epochs + 1)),
        {m: r["val_curve"] + [float("nan")] * (epochs - len(r["val_curve"]))
         for m, r in spml.items()},
        "Validation mAP during training", "epoch", "val mAP (%)", out / "training_curves.png")
    return {k: p.name for k, p in plots.items()}


def _spml_section(metrics: dict[str, Any], plots: dict[str, str]) -> list[str]:
    world, pl = metrics["world"], metrics["pseudo_label"]
    sweep_rows = [[s["theta"], s["precision"], s["recall"], s["per_image"]]
                  for s in metrics["pseudo_label_sweep"]]
    rows = [[m, r["test_map"], r["val_map"], r["best_epoch"], r["wall_seconds"]]
            for m, r in metrics["spml"].items()]
    return [
        f"Toy world seed {metrics['seed']}: {world['n_train']} train / {world['n_val']} val / "
        f"{world['n_test']} test scenes, {world['n_classes']} classes; one observed positive "
        "per training image (seed 1200), every other label unknown.",
        "## Tiny CLIP, zero-shot",
        f"Test mAP {metrics['zero_shot_map']:.2f} (softmax over classes, tau {metrics['tau']}), "
        f"{metrics['zero_shot_map_cosine']:.2f} (cosine); chance {metrics['chance_map']:.2f}.",
        "## VLPL pseudo-labels",
        f"Pseudo-positives where softmax(sim / {metrics['tau']}) > theta, judged on the training "
        f"entries the single positive leaves unknown. Training uses theta {pl['theta']}: "
        f"precision {pl['precision']:.3f}, recall {pl['recall']:.3f}.",
        markdown_table(["theta", "precision", "recall", "pseudo-positives / image"],
                       sweep_rows),
        f"![precision and recall vs theta]({plots['theta']})",
        "## Single-positive training",
        "Same MLP head on the same cached tiny-CLIP embeddings (plain and flipped views); only "
        "the loss differs. Best epoch by clean-val mAP; test mAP in percent.",
        markdown_table(["method", "test mAP", "val mAP", "best epoch", "seconds"], rows, 2),
        f"![per-class test AP]({plots['per_class']})",
        f"![validation mAP per epoch]({plots['curves']})",
    ]


def _tagging_section(tagging: dict[str, Any]) -> list[str]:
    rows = [[r["scene"], ", ".join(r["tags"]) or "-", ", ".join(r["true"])]
            for r in tagging["rows"]]
    return [
        "## Tagging fresh scenes",
        f"The VLPL model tags {tagging['n']} scenes it has never seen (`vlml predict` and "
        f"`vlml.predict.Tagger` do the same on files). Thresholds: {tagging['thresholds']}. "
        f"{tagging['exact']} of {tagging['n']} scenes get exactly their true tags; mean "
        f"per-scene F1 {tagging['mean_f1']:.3f}.",
        f"![fresh scenes with predicted and true tags]({tagging['plot']})",
        markdown_table(["scene", "tagged", "true"], rows),
    ]


def _ssmll_section(ssmll: dict[str, Any]) -> list[str]:
    rows = [[m, r["test_map"], r.get("pseudo_label_precision", float("nan")),
             r.get("pseudo_score_map", float("nan")), r.get("wall_seconds", float("nan"))]
            for m, r in ssmll["methods"].items()]
    cbsa = ssmll["methods"].get("cbsa", {})
    best = max(ssmll["methods"], key=lambda m: ssmll["methods"][m]["test_map"])
    ctx = ssmll.get("context", {})
    clusters = "\n".join(f"- context {i + 1}: {', '.join(c)}"
                         for i, c in enumerate(ctx.get("clusters", [])))
    lines = [
        "## Semi-supervised training (CBSA vs CAP vs labeled-only)",
        f"{ssmll['p'] * 100:.0f}% of the pool fully labelled ({ssmll['n_labeled']} images), "
        f"{ssmll['n_unlabeled']} unlabelled; frozen tiny CLIP; test mAP in percent.",
        markdown_table(["method", "test mAP", "pseudo-positive precision",
                        "pseudo-label score mAP", "seconds"], rows, 2),
        "Pseudo-label columns: the last semi-supervised epoch, against the unlabelled images' "
        f"true labels. Highest test mAP here: {best}. Over seeds 0-2 of the toy world CBSA is "
        "ahead of its labelled-only warm-up and of CAP (see the README).",
    ]
    if "first_epoch_teacher_score_map" in cbsa:
        lines.append(
            "CBSA fuses its EMA teacher's scores with the tiny CLIP's zero-shot scores before the "
            "class-wise thresholds; in the first semi-supervised epoch that lifts the mAP of the "
            f"pseudo-label scores from {cbsa['first_epoch_teacher_score_map']:.2f} (teacher "
            f"alone) to {cbsa['first_epoch_score_map']:.2f}.")
    if ctx:
        lines += [f"Context identification: K = {ctx['k']} contexts from the labelled part's "
                  f"co-occurrence; adjusted Rand index vs the planted groups "
                  f"{ctx['ari']:.3f}.", clusters]
        if ctx.get("plot"):
            lines.append(f"![clustered label correlation]({ctx['plot']})")
    return lines


def write_report(metrics: dict[str, Any], out: Path) -> Path:
    """Write `out/report.md` (and its plots) from the demo's metrics; return its path."""
    plots = _plots(metrics, out)
    lines = ["# vlml demo report", *_spml_section(metrics, plots)]
    if "tagging" in metrics:
        lines += _tagging_section(metrics["tagging"])
    if "ssmll" in metrics:
        lines += _ssmll_section(metrics["ssmll"])
    lines.append(f"Wall time: {metrics['wall_seconds']:.0f} s. Reproduce: "
                 f"`vlml demo --seed {metrics['seed']}{' --ssmll' if 'ssmll' in metrics else ''}"
                 f"{' --quick' if metrics['quick'] else ''}`.")
    path = out / "report.md"
    write_text_atomic(path, "\n\n".join(lines) + "\n")
    return path
