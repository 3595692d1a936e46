"""The report of every run: `report.md` and its PNG plots, beside the run's `results.json`.

`vlml.runs.run` calls `write_run_report(run_dir, results)` once the run is finished, for every
recipe (SPML in every mode and loss, CBSA, CAP). Everything it shows is read back from the run
folder, so a finished run's report can be written again from its files alone:

    section                  read from
    identity, test mAP       results.json (recipe, name, dataset, n_* image counts, test_map)
    model selection          results.json `selection` (a dict, a rule name, or absent: SPML's
                             clean validation mAP), `phase`, `best_epoch`, `val_map`
    training curves          `metrics.jsonl` of each phase: `linear_phase/`, the run folder
                             itself, `warmup/`, `semi/` (-> training_curves.png)
    per-class test AP        results.json `test_per_class_ap` (-> per_class_ap.png)
    test at threshold 0.5    results.json `test_at_0.5`
    decision thresholds      `thresholds.json` (per class: threshold, calibrated or why not,
                             precision/recall/F1 on the calibration labels); results.json
                             `test_at_thresholds` (the test split at those thresholds, shown
                             only while `thresholds.json` holds the same ones: `vlml calibrate`
                             re-fits them and writes the report again), `calibration`
    pseudo-labels            SPML: `pseudo_plain.npy` (counts per class), `pseudo_quality.json`
                             (only with ground truth); SSMLL: results.json `pseudo_quality` per
                             epoch, `semi/pseudo_last.npz` (-> pseudo_labels.png,
                             pseudo_quality.png)
    contexts                 CBSA: results.json `context`, contexts.png (drawn by the recipe)

No number is printed as `nan` or `None`: a value that cannot be computed is named as absent,
with the reason (a class without a known positive or negative in the test labels is "skipped").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vlml.engine import read_log
from vlml.errors import DataError
from vlml.fileio import write_text_atomic
from vlml.report.markdown import markdown_table
from vlml.report.plots import class_bars, grouped_bars, line_plot, phase_curves
from vlml.thresholds import Thresholds
from vlml.thresholds import load as load_thresholds

REPORT_FILE = "report.md"

# rule -> (its name in words, what it is when the run does not say, what it measures)
RULES = {
    "clean_val_map": ("clean validation mAP",
                      "mAP on fully labelled validation images (a validation catalog or split)",
                      "Every validation label is known, so it measures how well the model ranks "
                      "the true labels."),
    "observed_map": ("observed mAP on held-out training images",
                     "mAP on training images held out from training, against their observed "
                     "labels only (unknown entries left out)",
                     "It judges only the labels someone gave, not the ones nobody checked: an "
                     "unlabelled true positive ranked high is not rewarded."),
    "observed_recall_at_k": ("observed-positive recall at k on held-out training images",
                             "the share of the held-out training images' observed positive tags "
                             "that rank among the k highest scores of their image",
                             "It needs no negative label, and so says nothing about false "
                             "positives below the top k."),
    "labeled_val": ("mAP on held-out labelled images",
                    "mAP on labelled training images held out from training",
                    "They are never trained on and are not the test split."),
    "last": ("the last epoch", "no validation data, the model of the last epoch is kept",
             "No metric chose it."),
}
# metrics.jsonl keys that hold the selection metric, most specific first
_METRIC_KEYS = ("val_map", "val_observed_map")
_SPLIT_COUNTS = (("n_train", "training"), ("n_labeled", "labelled training"),
                 ("n_unlabeled", "unlabelled training"), ("n_val", "validation"),
                 ("n_holdout", "held out for validation"), ("n_test", "test"))
_SELECTION_EXTRA = {"n_images": "validation images"}
_PHASE_ORDER = ("linear_phase", ".", "warmup", "semi")
_QUALITY = ("pl_used_fraction", "pl_positive_rate", "pl_score_map", "pl_pos_precision",
            "pl_pos_recall", "pl_neg_precision", "pl_neg_recall")
_TEACHER = ("teacher_pl_score_map", "teacher_pl_pos_precision", "teacher_pl_pos_recall")
_UNDEFINED = {"pos_precision": "no pseudo-positive was made",
              "pos_recall": "no true positive among the entries judged",
              "neg_precision": "no pseudo-negative was made",
              "neg_recall": "no true negative among the entries judged"}
_SKIPPED = "skipped (no known positive or no known negative in the test labels)"
_NA_NOTE = ("n/a: undefined that epoch (no pseudo-label of that kind was made, or no true "
            "entry of that kind).")


def _finite(value: Any) -> float | None:
    """`value` as a float, or None when absent, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _nan_for_none(value: Any) -> float:
    f = _finite(value)
    return float("nan") if f is None else f


