"""Report card for generated X-ray reports: text metrics, findings, and "does it read the image?".

Usage:
    python scripts/evaluate.py --predictions results/batch_infer/predictions.jsonl --output_dir results/eval
    python scripts/evaluate.py --predictions results/batch_infer/predictions.jsonl \
        --output_dir results/eval_r2gen --protocol r2gen --dataset_style iu_xray --bootstrap 1000 --seed 0
    python scripts/evaluate.py --predictions results/batch_infer/predictions.jsonl --output_dir results/eval --bootstrap 0

Reads a batch-inference JSONL (``response`` + ``reference``; ``swift infer`` result
files with ``labels`` work too) and writes into ``--output_dir``:
  * ``metrics.json``: every number below;
  * ``report.md``: the report card, with the worst examples;
  * ``findings_f1.png`` and ``text_metrics.png``.

What it measures:
  * provenance: the predictions file and its sha256; model, adapter, backend and generation
    settings of the rows ("mixed" when they disagree); the dataset file and its converter
    summary.json; the toolkit version (version.py), the metric packages' and Java's versions,
    the date, the row counts and the protocol (medswift/eval/provenance.py);
  * BLEU-1..4, METEOR (English), ROUGE-L, CIDEr with pycocoevalcap; Chinese scored
    on characters (primary) and jieba words (secondary); ``--protocol r2gen`` normalises
    English as R2Gen does; see medswift/eval/text_metrics.py and medswift/eval/r2gen_cleaning.py.
    Above ``--meteor_sample`` records METEOR (a Java jar) is scored on a seeded sample, said so.
  * finding F1 (rule-based): medswift/eval/findings.py labels 14 observations + No Finding
    in prediction and reference; per-finding precision/recall/F1, micro/macro F1.
    A proxy, not CheXbert.
  * a 95% percentile-bootstrap interval over records for every headline number
    (``--bootstrap``, ``--seed``; medswift/eval/bootstrap.py);
  * share of predictions vs references that say "no acute abnormality";
  * temporal: change words in five families (new, worsened, improved, stable, resolved), negation-aware,
    English and Chinese, as a micro F1 over (record, family) pairs, and how many predictions describe
    change although their row says no prior study was given (medswift/eval/temporal.py; docs/priors.md);
  * box answers (every reference is Qwen3-VL box JSON, from scripts/convert_grounding.py): the
    box card instead, mAP@0.5 and mAP@[.5:.95] with pycocotools, mean IoU, invalid-JSON share
    (medswift/eval/box_card.py);
  * image ablation (rows written by batch_infer.py --ablation): how many real-image
    predictions equal the blank-image prediction for the same prompt and number of views,
    and how many distinct reports the model wrote at all.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medswift.core import thinking
from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl, write_atomic, write_json
from medswift.eval import bootstrap, findings, provenance, r2gen_cleaning, scorer_workers, temporal, text_metrics
from medswift.eval import box_card
from medswift.eval import field as field_metrics
from medswift.eval.charts import plot_findings, plot_text

# Responses and references are scored on their first MAX_SCORED_CHARS characters (a report is 1-3 K): one
# 100 MB row took METEOR's jar 5 minutes and 5.9 GB before it died. Each cut is listed in metrics.json.
MAX_SCORED_CHARS = 20_000

# Above these, the report card says plainly that the model ignores the image.
SAME_AS_BLANK_WARN = 0.5
DISTINCT_WARN = 0.5


def load_rows(path: Path, cut: bool = True) -> tuple[list[dict], list[dict], list[str]]:
    """(scored rows, control rows, problems). Rows need a text response; scored rows a text
    reference too. Anything else is a listed problem with its line number, never a traceback.
    ``cut``: texts longer than MAX_SCORED_CHARS are cut (``cut_for_scoring``); False keeps whole rows,
    for deciding which card they get (a box answer cut by characters is no longer box JSON)."""
    if not path.is_file():
        raise UsageError(f"predictions file not found: {path}")
    lines, problems = read_jsonl(path, "predictions file")
    scored, controls = [], []
    seen: set[str] = set()
    for n, row in lines:
        if not isinstance(row, dict):
            problems.append(f"line {n}: not a JSON object ({type(row).__name__})")
            continue
        if "response" not in row:
            problems.append(f"line {n}: no response")
            continue
        if row["response"] is not None and not isinstance(row["response"], str):
            problems.append(f"line {n}: response is not text ({type(row['response']).__name__})")
            continue
        row["response"] = row["response"] or ""
        row.setdefault("reference", row.get("labels"))
        if cut:
            cut_for_scoring([row])
        key = row.get("key") or row.get("id") or f"line{n}"
        if not isinstance(key, (str, int, float)):
            problems.append(f"line {n}: key/id is not a string ({type(key).__name__})")
            continue
        row["key"] = str(key)
        if row.get("control"):
            controls.append(row)
            continue
        reference = row.get("reference")
        if reference is not None and not isinstance(reference, str):
            problems.append(f"line {n}: reference is not text ({type(reference).__name__})")
        elif not (reference or "").strip():
            problems.append(f"line {n}: no reference report")
        elif row["key"] in seen:
            problems.append(f"line {n}: {row['key']} repeats an earlier row; the first was scored")
        else:
            seen.add(row["key"])
            scored.append(row)
    problems.sort(key=lambda p: int(p.split(":", 1)[0].split()[1]))  # in file order, whatever found them
    if not scored:
        raise UsageError(f"{path} has no prediction with a reference report "
                         "(run scripts/batch_infer.py with --dataset)")
    return scored, controls, problems


def cut_for_scoring(rows: list[dict]) -> None:
    """Texts over MAX_SCORED_CHARS cut to it, each cut noted in the row's ``cut_for_scoring``."""
    for row in rows:
        for field in ("response", "reference"):
            if isinstance(row.get(field), str) and len(row[field]) > MAX_SCORED_CHARS:
                row.setdefault("cut_for_scoring", []).append(f"{field} of {len(row[field]):,} characters")
                row[field] = row[field][:MAX_SCORED_CHARS]


