"""The box report card: mAP with pycocotools, per-finding AP, query IoU, the drawn examples.

The box format itself (Qwen3-VL's grounding JSON, its parsing and IoU matching) is
medswift/core/boxes.py.

Usage (the report card picks this up by itself when every reference is box JSON):
    python scripts/evaluate.py --predictions results/grounding/val.jsonl --output_dir results/eval_grounding

For research only, not for diagnosis.
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np

from medswift.core.boxes import Box, SCALE, label_key, parse_first_boxes, query_iou
from medswift.core.constants import NOTICE
from medswift.core.files import write_atomic, write_json


# The report card scores at most this many boxes of a row (reference or answer), the first ones, and
# lists the row: a cut by count, never by characters (a cut JSON text is no longer box JSON).
MAX_SCORED_BOXES = 200


def grounding_rows(rows: list[dict]) -> bool:
    """True when every scored row's reference is box JSON: a grounding predictions file. Read from the
    whole rows (the text card cuts long texts after this decision, the box card cuts by box count)."""
    return bool(rows) and all(scored_boxes(r.get("reference")) is not None for r in rows)


def scored_boxes(text) -> list[Box] | None:
    """The boxes the card scores of a row's text: its first MAX_SCORED_BOXES."""
    return parse_first_boxes(text, MAX_SCORED_BOXES)[0]


def _image_of(row: dict) -> str:
    """The row's image path (its ``image``, or the first of ``images``), else its key. An ``images``
    field of another shape is listed by ``image_problems`` and reads as no image."""
    images = row.get("images")
    first = images[0] if isinstance(images, list) and images else ""
    if isinstance(first, dict):  # swift infer result files: {"path": ..., "bytes": ...}
        first = first.get("path") or ""
    image = row.get("image")
    return str(image if isinstance(image, str) and image else first if isinstance(first, str) and first
               else row["key"])


def row_problems(rows: list[dict]) -> list[str]:
    """What the box card lists about rows it still scores: an ``image``/``images`` field it cannot read as a
    path (grouped by the row's key instead, not drawn), boxes beyond MAX_SCORED_BOXES (the first scored)."""
    problems = []
    for row in rows:
        images, image = row.get("images"), row.get("image")
        first = images[0] if isinstance(images, list) and images else None
        first = first.get("path") if isinstance(first, dict) else first
        if (images is not None and (not isinstance(images, list) or (images and not isinstance(first, str)))) \
                or (image is not None and not isinstance(image, str)):
            shown = type(images).__name__ if images is not None else type(image).__name__
            problems.append(f"{row['key']}: images is not a list of paths ({shown}); grouped by its key, not drawn")
        for field in ("reference", "response"):
            if parse_first_boxes(row.get(field), MAX_SCORED_BOXES)[1]:
                problems.append(f"{row['key']}: {field} has more than {MAX_SCORED_BOXES} boxes; the first "
                                f"{MAX_SCORED_BOXES} were scored")
    return problems


