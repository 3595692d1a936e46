"""The run report of a semi-supervised run: `report.md` beside its `results.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlml.fileio import write_text_atomic
from vlml.report.markdown import markdown_table

_QUALITY = ("pl_score_map", "pl_pos_precision", "pl_pos_recall", "pl_neg_precision",
            "pl_neg_recall", "pl_used_fraction")
_TEACHER = ("teacher_pl_score_map", "teacher_pl_pos_precision")  # with a zero-shot prior


def _context_lines(ctx: dict[str, Any], plot: Path) -> list[str]:
    ari = ctx.get("adjusted_rand_index")
    lines = ["## Contexts",
             f"K = {ctx['k']} ({ctx['k_method']}), spectral clustering of the labelled images' "
             "label co-occurrence"
             + (f"; adjusted Rand index vs the reference groups {ari:.3f}." if ari is not None
                else "."),
             "\n".join(f"- context {k + 1}: {', '.join(names)}"
                       for k, names in enumerate(ctx["contexts"]))]
    if plot.is_file():
        lines.append(f"![clustered label correlation]({plot.name})")
    return lines


def write_ssmll_run_report(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write `run_dir/report.md` from a run's `results.json` content; return its path.

    Shows test mAP and the selected phase/epoch, the contexts (class names per context, the
    clustered correlation plot `contexts.png`, ARI when reference groups are known), and the
    pseudo-label quality per semi-supervised epoch (fractions; with a zero-shot prior also
    that of the teacher's scores alone)."""
    run_dir = Path(run_dir)
    lines = [f"# {result['name']}",
             f"Test mAP {result['test_map']:.2f} (model of the {result['phase']} phase, epoch "
             f"{result['best_epoch']}, selection `{result['selection']}`); "
             f"{result['n_labeled']} labelled and {result['n_unlabeled']} unlabelled training "
             f"images, {result['n_test']} test images."]
    if result.get("context"):
        lines += _context_lines(result["context"], run_dir / "contexts.png")
    quality = result["pseudo_quality"]
    keys = _QUALITY + (_TEACHER if any(_TEACHER[0] in q for q in quality) else ())
    rows = [[q["epoch"], *(q.get(k) for k in keys)] for q in quality]
    if rows and any(v is not None for row in rows for v in row[1:]):
        header = [k.removeprefix("pl_").replace("teacher_pl_", "teacher alone: ") for k in keys]
        lines += ["## Pseudo-labels per semi-supervised epoch",
                  markdown_table(["epoch", *header], rows)]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n\n".join(lines) + "\n")
    return path
