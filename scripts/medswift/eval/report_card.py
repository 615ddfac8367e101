"""Report card for generated X-ray reports: text metrics, findings, and "does it read the image?".

Usage:
    python scripts/evaluate.py --predictions results/batch_infer/predictions.jsonl --output_dir results/eval

Reads a batch-inference JSONL (``response`` + ``reference``; ``swift infer`` result
files with ``labels`` work too) and writes into ``--output_dir``:
  * ``metrics.json``: every number below;
  * ``report.md``: the report card, with the worst examples;
  * ``findings_f1.png`` and ``text_metrics.png``.

What it measures:
  * BLEU-1..4, ROUGE-L, CIDEr (METEOR for English) with pycocoevalcap; Chinese scored
    on characters (primary) and jieba words (secondary); see medswift/eval/text_metrics.py.
  * finding F1 (rule-based): medswift/eval/findings.py labels 14 observations + No Finding
    in prediction and reference; per-finding precision/recall/F1, micro/macro F1.
    A proxy, not CheXbert.
  * share of predictions vs references that say "no acute abnormality";
  * image ablation (rows written by batch_infer.py --ablation): how many real-image
    predictions equal the blank-image prediction for the same prompt, and how many
    distinct reports the model wrote at all.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from medswift.core import thinking
from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl
from medswift.eval import findings, text_metrics

# Above these, the report card says plainly that the model ignores the image.
SAME_AS_BLANK_WARN = 0.5
DISTINCT_WARN = 0.5


def load_rows(path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(scored rows, control rows, problems). Rows need a text response; scored rows a text
    reference too. Anything else is a listed problem with its line number, never a traceback."""
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


def answer_text(text: str) -> str:
    """Thinking models write reasoning first; only the report after </think> is scored."""
    return thinking.split(text)[1]


