"""The pseudo-label quality report: per-class precision/recall table (Markdown) and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlml.fileio import write_text_atomic
from vlml.report.markdown import markdown_table
from vlml.report.plots import grouped_bars

_COLUMNS = ("pos_precision", "pos_recall", "neg_precision", "neg_recall", "n_pseudo_pos",
            "n_pseudo_neg", "n_true_pos")


def write_pseudo_label_report(out_dir: str | Path, quality: dict[str, Any],
                              provenance: dict[str, Any], title: str = "Pseudo-label quality"
                              ) -> Path:
    """Write `pseudo_quality.md` and `pseudo_quality.png` into `out_dir`; return the .md path.

    `quality` is `vlml.metrics.pseudo_label_quality(...)`'s result (rates are fractions).
    """
    out_dir = Path(out_dir)
    names = [str(n) for n in quality["class_names"]]
    per = quality["per_class"]
    rows = [[name, *(per[c][i] for c in _COLUMNS)] for i, name in enumerate(names)]
    overall = quality["overall"]
    rows.append(["**all**", *(overall[c] for c in _COLUMNS)])
    plot = grouped_bars(names, {"precision (pseudo-positives)": list(per["pos_precision"]),
                                "recall (pseudo-positives)": list(per["pos_recall"])},
                        title, "fraction", out_dir / "pseudo_quality.png")
    params = ", ".join(f"{k}={v}" for k, v in provenance.get("params", {}).items())
    text = "\n\n".join([
        f"# {title}",
        f"Method: `{provenance.get('method', '?')}` ({params}). Evaluated on the entries the "
        "observed labels leave unknown; precision = correct / pseudo-labelled, recall = "
        "correct / true entries of that kind; – where a rate is undefined (no pseudo-label, "
        "or no true entry, of that kind).",
        markdown_table(["class", *_COLUMNS], rows),
        f"![per-class precision and recall]({plot.name})",
    ])
    md = out_dir / "pseudo_quality.md"
    write_text_atomic(md, text + "\n")
    return md
