"""The field's report-generation metrics from locally supplied weights, offline.

``scripts/evaluate.py --clinical_metrics chexbert,semb,bertscore --metrics_dir DIR`` (or
``MEDSWIFT_METRICS_DIR``) adds them to the report card; the layout of DIR, where each weight is
published and under which licence: medswift/eval/field/weights.py and docs/metrics.md.

* ``chexbert``: CheXbert F1, micro and macro over 14 and over 5 observations, uncertain counted
  positive, exactly as f1chexbert 0.0.2 computes them (field/chexbert.py);
* ``semb``: SembScore, the cosine of the two reports' CheXbert embeddings (CXR-Report-Metric);
* ``bertscore``: BERTScore F1 as ReXrank configures it: distilroberta-base, layer 5, baseline
  rescaling, IDF off, through the ``bert-score`` package (field/bertscore.py);
* ``radgraph``: RadGraph F1, the ``radgraph`` package's ``F1RadGraph`` at its "partial" level on
  RadGraph-XL, as ReXrank reports it (field/radgraph.py);
* ``radcliq``: 1/RadCliQ-v1 as ReXrank reports it, from the published coefficients over RadGraph F1,
  BERTScore, SembScore and BLEU-2 (field/radcliq.py); asking for it scores its three model-based
  components too;
* ``ratescore``: RaTEScore, the ``ratescore`` package's ``RaTEScore.compute_score`` with its long affinity
  matrix, over RaTE-NER-Deberta and BioLORD-2023-C; its sentence splitter comes from spaCy + PyRuSH instead
  of medspacy, which does not install on this stack (field/ratescore.py says why and what was checked);
* ``green``: GREEN, the judge model GREEN-RadLlama2-7b's matched findings over matched findings plus
  clinically significant errors, with RadEval 2.2.1's (the GREEN authors') prompt, greedy generation and
  parser (field/green.py); its six error counts and matched findings go into each scored row. A 7B judge:
  a GPU is advised, progress goes to stderr per batch.

Each headline has a 95% percentile-bootstrap interval over records (eval/bootstrap.py, the same
resampling as the rule-based card).
Research only, not diagnosis.
"""
from __future__ import annotations


import numpy as np

from medswift.core.errors import UsageError
from medswift.eval import bootstrap
from medswift.eval.field import weights

METRICS = ("chexbert", "semb", "radgraph", "bertscore", "ratescore", "green", "radcliq")
RADCLIQ_PARTS = ("semb", "radgraph", "bertscore")  # and BLEU-2, which needs no weights
# What each metric needs in DIR (checked before any scoring starts).
NEEDS = {"chexbert": ("chexbert.pth", "bert-base-uncased"), "semb": ("chexbert.pth", "bert-base-uncased"),
         "bertscore": ("distilroberta-base",), "radgraph": ("radgraph-xl",), "radcliq": (),
         "ratescore": ("RaTE-NER-Deberta", "BioLORD-2023-C"), "green": ("GREEN-RadLlama2-7b",)}
TITLES = {"chexbert": "CheXbert F1 (f1chexbert 0.0.2, uncertain = positive)",
          "semb": "SembScore (cosine of CheXbert embeddings)",
          "bertscore": "BERTScore F1 (distilroberta-base, layer 5, baseline-rescaled, no IDF)",
          "radgraph": "RadGraph F1 (radgraph 0.1.18 F1RadGraph, RadGraph-XL, partial level)",
          "radcliq": "1/RadCliQ-v1 (ReXrank, published coefficients)",
          "ratescore": "RaTEScore (ratescore 0.6.0, RaTE-NER-Deberta + BioLORD-2023-C, long affinity matrix)",
          "green": "GREEN (GREEN-RadLlama2-7b judge, RadEval 2.2.1's prompt and parser, greedy)"}