class CocoScores:
    """pycocotools' COCOeval over the rows, evaluated once; ``scores(sample)`` re-accumulates any
    multiset of rows (a bootstrap resample) from the per-image evaluations, so a resample costs
    one ``accumulate`` and no re-matching. Answers carry no confidence, so every predicted box
    scores 1.0 and COCO's stable sort keeps answer order among ties."""

    def __init__(self, refs: list[list[Box]], preds: list[list[Box] | None], categories: list[str]):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        self.categories = categories
        cat_id = {label_key(c): i + 1 for i, c in enumerate(categories)}
        images = [{"id": i + 1} for i in range(len(refs))]
        gts, dts = [], []
        for i, (ref, pred) in enumerate(zip(refs, preds)):
            for b in ref:
                gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": cat_id[label_key(b.label)],
                            "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], "area": b.area, "iscrowd": 0})
            for b in pred or []:
                if label_key(b.label) in cat_id:  # a label no reference has: no category to score it in
                    dts.append({"id": len(dts) + 1, "image_id": i + 1, "category_id": cat_id[label_key(b.label)],
                                "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], "area": b.area, "score": 1.0})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt = COCO()
            gt.dataset = {"images": images, "annotations": gts,
                          "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)]}
            gt.createIndex()
            dt = COCO()
            dt.dataset = {"images": images, "annotations": dts, "categories": gt.dataset["categories"]}
            dt.createIndex()
            ev = COCOeval(gt, dt, iouType="bbox")
            ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
            ev.evaluate()
        self.ev = ev
        self.n = len(refs)

    def scores(self, sample: np.ndarray | None = None) -> dict:
        """mAP@0.5, mAP@[.5:.95] and per-category AP of the rows in ``sample`` (indices, repeats
        allowed; all rows when None)."""
        import copy

        ev = self.ev
        if sample is not None:
            ev = copy.copy(self.ev)
            ev.params, ev._paramsEval = copy.copy(self.ev.params), copy.copy(self.ev._paramsEval)
            n_cat = len(self.ev.params.catIds)
            # evalImgs is laid out [category][area range][image]; one area range here
            ev.evalImgs = [self.ev.evalImgs[k * self.n + int(i)] for k in range(n_cat) for i in sample]
            ev.params.imgIds = ev._paramsEval.imgIds = list(range(len(sample)))
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        precision = ev.eval["precision"][:, :, :, 0, 0]  # [IoU threshold, recall, category]

        def mean(values):
            values = values[values > -1]
            return float(values.mean()) if values.size else None

        return {"map50": mean(precision[0]), "map": mean(precision),
                "per_category": {c: {"ap50": mean(precision[0, :, k]), "ap": mean(precision[:, :, k])}
                                 for k, c in enumerate(self.categories)}}


def score_grounding(rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Every box number of the card, with 95% percentile-bootstrap intervals over images (all the
    queries of a drawn image come with it)."""
    refs = [scored_boxes(r["reference"]) for r in rows]
    preds = [scored_boxes(r["response"]) for r in rows]
    categories: dict[str, str] = {}
    for ref in refs:
        for b in ref:
            categories.setdefault(label_key(b.label), b.label)
    cats = sorted(categories.values(), key=label_key)
    coco = CocoScores(refs, preds, cats) if cats else None
    overall = coco.scores() if coco else {"map50": None, "map": None, "per_category": {}}
    ious = np.array([query_iou(p, r) if p is not None else 0.0 for p, r in zip(preds, refs)])
    invalid = np.array([p is None for p in preds], dtype=float)
    per_finding = {}
    for c in cats:
        key = label_key(c)
        per_finding[c] = {**overall["per_category"][c],
                          "reference_boxes": sum(label_key(b.label) == key for ref in refs for b in ref),
                          "predicted_boxes": sum(label_key(b.label) == key for p in preds for b in p or [])}
    image_of = [_image_of(r) for r in rows]
    images = sorted(set(image_of))
    ci95 = None
    if n_boot and rows:
        rows_of = {img: [] for img in images}
        for i, img in enumerate(image_of):
            rows_of[img].append(i)
        groups = [np.array(rows_of[img]) for img in images]
        rng = np.random.default_rng(seed)
        draws = {"map50": [], "map": [], "mean_iou": [], "invalid_share": [], "iou_at_0.5": []}
        per_draws = {c: {"ap50": [], "ap": []} for c in cats}
        for _ in range(n_boot):
            sample = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
            s = coco.scores(sample) if coco else {"map50": None, "map": None, "per_category": {}}
            for name in ("map50", "map"):
                draws[name].append(np.nan if s[name] is None else s[name])
            for c, values in s["per_category"].items():
                for name in ("ap50", "ap"):
                    per_draws[c][name].append(np.nan if values[name] is None else values[name])
            draws["mean_iou"].append(ious[sample].mean())
            draws["iou_at_0.5"].append((ious[sample] >= 0.5).mean())
            draws["invalid_share"].append(invalid[sample].mean())
        from medswift.eval.bootstrap import percentile_interval

        ci95 = {name: percentile_interval(np.array(v)) for name, v in draws.items()}
        ci95["per_finding"] = {c: {name: percentile_interval(np.array(v)) for name, v in d.items()}
                               for c, d in per_draws.items()}
    return {"n": len(rows), "images": len(images), "map50": overall["map50"], "map": overall["map"],
            "mean_iou": float(ious.mean()) if rows else None,
            "iou_at_0.5": float((ious >= 0.5).mean()) if rows else None,
            "invalid": int(invalid.sum()), "invalid_share": float(invalid.mean()) if rows else None,
            "empty_references": sum(1 for r in refs if not r), "per_finding": per_finding, "ci95": ci95,
            "bootstrap": {"resamples": n_boot, "seed": seed, "method": "percentile", "level": 0.95,
                          "unit": "image (all its queries drawn together)"}}


# --------------------------------------------------------------------------- pictures
REFERENCE_COLOUR, PREDICTED_COLOUR = "#00c853", "#ff1744"


def draw_boxes(image, boxes: list[Box], colour: str, width: int = 3):
    """Boxes (0-1000 scale) drawn on a copy of a Pillow image, in its own pixels, with labels."""
    from PIL import ImageDraw

    img = image.convert("RGB")
    draw = ImageDraw.Draw(img)
    for b in boxes:
        x1, y1, x2, y2 = (b.x1 * img.width / SCALE, b.y1 * img.height / SCALE, b.x2 * img.width / SCALE,
                          b.y2 * img.height / SCALE)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        draw.text((x1 + 3, y1 + 2), b.label, fill=colour)
    return img


def plot_grid(rows: list[dict], path: Path, limit: int = 12) -> tuple[int, list[str]]:
    """A grid of the first ``limit`` rows' images (by key) with reference boxes green and
    predicted red; returns how many were drawn and why the others tried were not (each image is
    decoded by medswift.core.images: missing, broken, or over its pixel ceiling, a decompression bomb)."""
    from medswift.core.images import ImageRejected, open_checked
    from medswift.eval.charts import pyplot, save_figure

    plt = pyplot()
    chosen, not_drawn = [], []
    for row in sorted(rows, key=lambda r: r["key"]):
        where = _image_of(row)
        if where == row["key"] and not Path(where).is_file():
            continue  # no image named: nothing to draw (listed by row_problems when the field was odd)
        try:
            chosen.append((row, open_checked(where).image))
        except ImageRejected as exc:
            not_drawn.append(f"{row['key']}: image not drawn ({exc.reason})")
        except OSError as exc:  # missing or unreadable path
            not_drawn.append(f"{row['key']}: image not drawn ({type(exc).__name__})")
        if len(chosen) == limit:
            break
    cols = min(4, max(1, len(chosen)))
    nrows = max(1, math.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (row, im) in zip(axes.ravel(), chosen):
        # the reference wider, so a prediction on top of it leaves a green rim
        im = draw_boxes(im, scored_boxes(row["reference"]) or [], REFERENCE_COLOUR, width=max(4, im.width // 80))
        im = draw_boxes(im, scored_boxes(row["response"]) or [], PREDICTED_COLOUR, width=max(2, im.width // 300))
        ax.imshow(im)
        ax.set_title(str(row.get("id") or row["key"])[-28:], fontsize=7)
    fig.suptitle(f"reference (green) and predicted (red) boxes. {NOTICE}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return len(chosen), not_drawn


def plot_ap(per_finding: dict, path: Path, ci: dict | None = None) -> None:
    """AP@0.5 and AP@[.5:.95] per finding, with their 95% intervals as error bars when given."""
    from medswift.eval.charts import pyplot, save_figure

    plt = pyplot()
    names = list(per_finding)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ap50 = [per_finding[n]["ap50"] or 0 for n in names]
    ap = [per_finding[n]["ap"] or 0 for n in names]
    def errors(name, values):
        if not ci:
            return None
        bounds = [(ci.get(n, {}).get(name) or [None, None]) for n in names]
        return np.array([[v - lo if lo is not None else 0 for v, (lo, _) in zip(values, bounds)],
                         [hi - v if hi is not None else 0 for v, (_, hi) in zip(values, bounds)]]).clip(min=0)

    ax.bar(x - 0.2, ap50, 0.4, yerr=errors("ap50", ap50), capsize=3, label="AP@0.5")
    ax.bar(x + 0.2, ap, 0.4, yerr=errors("ap", ap), capsize=3, label="AP@[.5:.95]")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("average precision")
    ax.legend(fontsize=7)
    ax.set_title(f"per-finding AP (pycocotools), 95% intervals over images. {NOTICE}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- the card
def _fmt(v, ci=None) -> str:
    if v is None:
        return "n/a"
    text = f"{v:.3f}"
    if ci and ci[0] is not None:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def evaluate_grounding(predictions: Path, out: Path, scored: list[dict], controls: list[dict], problems: list[str],
                       *, n_boot: int, seed: int, worst_n: int = 10) -> dict:
    """The box report card: metrics.json (with ``map50``), report.md, boxes_grid.png, ap_per_finding.png."""
    from medswift.eval import provenance
    from medswift.core.errors import UsageError

    problems = [*problems, *row_problems(scored)]
    scores = score_grounding(scored, n_boot, seed)
    prov = provenance.collect(scored, problems)
    prov.update(provenance.scoring(predictions, len(controls), java=False),
                protocol="boxes: pycocotools COCOeval (bbox, all areas, 100 detections), Qwen3-VL 0-1000 coordinates")
    metrics = {"task": "grounding", "predictions": str(predictions), "notice": NOTICE, "provenance": prov,
               **scores, "problems": problems,
               "scoring_note": "answers carry no confidence: every predicted box scores 1.0 (ties kept in answer "
                               "order); a label no reference uses is not scored; an answer that is not box JSON "
                               "predicts nothing and counts in invalid_share"}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --output_dir {out}: {exc.strerror or exc}") from None
    drawn, not_drawn = plot_grid(scored, out / "boxes_grid.png")
    metrics["problems"] = problems = [*problems, *not_drawn]
    write_json(out / "metrics.json", metrics)
    plot_ap(scores["per_finding"], out / "ap_per_finding.png", (scores["ci95"] or {}).get("per_finding"))
    ci = scores["ci95"] or {}
    worst = sorted(scored, key=lambda r: (query_iou(scored_boxes(r["response"]) or [], scored_boxes(r["reference"])),
                                          r["key"]))[:worst_n]
    lines = [f"# Box report card\n", f"> **{NOTICE}**\n",
             f"Predictions: `{predictions}` ({scores['n']} queries on {scores['images']} images; "
             f"{scores['empty_references']} references say no finding `[]`).\n",
             "| metric | value [95% CI over images] |", "| --- | --- |",
             f"| mAP@0.5 | {_fmt(scores['map50'], ci.get('map50'))} |",
             f"| mAP@[.5:.95] | {_fmt(scores['map'], ci.get('map'))} |",
             f"| mean IoU (one-to-one matched, per query) | {_fmt(scores['mean_iou'], ci.get('mean_iou'))} |",
             f"| share of queries with IoU >= 0.5 | {_fmt(scores['iou_at_0.5'], ci.get('iou_at_0.5'))} |",
             f"| answers that are not box JSON | {scores['invalid']} "
             f"({_fmt(scores['invalid_share'], ci.get('invalid_share'))}) |", "",
             "| finding | AP@0.5 | AP@[.5:.95] | reference boxes | predicted boxes |",
             "| --- | --- | --- | --- | --- |"]
    per_ci = ci.get("per_finding", {})
    for c, v in scores["per_finding"].items():
        c_ci = per_ci.get(c, {})
        lines.append(f"| {c} | {_fmt(v['ap50'], c_ci.get('ap50'))} | {_fmt(v['ap'], c_ci.get('ap'))} "
                     f"| {v['reference_boxes']} | {v['predicted_boxes']} |")
    lines += ["", metrics["scoring_note"] + ".", "",
              f"![boxes](boxes_grid.png) ({drawn} images: reference green, predicted red)", "",
              "![AP per finding](ap_per_finding.png)", "", "## Lowest IoU", ""]
    lines += [f"- `{r['key']}`: predicted `{r['response'][:200]}`, reference `{r['reference'][:200]}`" for r in worst]
    if problems:
        lines += ["", "## Lines not scored, and rows scored with a note", ""] + [f"- {p}" for p in problems]
    lines += ["", f"Scored {prov.get('evaluated_at', '')} with pycocotools {_version('pycocotools')}. {NOTICE}"]
    write_atomic(out / "report.md", "\n".join(lines) + "\n")
    return metrics


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def summary_lines(m: dict) -> list[str]:
    ci = m["ci95"] or {}
    return [f"{m['n']} box answers on {m['images']} images: mAP@0.5 {_fmt(m['map50'], ci.get('map50'))}, "
            f"mAP@[.5:.95] {_fmt(m['map'], ci.get('map'))}, mean IoU {_fmt(m['mean_iou'], ci.get('mean_iou'))}, "
            f"not box JSON {m['invalid']} ({_fmt(m['invalid_share'])})"]
