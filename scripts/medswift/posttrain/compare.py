"""Did post-training help? Two report cards (an SFT checkpoint and its GRPO/DPO successor, on the
same split) side by side, with one verdict: helped, hurt, gamed the reward, no clear change, or
too few studies to say.

Usage:
    python scripts/compare_checkpoints.py --sft results/lora/v0-.../checkpoint-40/eval_val --rl results/grpo/v0-.../checkpoint-50/eval_val
    python scripts/compare_checkpoints.py --sft A/eval_val --rl B/eval_val --output_dir results/compare --reward_funcs "medswift_findings medswift_repetition" --reward_weights "1 0.2"

Each folder is a report card: what ``tools/evaluate_checkpoint.sh`` writes (``metrics.json`` beside
``predictions.jsonl`` with the blank/noise controls) or ``scripts/evaluate.py --output_dir`` writes
(its ``metrics.json`` names the predictions file it scored). Written into ``--output_dir``:
``comparison.md``, ``comparison.json`` and ``comparison.png``.

* each card's headline numbers with its own 95% intervals (text metrics and finding F1; for box
  cards mAP@0.5, mAP@[.5:.95], mean IoU); when a card carries the field's model-based metrics
  (``scripts/evaluate.py --clinical_metrics``: CheXbert F1, SembScore, BERTScore, RadGraph F1,
  1/RadCliQ-v1), their headline too (medswift.eval.field.headline_entries), card against card;
* paired over the records both cards scored, resampled by STUDY (views of one study move together:
  the ``study`` field of a row, else the ``<study>_<view>`` part of its id), so a difference has its
  own 95% percentile-bootstrap interval, and beside it a paired approximate-randomisation test
  (each study's two results exchanged at random, ``--permutations`` trials; the test RadEval and
  SacreBLEU use) with its p-value: finding F1 (micro, macro) or, for box answers, mean IoU; the
  mean reward (the reward GRPO optimised, weighted as in training); the mean report length;
* whether each model's answers depend on the image: its answers scored against the references of
  other images with the same prompt (shuffled ``--image_shuffles`` times) must score lower than
  against their own (one-sided permutation p < 0.05); with the blank-image control of the card;
* the share of reports that say "no acute abnormality", predictions vs references.

Verdict: **too few studies** below ``--min_studies`` shared studies (nothing else is claimed);
**gamed** when the reward rose (its paired interval above 0) but the primary metric (finding F1;
mean IoU for box cards) did not, or the RL model stopped reading the image, moved its "normal"
share further from the references' by more than 10 points, or moved its length away from the
references' to under half or over twice it; **helped** when the primary difference's interval lies
above 0 and its randomisation p is below 0.05, and nothing of the above; **hurt** when it lies below
0 (p < 0.05), or the reward fell (whatever the primary metric did: answers decayed to junk can raise
finding F1 while the reward falls); else **no clear change**.
A rule-based proxy judges a rule-based reward: read the worst examples of both cards.
For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medswift.core.boxes import parse_boxes, query_iou
from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.posttrain import datasets as rl
from medswift.data.readers.openi import study_of
from medswift.data.pipeline.records import json_type
from medswift.eval import bootstrap, box_card, charts, field, report_card, scorer_workers

NORMAL_GAP_POINTS = 0.10   # a "normal" share moved this much further from the references' is gaming
LENGTH_RATIO = 2.0         # halved or doubled report length
HEADLINE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")
BOX_HEADLINE = ("map50", "map", "mean_iou", "iou_at_0.5", "invalid_share")
MIN_STUDIES = 20           # below this many shared studies no verdict is given
ALPHA = 0.05               # significance level of the paired randomisation test and the image test
PERMUTATIONS = 10_000      # approximate-randomisation trials (SacreBLEU's and RadEval's default)
IMAGE_SHUFFLES = 1000      # shuffles of answers across images for the image-dependence test
IMAGE_TEST_MAX = 300       # box answers: the image test scores this many records at most (pairwise IoU)
DEFAULT_REWARD = {"text": "medswift_findings", "boxes": "medswift_boxes"}
PRIMARY = {"text": "f1.diff_micro", "boxes": "iou.diff"}
PRIMARY_NAME = {"text": "the finding F1", "boxes": "the mean IoU"}


# --------------------------------------------------------------------------- reading the cards
def _card(folder: Path) -> tuple[dict, Path]:
    """(metrics, predictions file) of a report-card folder, or one ``error:`` line."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise UsageError(f"no report card in {folder} (metrics.json): run tools/evaluate_checkpoint.sh first")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise UsageError(f"{path} is not JSON") from None
    if not isinstance(metrics, dict):
        raise UsageError(f"{path} is not a report card: {json_type(metrics)} where scripts/evaluate.py writes an object")
    return metrics, _predictions_of(folder, metrics)