def answer_text(text: str) -> str:
    """Thinking models write reasoning first; only the report after </think> is scored."""
    return thinking.split(text)[1]


# --------------------------------------------------------------------------- findings
FINDING_NAMES = list(findings.FINDINGS)


def label_texts(items: list[tuple[str, str | None]]) -> list[tuple[tuple[int, ...], bool]]:
    """(binary labels in FINDINGS order under the shared uncertainty policy, says "no acute
    abnormality") per (text, lang); a worker task."""
    out = []
    policy = findings.uncertainty_policy()
    for text, lang in items:
        binary = findings.to_binary(findings.label_report(text, lang), policy)
        out.append((tuple(binary[f] for f in FINDING_NAMES), findings.is_normal_report(text, lang)))
    return out


def label_all(texts: list[str], lang: str | None, pool: scorer_workers.Workers) -> list:
    """Futures labelling each distinct text once (reports repeat: views of one study, a model's
    favourite sentence); ``resolve_labels`` turns them back into one entry per text."""
    distinct = list(dict.fromkeys(texts))
    return [distinct, pool.map_chunks(label_texts, [(t, lang) for t in distinct])]


def resolve_labels(texts: list[str], pending: list) -> tuple["np.ndarray", list[bool]]:
    import numpy as np

    distinct, futures = pending
    by_text = dict(zip(distinct, scorer_workers.gather(futures)))
    labels = np.array([by_text[t][0] for t in texts], dtype=np.int8).reshape(len(texts), len(FINDING_NAMES))
    return labels, [by_text[t][1] for t in texts]


def findings_from_labels(y_true, y_pred) -> dict:
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per = {}
    for k, name in enumerate(FINDING_NAMES):
        predicted = int(y_pred[:, k].sum())
        # A finding absent from both sides has no F1 to speak of: n/a, and out of the macro average.
        defined = bool(support[k] or predicted)
        per[name] = {"precision": float(p[k]) if defined else None, "recall": float(r[k]) if defined else None,
                     "f1": float(f1[k]) if defined else None, "support": int(support[k]), "predicted": predicted}
    _, _, micro, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    defined_f1 = [v["f1"] for v in per.values() if v["f1"] is not None]
    return {"name": "finding F1 (rule-based)", "policy": findings.UNCERTAINTY_POLICIES[findings.uncertainty_policy()],
            "per_finding": per, "micro_f1": float(micro),
            "macro_f1": float(np.mean(defined_f1)) if defined_f1 else None,
            "macro_over": len(defined_f1)}