def _fmt(value: Any, digits: int = 3, absent: str = "n/a") -> str:
    f = _finite(value)
    if f is None:
        return absent
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{f:.{digits}f}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---- identity and test mAP -------------------------------------------------------------------
def _identity(results: dict[str, Any]) -> str:
    recipe = results.get("recipe", "?")
    extra = [f"{k} `{results[k]}`" for k in ("loss", "mode", "pseudo_method", "feature")
             if results.get(k) is not None]
    counts = [f"{results[k]} {label}" for k, label in _SPLIT_COUNTS
              if _finite(results.get(k)) is not None]
    line = f"Recipe `{recipe}`" + (f" ({', '.join(extra)})" if extra else "")
    line += f", run `{results.get('name', '?')}`, dataset `{results.get('dataset', '?')}`"
    return line + (f"; images: {', '.join(counts)}." if counts else ".")


def _test_line(results: dict[str, Any], per_class: dict[str, float | None]) -> str:
    if not per_class and not results.get("n_test") and _finite(results.get("test_map")) is None:
        return "Test mAP: absent, the run has no test split (no `data.test_catalog`)."
    value = _finite(results.get("test_map"))
    if value is None:
        return ("Test mAP: absent, no class of the test split has both a known positive and a "
                "known negative.")
    scored = sum(v is not None for v in per_class.values())
    where = (f" over {scored} of {len(per_class)} classes (the others are skipped: no known "
             "positive or negative)" if per_class and scored < len(per_class) else "")
    return f"Test mAP {value:.2f} (percent){where}."


def _per_class(results: dict[str, Any]) -> dict[str, float | None]:
    per = results.get("test_per_class_ap") or {}
    if isinstance(per, list):  # a bare list: name the classes by column
        per = {str(i): v for i, v in enumerate(per)}
    return {str(k): _finite(v) for k, v in per.items()}


# ---- model selection -------------------------------------------------------------------------
def selection_rule(results: dict[str, Any]) -> dict[str, Any]:
    """`results["selection"]` as a dict: `rule`, `name` (in words), `metric` (the epoch-record
    key it reads, None for "last"), `description`, and any other entries it has (k, value).

    Accepts the dict a run records (`vlml.recipes.selection`), a bare rule name (SSMLL:
    "last", "labeled_val") or no key (SPML before the rule was recorded: clean validation
    mAP)."""
    sel = results.get("selection")
    out = dict(sel) if isinstance(sel, dict) else {"rule": str(sel) if sel else "clean_val_map"}
    rule = str(out.get("rule") or "?")
    name, description, _ = RULES.get(rule, (rule, "", ""))
    out["rule"], out["name"] = rule, name.replace(" k ", f" {out['k']} ") if "k" in out else name
    if rule == "last":
        out["metric"] = None
    elif not isinstance(out.get("metric"), str):
        out["metric"] = "val_map" if rule in ("clean_val_map", "labeled_val") else None
    if not out.get("description"):
        out["description"] = description or "the run does not describe this rule"
    return out


def _value_at(logs: list[tuple[str, list[dict[str, Any]]]], results: dict[str, Any],
              key: str | None) -> float | None:
    """The selection metric of the kept model, read from its phase's log."""
    phase, best = results.get("phase") or ".", results.get("best_epoch")
    for name, recs in logs:
        if key and name == phase:
            for rec in recs:
                if rec.get("epoch") == best:
                    return _finite(rec.get(key))
    return None