# --------------------------------------------------------------------------- findings
def findings_scores(refs: list[str], preds: list[str], lang: str | None = None) -> dict:
    """``lang`` None: each text is labelled with the rules of its own language, so a mixed
    Chinese/English file loses no English finding to the Chinese rules (and vice versa)."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    names = list(findings.FINDINGS)
    y_true = np.array([[findings.to_binary(findings.label_report(t, lang))[f] for f in names] for t in refs])
    y_pred = np.array([[findings.to_binary(findings.label_report(t, lang))[f] for f in names] for t in preds])
    p, r, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per = {}
    for k, name in enumerate(names):
        predicted = int(y_pred[:, k].sum())
        # A finding absent from both sides has no F1 to speak of: n/a, and out of the macro average.
        defined = bool(support[k] or predicted)
        per[name] = {"precision": float(p[k]) if defined else None, "recall": float(r[k]) if defined else None,
                     "f1": float(f1[k]) if defined else None, "support": int(support[k]), "predicted": predicted}
    _, _, micro, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    defined_f1 = [v["f1"] for v in per.values() if v["f1"] is not None]
    return {"name": "finding F1 (rule-based)", "policy": "uncertain counts as positive (U-Ones)",
            "per_finding": per, "micro_f1": float(micro),
            "macro_f1": float(np.mean(defined_f1)) if defined_f1 else None,
            "macro_over": len(defined_f1)}


# --------------------------------------------------------------------------- image ablation
def ablation(scored: list[dict], controls: list[dict]) -> dict:
    responses = [answer_text(r["response"]) for r in scored]
    distinct = len(set(responses))
    out = {"n": len(scored), "distinct_predictions": distinct, "distinct_share": distinct / len(scored)}
    by_prompt = {(c["control"], c["prompt"]): answer_text(c["response"]) for c in controls}
    for kind in ("blank", "noise"):
        pairs = [(answer_text(r["response"]), by_prompt.get((kind, r.get("prompt")))) for r in scored]
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


# --------------------------------------------------------------------------- charts and report
def plot_findings(per: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, v in per.items() if v["f1"] is not None]
    values = [per[n]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(names), 3) + 1.2))
    ax.barh(names[::-1], values[::-1], color="#3b7dd8")
    for y, v in enumerate(values[::-1]):
        ax.text(min(v + 0.01, 0.95), y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (rule-based labeller; uncertain = positive)")
    ax.set_title("Per-finding F1 of generated vs reference reports\n(research only, not for diagnosis)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_text(text: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(text)
    metrics = [m for m in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider")
               if any(m in text[s] for s in schemes)]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(schemes)
    top = 1.0
    for k, scheme in enumerate(schemes):
        values = [text[scheme].get(m, 0) for m in metrics]
        bars = ax.bar([i + k * width for i in range(len(metrics))], values, width, label=scheme)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
        top = max(top, *values)
    ax.set_ylim(0, top * 1.15)  # a fixed scale: near-zero scores must look near zero
    ax.set_xticks([i + width * (len(schemes) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_title("Text metrics by tokenisation (research only, not for diagnosis)", fontsize=10)
    ax.legend(title="tokenisation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(v, pct=False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def write_report(m: dict, worst: list[dict], out: Path) -> None:
    lines = [f"# Report card: {m['predictions']}", "", f"> {NOTICE} Metrics compare generated text with reference "
             "reports; they say nothing about clinical safety.", "", verdict(m["ablation"]), "",
             f"- records scored: {m['n']} (language: {m['lang']}"
             + (", " + ", ".join(f"{lg} {n}" for lg, n in m["records_per_lang"].items()) if m["lang"] == "mixed"
                else "") + f"); problems skipped: {len(m['problems'])}",
             f"- say \"no acute abnormality\": predictions {fmt(m['normal_share']['predictions'], True)}, "
             f"references {fmt(m['normal_share']['references'], True)}", "", "## Text metrics", "",
             "Tokenisation: " + m["tokenisation_note"], ""]
    schemes = list(m["text"])
    names = list(dict.fromkeys(n for s in schemes for n in m["text"][s]))
    heads = [f"{s} (n={m['text_n'][s]})" if m["lang"] == "mixed" else s for s in schemes]
    lines += ["| metric | " + " | ".join(heads) + " |", "|---|" + "---|" * len(schemes)]
    lines += [f"| {n} | " + " | ".join(fmt(m["text"][s].get(n)) for s in schemes) + " |" for n in names]
    lines += ["", "![text metrics](text_metrics.png)", "", "## Findings: finding F1 (rule-based)", "",
              "Observations labelled by `medswift/eval/findings.py`, a rule-based labeller with negation and uncertainty "
              "rules for English and Chinese; uncertain mentions count as positive. It is a proxy for clinical "
              "correctness, not CheXbert and not a radiologist.", "",
              f"micro F1 {fmt(m['findings']['micro_f1'])}, macro F1 {fmt(m['findings']['macro_f1'])} "
              f"(over {m['findings']['macro_over']} findings present in references or predictions)", "",
              "| finding | precision | recall | F1 | in references | in predictions |", "|---|---|---|---|---|---|"]
    for name, v in m["findings"]["per_finding"].items():
        lines.append(f"| {name} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {v['support']} | "
                     f"{v['predicted']} |")
    abl = m["ablation"]
    lines += ["", "![per-finding F1](findings_f1.png)", "", "## Does the model read the image?", "",
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
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


NOTES = {"zh": "Chinese scored on characters (primary: every CJK character a token, punctuation dropped) and on "
               "jieba words (secondary); METEOR is not defined for Chinese.",
         "en": "English scored on PTB tokens (lower-cased, punctuation removed), as in COCO caption evaluation."}


def record_lang(reference: str) -> str:
    return "zh" if text_metrics.is_chinese(reference) else "en"


def evaluate(predictions: Path, out: Path, lang: str | None = None, worst_n: int = 10) -> dict:
    """``lang`` None: each record's language is its reference's, so a mixed file is scored per
    language (Chinese with the character/jieba tokenisations, English with PTB) instead of
    forcing one language's rules on the other's reports."""
    scored, controls, problems = load_rows(predictions)
    refs = {r["key"]: r["reference"] for r in scored}
    preds = {r["key"]: answer_text(r["response"]) for r in scored}
    keys = list(refs)
    langs = {k: lang or record_lang(refs[k]) for k in keys}
    per_lang = {lg: [k for k in keys if langs[k] == lg] for lg in ("zh", "en") if lg in langs.values()}
    text, text_n, per_sample = {}, {}, {}
    for lg, group in per_lang.items():
        for scheme in text_metrics.TOKENISATIONS[lg]:
            result = text_metrics.score({k: refs[k] for k in group}, {k: preds[k] for k in group}, lg, scheme)
            text[scheme], text_n[scheme], per_sample[scheme] = result["corpus"], len(group), result["per_sample"]
    majority = max(per_lang, key=lambda lg: len(per_lang[lg]))
    primary_of = {k: text_metrics.TOKENISATIONS[langs[k]][0] for k in keys}
    normal = {"predictions": sum(findings.is_normal_report(preds[k], lang) for k in keys) / len(keys),
              "references": sum(findings.is_normal_report(refs[k], lang) for k in keys) / len(keys)}
    metrics = {
        "predictions": str(predictions), "n": len(keys), "lang": majority if len(per_lang) == 1 else "mixed",
        "records_per_lang": {lg: len(group) for lg, group in per_lang.items()}, "notice": NOTICE,
        "tokenisation_note": " ".join(NOTES[lg] for lg in per_lang),
        "primary_tokenisation": text_metrics.TOKENISATIONS[majority][0], "text": text, "text_n": text_n,
        "findings": findings_scores([refs[k] for k in keys], [preds[k] for k in keys], lang),
        "normal_share": normal, "ablation": ablation(scored, controls), "problems": problems,
    }
    rouge = {k: per_sample[primary_of[k]][k]["rouge_l"] for k in keys}
    worst = sorted(keys, key=lambda k: (rouge[k], k))[:worst_n]
    worst_rows = [{"key": k, "rouge_l": rouge[k], "prediction": preds[k], "reference": refs[k]} for k in worst]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    plot_findings(metrics["findings"]["per_finding"], out / "findings_f1.png")
    plot_text(text, out / "text_metrics.png")
    write_report(metrics, worst_rows, out)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    p.add_argument("--predictions", required=True, help="JSONL from scripts/batch_infer.py (or swift infer)")
    p.add_argument("--output_dir", default=str(RESULTS / "eval"))
    p.add_argument("--lang", choices=("zh", "en"), help="default: each record's own, from its reference")
    p.add_argument("--worst", type=int, default=10, help="how many worst examples the report lists")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(report, build_parser().parse_args(argv))


def report(args) -> int:
    m = evaluate(Path(args.predictions), Path(args.output_dir), args.lang, args.worst)
    for lg, n in m["records_per_lang"].items():
        scheme = text_metrics.TOKENISATIONS[lg][0]
        print(f"{n} reports ({lg}, {scheme} tokens): " + ", ".join(f"{k} {v:.3f}" for k, v in m["text"][scheme].items()))
    print(f"finding F1 (rule-based) micro {m['findings']['micro_f1']:.3f} over {m['n']} reports")
    print(verdict(m["ablation"]).replace("**", ""))
    if m["problems"]:
        print(f"{len(m['problems'])} lines not scored (listed in report.md)")
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    print(NOTICE)
    return 0