def finding_counts(y_true, y_pred):
    """Per record and finding: true positives, false positives, false negatives, side by side."""
    import numpy as np

    t, p = y_true.astype(bool), y_pred.astype(bool)
    return np.hstack([t & p, ~t & p, t & ~p]).astype(np.float64)


def finding_f1_from_sums(sums, n=None):
    import numpy as np

    k = len(FINDING_NAMES)
    micro, macro = bootstrap.f1_from_counts(sums[:, :k], sums[:, k:2 * k], sums[:, 2 * k:])
    return np.stack([micro, macro], axis=1)


# --------------------------------------------------------------------------- image ablation
def views(row: dict) -> int:
    """How many images the row's request had (rows without ``images`` had one)."""
    images = row.get("images")
    return len(images) if isinstance(images, list) and images else 1


def ablation(scored: list[dict], controls: list[dict]) -> dict:
    responses = [answer_text(r["response"]) for r in scored]
    distinct = len(set(responses))
    out = {"n": len(scored), "distinct_predictions": distinct, "distinct_share": distinct / len(scored)}
    # batch_infer writes one control per prompt and number of views: a two-view study is
    # compared with two blank images, never with the one-view control
    by_prompt = {(c["control"], c.get("prompt"), views(c)): answer_text(c["response"]) for c in controls}
    for kind in ("blank", "noise"):
        pairs = [(answer_text(r["response"]), by_prompt.get((kind, r.get("prompt"), views(r)))) for r in scored]
        pairs = [(a, b) for a, b in pairs if b is not None]
        out[f"identical_to_{kind}_share"] = (sum(a == b for a, b in pairs) / len(pairs)) if pairs else None
        out[f"compared_with_{kind}"] = len(pairs)
    blind = (out["identical_to_blank_share"] or 0) > SAME_AS_BLANK_WARN or out["distinct_share"] < DISTINCT_WARN
    out["reads_the_image"] = not blind
    return out


def verdict(abl: dict) -> str:
    if abl["reads_the_image"]:
        return (f"The model's reports vary with the image: {abl['distinct_predictions']} distinct reports for "
                f"{abl['n']} images" + (f"; {abl['identical_to_blank_share']:.0%} equal the blank-image report."
                                        if abl["identical_to_blank_share"] is not None else
                                        " (no blank-image control: run batch_infer.py with --ablation)."))
    same = abl["identical_to_blank_share"]
    return ("**WARNING: the model does not appear to read the image.** "
            f"It wrote {abl['distinct_predictions']} distinct report(s) for {abl['n']} images"
            + (f", and {same:.0%} of its reports are identical to what it writes for a blank image." if same is not None
               else "."))