def _selection_lines(results: dict[str, Any], sel: dict[str, Any],
                     logs: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    where = f"epoch {results.get('best_epoch', '?')}"
    if results.get("phase"):
        where = f"the {results['phase']} phase, {where}"
    key = f"; epoch-record key `{sel['metric']}`" if sel["metric"] else ""
    lines = ["## Model selection",
             f"Rule `{sel['rule']}` ({sel['name']}{key}): {sel['description'].rstrip('.')}."
             + (f" {RULES[sel['rule']][2]}" if sel["rule"] in RULES else ""),
             f"The model kept is that of {where}."]
    if sel["rule"] != "last":
        value = _finite(sel.get("value"))
        if value is None:
            value = _value_at(logs, results, sel["metric"])
        if value is None and sel["rule"] in ("clean_val_map", "labeled_val"):
            value = _finite(results.get("val_map"))
        lines[-1] += (f" Its {sel['name']}: {value:.2f}." if value is not None else
                      f" Its {sel['name']}: absent, the validation labels supported no value "
                      "(no class with both a known positive and a known negative, or no "
                      "observed positive).")
    known = {"rule", "name", "metric", "description", "value", "k"}
    extra = [f"{_SELECTION_EXTRA.get(k, k.replace('_', ' '))} {v}" for k, v in sel.items()
             if k not in known and (isinstance(v, str) or _finite(v) is not None)]
    if extra:
        lines.append("Selection data: " + ", ".join(extra) + ".")
    return lines


# ---- training curves -------------------------------------------------------------------------
def _phase_logs(run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(phase name, records) of every `metrics.jsonl` in the run folder and its sub-folders,
    in training order."""
    found = {}
    if (run_dir / "metrics.jsonl").is_file():
        found["."] = run_dir / "metrics.jsonl"
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if (sub / "metrics.jsonl").is_file():
            found[sub.name] = sub / "metrics.jsonl"
    order = sorted(found, key=lambda n: (_PHASE_ORDER.index(n) if n in _PHASE_ORDER
                                         else len(_PHASE_ORDER), n))
    return [(n, read_log(found[n])) for n in order]


def _metric_key(records: list[dict[str, Any]], sel: dict[str, Any]) -> str | None:
    """The epoch-record key of the selection metric, when the records hold it."""
    if sel["rule"] == "last":
        return None
    keys = {k for rec in records for k in rec}
    for key in (sel["metric"], *_METRIC_KEYS):
        if isinstance(key, str) and key in keys:
            return key
    return None


def _curve_lines(run_dir: Path, results: dict[str, Any], sel: dict[str, Any],
                 logs: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    lines = ["## Training curves"]
    if not logs:
        return [*lines, "Training curves: absent, the run folder holds no `metrics.jsonl`."]
    key = _metric_key([r for _, recs in logs for r in recs], sel)
    selected = results.get("phase") or "."
    phases, rows, offset, marker = [], [], 0, None
    for name, recs in logs:
        label = "training" if name == "." else name
        xs = [offset + int(r.get("epoch", i + 1)) for i, r in enumerate(recs)]
        losses = [_finite(r.get("train_loss")) for r in recs]
        values = [_finite(r.get(key)) if key else None for r in recs]
        phases.append((label, xs, losses, values))
        best = results.get("best_epoch")
        if key and name == selected and isinstance(best, int) and 1 <= best <= len(recs):
            y = values[best - 1]
            marker = None if y is None else (xs[best - 1], y)
        known = [v for v in values if v is not None]
        rows.append([label, len(recs), _fmt(losses[0]), _fmt(losses[-1]),
                     _fmt(max(known), 2) if known else "n/a"])
        offset = xs[-1] if xs else offset
    plot = phase_curves(phases, key, f"{results.get('name', '')}: per-epoch training",
                        run_dir / "training_curves.png", marker)
    header = ["phase", "epochs", "first loss", "last loss",
              f"best {key}" if key else "selection metric"]
    lines += [f"Per-epoch training loss{f' and `{key}`' if key else ''} of each phase "
              f"(`metrics.jsonl`); phases follow one another on the epoch axis"
              + (", the star is the model kept." if marker else "."),
              markdown_table(header, rows),
              f"![training curves]({plot.name})"]
    if not key:
        lines.append("Selection metric: absent, "
                     + ("the rule `last` measures nothing." if sel["rule"] == "last"
                        else "no epoch record holds it."))
    return lines


# ---- per-class AP ----------------------------------------------------------------------------
def _per_class_lines(run_dir: Path, per_class: dict[str, float | None]) -> list[str]:
    lines = ["## Per-class test AP"]
    if not per_class:
        return [*lines, "Per-class AP: absent, the run has no test split with known labels."]
    names = list(per_class)
    values = [None if v is None else 100 * v for v in per_class.values()]
    plot = class_bars(names, values, "Test AP per class", "AP (%)", run_dir / "per_class_ap.png")
    rows = [[n, _SKIPPED if v is None else f"{v:.2f}"] for n, v in zip(names, values,
                                                                       strict=True)]
    skipped = [n for n, v in per_class.items() if v is None]
    lines += ["AP in percent per class of the test split; "
              + (f"{len(skipped)} skipped: {', '.join(skipped)}." if skipped
                 else "no class skipped."),
              f"![per-class test AP]({plot.name})",
              markdown_table(["class", "AP (%)"], rows)]
    return lines


def _threshold_lines(results: dict[str, Any]) -> list[str]:
    at = results.get("test_at_0.5") or {}
    if not at:
        return []
    keys = [k for k in ("CP", "CR", "CF1", "OP", "OR", "OF1") if k in at]
    return ["## Test at threshold 0.5",
            "Per-class (C) and overall (O) precision, recall and F1 in percent of the test "
            "labels, predicting a class when its score is at least 0.5.",
            markdown_table(keys, [[_fmt(at[k], 2) for k in keys]])]


# ---- decision thresholds ---------------------------------------------------------------------
_TARGET_MEANING = {"f1": "per class, the threshold of the highest F1",
                   "precision": "per class, the lowest threshold whose precision reaches {v}",
                   "recall": "per class, the highest threshold whose recall reaches {v}"}
_HOW_TO_CALIBRATE = ("give the run a fully tagged `data.val_catalog`, or fit them after training "
                     "with `vlml calibrate RUN_DIR --catalog FULLY_TAGGED_CATALOG`")


def _target_meaning(target: str) -> str:
    kind, _, value = target.partition("=")
    return _TARGET_MEANING.get(kind, "").format(v=value) or "as recorded"


def _uncalibrated_why(th: Thresholds) -> str:
    reasons: dict[str, int] = {}
    for r in th.reasons:
        if r is not None:
            reasons[r] = reasons.get(r, 0) + 1
    counts = "; ".join(f"{n} class{'es' if n > 1 else ''}: {r}" for r, n in reasons.items())
    line = f"No class could be calibrated ({counts}), so every class keeps {th.default:g}."
    if any("no known negative" in r for r in reasons):
        line += (" Labels with only observed positives, such as one tag per image, say nothing "
                 "about the classes an image does not show: no false positive can be counted, "
                 "so no threshold can be judged on them.")
    return f"{line} To calibrate, {_HOW_TO_CALIBRATE}."


def _test_at(results: dict[str, Any], th: Thresholds) -> dict[str, Any] | None:
    """results.json's `test_at_thresholds` when it was measured at `th`'s thresholds."""
    at = results.get("test_at_thresholds")
    if not isinstance(at, dict) or at.get("target") != th.target or \
            at.get("source") != th.source:
        return None
    values = at.get("thresholds") or []
    same = len(values) == len(th.values) and all(
        _finite(a) == float(b) for a, b in zip(values, th.values, strict=True))
    return at if same else None


def _thresholds_lines(run_dir: Path, results: dict[str, Any]) -> list[str]:
    lines = ["## Decision thresholds"]
    try:
        th = load_thresholds(run_dir)
    except DataError as e:
        return [*lines, f"Decision thresholds: absent, `thresholds.json` cannot be read ({e})."]
    if th is None:
        off = (results.get("calibration") or {}).get("target") == "none"
        return [*lines, "Decision thresholds: none fitted"
                + (" (the config sets `calibrate: none`)" if off else "")
                + f"; a tagger uses 0.5 for every class. To fit them, {_HOW_TO_CALIBRATE}."]
    n_cal, n = int(th.calibrated.sum()), len(th.class_names)
    lines.append(f"`thresholds.json`: target `{th.target}` ({_target_meaning(th.target)}), "
                 f"fitted on `{th.source or 'unnamed data'}`; {n_cal} of {n} classes calibrated"
                 + (f", the others keep {th.default:g}." if n_cal < n else ".")
                 + " Precision, recall and F1 are those of the calibration labels at each "
                   "class's threshold (n/a: nothing tagged, or no known label of that kind).")
    if n_cal == 0:
        lines.append(_uncalibrated_why(th))
    at = _test_at(results, th)
    per_test = (at or {}).get("per_class") or {}
    header = ["class", "threshold", "calibrated", "precision", "recall", "F1", "positives",
              "negatives"]
    if at is not None:
        header += ["test precision", "test recall", "test F1"]
    stats = th.stats or tuple({} for _ in th.class_names)
    rows = []
    for name, v, reason, s in zip(th.class_names, th.values, th.reasons, stats, strict=True):
        row = [name, f"{v:.3f}", "yes" if reason is None else f"no: {reason}",
               _fmt(s.get("precision")), _fmt(s.get("recall")), _fmt(s.get("f1")),
               _fmt(s.get("n_pos")), _fmt(s.get("n_neg"))]
        if at is not None:
            p = per_test.get(name) or {}
            row += [_fmt(p.get("precision")), _fmt(p.get("recall")), _fmt(p.get("f1"))]
        rows.append(row)
    lines.append(markdown_table(header, rows))
    if at is not None:
        mf1, half = _finite(at.get("mean_f1")), _finite(at.get("mean_f1_at_0.5"))
        if mf1 is not None and half is not None:
            lines.append(f"On the test split, the mean per-class F1 is {mf1:.3f} at these "
                         f"thresholds and {half:.3f} at 0.5 for every class.")
    elif isinstance(results.get("test_at_thresholds"), dict):
        lines.append("The test split at these thresholds: absent here, they were fitted again "
                     "after the run (`vlml calibrate`); the run measured the test split at the "
                     "thresholds it fitted then.")
    return lines


# ---- pseudo-labels ---------------------------------------------------------------------------
def _class_names(run_dir: Path, results: dict[str, Any], c: int) -> list[str]:
    record = _read_json(run_dir / "run.json") or {}
    names = record.get("class_names") or list(results.get("test_per_class_ap") or {})
    return [str(n) for n in names] if len(names) == c else [str(i) for i in range(c)]


def _count_lines(run_dir: Path, results: dict[str, Any], labels: np.ndarray,
                 used: np.ndarray | None, what: str) -> list[str]:
    """Per-class counts of pseudo-positives and pseudo-negatives (and the plot)."""
    if labels.ndim != 2 or not labels.size:
        return [f"Pseudo-label counts: absent, {what} holds no (N, C) labels."]
    used = np.ones(labels.shape, bool) if used is None else used.astype(bool)
    names = _class_names(run_dir, results, labels.shape[1])
    pos = ((labels == 1) & used).sum(0)
    neg = ((labels == 0) & used).sum(0)
    plot = grouped_bars(names, {"pseudo-positives": pos.tolist(),
                                "pseudo-negatives": neg.tolist()},
                        "Pseudo-labels per class", "entries", run_dir / "pseudo_labels.png")
    rows = [[n, int(p), int(q), int(labels.shape[0] - p - q)]
            for n, p, q in zip(names, pos, neg, strict=True)]
    rows.append(["**all**", int(pos.sum()), int(neg.sum()),
                 int(labels.size - pos.sum() - neg.sum())])
    return [f"Counts per class over {labels.shape[0]} images ({what}).",
            markdown_table(["class", "pseudo-positives", "pseudo-negatives", "neither"], rows),
            f"![pseudo-labels per class]({plot.name})"]


def _spml_pseudo(run_dir: Path, results: dict[str, Any]) -> list[str]:
    path = run_dir / "pseudo_plain.npy"
    if not path.is_file():
        loss = results.get("loss")
        return [f"No pseudo-labels: the loss{f' `{loss}`' if loss else ''} uses none."]
    lines = _count_lines(run_dir, results, np.load(path), None,
                         "`pseudo_plain.npy`, on the entries the observed labels leave unknown; "
                         "neither = observed, or no pseudo-label")
    quality = _read_json(run_dir / "pseudo_quality.json") or results.get("pseudo_quality")
    if not quality:
        return [*lines, "Pseudo-label quality: absent, the training labels carry no ground "
                        "truth to judge them against (labels as given)."]
    rows = [[k.replace("_", " "), _fmt(quality.get(k), absent=f"absent ({why})")]
            for k, why in _UNDEFINED.items()]
    counts = [f"{k.removeprefix('n_').replace('_', ' ')} {int(quality[k])}"
              for k in ("n_evaluated", "n_pseudo_pos", "n_pseudo_neg", "n_true_pos")
              if _finite(quality.get(k)) is not None]
    return [*lines, "Quality against the ground truth, on the entries the observed labels "
                    "leave unknown (fractions)" + (f"; {', '.join(counts)}." if counts else "."),
            markdown_table(["measure", "value"], rows)]


def _ssmll_pseudo(run_dir: Path, results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    last = run_dir / "semi" / "pseudo_last.npz"
    if last.is_file():
        with np.load(last) as z:
            lines += _count_lines(run_dir, results, z["labels"], z["mask"],
                                  f"the unlabelled images, last semi-supervised epoch "
                                  f"{int(z['epoch'])}, entries the loss used; neither = masked "
                                  "out")
    quality = [q for q in results.get("pseudo_quality") or [] if isinstance(q, dict)]
    if not quality:
        return lines or ["No pseudo-labels: the run has no semi-supervised epoch."]
    keys = [k for k in _QUALITY + _TEACHER if any(_finite(q.get(k)) is not None for q in quality)]
    header = [k.replace("teacher_pl_", "teacher alone: ").removeprefix("pl_") for k in keys]
    rows = [[q.get("epoch", i + 1), *(_fmt(q.get(k)) for k in keys)]
            for i, q in enumerate(quality)]
    lines += ["Per semi-supervised epoch: the share of entries the loss used, the share "
              "pseudo-labelled positive, and, when the unlabelled images' true labels are "
              "known, precision and recall of the pseudo-labels (fractions) and the mAP of "
              "the scores behind them (percent).",
              markdown_table(["epoch", *header], rows)]
    if any(r[1:].count("n/a") for r in rows):
        lines.append(_NA_NOTE)
    judged = [k for k in ("pl_pos_precision", "pl_pos_recall", "pl_neg_precision",
                          "pl_neg_recall") if k in keys]
    if judged:
        plot = line_plot([q.get("epoch", i + 1) for i, q in enumerate(quality)],
                         {k.removeprefix("pl_"): [_nan_for_none(q.get(k)) for q in quality]
                          for k in judged},
                         "Pseudo-label quality per epoch", "epoch", "fraction",
                         run_dir / "pseudo_quality.png", integer_x=True)
        lines.append(f"![pseudo-label quality per epoch]({plot.name})")
    else:
        lines.append("Pseudo-label quality: absent, the unlabelled images carry no ground "
                     "truth to judge them against (labels as given).")
    return lines


def _context_lines(run_dir: Path, ctx: dict[str, Any]) -> list[str]:
    ari = _finite(ctx.get("adjusted_rand_index"))
    lines = ["## Contexts",
             f"K = {ctx.get('k', '?')} ({ctx.get('k_method', '?')}), spectral clustering of the "
             "labelled images' label co-occurrence"
             + (f"; adjusted Rand index vs the reference groups {ari:.3f}." if ari is not None
                else "."),
             "\n".join(f"- context {k + 1}: {', '.join(names)}"
                       for k, names in enumerate(ctx.get("contexts", [])))]
    if (run_dir / "contexts.png").is_file():
        lines.append("![clustered label correlation](contexts.png)")
    return lines


# ---- the report ------------------------------------------------------------------------------
def write_run_report(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `run_dir/report.md` and its plots from the run's `results.json` content and the
    files beside it (see the module docstring); return the report's path."""
    run_dir = Path(run_dir)
    per_class = _per_class(results)
    sel = selection_rule(results)
    logs = [(n, recs) for n, recs in _phase_logs(run_dir) if recs]
    ssmll = isinstance(results.get("pseudo_quality"), list)
    lines = [f"# {results.get('name', run_dir.name)}", _identity(results),
             _test_line(results, per_class),
             *_selection_lines(results, sel, logs),
             *_curve_lines(run_dir, results, sel, logs),
             *_per_class_lines(run_dir, per_class),
             *_threshold_lines(results),
             *_thresholds_lines(run_dir, results),
             "## Pseudo-labels",
             *(_ssmll_pseudo if ssmll else _spml_pseudo)(run_dir, results)]
    if isinstance(results.get("context"), dict):
        lines += _context_lines(run_dir, results["context"])
    seconds = _finite(results.get("wall_seconds"))
    if seconds is not None:
        lines.append(f"Wall time: {seconds:.1f} s.")
    path = run_dir / REPORT_FILE
    write_text_atomic(path, "\n\n".join(lines) + "\n")
    return path


__all__ = ["write_run_report", "selection_rule", "REPORT_FILE", "RULES"]
