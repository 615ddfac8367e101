"""Audit the clinical reward on a dataset before spending GPU hours on it: score completions that
ignore the image (normal templates, a negation list, the most common reference, a hedge) against
the dataset's references and compare each mean with the references' self-score. A policy
optimised on a reward it can earn without looking at the image learns the template instead.

Usage:
    python scripts/audit_reward.py --data data/openi_swift/val.jsonl
    python scripts/audit_reward.py --data data/openi_swift
    python scripts/audit_reward.py --data data/openi/openi-en.json --coding data/openi/openi-mesh.csv
    python scripts/audit_reward.py --data indiana_reports.csv --coding indiana_reports.csv

Verdict per completion: "GAMEABLE" when its mean on abnormal studies (references the labeller,
or with --coding the expert MeSH coding, calls abnormal) exceeds --threshold, or when the negation
list earns more than the concise normal report on normal studies (a reward that pays for listing
negatives); the command then exits 1. Earning full reward on normal studies is right, not a flaw.
Research only, not diagnosis.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl, read_text_utf8
from medswift.eval import expert_coding, findings
from medswift.posttrain import rewards

# Image-blind completions, one set per language.
BLIND: dict[str, dict[str, str]] = {
    "en": {
        "normal report": "Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
        "one-line normal": "No acute cardiopulmonary abnormality.",
        "negation list": "No cardiomegaly. No pleural effusion. No pneumothorax. No consolidation. No edema. "
                         "No pneumonia. No atelectasis. No nodule. No mass. No fracture.",
        "hedge": "Possible mild cardiomegaly. Possible small pleural effusion. Cannot exclude pneumonia. "
                 "Atelectasis versus scarring.",
    },
    "zh": {
        "normal report": "心脏大小正常。肺部清晰。没有胸腔积液或气胸。",
        "one-line normal": "没有急性心肺异常。",
        "negation list": "没有心脏增大。没有胸腔积液。没有气胸。没有实变。没有水肿。没有肺炎。没有肺不张。没有结节。没有肿块。没有骨折。",
        "hedge": "可能轻度心脏增大。可能少量胸腔积液。不能排除肺炎。可能肺不张。",
    },
}
COMMON = "most common reference"
THRESHOLD = 0.15      # mean on abnormal studies above which a blind completion games the reward
NEGATION_MARGIN = 0.02
MIN_STUDIES = 20      # abnormal studies a verdict needs (a mean over fewer says little)
SPLIT_FILES = ("val.jsonl", "test.jsonl", "train.jsonl")


def _jsonl_references(path: Path) -> tuple[list[tuple[str | None, str]], list[str]]:
    rows, problems = read_jsonl(path, "dataset")
    out = []
    for n, row in rows:
        ref = None
        if isinstance(row, dict):
            ref = row.get("solution")
            if not isinstance(ref, str):
                turns = [m.get("content") for m in row.get("messages") or [] if isinstance(m, dict)
                         and m.get("role") == "assistant"]
                ref = turns[-1] if turns else None
        if isinstance(ref, str) and ref.strip():
            out.append((None, ref))
        else:
            problems.append(f"line {n}: no reference (a 'solution' or an assistant turn with text)")
    return out, problems


def _openi_references(path: Path) -> tuple[list[tuple[str | None, str]], list[str]]:
    try:
        anns = json.loads(read_text_utf8(path, "dataset"))["annotations"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path}: not an OpenI file ({{\"annotations\": [{{\"image_id\", \"caption\"}}]}})") from None
    out, seen, problems = [], set(), []
    for i, ann in enumerate(anns):
        if not (isinstance(ann, dict) and isinstance(ann.get("caption"), str) and ann["caption"].strip()):
            problems.append(f"annotation {i}: no caption")
            continue
        study = str(ann.get("image_id", i)).split("_")[0]
        if study not in seen:  # the views of a study share one report
            seen.add(study)
            out.append((study, ann["caption"]))
    return out, problems


IU_COLUMNS = ("uid", "findings", "impression")


def _iu_csv_references(path: Path) -> tuple[list[tuple[str | None, str]], list[str]]:
    """IU-Xray's ``indiana_reports.csv``: the report is FINDINGS then IMPRESSION; the study is uid."""
    text = read_text_utf8(path, "dataset")
    reader = csv.DictReader(io.StringIO(text))
    if not set(IU_COLUMNS) <= set(reader.fieldnames or ()):
        raise UsageError(f"{path}: a CSV needs the columns {', '.join(IU_COLUMNS)} (IU-Xray's indiana_reports.csv)")
    out, problems = [], []
    for n, row in enumerate(reader, start=2):
        report = " ".join(part.strip() for part in (row["findings"] or "", row["impression"] or "") if part.strip())
        if report:
            out.append((row["uid"], report))
        else:
            problems.append(f"line {n}: no findings or impression")
    return out, problems