# --------------------------------------------------------------------------- the report
def fmt(v, pct=False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def with_ci(v, ci) -> str:
    """``0.123 [0.101, 0.145]``; the value alone when intervals are off or undefined."""
    if v is None or not ci or ci[0] is None:
        return fmt(v)
    return f"{fmt(v)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def protocol_lines(m: dict) -> list[str]:
    proto = m["protocol"]
    if proto["name"] == "r2gen":
        cut = proto["reference_max_tokens"]
        source = "set by --dataset_style" if proto["style_source"] == "--dataset_style" else proto["style_source"]
        return [f"Protocol: **r2gen** ({proto['dataset_style']}; {source}). Reports cleaned with R2Gen's "
                f"`clean_report_{proto['dataset_style']}` rules, split on whitespace, and scored by pycocoevalcap "
                "without the PTB tokenizer, as R2Gen's compute_scores does; references cut to "
                + (f"{cut} tokens (R2Gen's max_seq_length less its start token)" if cut else "no length (cut off)")
                + ". Not mirrored: R2Gen's `<unk>` mapping of rare training words. This reproduces the protocol, "
                "not R2Gen's numbers: these are this model's scores under R2Gen's text handling (R2Gen's "
                "published table: docs/inference.md, Report cards that can be set beside a paper). "
                "R2Gen's tables report no CIDEr; it is given for completeness."]
    return ["Protocol: **default**. Tokenisation: " + m["tokenisation_note"]]


def interval_lines(m: dict) -> list[str]:
    boot = m["bootstrap"]
    lines = []
    if boot["resamples"]:
        lines.append(
            f"In brackets: 95% percentile-bootstrap intervals, {boot['resamples']} resamples of the records "
            f"(seed {boot['seed']}; a record is one study or image, as each row is). BLEU is recomputed from "
            "summed per-record n-gram statistics for each resample; ROUGE-L and CIDEr resample per-record scores, "
            "CIDEr's document frequencies held fixed at the full set (the usual approximation); METEOR sums the "
            "per-record METEOR statistics and lets the METEOR jar score each resample; finding F1 is recomputed "
            "from per-record true/false positives and false negatives. Each column resamples its own records.")
    else:
        lines.append("No confidence intervals (--bootstrap 0).")
    meteor = [f"{s}: {n} of {m['text_n'][s]} records" for s, n in m["meteor_sample_size"].items()
              if n is not None and n < m["text_n"][s]]
    if meteor:  # said whether or not there are intervals: the value itself is a sample's
        lines += ["", f"METEOR scored on a seeded sample ({'; '.join(meteor)}; --meteor_sample {m['meteor_sample_limit']}, "
                      f"seed {boot['seed']}); the other metrics on every record."]
    return lines


def write_report(m: dict, worst: list[dict], out: Path) -> None:
    lines = [f"# Report card: {m['predictions']}", "", f"> {NOTICE} Metrics compare generated text with reference "
             "reports; they say nothing about clinical safety.", "", verdict(m["ablation"]), "",
             f"- records scored: {m['n']} (language: {m['lang']}"
             + (", " + ", ".join(f"{lg} {n}" for lg, n in m["records_per_lang"].items()) if m["lang"] == "mixed"
                else "") + f"); problems skipped: {len(m['problems'])}",
             f"- say \"no acute abnormality\": predictions {fmt(m['normal_share']['predictions'], True)}, "
             f"references {fmt(m['normal_share']['references'], True)}",
             f"- uncertainty policy ({findings.UNCERTAINTY_ENV}, shared with the GRPO findings reward): "
             f"{m['findings'].get('policy', '-')}", "", "## Provenance", ""]
    lines += provenance.markdown(m["provenance"])
    lines += ["", "## Text metrics", ""] + protocol_lines(m) + [""] + interval_lines(m) + [""]
    schemes = list(m["text"])
    ci = (m["ci95"] or {}).get("text", {})
    names = [n for n in text_metrics.METRICS if any(n in m["text"][s] for s in schemes)]
    heads = [f"{s} (n={m['text_n'][s]})" if m["lang"] == "mixed" else s for s in schemes]
    lines += ["| metric | " + " | ".join(heads) + " |", "|---|" + "---|" * len(schemes)]
    lines += [f"| {n} | " + " | ".join(with_ci(m["text"][s].get(n), ci.get(s, {}).get(n)) for s in schemes) + " |"
              for n in names]
    fci = (m["ci95"] or {}).get("findings", {})
    lines += ["", "![text metrics](text_metrics.png)", "", "## Findings: finding F1 (rule-based)", "",
              "Observations labelled by `medswift/eval/findings.py`, a rule-based labeller with negation and uncertainty "
              f"rules for English and Chinese; uncertainty policy: {m['findings'].get('policy', '-')}. It is a proxy for clinical "
              "correctness, not CheXbert and not a radiologist.", "",
              f"micro F1 {with_ci(m['findings']['micro_f1'], fci.get('micro_f1'))}, macro F1 "
              f"{with_ci(m['findings']['macro_f1'], fci.get('macro_f1'))} "
              f"(over {m['findings']['macro_over']} findings present in references or predictions)", "",
              "| finding | precision | recall | F1 | in references | in predictions |", "|---|---|---|---|---|---|"]
    for name, v in m["findings"]["per_finding"].items():
        lines.append(f"| {name} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {v['support']} | "
                     f"{v['predicted']} |")
    lines += field_metrics.card_lines(m, with_ci)  # --clinical_metrics: the field's metrics (medswift/eval/field)
    abl = m["ablation"]
    lines += ["", "![per-finding F1](findings_f1.png)", ""] + temporal_lines(m["temporal"])
    lines += ["## Does the model read the image?", "",
              f"- distinct reports: {abl['distinct_predictions']} of {abl['n']} ({fmt(abl['distinct_share'], True)})",
              f"- identical to the blank-image report: {fmt(abl['identical_to_blank_share'], True)} "
              f"({abl['compared_with_blank']} compared)",
              f"- identical to the noise-image report: {fmt(abl['identical_to_noise_share'], True)} "
              f"({abl['compared_with_noise']} compared)", "",
              "## Worst examples (lowest ROUGE-L, each in its language's primary tokenisation)", "",
              "| id | ROUGE-L | prediction | reference |", "|---|---|---|---|"]
    for w in worst:
        cell = lambda t: " ".join(t.split())[:300].replace("|", "\\|") or "(empty)"  # noqa: E731
        lines.append(f"| {w['key']} | {w['rouge_l']:.3f} | {cell(w['prediction'])} | {cell(w['reference'])} |")
    if m["problems"]:
        lines += ["", "## Lines not scored", ""] + [f"- {p}" for p in m["problems"]]
    lines += ["", f"_{NOTICE}_", ""]
    write_atomic(out / "report.md", "\n".join(lines))


def temporal_lines(t: dict) -> list[str]:
    """report.md's section on change language (medswift/eval/temporal.py)."""
    without = (f"{t['change_without_prior']} of {t['rows_without_prior']} predictions made without a prior study "
               f"describe change ({fmt(t['change_without_prior_share'], True)})" if t["rows_without_prior"]
               else "no row says it was made without a prior study")
    lines = ["## Change over time (temporal, rule-based)", "", t["note"], "",
             f"temporal F1 {fmt(t['f1'])}; references stating change {t['references_with_change']}, "
             f"predictions {t['predictions_with_change']}; {without}", "",
             "| family | precision | recall | F1 | in references | in predictions |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {v['in_references']} | "
              f"{v['in_predictions']} |" for name, v in t["per_family"].items()]
    return lines + [""]


NOTES = {"zh": "Chinese scored on characters (primary: every CJK character a token, punctuation dropped) and on "
               "jieba words (secondary); METEOR is not defined for Chinese.",
         "en": "English scored on PTB tokens (lower-cased, punctuation removed), as in COCO caption evaluation."}


def record_lang(reference: str) -> str:
    return "zh" if text_metrics.is_chinese(reference) else "en"


def choose_protocol(protocol: str, dataset_style: str | None, max_tokens: int | None, per_lang: dict,
                    summary: dict | None) -> dict:
    if protocol not in text_metrics.PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(text_metrics.PROTOCOLS)}, got {protocol!r}")
    if protocol == "default":
        if dataset_style or max_tokens is not None:
            raise UsageError("--dataset_style and --reference_max_tokens apply to --protocol r2gen only")
        return {"name": "default"}
    if "zh" in per_lang:
        raise UsageError(f"--protocol r2gen is defined for English reports only; {len(per_lang['zh'])} of the "
                         "scored references are Chinese (use --protocol default)")
    if dataset_style:
        style, source = dataset_style, "--dataset_style"
    else:
        style, source = r2gen_cleaning.style_from_format((summary or {}).get("format"))
    if max_tokens is not None and max_tokens < 0:
        raise UsageError(f"--reference_max_tokens must be 0 (no cut) or more, got {max_tokens}")
    cut = r2gen_cleaning.REFERENCE_MAX_TOKENS[style] if max_tokens is None else max_tokens
    return {"name": "r2gen", "dataset_style": style, "style_source": source, "reference_max_tokens": cut or None}


