"""Report card for the classification jobs: per-class P/R/F1, AUROC, confusion, tuned thresholds.

Usage:
    python scripts/evaluate_classification.py --labels data/cxr14_swift/labels.json --predictions test_pred.jsonl --val_predictions val_pred.jsonl --output_dir results/eval_cls

Inputs:
  * ``--labels``: JSON written next to the converted data,
    ``{"task": "chestxray14"|"ham10000", "problem_type": "multi_label_classification"|
    "single_label_classification", "labels": [names in order]}``.
  * ``--predictions`` (and optional ``--val_predictions``): JSONL, one row per image,
    ``{"id": ..., "true": [names], "pred": [names] | null, "scores": [p per label] | null,
    "response": "raw model text" | null}``. ``true`` has one name for single-label.
    ``pred: null`` is an answer that could not be parsed: it counts as wrong (multi-label: no
    label predicted; single-label: no class) and is listed in the report, never dropped.
    A single-label ``pred`` without exactly one name is treated the same way.
    ``scores`` (classification head) are sigmoid (multi-label) or softmax (single-label)
    probabilities in label order; when every row has them, decisions come from the scores:
    score >= threshold per class (multi-label) or argmax (single-label).

Thresholds (multi-label with scores): 0.5 for every class; with ``--val_predictions`` also one
threshold per class tuned on validation to maximise F1 (sklearn precision_recall_curve), then
applied to test. Both results are reported.

Writes into ``--output_dir``: ``metrics.json``, ``report.md``, ``confusion.png``,
``per_class_f1.png`` and, when there are scores, ``roc.png``.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np

from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE, RESULTS
from medswift.core.constants import SINGLE_LABEL as SINGLE
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl, write_atomic, write_json
from medswift.core.labels import load_labels
from medswift.eval.charts import save_figure

DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------- inputs
def load_predictions(path: Path, spec: dict) -> dict:
    """Indicator matrices y_true / y_pred (n x K), scores (n x K or None), ids, unparseable rows."""
    if not path.is_file():
        raise UsageError(f"predictions file not found: {path}")
    labels, single = spec["labels"], spec["problem_type"] == SINGLE
    index = {name: k for k, name in enumerate(labels)}
    ids, y_true, y_pred, scores, unparseable = [], [], [], [], []
    rows, problems = read_jsonl(path, "predictions file")
    if problems:
        raise UsageError(f"{path} {problems[0]}")
    for n, row in rows:
        where = f"{path} line {n}"
        true, pred, score = (row.get(k) for k in ("true", "pred", "scores")) if isinstance(row, dict) else [None] * 3
        if not isinstance(true, list) or (pred is not None and not isinstance(pred, list)):
            raise UsageError(f"{where}: 'true' must be a list of label names and 'pred' a list or null")
        for name in true + (pred or []):
            if name not in index:
                raise UsageError(f"{where}: unknown label {name!r}; the labels file has: {', '.join(labels)}")
        if single and len(true) != 1:
            raise UsageError(f"{where}: single-label 'true' must hold exactly one name, got {true}")
        if score is not None:
            if (not isinstance(score, list) or len(score) != len(labels)
                    or not all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in score)):
                raise UsageError(f"{where}: 'scores' must be {len(labels)} probabilities in label order, or null")
            scores.append(score)
        rid = str(row.get("id") or f"line{n}")
        if rid in ids:
            raise UsageError(f"{where}: id {rid!r} repeats; one prediction per image is expected")
        ids.append(rid)
        if pred is None or (single and len(pred) != 1):
            reason = "unparseable (pred is null)" if pred is None else f"not one class: {pred}"
            unparseable.append({"id": rid, "reason": reason, "response": row.get("response")})
            pred = []  # predicts nothing: every positive becomes a false negative
        y_true.append([int(name in true) for name in labels])
        y_pred.append([int(name in pred) for name in labels])
    if not ids:
        raise UsageError(f"{path} has no predictions")
    if scores and len(scores) != len(ids):
        raise UsageError(f"{path}: 'scores' given on {len(scores)} of {len(ids)} rows; give them on all or none")
    return {"ids": ids, "y_true": np.array(y_true), "y_pred": np.array(y_pred),
            "scores": np.array(scores, dtype=float) if scores else None, "unparseable": unparseable}


# --------------------------------------------------------------------------- metrics (scikit-learn)
def class_index(y: np.ndarray) -> np.ndarray:
    """Single-label class index per row of an indicator matrix; -1 where no class (unparseable)."""
    return np.where(y.sum(axis=1) == 1, y.argmax(axis=1), -1)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], single: bool) -> dict:
    """Per-class P/R/F1/support/TP/FP/FN/TN plus micro/macro/weighted; one path for both problem types."""
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                 multilabel_confusion_matrix, precision_recall_fscore_support)

    p, r, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    mcm = multilabel_confusion_matrix(y_true, y_pred)  # per class [[TN, FP], [FN, TP]]
    out = {"per_class": {name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f1[k]),
                                "support": int(support[k]), "tp": int(mcm[k, 1, 1]), "fp": int(mcm[k, 0, 1]),
                                "fn": int(mcm[k, 1, 0]), "tn": int(mcm[k, 0, 0])}
                         for k, name in enumerate(labels)}}
    for avg in ("micro", "macro", "weighted"):
        p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out[avg] = {"precision": float(p), "recall": float(r), "f1": float(f1)}
    if single:
        t, pr = class_index(y_true), class_index(y_pred)
        out["accuracy"] = float(accuracy_score(t, pr))
        with warnings.catch_warnings():  # -1 (no class) is never a true class: sklearn warns, then ignores it
            warnings.simplefilter("ignore")
            out["balanced_accuracy"] = float(balanced_accuracy_score(t, pr))
        cm = confusion_matrix(t, pr, labels=list(range(len(labels))) + [-1])[:-1]  # rows: true; last col: none
        out["confusion"] = cm.tolist() if cm[:, -1].any() else cm[:, :-1].tolist()
    else:
        out["exact_match"] = float(accuracy_score(y_true, y_pred))
    return out


def auroc(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    """One-vs-rest AUROC per class where both classes occur (else None); macro over the defined ones."""
    from sklearn.metrics import roc_auc_score

    per = {name: float(roc_auc_score(y_true[:, k], scores[:, k])) if 0 < y_true[:, k].sum() < len(y_true) else None
           for k, name in enumerate(labels)}
    defined = [v for v in per.values() if v is not None]
    return {"per_class": per, "macro": float(np.mean(defined)) if defined else None, "macro_over": len(defined)}


def tune_thresholds(y_val: np.ndarray, s_val: np.ndarray, labels: list[str]) -> dict:
    """Per class, the threshold (score >= t is positive) maximising validation F1."""
    from sklearn.metrics import f1_score, precision_recall_curve

    out = {}
    for k, name in enumerate(labels):
        y, s = y_val[:, k], s_val[:, k]
        at_default = float(f1_score(y, s >= DEFAULT_THRESHOLD, zero_division=0))
        if not y.any():
            out[name] = {"threshold": DEFAULT_THRESHOLD, "val_f1_at_0.5": at_default, "val_f1_tuned": at_default,
                         "note": "no positives in validation: kept 0.5"}
            continue
        precision, recall, candidates = precision_recall_curve(y, s)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        t = float(candidates[int(np.argmax(f1))])
        out[name] = {"threshold": t, "val_f1_at_0.5": at_default,
                     "val_f1_tuned": float(f1_score(y, s >= t, zero_division=0))}
    return out


# --------------------------------------------------------------------------- charts
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(primary: dict, labels: list[str], single: bool, path: Path) -> None:
    plt = _plt()
    if single:
        cm = np.array(primary["confusion"])
        cols = labels + ["(no answer)"] * (cm.shape[1] - len(labels))
        title, xlabel, ylabel = "Confusion matrix", "predicted", "true"
    else:  # compact heatmap: one row per class, TP/FP/FN/TN columns
        cols = ["TP", "FP", "FN", "TN"]
        cm = np.array([[primary["per_class"][n][c.lower()] for c in cols] for n in labels])
        title, xlabel, ylabel = "Per-class confusion counts (colour scaled per column)", "", "class"
    # colour each column on its own scale (multi-label: TN would otherwise swamp TP/FP/FN)
    shade = cm / np.maximum(cm.max(axis=None if single else 0, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.9 * len(cols) + 3, (0.7 if single else 0.45) * len(labels) + 1.8))
    ax.imshow(shade, cmap="Blues", aspect="auto", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if shade[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45 if single else 0, ha="right" if single else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(f"{title}\n(research only, not for diagnosis)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc(y_true: np.ndarray, scores: np.ndarray, labels: list[str], auc: dict, path: Path) -> None:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    for k, name in enumerate(labels):
        if auc["per_class"][name] is not None:
            fpr, tpr, _ = roc_curve(y_true[:, k], scores[:, k])
            ax.plot(fpr, tpr, lw=1.2, color=plt.cm.tab20(k % 20), label=f"{name} ({auc['per_class'][name]:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(f"ROC per class (one-vs-rest), macro AUROC {fmt(auc['macro'])}\n"
                 "(research only, not for diagnosis)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_f1(results: dict, labels: list[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(labels) * len(results) + 1.4))
    height = 0.8 / len(results)
    for j, (name, res) in enumerate(results.items()):
        values = [res["per_class"][n]["f1"] for n in labels][::-1]
        bars = ax.barh([y + j * height for y in range(len(labels))], values, height, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax.set_yticks([y + height * (len(results) - 1) / 2 for y in range(len(labels))], labels[::-1])
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("F1")
    ax.set_title("Per-class F1 (research only, not for diagnosis)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- report
def fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def cell(text) -> str:
    return (" ".join(str(text).split())[:300].replace("|", "\\|") or "(empty)") if text is not None else "(none)"


def write_report(m: dict, out: Path) -> None:
    single = m["problem_type"] == SINGLE
    lines = [f"# Classification report card: {m['task']} ({'single' if single else 'multi'}-label, "
             f"{len(m['labels'])} labels)", "", f"> {NOTICE} These metrics compare model output with dataset "
             "labels; they say nothing about clinical safety.", "",
             f"- predictions: `{m['predictions']}` ({m['n']} images)",
             f"- decision rule: {m['decision']}",
             f"- unparseable answers: {len(m['unparseable'])} (counted as wrong, listed below)"]
    lines += [f"- {note}" for note in m["notes"]]
    lines += ["", "Precision of a class never predicted is 0 (sklearn `zero_division=0`); macro averages run over "
              "all labels, weighted averages weight by support.", ""]
    for name, res in m["results"].items():
        lines += [f"## Results: {name}" + (" (primary)" if name == m["primary"] else ""), ""]
        if single:
            lines += [f"accuracy {fmt(res['accuracy'])}, balanced accuracy {fmt(res['balanced_accuracy'])}", ""]
        else:
            lines += [f"exact match (all labels right) {fmt(res['exact_match'])}", ""]
        lines += ["| average | precision | recall | F1 |", "|---|---|---|---|"]
        lines += [f"| {a} | {fmt(res[a]['precision'])} | {fmt(res[a]['recall'])} | {fmt(res[a]['f1'])} |"
                  for a in ("micro", "macro", "weighted")]
        head = "| class | precision | recall | F1 | support | TP | FP | FN | TN |" + (" AUROC |" if m["auroc"] else "")
        lines += ["", head, "|---" * (head.count("|") - 1) + "|"]
        for c, v in res["per_class"].items():
            lines.append(f"| {c} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {v['support']} | "
                         f"{v['tp']} | {v['fp']} | {v['fn']} | {v['tn']} |"
                         + (f" {fmt(m['auroc']['per_class'][c])} |" if m["auroc"] else ""))
        lines.append("")
    if m["auroc"]:
        lines += ["## AUROC", "", f"macro AUROC {fmt(m['auroc']['macro'])} over {m['auroc']['macro_over']} classes "
                  "with both positives and negatives in the test set (others n/a).", "", "![ROC](roc.png)", ""]
    if m["thresholds"]:
        lines += ["## Thresholds", "", m["thresholds"]["source"], "",
                  "| class | threshold | val F1 at 0.5 | val F1 tuned | note |", "|---|---|---|---|---|"]
        for c, v in m["thresholds"]["per_class"].items():
            lines.append(f"| {c} | {v['threshold']:.4f} | {fmt(v.get('val_f1_at_0.5'))} | "
                         f"{fmt(v.get('val_f1_tuned'))} | {v.get('note', '')} |")
        lines.append("")
    lines += ["## Charts", "", "![confusion](confusion.png)", "", "![per-class F1](per_class_f1.png)", "",
              f"## Unparseable answers ({len(m['unparseable'])})", ""]
    if m["unparseable"]:
        lines += ["| id | reason | raw response |", "|---|---|---|"]
        lines += [f"| {cell(u['id'])} | {cell(u['reason'])} | {cell(u['response'])} |" for u in m["unparseable"]]
    else:
        lines.append("None.")
    lines += ["", f"_{NOTICE}_", ""]
    write_atomic(out / "report.md", "\n".join(lines))


# --------------------------------------------------------------------------- driver
def evaluate(labels_path: Path, predictions: Path, out: Path, val_predictions: Path | None = None) -> dict:
    spec = load_labels(labels_path)
    labels, single = spec["labels"], spec["problem_type"] == SINGLE
    test = load_predictions(predictions, spec)
    val = load_predictions(val_predictions, spec) if val_predictions else None
    y, s = test["y_true"], test["scores"]
    results, notes, thresholds = {}, [], None
    if s is None:
        decision = "the parsed answers (`pred`); no scores in the predictions"
        results["parsed answers"] = classification_scores(y, test["y_pred"], labels, single)
        if val:
            notes.append("validation predictions not used: the test predictions have no scores to threshold")
    elif single:
        decision = "argmax of the softmax scores (`pred` not used)"
        results["argmax"] = classification_scores(y, np.eye(len(labels), dtype=int)[s.argmax(axis=1)], labels, single)
        if val:
            notes.append("validation predictions not used: single-label decisions are the argmax, no threshold")
    else:
        decision = "score >= per-class threshold on the sigmoid scores (`pred` not used)"
        results["threshold 0.5"] = classification_scores(y, (s >= DEFAULT_THRESHOLD).astype(int), labels, single)
        per = {n: {"threshold": DEFAULT_THRESHOLD} for n in labels}
        source = "No validation predictions given: every class uses the default threshold 0.5 (not tuned)."
        if val:
            if val["scores"] is None:
                raise UsageError(f"{val_predictions} has no scores; thresholds are tuned on validation scores")
            per = tune_thresholds(val["y_true"], val["scores"], labels)
            cut = np.array([per[n]["threshold"] for n in labels])
            results["tuned thresholds"] = classification_scores(y, (s >= cut).astype(int), labels, single)
            source = (f"One threshold per class tuned on `{val_predictions}` ({len(val['ids'])} images) to maximise "
                      "F1 (sklearn precision_recall_curve), then applied to test; results at 0.5 shown as well.")
        notes.append(source)
        thresholds = {"source": source, "per_class": per}
    primary = list(results)[-1]
    m = {"task": spec["task"], "problem_type": spec["problem_type"], "labels": labels, "notice": NOTICE,
         "predictions": str(predictions), "val_predictions": str(val_predictions) if val_predictions else None,
         "n": len(test["ids"]), "decision": decision, "notes": notes, "primary": primary, "results": results,
         "auroc": auroc(y, s, labels) if s is not None else None, "thresholds": thresholds,
         "unparseable": test["unparseable"]}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", m)
    plot_confusion(results[primary], labels, single, out / "confusion.png")
    plot_f1(results, labels, out / "per_class_f1.png")
    if s is not None:
        plot_roc(y, s, labels, m["auroc"], out / "roc.png")
    write_report(m, out)
    return m


def summary(m: dict) -> str:
    res = m["results"][m["primary"]]
    parts = [f"{m['task']}: {m['n']} images, {m['primary']}"]
    if m["problem_type"] == SINGLE:
        parts.append(f"accuracy {res['accuracy']:.3f}, balanced accuracy {res['balanced_accuracy']:.3f}")
    parts.append(f"micro F1 {res['micro']['f1']:.3f}, macro F1 {res['macro']['f1']:.3f}")
    if m["auroc"]:
        parts.append(f"macro AUROC {fmt(m['auroc']['macro'])}")
    parts.append(f"{len(m['unparseable'])} unparseable (counted wrong)")
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    p.add_argument("--labels", required=True, help="labels.json written next to the converted data")
    p.add_argument("--predictions", required=True, help="test predictions JSONL")
    p.add_argument("--val_predictions", help="validation predictions JSONL with scores: tunes per-class thresholds")
    p.add_argument("--output_dir", default=str(RESULTS / "eval_cls"))
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(report, build_parser().parse_args(argv))


def report(args) -> int:
    m = evaluate(Path(args.labels), Path(args.predictions), Path(args.output_dir),
                 Path(args.val_predictions) if args.val_predictions else None)
    print(summary(m))
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    print(NOTICE)
    return 0