def load_references(data: Path) -> tuple[list[tuple[str | None, str]], list[str], Path]:
    """([(study id or None, reference)], problems, file read) from a converter JSONL, a converter
    output folder (its val, else test, else train split), an OpenI annotations JSON or IU-Xray's
    indiana_reports.csv."""
    if data.is_dir():
        found = [data / name for name in SPLIT_FILES if (data / name).is_file()]
        if not found:
            raise UsageError(f"{data}: no {', '.join(SPLIT_FILES)} in this folder")
        data = found[0]
    if not data.is_file():
        raise UsageError(f"{data}: no such file or folder")
    reader = {".json": _openi_references, ".csv": _iu_csv_references}.get(data.suffix.lower(), _jsonl_references)
    refs, problems = reader(data)
    if not refs:
        raise UsageError(f"{data}: no reference report found ({len(problems)} rows without one)")
    return refs, problems, data


def _group(study: str | None, ref: str, lang: str, coding: dict | None) -> str | None:
    """'normal' / 'abnormal' by the expert coding when given, else by the labeller's reading."""
    if coding is not None:
        coded = coding.get(study or "")
        if coded is None:
            return None
        return "normal" if expert_coding.is_coded_normal(coded) else \
            "abnormal" if expert_coding.is_coded_abnormal(coded) else None
    labels = findings.label_report(ref, lang)
    if labels[findings.NO_FINDING] == findings.POSITIVE:
        return "normal"
    return "abnormal" if any(labels[f] in (findings.POSITIVE, findings.UNCERTAIN) for f in expert_coding.ABNORMAL) else None


def audit(refs: list[tuple[str | None, str]], coding: dict | None = None, uncertain: str | None = None,
          threshold: float = THRESHOLD) -> dict:
    """Mean findings reward of each blind completion (and of each reference against itself) over
    all scorable references and over the normal and abnormal ones, with a verdict per completion."""
    policy = rewards.uncertain_policy(uncertain)
    by_lang: dict[str, list[tuple[str | None, str]]] = {}
    for study, ref in refs:
        by_lang.setdefault(findings.detect_lang(ref), []).append((study, ref))
    rows, unscorable = {}, 0
    for lang, items in by_lang.items():
        common, times = Counter(ref for _, ref in items).most_common(1)[0]
        # a reference that occurs once is no template: scored against itself it would look gameable
        blind = dict(BLIND[lang], **({COMMON: common} if times > 1 else {}))
        groups = [_group(study, ref, lang, coding) for study, ref in items]
        for name, text in [("references (self-score)", None)] + list(blind.items()):
            scores = {"all": [], "normal": [], "abnormal": []}
            for (_, ref), group in zip(items, groups):
                value = rewards.findings_reward(ref if text is None else text, ref, policy)
                if value is None:
                    unscorable += text is None
                    continue
                scores["all"].append(value)
                if group:
                    scores[group].append(value)
            row = rows.setdefault(f"{name} [{lang}]", {"all": [], "normal": [], "abnormal": []})
            for key, values in scores.items():
                row[key].extend(values)
    table = {name: {k: (statistics.fmean(v) if v else None) for k, v in parts.items()} | {"n": {
        k: len(v) for k, v in parts.items()}} for name, parts in rows.items()}
    for name, row in table.items():
        row["verdict"] = _verdict(name, row, table, threshold)
    return {"table": table, "unscorable_references": unscorable, "threshold": threshold, "policy": policy,
            "grouped_by": "expert MeSH coding" if coding is not None else "the labeller's reading of each reference"}