def evaluate(predictions: Path, out: Path, lang: str | None = None, worst_n: int = 10, *,
             protocol: str = "default", dataset_style: str | None = None, reference_max_tokens: int | None = None,
             n_boot: int = 1000, seed: int = 0, meteor_sample: int = 5000, workers: int | None = None,
             timings: dict | None = None, clinical_metrics: str | None = None, metrics_dir: str | None = None) -> dict:
    """Score ``predictions`` and write the report card into ``out`` (metrics.json, report.md, two
    charts); returns the metrics. ``lang`` None: each record's language is its reference's, so a
    mixed file is scored per language (Chinese with the character/jieba tokenisations, English
    with PTB) instead of forcing one language's rules on the other's reports."""
    workers = check_settings(out, n_boot, meteor_sample, workers)
    field_names = field_metrics.parse(clinical_metrics)
    located = field_metrics.locate(field_names, metrics_dir)  # a missing weight stops here, before any scoring
    t0 = time.perf_counter()
    loaded = load_rows(predictions, cut=False)
    _lap(timings, "load rows", t0)
    # Decided on whole rows: every reference is box JSON -> the box card (medswift/eval/box_card.py), which
    # caps what it scores by box count; else the text card, on texts cut to MAX_SCORED_CHARS.
    if box_card.grounding_rows(loaded[0]):
        if field_names:
            raise UsageError("--clinical_metrics scores report text; these references are box answers (the box card)")
        return box_card.evaluate_grounding(predictions, out, *loaded, n_boot=n_boot, seed=seed, worst_n=worst_n)
    cut_for_scoring(loaded[0] + loaded[1])
    metrics, worst_rows = score(predictions, loaded, lang, worst_n, protocol=protocol, dataset_style=dataset_style,
                                reference_max_tokens=reference_max_tokens, n_boot=n_boot, seed=seed,
                                meteor_sample=meteor_sample, workers=workers, timings=timings)
    field_rows = None
    if field_names:
        t0 = time.perf_counter()
        refs, preds = [r["reference"] for r in loaded[0]], [answer_text(r["response"]) for r in loaded[0]]
        field_rows = field_metrics.add_to(metrics, refs, preds, field_names, located, n_boot, seed)
        field_rows = [{"key": r["key"], **row} for r, row in zip(loaded[0], field_rows)]
        _lap(timings, "field metrics", t0)
    write_card(metrics, worst_rows, out, timings, field_rows)
    return metrics