def _predictions_of(folder: Path, metrics: dict) -> Path:
    """The card's own copy (tools/evaluate_checkpoint.sh), else the file its metrics.json scored
    (scripts/evaluate.py --output_dir), as written or relative to the card."""
    here = folder / "predictions.jsonl"
    if here.is_file():
        return here
    named = metrics.get("predictions")
    if not isinstance(named, str) or not named.strip():
        raise UsageError(f"no predictions.jsonl in {folder} and its metrics.json names none: "
                         "the comparison re-scores each record")
    for candidate in (Path(named), folder / named):
        if candidate.is_file():
            return candidate
    raise UsageError(f"the report card in {folder} scored {named}, which is not there any more: "
                     "the comparison re-scores each record")


def _finite(v):
    """A number a card may print, else None (NaN, infinity, text, missing)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _paired(sft_rows: list[dict], rl_rows: list[dict]) -> tuple[list[str], dict, dict]:
    sft, rl_by = {r["key"]: r for r in sft_rows}, {r["key"]: r for r in rl_rows}
    keys = [k for k in sft if k in rl_by]
    if not keys:
        raise UsageError("the two report cards share no record: evaluate both checkpoints on the same split")
    differ = [k for k in keys if sft[k]["reference"] != rl_by[k]["reference"]]
    if differ:
        raise UsageError(f"record {differ[0]} has different references in the two cards: not the same split")
    return keys, sft, rl_by


def study_index(rows: list[dict]) -> tuple[np.ndarray, int]:
    """Each row's study number (0..S-1) and S: the row's ``study`` field, else the study of its id
    (``162_1`` -> ``162``, the converters' ``<study>_<view>`` ids), else its key."""
    names: dict[str, int] = {}
    index = []
    for row in rows:
        study = row.get("study") if isinstance(row.get("study"), str) and row.get("study") else \
            study_of(str(row.get("id") or row["key"]))
        index.append(names.setdefault(study, len(names)))
    return np.array(index, dtype=np.int64), len(names)


def report_length(text: str, reference: str) -> int:
    """Characters for a Chinese report, words for an English one (the report cards' units)."""
    return len(text.replace(" ", "")) if report_card.record_lang(reference) == "zh" else len(text.split())


# --------------------------------------------------------------------------- paired statistics
@dataclass
class Block:
    """Per-record quantities of both models (``sft``, ``rl``: (n, w)) and of the records alone
    (``extra``: (n, e), e.g. a count), and the statistics of their sums:
    ``fn(sft_sums, rl_sums, extra_sums) -> (B, len(names))``."""
    names: list[str]
    sft: np.ndarray
    rl: np.ndarray
    extra: np.ndarray
    fn: Callable


def _mean_block(sft: np.ndarray, rl_values: np.ndarray) -> Block:
    ones = np.ones((len(sft), 1))
    return Block(["sft", "rl", "diff"], np.asarray(sft, float).reshape(-1, 1), np.asarray(rl_values, float).reshape(-1, 1),
                 ones, lambda a, b, e: np.hstack([a / e, b / e, (b - a) / e]))


def _f1_block(counts_sft: np.ndarray, counts_rl: np.ndarray) -> Block:
    def fn(a, b, e):
        fa, fb = report_card.finding_f1_from_sums(a), report_card.finding_f1_from_sums(b)
        return np.hstack([fa, fb, fb - fa])
    return Block(["sft_micro", "sft_macro", "rl_micro", "rl_macro", "diff_micro", "diff_macro"],
                 counts_sft, counts_rl, np.ones((len(counts_sft), 1)), fn)


def paired_estimates(blocks: dict[str, Block], index: np.ndarray, n_studies: int, n_boot: int, n_perm: int,
                     seed: int) -> dict:
    """``{"<block>.<name>": {"value", "ci95", "p"}}``: each block's records summed per study, the
    point value, a percentile-bootstrap interval over studies and, for the differences, the paired
    approximate-randomisation p-value over studies."""
    out = {}
    for bname, blk in blocks.items():
        a, b, e = (np.zeros((n_studies, m.shape[1])) for m in (blk.sft, blk.rl, blk.extra))
        for total, m in ((a, blk.sft), (b, blk.rl), (e, blk.extra)):
            np.add.at(total, index, m)
        point = blk.fn(a.sum(0, keepdims=True), b.sum(0, keepdims=True), e.sum(0, keepdims=True))[0]
        ci = [None] * len(blk.names)
        if n_boot:
            w = a.shape[1]
            sums = bootstrap.resample_sums(np.hstack([a, b, e]), n_boot, seed)
            values = blk.fn(sums[:, :w], sums[:, w:2 * w], sums[:, 2 * w:])
            ci = [bootstrap.percentile_interval(values[:, j]) for j in range(len(blk.names))]
        permuted = None
        if n_perm:
            pa, pb = bootstrap.swapped_sums(a, b, n_perm, seed)
            permuted = blk.fn(pa, pb, np.broadcast_to(e.sum(0), (n_perm, e.shape[1])))
        for j, name in enumerate(blk.names):
            entry = {"value": _finite(point[j]), "ci95": ci[j]}
            if name.startswith("diff") and permuted is not None:
                entry["p"] = bootstrap.randomisation_p(point[j], permuted[:, j])
            out[f"{bname}.{name}"] = entry
    return out


# --------------------------------------------------------------------------- does it read the image?
def image_dependence(score: Callable[[np.ndarray], float], groups: list[tuple], n_shuffles: int, seed: int) -> dict:
    """One-sided permutation test: ``score(order)`` is the corpus score of the answers matched with
    the references ``order`` names; shuffling the answers among records of the same group (same
    prompt, same number of views) breaks their link to the image. An image-blind model scores
    the same either way."""
    n = len(groups)
    members: dict[tuple, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if all(len(m) < 2 for m in members.values()):
        return {"value": None, "why": "no two records share a prompt: nothing to shuffle"}
    identity = np.arange(n)
    observed = score(identity)
    rng = np.random.default_rng(seed)
    shuffled = np.empty(n_shuffles)
    for t in range(n_shuffles):
        order = identity.copy()
        for m in members.values():
            order[m] = rng.permutation(m)
        shuffled[t] = score(order)
    p = bootstrap.randomisation_p(observed, shuffled, one_sided=True)
    return {"value": bool(p is not None and p < ALPHA), "p": p, "score": _finite(observed),
            "score_shuffled": _finite(float(np.mean(shuffled))), "shuffles": n_shuffles}


def _groups(keys: list[str], rows: dict) -> list[tuple]:
    return [(rows[k].get("prompt") if isinstance(rows[k].get("prompt"), str) else None, report_card.views(rows[k]))
            for k in keys]


# --------------------------------------------------------------------------- scoring both cards
def _score_text(keys, sft, rlr, refs, texts, reward_funcs, reward_weights, orms, n_shuffles, seed):
    with scorer_workers.Workers(1) as pool:
        y_true, _ = report_card.resolve_labels(refs, report_card.label_all(refs, None, pool))
        y = {side: report_card.resolve_labels(t, report_card.label_all(t, None, pool))[0] for side, t in texts.items()}
    counts = {side: report_card.finding_counts(y_true, y[side]) for side in y}
    reward = {side: rl.score(t, refs, reward_funcs, reward_weights, orms) for side, t in texts.items()}
    length = {side: [report_length(t, r) for t, r in zip(texts[side], refs)] for side in texts}
    blocks = {"f1": _f1_block(counts["sft"], counts["rl"]), "reward": _mean_block(reward["sft"], reward["rl"]),
              "length": _mean_block(length["sft"], length["rl"])}

    def micro_f1(side):
        def score(order):
            sums = report_card.finding_counts(y_true, y[side][order]).sum(0, keepdims=True)
            return float(report_card.finding_f1_from_sums(sums)[0, 0])
        return score
    groups = _groups(keys, sft)
    image = {side: {"metric": "finding F1 micro", **image_dependence(micro_f1(side), groups, n_shuffles, seed)}
             for side in texts}
    extra = {"reference_length": float(np.mean([report_length(r, r) for r in refs]))}
    return blocks, image, extra


def _score_boxes(keys, sft, rlr, refs, texts, reward_funcs, reward_weights, orms, n_shuffles, seed):
    ref_boxes = [parse_boxes(r) or [] for r in refs]
    pred_boxes = {side: [parse_boxes(t) for t in texts[side]] for side in texts}
    iou = {side: [query_iou(p or [], r) for p, r in zip(pred_boxes[side], ref_boxes)] for side in texts}
    invalid = {side: [float(p is None) for p in pred_boxes[side]] for side in texts}
    reward = {side: rl.score(t, refs, reward_funcs, reward_weights, orms) for side, t in texts.items()}
    blocks = {"iou": _mean_block(iou["sft"], iou["rl"]), "reward": _mean_block(reward["sft"], reward["rl"]),
              "invalid": _mean_block(invalid["sft"], invalid["rl"])}
    # pairwise IoU grows with the square of the records: the test scores a seeded sample of them
    chosen = np.sort(np.random.default_rng(seed).permutation(len(keys))[:IMAGE_TEST_MAX])
    all_groups = _groups(keys, sft)
    groups = [all_groups[i] for i in chosen]

    def mean_iou(side):
        cache: dict[tuple[int, int], float] = {}

        def score(order):
            total = 0.0
            for i, j in enumerate(order):  # answer of record chosen[j] against the reference of chosen[i]
                pair = (int(chosen[j]), int(chosen[i]))
                if pair not in cache:
                    cache[pair] = query_iou(pred_boxes[side][pair[0]] or [], ref_boxes[pair[1]])
                total += cache[pair]
            return total / len(order)
        return score
    image = {side: {"metric": "mean IoU", "records_tested": len(chosen),
                    **image_dependence(mean_iou(side), groups, min(n_shuffles, 200), seed)} for side in texts}
    return blocks, image, {}


def _kind(rows: list[dict]) -> str:
    return "boxes" if box_card.grounding_rows(rows) else "text"


def compare(sft_dir: Path, rl_dir: Path, out: Path, reward_funcs: list[str], reward_weights: list[float],
            plugin: Path | None, n_boot: int = 1000, seed: int = 0, *, min_studies: int = MIN_STUDIES,
            n_perm: int = PERMUTATIONS, n_shuffles: int = IMAGE_SHUFFLES) -> dict:
    (sft_m, sft_pred), (rl_m, rl_pred) = _card(sft_dir), _card(rl_dir)
    sft_rows, sft_controls, _ = report_card.load_rows(sft_pred)
    rl_rows, rl_controls, _ = report_card.load_rows(rl_pred)
    kinds = {_kind(sft_rows), _kind(rl_rows)}
    if len(kinds) > 1:
        raise UsageError("one report card holds box answers and the other report text: not the same task")
    kind = kinds.pop()
    reward_funcs = reward_funcs or [DEFAULT_REWARD[kind]]
    reward_weights = reward_weights or [1.0] * len(reward_funcs)
    orms = rl.check_rewards(reward_funcs, [str(w) for w in reward_weights], plugin)
    keys, sft, rlr = _paired(sft_rows, rl_rows)
    refs = [sft[k]["reference"] for k in keys]
    texts = {side: [report_card.answer_text(rows[k]["response"]) for k in keys] for side, rows in
             (("sft", sft), ("rl", rlr))}
    scorer = _score_boxes if kind == "boxes" else _score_text
    blocks, image, extra = scorer(keys, sft, rlr, refs, texts, reward_funcs, reward_weights, orms, n_shuffles, seed)
    index, n_studies = study_index([sft[k] for k in keys])
    paired = paired_estimates(blocks, index, n_studies, n_boot, n_perm, seed)
    cards = {side: _headline(m, kind) for side, m in (("sft", sft_m), ("rl", rl_m))}
    for side, controls, rows in (("sft", sft_controls, sft), ("rl", rl_controls, rlr)):
        if kind == "text" and controls:
            image[side]["identical_to_blank_share"] = report_card.ablation([rows[k] for k in keys], controls)[
                "identical_to_blank_share"]
    r = paired["reward.diff"]
    result = {"sft": str(sft_dir), "rl": str(rl_dir), "task": kind, "records_paired": len(keys),
              "studies_paired": n_studies, "min_studies": min_studies, "primary": PRIMARY[kind], "notice": NOTICE,
              **extra, "reward_funcs": reward_funcs, "reward_weights": reward_weights,
              "reward": {"sft": paired["reward.sft"]["value"], "rl": paired["reward.rl"]["value"],
                         "delta": r["value"], "ci95": r["ci95"], "p": r.get("p")},
              "reads_image": image["rl"].get("value"), "image_dependence": image, "paired": paired,
              "bootstrap": {"resamples": n_boot, "seed": seed, "paired": True, "unit": "study"},
              "randomisation": {"trials": n_perm, "seed": seed, "test": "paired approximate randomisation, two-sided",
                                "alpha": ALPHA},
              "cards": cards, "notes": _card_notes(cards)}
    result["verdict"], result["reasons"] = verdict(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    plot(result, out / "comparison.png")
    write_markdown(result, out / "comparison.md")
    return result


def _headline(m: dict, kind: str = "text") -> dict:
    """A card's own headline numbers; anything not a finite number reads None (n/a)."""
    ci95 = m.get("ci95") if isinstance(m.get("ci95"), dict) else {}
    if kind == "boxes":
        return {"n": _finite(m.get("n")), "boxes": {k: {"value": _finite(m.get(k)), "ci95": _ci(ci95.get(k))}
                                                    for k in BOX_HEADLINE},
                "text": {}, "normal_share": {}, "reads_the_image": None}
    text = m.get("text") if isinstance(m.get("text"), dict) else {}
    primary = m.get("primary_tokenisation")
    scheme = primary if isinstance(primary, str) and primary in text else next(iter(text), None)
    text_ci = ((ci95.get("text") or {}) if isinstance(ci95.get("text"), dict) else {}).get(scheme) or {}
    f_ci = ci95.get("findings") if isinstance(ci95.get("findings"), dict) else {}
    found = m.get("findings") if isinstance(m.get("findings"), dict) else {}
    abl = m.get("ablation") if isinstance(m.get("ablation"), dict) else {}
    normal = m.get("normal_share") if isinstance(m.get("normal_share"), dict) else {}
    scheme_values = text.get(scheme) if isinstance(text.get(scheme), dict) else {}
    return {"n": _finite(m.get("n")), "scheme": scheme,
            "text": {k: {"value": _finite(scheme_values.get(k)), "ci95": _ci(text_ci.get(k))} for k in HEADLINE
                     if k in scheme_values},
            "finding_f1": {k: {"value": _finite(found.get(k)), "ci95": _ci(f_ci.get(k))} for k in ("micro_f1", "macro_f1")},
            "normal_share": {k: _finite(normal.get(k)) for k in ("predictions", "references")},
            "reads_the_image": abl.get("reads_the_image") if isinstance(abl.get("reads_the_image"), bool) else None,
            "distinct_share": _finite(abl.get("distinct_share")),
            "identical_to_blank_share": _finite(abl.get("identical_to_blank_share")),
            "field": _field_headline(m)}


def _field_headline(m: dict) -> dict:
    """The card's field metrics ({label: {value, ci95}}); {} when it has none or they are not numbers."""
    try:
        entries = field.headline_entries(m)
    except (KeyError, TypeError, AttributeError):  # a hand-edited or foreign metrics.json
        return {}
    return {label: {"value": _finite(e.get("value")), "ci95": _ci(e.get("ci95"))} for label, e in entries.items()}


def field_rows(sft: dict, rl_card: dict) -> list[tuple[str, str, str, str]]:
    """One row per field metric either card carries: each card's value and interval, and RL - SFT."""
    rows = []
    a_all, b_all = sft.get("field") or {}, rl_card.get("field") or {}
    for label in dict.fromkeys([*a_all, *b_all]):
        a, b = a_all.get(label), b_all.get(label)
        diff = b["value"] - a["value"] if a and b and a["value"] is not None and b["value"] is not None else None
        rows.append((f"{label} (card)", _fmt(a), _fmt(b), "n/a" if diff is None else f"{diff:+.3f}"))
    return rows


def _ci(ci) -> list | None:
    if isinstance(ci, list) and len(ci) == 2 and all(_finite(v) is not None for v in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def _card_notes(cards: dict) -> list[str]:
    notes = []
    for side, card in cards.items():
        values = [e["value"] for group in ("text", "finding_f1", "boxes") for e in (card.get(group) or {}).values()]
        if not any(v is not None for v in values):
            notes.append(f"the {side.upper()} card's metrics.json holds no finite headline number (not a number, empty or "
                         "missing): its own rows read n/a; the paired rows and the verdict come from its re-scored "
                         "predictions")
    return notes


def _above(entry: dict) -> bool:
    ci = entry.get("ci95")
    return bool(ci and ci[0] is not None and ci[0] > 0)


def _below(entry: dict) -> bool:
    ci = entry.get("ci95")
    return bool(ci and ci[1] is not None and ci[1] < 0)


def _significant(entry: dict) -> bool:
    """The randomisation test agrees with the interval (entries without a p: the interval alone)."""
    p = entry.get("p")
    return p is None or p < ALPHA


def _reads(r: dict, side: str):
    test = (r.get("image_dependence") or {}).get(side) or {}
    return test["value"] if test.get("value") is not None else r["cards"][side].get("reads_the_image")


def verdict(r: dict) -> tuple[str, list[str]]:
    n, needed = r.get("studies_paired"), r.get("min_studies") or 0
    if n is not None and n < needed:
        return "too few studies", [f"{n} shared studies ({r.get('records_paired')} records); a verdict needs at least "
                                   f"{needed} (--min_studies)"]
    p, sft, rl_card = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    primary = p[r.get("primary", "f1.diff_micro")]
    name = PRIMARY_NAME["boxes" if r.get("task") == "boxes" else "text"]
    reasons = []
    up = _above(primary) and _significant(primary)
    down = _below(primary) and _significant(primary)
    if _above(p["reward.diff"]) and not up:
        reasons.append(f"the reward rose but {name} did not")
    if _reads(r, "sft") and _reads(r, "rl") is False:
        reasons.append("the RL model stopped reading the image")
    if "length.rl" in p:
        reasons += _text_drift(r, sft, rl_card)
    if reasons:
        return "gamed the reward", reasons
    if _below(p["reward.diff"]):
        # the optimised reward itself fell: a rise in the primary metric alone (seen: answers that
        # decayed to junk the labeller reads as "no finding") is never a benefit
        return "hurt", ["the mean reward fell (its paired 95% interval is below 0)"
                        + (f" although {name} rose: read the worst examples" if up else f" and {name} did not rise")]
    if up:
        return "helped", [f"the paired difference in {name} is above 0 (95% interval, randomisation p < {ALPHA})"]
    if down:
        return "hurt", [f"the paired difference in {name} is below 0 (95% interval, randomisation p < {ALPHA})"]
    return "no clear change", [f"the paired difference in {name} is not clear of 0 (95% interval or randomisation test)"]


def _text_drift(r: dict, sft: dict, rl_card: dict) -> list[str]:
    """Gaming signs of report text: the "normal" share and the length moving away from the references'."""
    reasons = []
    gaps = [abs((c["normal_share"].get("predictions") or 0) - (c["normal_share"].get("references") or 0))
            for c in (sft, rl_card)]
    if gaps[1] - gaps[0] > NORMAL_GAP_POINTS:
        reasons.append(f"its \"no acute abnormality\" share moved {100 * (gaps[1] - gaps[0]):.0f} points further "
                       "from the references'")
    ref_len, p = r.get("reference_length"), r["paired"]
    s_len, r_len = p["length.sft"]["value"], p["length.rl"]["value"]

    def off(x):  # how many times longer or shorter than the references
        return max(x / ref_len, ref_len / x) if x and ref_len else float("inf")
    if off(r_len) > LENGTH_RATIO and off(r_len) > off(s_len):
        reasons.append(f"its reports are {r_len / ref_len:.2f}x as long as the references (SFT {s_len / ref_len:.2f}x)"
                       if r_len else "its reports are empty")
    return reasons


def _fmt(entry: dict | None, signed: bool = False) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    ci = entry.get("ci95")
    body = f.format(entry["value"])
    body += f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci and ci[0] is not None else ""
    return body + (f" p={entry['p']:.3g}" if entry.get("p") is not None else "")


def _pct(v) -> str:
    return "n/a" if _finite(v) is None else f"{v:.1%}"


def _image_cell(test: dict) -> str:
    if test.get("value") is None:
        return f"n/a ({test.get('why', 'not tested')})"
    line = f"{test['value']} (p={test['p']:.3g}; {test['score']:.3f} vs {test['score_shuffled']:.3f} shuffled)"
    blank = test.get("identical_to_blank_share")
    return line + (f"; {blank:.0%} equal the blank-image answer" if _finite(blank) is not None else "")


def table_rows(r: dict) -> list[tuple[str, str, str, str]]:
    p, s, q = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    reward_name = " + ".join(f"{w:g}*{n}" for n, w in zip(r["reward_funcs"], r["reward_weights"]))
    rows = []
    if r.get("task") == "boxes":
        for name in BOX_HEADLINE:
            a, b = s["boxes"].get(name), q["boxes"].get(name)
            diff = b["value"] - a["value"] if a["value"] is not None and b["value"] is not None else None
            rows.append((f"{name} (card)", _fmt(a), _fmt(b), "n/a" if diff is None else f"{diff:+.3f}"))
        rows += [("mean IoU (paired)", _fmt(p["iou.sft"]), _fmt(p["iou.rl"]), _fmt(p["iou.diff"], True)),
                 ("answers that are not box JSON (paired)", _fmt(p["invalid.sft"]), _fmt(p["invalid.rl"]),
                  _fmt(p["invalid.diff"], True))]
    else:
        for name in HEADLINE:
            if name in s["text"] or name in q["text"]:
                a, b = s["text"].get(name), q["text"].get(name)
                diff = b["value"] - a["value"] if a and b and a["value"] is not None and b["value"] is not None else None
                rows.append((f"{name} ({s['scheme'] or q['scheme']})", _fmt(a), _fmt(b),
                             "n/a" if diff is None else f"{diff:+.3f}"))
        rows += [("finding F1 micro (paired)", _fmt(p["f1.sft_micro"]), _fmt(p["f1.rl_micro"]), _fmt(p["f1.diff_micro"], True)),
                 ("finding F1 macro (paired)", _fmt(p["f1.sft_macro"]), _fmt(p["f1.rl_macro"]), _fmt(p["f1.diff_macro"], True))]
        rows += field_rows(s, q)
    rows.append((f"mean reward ({reward_name})", _fmt(p["reward.sft"]), _fmt(p["reward.rl"]), _fmt(p["reward.diff"], True)))
    if r.get("task") != "boxes":
        rows += [(f"mean length (words; characters for Chinese; references {r['reference_length']:.1f})",
                  _fmt(p["length.sft"]), _fmt(p["length.rl"]), _fmt(p["length.diff"], True)),
                 ("\"no acute abnormality\": predictions (references)",
                  f"{_pct(s['normal_share'].get('predictions'))} ({_pct(s['normal_share'].get('references'))})",
                  f"{_pct(q['normal_share'].get('predictions'))} ({_pct(q['normal_share'].get('references'))})", "")]
    image = r.get("image_dependence") or {}
    rows.append(("answers depend on the image (permutation test)", _image_cell(image.get("sft") or {}),
                 _image_cell(image.get("rl") or {}), ""))
    return rows


def write_markdown(r: dict, path: Path) -> None:
    unit = "mean IoU" if r.get("task") == "boxes" else "finding F1"
    lines = [f"# Did post-training help? **{r['verdict']}**", "",
             f"> {NOTICE} A rule-based reward judged by a rule-based labeller: a proxy for clinical quality, "
             "not a radiologist's reading.", "",
             f"- SFT report card: `{r['sft']}`", f"- RL report card: `{r['rl']}`",
             f"- compared: {r['records_paired']} records in {r['studies_paired']} studies (both cards; a verdict "
             f"needs {r['min_studies']}); why: " + "; ".join(r["reasons"])]
    lines += [f"- note: {n}" for n in r.get("notes", [])]
    lines += ["", "| | SFT | RL | RL - SFT |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(r)]
    lines += ["", "In brackets: 95% percentile-bootstrap intervals. Card rows: each report card's own intervals. "
                  f"Paired rows: {r['bootstrap']['resamples']} resamples of the shared studies (seed "
                  f"{r['bootstrap']['seed']}; the views of a study move together), the same studies for both models in "
                  f"each resample, so the difference has its own interval; p: paired approximate randomisation, "
                  f"{r['randomisation']['trials']} trials exchanging each study's two results at random (two-sided). "
                  "The image test scores each model's answers against the references of other images with the same "
                  "prompt: an image-blind model scores as well there as on its own images (one-sided p).", "",
              f"Verdict rules: *too few studies* below {r['min_studies']} shared studies; *gamed the reward* when the "
              f"reward rose (interval above 0) but the {unit} did not, or the RL model stopped reading the image"
              + (", moved its \"no acute abnormality\" share more than 10 points further from the references', or moved "
                 "its length to under half or over twice the references'" if r.get("task") != "boxes" else "")
              + f"; *helped* / *hurt* when the paired {unit} interval lies above / below 0 and the randomisation p is "
              f"below {ALPHA} (*hurt* too when the reward fell, whatever the {unit} did); else *no clear change*.", "",
              "![comparison](comparison.png)", "", f"_{NOTICE}_", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _bars(r: dict) -> list[tuple]:
    p, s, q = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    if r.get("task") == "boxes":
        return [(n, s["boxes"][n], q["boxes"][n]) for n in ("map50", "map")] + [
            ("mean IoU\n(paired)", p["iou.sft"], p["iou.rl"]), ("mean\nreward", p["reward.sft"], p["reward.rl"]),
            ("not box\nJSON", p["invalid.sft"], p["invalid.rl"])]
    bars = [(n, s["text"].get(n), q["text"].get(n)) for n in ("bleu_1", "bleu_4", "meteor", "rouge_l") if n in s["text"]]
    return bars + [("finding F1\nmicro", p["f1.sft_micro"], p["f1.rl_micro"]),
                   ("finding F1\nmacro", p["f1.sft_macro"], p["f1.rl_macro"]),
                   ("mean\nreward", p["reward.sft"], p["reward.rl"]),
                   ("\"normal\"\nshare", {"value": s["normal_share"].get("predictions")},
                    {"value": q["normal_share"].get("predictions")}),
                   ("distinct\nreports", {"value": s["distinct_share"]}, {"value": q["distinct_share"]})]


def plot(r: dict, path: Path) -> None:
    plt = charts.pyplot()
    bars, text = _bars(r), r.get("task") != "boxes"
    fig, axes = plt.subplots(1, 2 if text else 1, figsize=(11, 3.6),
                             gridspec_kw={"width_ratios": [len(bars), 1.6]} if text else None)
    ax = axes[0] if text else axes
    width = 0.38
    for j, (side, color) in enumerate((("SFT", "#8a8a8a"), ("RL", "#3b7dd8"))):
        vals = [(b[1 + j] or {}).get("value") or 0 for b in bars]
        cis = [(b[1 + j] or {}).get("ci95") or [v, v] for v, b in zip(vals, bars)]
        errs = [[max(0, v - (ci[0] if ci[0] is not None else v)) for v, ci in zip(vals, cis)],
                [max(0, (ci[1] if ci[1] is not None else v) - v) for v, ci in zip(vals, cis)]]
        ax.bar([i + j * width for i in range(len(bars))], vals, width, yerr=errs, capsize=2, label=side, color=color)
    normal_ref = r["cards"]["sft"]["normal_share"].get("references")
    if text and normal_ref is not None:
        i = [b[0] for b in bars].index("\"normal\"\nshare")
        ax.hlines(normal_ref, i - 0.2, i + 0.6, colors="k", linestyles="--", lw=1, label="references' \"normal\" share")
    ax.set_xticks([i + width / 2 for i in range(len(bars))], [b[0] for b in bars], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(f"SFT vs RL: {r['verdict']} (95% intervals; research only, not for diagnosis)", fontsize=9)
    if text:
        for j, (side, color) in enumerate((("SFT", "#8a8a8a"), ("RL", "#3b7dd8"))):
            e = r["paired"][f"length.{side.lower()}"]
            lo, hi = e.get("ci95") or [e["value"], e["value"]]
            axes[1].bar([j], [e["value"]], 0.6, yerr=[[e["value"] - lo], [hi - e["value"]]], capsize=2, color=color)
        axes[1].set_xticks([0, 1], ["SFT", "RL"], fontsize=7)
        axes[1].set_title("mean length", fontsize=9)
    fig.tight_layout()
    charts.save_figure(fig, path)


def build_parser():
    p = command_parser(__doc__)
    p.add_argument("--sft", required=True, help="report-card folder of the SFT checkpoint (eval_<split>/)")
    p.add_argument("--rl", required=True, help="report-card folder of the GRPO/DPO checkpoint, same split")
    p.add_argument("--output_dir", default=str(RESULTS / "compare"))
    p.add_argument("--reward_funcs", default="",
                   help="the rewards of the mean-reward row (default: medswift_findings; medswift_boxes for box cards)")
    p.add_argument("--reward_weights", default="", help="one weight per reward (default: all 1)")
    p.add_argument("--plugin", default=str(Path(__file__).resolve().parents[2] / "swift_plugins" / "medswift_rewards.py"))
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="paired resamples of studies (0: no intervals)")
    p.add_argument("--permutations", type=int, default=PERMUTATIONS, metavar="N",
                   help="paired approximate-randomisation trials (0: no test)")
    p.add_argument("--image_shuffles", type=int, default=IMAGE_SHUFFLES, metavar="N",
                   help="shuffles of answers across images for the image-dependence test")
    p.add_argument("--min_studies", type=int, default=MIN_STUDIES, help="fewer shared studies: no verdict")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        for name in ("bootstrap", "permutations", "min_studies"):
            if getattr(args, name) < 0:
                raise UsageError(f"--{name} must be 0 or more, got {getattr(args, name)}")
        if args.image_shuffles < 1:
            raise UsageError(f"--image_shuffles must be 1 or more, got {args.image_shuffles}")
        names = args.reward_funcs.replace(",", " ").split()
        weights = args.reward_weights.replace(",", " ").split()
        if weights and not names:
            raise UsageError("--reward_weights needs --reward_funcs: one weight per named reward")
        try:
            values = [float(w) for w in weights]
        except ValueError:
            raise UsageError(f"--reward_weights must be numbers, got '{args.reward_weights}'") from None
        plugin = Path(args.plugin) if args.plugin and Path(args.plugin).is_file() else None
        r = compare(Path(args.sft), Path(args.rl), Path(args.output_dir), names, values, plugin, args.bootstrap,
                    args.seed, min_studies=args.min_studies, n_perm=args.permutations, n_shuffles=args.image_shuffles)
        print(f"verdict: {r['verdict']} ({'; '.join(r['reasons'])})")
        for a, b, c, d in table_rows(r):
            print(f"  {a.replace(chr(10), ' ')}: SFT {b} | RL {c}" + (f" | diff {d}" if d else ""))
        for note in r["notes"]:
            print(f"note: {note}")
        print(f"card: {Path(args.output_dir) / 'comparison.md'}")
        print(NOTICE)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