def _verdict(name: str, row: dict, table: dict, threshold: float) -> str:
    if name.startswith("references"):
        return "reference"
    if row["n"]["abnormal"] < MIN_STUDIES:
        return f"no verdict: fewer than {MIN_STUDIES} abnormal studies"
    abnormal = row["abnormal"]
    if abnormal is not None and abnormal > threshold:
        return f"GAMEABLE: earns {abnormal:.2f} > {threshold:.2f} on abnormal studies without reading the image"
    if name.startswith("negation list"):
        normal_name = name.replace("negation list", "normal report")
        ref_normal, neg_normal = table.get(normal_name, {}).get("normal"), row["normal"]
        if ref_normal is not None and neg_normal is not None and neg_normal > ref_normal + NEGATION_MARGIN:
            return f"GAMEABLE: listing negatives earns {neg_normal - ref_normal:+.2f} over a normal report"
    return "ok"


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def print_audit(result: dict, data: Path, n_refs: int, problems: list[str], labeller: str | None = None) -> None:
    print(f"reward audit of medswift_findings on {n_refs} references from {data} "
          f"(uncertain policy: {result['policy']}; normal/abnormal by {result['grouped_by']})")
    if problems:
        print(f"{len(problems)} rows skipped (first: {problems[0]})")
    if result["unscorable_references"]:
        print(f"{result['unscorable_references']} references state no observation: unscorable, left out")
    width = max(len(name) for name in result["table"])
    print(f"{'completion':<{width}}  {'all':>6}  {'normal':>6}  {'abnormal':>8}  verdict")
    for name, row in result["table"].items():
        print(f"{name:<{width}}  {_fmt(row['all']):>6}  {_fmt(row['normal']):>6}  {_fmt(row['abnormal']):>8}  "
              f"{row['verdict']}")
    counts = next(iter(result["table"].values()))["n"]
    print(f"studies scored: {counts['all']} ({counts['normal']} normal, {counts['abnormal']} abnormal)")
    if labeller:
        print(labeller)
    print(NOTICE)


def labeller_line(refs: list[tuple[str | None, str]], coding: dict) -> str:
    """The labeller's micro-F1 against the expert coding, on the studies the rules were written
    with (dev) and on the held-out fifth (study number divisible by 5)."""
    parts = []
    for split in ("dev", "heldout"):
        rows = [(s, ref, coding[s]) for s, ref in refs if coding.get(s or "") and expert_coding.in_split(s, split)]
        by_lang: dict[str, list] = {}
        for row in rows:
            by_lang.setdefault(findings.detect_lang(row[1]), []).append(row)
        for lang, items in by_lang.items():
            scores = expert_coding.labeller_scores(items, lang)
            parts.append(f"{split} {scores['micro_f1']:.3f} ({lang}, {scores['studies']} studies)")
    return "labeller micro-F1 against the expert coding: " + "; ".join(parts)


def build_parser():
    parser = command_parser(__doc__)
    parser.add_argument("--data", required=True, help="a converter JSONL, a converter output folder, an "
                        "OpenI annotations JSON (data/openi/openi-en.json) or IU-Xray's indiana_reports.csv")
    parser.add_argument("--coding", help="a study,mesh CSV (data/openi/openi-mesh.csv) or indiana_reports.csv: "
                        "group the studies by expert MeSH coding instead of by the labeller")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help="mean on abnormal studies above which a blind completion is GAMEABLE")
    parser.add_argument("--uncertain", choices=rewards.UNCERTAIN_POLICIES,
                        help=f"uncertainty policy (default: ${rewards.UNCERTAIN_ENV}, else partial)")
    return parser


def run(args) -> int:
    refs, problems, data = load_references(Path(args.data))
    coding = expert_coding.load_coding(Path(args.coding)) if args.coding else None
    if coding is not None and all(study is None for study, _ in refs):
        raise UsageError("--coding needs study ids (an OpenI annotations JSON or indiana_reports.csv); this file has none")
    if coding is not None and not any(coding.get(study or "") for study, _ in refs):
        raise UsageError(f"{args.coding}: codes none of the {len(refs)} studies in {data}")
    result = audit(refs, coding, args.uncertain, args.threshold)
    print_audit(result, data, len(refs), problems, labeller_line(refs, coding) if coding is not None else None)
    return 1 if any(row["verdict"].startswith("GAMEABLE") for row in result["table"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, build_parser().parse_args(argv))


__all__ = ["BLIND", "audit", "load_references", "main"]