def check_settings(out: Path, n_boot: int, meteor_sample: int, workers: int | None) -> int:
    """Refuse impossible settings before any scoring; returns the number of worker processes."""
    for name, value in (("--bootstrap", n_boot), ("--meteor_sample", meteor_sample)):
        if value < 0:
            raise UsageError(f"{name} must be 0 or more, got {value}")
    workers = scorer_workers.default_workers() if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {workers}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file, not a folder")
    return workers


def score(predictions: Path, loaded: tuple, lang: str | None, worst_n: int, *, protocol: str, dataset_style: str | None,
          reference_max_tokens: int | None, n_boot: int, seed: int, meteor_sample: int, workers: int,
          timings: dict | None) -> tuple[dict, list[dict]]:
    """The metrics of ``predictions`` (what metrics.json holds; ``loaded`` is its ``load_rows``) and
    its ``worst_n`` examples."""
    scored, controls, problems = loaded  # load_rows(predictions)
    refs = {r["key"]: r["reference"] for r in scored}
    preds = {r["key"]: answer_text(r["response"]) for r in scored}
    keys = list(refs)
    langs = {k: lang or record_lang(refs[k]) for k in keys}
    per_lang = {lg: [k for k in keys if langs[k] == lg] for lg in ("zh", "en") if lg in langs.values()}
    prov = provenance.collect(scored, problems)
    proto = choose_protocol(protocol, dataset_style, reference_max_tokens, per_lang, prov["summary"])
    prov.update(provenance.scoring(predictions, len(controls), java="en" in per_lang),
                protocol=provenance.protocol_text(proto))
    style = proto.get("dataset_style", "iu_xray")
    text, text_n, per_sample, text_ci, meteor_n = {}, {}, {}, {}, {}  # meteor_n: records METEOR scored
    with scorer_workers.Workers(workers if len(keys) >= scorer_workers.PARALLEL_MIN_ROWS else 1) as pool:
        # labelling first: the workers start on it while this process tokenises
        ref_texts, pred_texts = [refs[k] for k in keys], [preds[k] for k in keys]
        ref_labels, pred_labels = label_all(ref_texts, lang, pool), label_all(pred_texts, lang, pool)
        pending = [text_metrics.start({k: refs[k] for k in group}, {k: preds[k] for k in group}, lg, scheme, pool,
                                      r2gen_style=style, reference_max_tokens=proto.get("reference_max_tokens"),
                                      timings=timings)
                   for lg, group in per_lang.items() for scheme in text_metrics.schemes(lg, protocol)]
        for p in pending:
            result = text_metrics.finish(p, n_boot=n_boot, seed=seed, meteor_sample=meteor_sample, timings=timings)
            text[p.scheme], text_n[p.scheme], per_sample[p.scheme] = result["corpus"], result["n"], result["per_sample"]
            text_ci[p.scheme], meteor_n[p.scheme] = result["ci95"], result["meteor_n"]
        t0 = time.perf_counter()
        y_true, ref_normal = resolve_labels(ref_texts, ref_labels)
        y_pred, pred_normal = resolve_labels(pred_texts, pred_labels)
        _lap(timings, "wait for findings labels (workers)", t0)
    t0 = time.perf_counter()
    finding_scores = findings_from_labels(y_true, y_pred)
    ci95 = None
    if n_boot:
        ci95 = {"text": text_ci, "findings": bootstrap.intervals(
            {"f1": finding_counts(y_true, y_pred)}, {"f1": (["micro_f1", "macro_f1"], finding_f1_from_sums)},
            n_boot, seed)}
    _lap(timings, "findings F1 and bootstrap", t0)
    majority = max(per_lang, key=lambda lg: len(per_lang[lg]))
    primary_of = {k: text_metrics.schemes(langs[k], protocol)[0] for k in keys}
    normal = {"predictions": sum(pred_normal) / len(keys), "references": sum(ref_normal) / len(keys)}
    metrics = {
        "predictions": str(predictions), "n": len(keys), "lang": majority if len(per_lang) == 1 else "mixed",
        "records_per_lang": {lg: len(group) for lg, group in per_lang.items()}, "notice": NOTICE,
        "provenance": prov, "protocol": proto,
        "tokenisation_note": " ".join(NOTES[lg] for lg in per_lang),
        "primary_tokenisation": text_metrics.schemes(majority, protocol)[0], "text": text, "text_n": text_n,
        "meteor_sample_size": meteor_n, "meteor_sample_limit": meteor_sample or None,
        "meteor_sampled": any(n is not None and n < text_n[s] for s, n in meteor_n.items()),
        "findings": finding_scores, "ci95": ci95,
        "bootstrap": {"resamples": n_boot, "seed": seed, "method": "percentile", "level": 0.95,
                      "unit": "record (one row: one study or image)"},
        "normal_share": normal, "ablation": ablation(scored, controls), "problems": problems,
        "temporal": temporal.scores(ref_texts, pred_texts, [r.get("prior_given") for r in scored],
                                    [langs[k] for k in keys]),
        "cut_for_scoring": {"limit_chars": MAX_SCORED_CHARS,
                            "rows": {r["key"]: r["cut_for_scoring"] for r in scored if r.get("cut_for_scoring")}},
    }
    rouge = {k: per_sample[primary_of[k]][k]["rouge_l"] for k in keys}
    worst = sorted(keys, key=lambda k: (rouge[k], k))[:worst_n]
    worst_rows = [{"key": k, "rouge_l": rouge[k], "prediction": preds[k], "reference": refs[k]} for k in worst]
    return metrics, worst_rows