# The metrics whose section is a mean over reports, with their short names (headlines, the comparison,
# the ReXrank-style line), in the card's order.
MEAN_METRICS = {"semb": "SembScore", "bertscore": "BERTScore", "radgraph": "RadGraph F1", "ratescore": "RaTEScore",
                "green": "GREEN"}


def parse(spec: str | None) -> list[str]:
    """``--clinical_metrics`` as a list in METRICS order; [] for none."""
    names = [n.strip().lower() for n in (spec or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"--clinical_metrics: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if "radcliq" in names:
        names += RADCLIQ_PARTS
    return [n for n in METRICS if n in names]


def metrics_extra_pin(package: str) -> str:
    """``package``'s pinned requirement in pyproject.toml's ``metrics`` extra (read from the installed
    project's metadata, so the pins stay in one place); the bare name when that is not readable."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        pins = [r.split(";")[0].strip() for r in requires("medswift-vl") or [] if 'extra == "metrics"' in r]
    except PackageNotFoundError:
        return package
    return next((pin for pin in pins if pin.split("==")[0] == package), package)


# ((module, pinned requirement), ...) of the metrics extra that each metric imports
PACKAGES = {"radgraph": (("radgraph", metrics_extra_pin("radgraph")),),
            "bertscore": (("bert_score", metrics_extra_pin("bert-score")),),
            "radcliq": (("fast_bleu", metrics_extra_pin("fast-bleu")),),
            "ratescore": (("RaTEScore", metrics_extra_pin("ratescore")), ("spacy", metrics_extra_pin("spacy")),
                          ("PyRuSH", metrics_extra_pin("PyRuSH")))}


def check_packages(names: list[str]) -> None:
    """A metric whose package is not installed is one line naming it, before any work."""
    from importlib.util import find_spec

    for name, module, requirement in ((n, m, r) for n in names for m, r in PACKAGES.get(n, ())):
        if find_spec(module) is None:
            raise UsageError(f"--clinical_metrics {name} needs the {requirement.split('==')[0]} package, not installed: "
                             f"pip install {requirement} (the metrics extra of pyproject.toml; docs/metrics.md)")


def locate(names: list[str], flag: str | None) -> dict:
    """Resolve DIR and every file the metrics need, before any scoring: a missing one is one
    ``error:`` line naming it. Returns {"root": DIR or None, "files": {upstream name: path}}."""
    if not names:
        return {"root": None, "files": {}}
    weights.go_offline()
    check_packages(names)
    root = weights.metrics_dir(flag)
    files = {}
    for name in dict.fromkeys(n for m in names for n in NEEDS[m]):
        if name.endswith(".pth"):
            files[name] = weights.model_file(root, name)
        elif name == "radgraph-xl":  # the model, then the encoder its config.json names
            from medswift.eval.field.radgraph import read_config, encoder_name

            files[name] = weights.radgraph_model(root, name)
            hub_id = encoder_name(read_config(files[name]))
            files[hub_id.rstrip("/").split("/")[-1]] = weights.encoder_folder(root, hub_id)
        elif name == "bert-base-uncased":
            files[name] = weights.model_folder(root, name, ("config.json", "vocab.txt"))
        elif name == "GREEN-RadLlama2-7b":
            files[name] = weights.model_folder(root, name, ("config.json", "tokenizer_config.json"))
        else:
            files[name] = weights.model_folder(root, name)
    options = {}
    if "green" in names:  # a bad cap is one line before any work
        from medswift.eval.field.green import max_new_tokens_setting

        options["green_max_new_tokens"] = max_new_tokens_setting()
    return {"root": root, "files": files, **options}


def mean_interval(values: np.ndarray, n_boot: int, seed: int) -> list[float | None] | None:
    if not n_boot:
        return None
    per = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return bootstrap.intervals({"v": per}, {"v": (["mean"], lambda sums, n: sums / n)}, n_boot, seed)["mean"]


def mean_section(name: str, title: str, values: np.ndarray, rows: list[dict], n_boot: int, seed: int) -> dict:
    """A per-report score's section of metrics.json ({name, mean, ci95}); the values go into ``rows``."""
    for row, v in zip(rows, values):
        row[name] = float(v)
    return {"name": title, "mean": float(values.mean()) if len(values) else None,
            "ci95": mean_interval(values, n_boot, seed)}


def score(refs: list[str], preds: list[str], names: list[str], located: dict, n_boot: int = 1000,
          seed: int = 0) -> tuple[dict, list[dict]]:
    """({metric: section of metrics.json}, one dict of per-report labels and scores per pair)."""
    sections: dict = {}
    rows: list[dict] = [{} for _ in refs]
    if "radgraph" in names:
        from medswift.eval.field.radgraph import RadGraphF1

        scorer = RadGraphF1(located["files"]["radgraph-xl"], located["root"])
        try:
            partial, combined = scorer.scores(refs, preds)
            sections["radgraph"] = mean_section("radgraph", TITLES["radgraph"], partial, rows, n_boot, seed)
            for row, value in zip(rows, combined):  # RadCliQ-v1's radgraph column (field/radcliq.py)
                row["radgraph_combined"] = float(value)
        finally:
            scorer.close()
    if {"chexbert", "semb"} & set(names):
        from medswift.eval.field.chexbert import CheXbert

        labeller = CheXbert(located["root"])
        if "chexbert" in names:
            sections["chexbert"] = chexbert_section(labeller, refs, preds, rows, n_boot, seed)
        if "semb" in names:
            from medswift.eval.field.chexbert import cosine

            values = cosine(labeller.embeddings(refs), labeller.embeddings(preds))
            sections["semb"] = mean_section("semb", TITLES["semb"], values, rows, n_boot, seed)
    if "bertscore" in names:
        from medswift.eval.field.bertscore import BertScore

        values = BertScore(located["files"]["distilroberta-base"]).f1(refs, preds)
        sections["bertscore"] = mean_section("bertscore", TITLES["bertscore"], values, rows, n_boot, seed)
    if "ratescore" in names:
        from medswift.eval.field.ratescore import RaTE

        values = RaTE(located["files"]["RaTE-NER-Deberta"], located["files"]["BioLORD-2023-C"]).scores(refs, preds)
        sections["ratescore"] = mean_section("ratescore", TITLES["ratescore"], values, rows, n_boot, seed)
    if "green" in names:
        sections["green"] = green_section(refs, preds, located, rows, n_boot, seed)
    return sections, rows


def green_section(refs: list[str], preds: list[str], located: dict, rows: list[dict], n_boot: int, seed: int) -> dict:
    """GREEN's section: the mean with its interval, the judge's mean counts; counts per report into ``rows``."""
    from medswift.eval.field.green import COUNT_KEYS, MAX_LENGTH, Green

    judge = Green(located["files"]["GREEN-RadLlama2-7b"], max_new_tokens=located.get("green_max_new_tokens"))
    values, counts = judge.scores(refs, preds)
    section = mean_section("green", TITLES["green"], values, rows, n_boot, seed)
    for row, per in zip(rows, counts):
        row.update(per)
    keys = (*COUNT_KEYS, "green_matched_findings")
    section.update({"std": float(values.std()) if len(values) else None,
                    "mean_counts": {k: float(np.mean([c[k] for c in counts])) if counts else None for k in keys},
                    "device": judge.device, "max_length": MAX_LENGTH,
                    "max_new_tokens": located.get("green_max_new_tokens")})
    return section


def prep_words(text: str) -> list[str]:
    """CXR-Report-Metric's prep_reports: lower-case, a space before each full stop, split on spaces."""
    return [w for w in str(text).lower().replace(".", " .").split(" ") if w != ""]


def bleu2(refs: list[str], preds: list[str]) -> np.ndarray | None:
    """ReXrank's BLEU-2 per report (fast_bleu, weights 1/2, 1/2, CXR-Report-Metric's words);
    None when fast_bleu is not installed (the metrics extra installs it)."""
    try:
        from fast_bleu import BLEU
    except ImportError:
        return None
    return np.array([BLEU([prep_words(r)], {"bigram": (0.5, 0.5)}).get_score([prep_words(p)])["bigram"][0]
                     for r, p in zip(refs, preds)], dtype=np.float64)


def add_to(metrics: dict, refs: list[str], preds: list[str], names: list[str], located: dict,
           n_boot: int, seed: int) -> list[dict]:
    """Score the field metrics into ``metrics`` (one section each, plus ``field_metrics``: where
    the weights came from and the packages' versions); returns the per-report rows."""
    from importlib.metadata import PackageNotFoundError, version

    sections, rows = score(refs, preds, names, located, n_boot, seed)
    values = bleu2(refs, preds)
    if values is not None:
        sections["bleu2_rexrank"] = mean_section("bleu2_rexrank", "BLEU-2 (ReXrank: fast_bleu per report)", values,
                                                 rows, n_boot, seed)
    if "radcliq" in names:
        sections["radcliq"] = radcliq_section(rows, n_boot, seed)
    packages = {}
    for package in ("f1chexbert", "bert-score", "radgraph", "fast-bleu", "ratescore", "spacy", "PyRuSH", "transformers",
                    "torch", "scikit-learn"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:
            packages[package] = None
    metrics.update(sections)
    metrics["field_metrics"] = {"asked": names, "metrics_dir": str(located["root"]) if located["root"] else None,
                                "weights": {k: str(v) for k, v in located["files"].items()},
                                "packages": packages, "per_report_file": "field_scores.jsonl"}
    return rows


def radcliq_section(rows: list[dict], n_boot: int, seed: int) -> dict:
    """1/RadCliQ-v1 of the set (ReXrank's figure) and RadCliQ-v1 per report and on average."""
    from medswift.eval.field import radcliq

    per = radcliq.per_report(*([row[c] for row in rows] for c in radcliq.COLUMNS))
    for row, v in zip(rows, per):
        row["radcliq_v1"] = float(v)
    mean = float(per.mean()) if len(per) else None
    ci = None
    if n_boot and len(per):
        ci = bootstrap.intervals({"v": per.reshape(-1, 1)}, {"v": (["inverse"], radcliq.inverse_of_mean)},
                                 n_boot, seed)["inverse"]
    return {"name": TITLES["radcliq"], "inverse": float(radcliq.inverse_of_mean(per.sum(), len(per))) if mean else None,
            "radcliq_v1": mean, "ci95": ci, "components": list(radcliq.COLUMNS),
            "coefficients": "CXR-Report-Metric's normalizer.pkl and radcliq-v1.pkl (as RadEval's RadCliQv1/radcliq.py)"}


def chexbert_section(labeller, refs, preds, rows, n_boot, seed) -> dict:
    from medswift.eval.field import chexbert as cx

    y_true, y_pred = labeller.labels(refs), labeller.labels(preds)
    section = {"name": TITLES["chexbert"], **cx.f1_scores(y_true, y_pred), "n": len(refs),
               "observations": list(cx.OBSERVATIONS), "five": list(cx.FIVE),
               "in_references": dict(zip(cx.OBSERVATIONS, map(int, y_true.sum(0)))),
               "in_predictions": dict(zip(cx.OBSERVATIONS, map(int, y_pred.sum(0))))}
    section["ci95"] = bootstrap.intervals({"f1": cx.counts(y_true, y_pred)},
                                          {"f1": (cx.F1_NAMES, cx.f1_from_sums)}, n_boot, seed) if n_boot else None
    for row, t, p in zip(rows, y_true, y_pred):
        row["chexbert_reference"], row["chexbert_prediction"] = t.tolist(), p.tolist()
    return section


def headline_entries(metrics: dict) -> dict[str, dict]:
    """The field metrics of a metrics.json as {label: {"value", "ci95"}}, for tables that set runs
    side by side (the SFT-vs-RL comparison); {} when the card has none."""
    out = {}
    if "chexbert" in metrics:
        c, ci = metrics["chexbert"], metrics["chexbert"].get("ci95") or {}
        for key, label in (("micro_f1_14", "CheXbert micro-F1 (14)"), ("macro_f1_14", "CheXbert macro-F1 (14)"),
                           ("micro_f1_5", "CheXbert micro-F1 (5)"), ("macro_f1_5", "CheXbert macro-F1 (5)")):
            out[label] = {"value": c[key], "ci95": ci.get(key)}
    for name, label in MEAN_METRICS.items():
        if name in metrics:
            out[label] = {"value": metrics[name]["mean"], "ci95": metrics[name].get("ci95")}
    if "radcliq" in metrics:
        out["1/RadCliQ-v1"] = {"value": metrics["radcliq"]["inverse"], "ci95": metrics["radcliq"].get("ci95")}
    return out


def headline(metrics: dict) -> dict[str, float]:
    """``headline_entries`` without the intervals: {label: value}."""
    return {label: entry["value"] for label, entry in headline_entries(metrics).items()}


def card_lines(m: dict, fmt_ci) -> list[str]:
    """The report card's "Field metrics" section ([] when none was asked); ``fmt_ci(value, ci)``
    is the card's own number format."""
    if not any(name in m for name in METRICS):
        return []
    lines = ["", "## Field metrics", "",
             "Model-based metrics from the weights in " + (m["field_metrics"]["metrics_dir"] or
                                                                  "the Hugging Face cache")
             + ", offline (docs/metrics.md). In brackets: the same 95% bootstrap intervals as above.", "",
             "| metric | value |", "|---|---|"]
    if "chexbert" in m:
        c, ci = m["chexbert"], m["chexbert"].get("ci95") or {}
        for key, label in (("micro_f1_14", "CheXbert micro-F1, 14 observations"),
                           ("macro_f1_14", "CheXbert macro-F1, 14 observations"),
                           ("micro_f1_5", "CheXbert micro-F1, 5 observations"),
                           ("macro_f1_5", "CheXbert macro-F1, 5 observations")):
            lines.append(f"| {label} | {fmt_ci(c[key], ci.get(key))} |")
    for name in (*MEAN_METRICS, "bleu2_rexrank"):
        if name in m:
            capped = (m[name].get("max_new_tokens") if name == "green" else None)
            note = f" (answers capped at {capped} new tokens: not GREEN's figure)" if capped else ""
            lines.append(f"| {m[name]['name']} | {fmt_ci(m[name]['mean'], m[name].get('ci95'))}{note} |")
    if "radcliq" in m:
        r = m["radcliq"]
        lines.append(f"| {r['name']} | {fmt_ci(r['inverse'], r.get('ci95'))} (RadCliQ-v1 "
                     f"{'n/a' if r['radcliq_v1'] is None else format(r['radcliq_v1'], '.3f')}) |")
    rex = {"BLEU-2": (m.get("bleu2_rexrank") or {}).get("mean"), "BERTScore": (m.get("bertscore") or {}).get("mean"),
           "SembScore": (m.get("semb") or {}).get("mean"), "RadGraph": (m.get("radgraph") or {}).get("mean"),
           "1/RadCliQ-v1": (m.get("radcliq") or {}).get("inverse"),
           "RaTEScore": (m.get("ratescore") or {}).get("mean"), "GREEN": (m.get("green") or {}).get("mean")}
    lines += ["", "ReXrank-style line (ReXrank's seven metrics; n/a: not scored here): "
              + " | ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in rex.items()), ""]
    return lines


__all__ = ["METRICS", "parse", "locate", "score", "add_to", "headline", "headline_entries", "card_lines"]