def write_card(metrics: dict, worst_rows: list[dict], out: Path, timings: dict | None = None,
               field_rows: list[dict] | None = None) -> None:
    """metrics.json, the two charts and report.md, each written atomically (a reader, or a run
    killed mid-write, never sees half a file)."""
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --output_dir {out}: {exc.strerror or exc}") from None
    write_json(out / "metrics.json", metrics)
    if field_rows is not None:  # per-report labels and scores of --clinical_metrics, keyed like the predictions
        write_atomic(out / "field_scores.jsonl", "".join(json.dumps(r) + "\n" for r in field_rows))
    plot_findings(metrics["findings"]["per_finding"], out / "findings_f1.png")
    plot_text(metrics["text"], out / "text_metrics.png")
    write_report(metrics, worst_rows, out)
    _lap(timings, "write card and charts", t0)


def _lap(timings: dict | None, name: str, since: float) -> None:
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - since


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    p.add_argument("--predictions", required=True, help="JSONL from scripts/batch_infer.py (or swift infer)")
    p.add_argument("--output_dir", default=str(RESULTS / "eval"))
    p.add_argument("--lang", choices=("zh", "en"), help="default: each record's own, from its reference")
    p.add_argument("--worst", type=int, default=10, help="how many worst examples the report lists")
    p.add_argument("--protocol", choices=text_metrics.PROTOCOLS, default="default",
                   help="text normalisation: default (PTB tokens for English, characters/jieba for Chinese) or "
                        "r2gen (R2Gen's report cleaning, English only; docs/inference.md: Report cards that "
                        "can be set beside a paper)")
    p.add_argument("--dataset_style", choices=r2gen_cleaning.STYLES,
                   help="r2gen: which of R2Gen's cleaners (default: from the dataset summary's format, else iu_xray)")
    p.add_argument("--reference_max_tokens", type=int,
                   help="r2gen: cut references to this many tokens as R2Gen does (default 59 iu_xray, 99 mimic_cxr; "
                        "0: no cut)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="resamples for the 95%% intervals (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the METEOR sample (default 0)")
    p.add_argument("--meteor_sample", type=int, default=5000, metavar="N",
                   help="score METEOR (the slow Java jar) on a seeded sample of N records when there are more "
                        "(0: all records); the card says so")
    p.add_argument("--workers", type=int, help="worker processes for files of 2,000+ records (default: up to 2 cores)")
    p.add_argument("--clinical_metrics", metavar="LIST",
                   help="the field's model-based metrics, comma-separated, from local weights, offline: "
                        f"{','.join(field_metrics.METRICS)} (docs/metrics.md)")
    p.add_argument("--metrics_dir", metavar="DIR",
                   help=f"their weights by upstream name (chexbert.pth, bert-base-uncased/, distilroberta-base/...); "
                        f"default ${field_metrics.weights.ENV}, else the Hugging Face cache")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(report, build_parser().parse_args(argv))


def report(args) -> int:
    findings.uncertainty_policy()  # a bad MEDSWIFT_REWARD_UNCERTAIN stops here, before any scoring
    m = evaluate(Path(args.predictions), Path(args.output_dir), args.lang, args.worst, protocol=args.protocol,
                 dataset_style=args.dataset_style, reference_max_tokens=args.reference_max_tokens,
                 n_boot=args.bootstrap, seed=args.seed, meteor_sample=args.meteor_sample, workers=args.workers,
                 clinical_metrics=args.clinical_metrics, metrics_dir=args.metrics_dir)
    if m.get("task") == "grounding":
        print("\n".join(box_card.summary_lines(m)))
        print(f"report: {Path(args.output_dir) / 'report.md'}")
        print(NOTICE)
        return 0
    ci = (m["ci95"] or {}).get("text", {})
    for lg, n in m["records_per_lang"].items():
        scheme = text_metrics.schemes(lg, args.protocol)[0]
        print(f"{n} reports ({lg}, {scheme} tokens): " + ", ".join(
            f"{k} {with_ci(v, ci.get(scheme, {}).get(k))}" for k, v in m["text"][scheme].items()))
    fci = (m["ci95"] or {}).get("findings", {})
    print(f"finding F1 (rule-based) micro {with_ci(m['findings']['micro_f1'], fci.get('micro_f1'))} "
          f"over {m['n']} reports")
    for label, value in field_metrics.headline(m).items():
        print(f"{label} {fmt(value)}")
    if m["meteor_sampled"]:
        print("METEOR on a seeded sample: " + ", ".join(f"{n} of {m['text_n'][s]} records ({s})"
                                                        for s, n in m["meteor_sample_size"].items() if n is not None))
    tm = m["temporal"]
    print(f"temporal F1 (change words, rule-based) {fmt(tm['f1'])}; predictions describing change without a prior: "
          f"{tm['change_without_prior']} of {tm['rows_without_prior']}")
    print(verdict(m["ablation"]).replace("**", ""))
    if m["problems"]:
        print(f"{len(m['problems'])} lines not scored (listed in report.md)")
    if m["cut_for_scoring"]["rows"]:
        print(f"{len(m['cut_for_scoring']['rows'])} rows scored on their first {MAX_SCORED_CHARS:,} characters "
              "(listed in metrics.json)")
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    print(NOTICE)
    return 0
