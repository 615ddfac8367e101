"""Expert coding of the bundled OpenI studies: the NLM indexers' manual MeSH terms, mapped to the
labeller's observations, to measure the labeller and the clinical reward against people rather
than against the labeller itself. Research only, not diagnosis.

``data/openi/openi-mesh.csv`` holds ``study,mesh`` for the 3,313 studies of the bundled reports
(the ``<study>`` of ``<study>_<view>`` ids is the IU-Xray report number), copied from the
IU-Xray ``indiana_reports.csv`` table (the MeSH column of the NLM's ecgen-radiology XML).

Mapping (written before measuring; a term's major heading before the first "/", qualifiers
after it): each observation lists the MeSH headings an indexer uses for it. Terms for things the
labeller does not label (spine, calcinosis, aorta, diaphragm, technical quality...) map to
nothing: such a study is neither "coded normal" nor "coded abnormal" and is left out of both.

A held-out part (study number divisible by 5, about a fifth) is never used to write rules:
labeller changes are checked on the rest (``split="dev"``) and reported on ``split="heldout"``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Mapping

from medswift.core.errors import UsageError
from medswift.eval import findings

NORMAL_TERM = "normal"
# heading (lower case) -> observation; a heading with a qualifier condition is in QUALIFIED.
HEADINGS: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "opacity": "Lung Opacity", "airspace disease": "Lung Opacity", "infiltrate": "Lung Opacity",
    "markings": "Lung Opacity", "lung diseases, interstitial": "Lung Opacity",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "neoplasms": "Lung Lesion", "lung neoplasms": "Lung Lesion",
    "pulmonary edema": "Edema", "edema": "Edema", "pulmonary congestion": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pulmonary atelectasis": "Atelectasis", "atelectases": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural effusion": "Pleural Effusion",
    "fractures, bone": "Fracture", "rib fractures": "Fracture",
    "catheters, indwelling": "Support Devices", "tube, inserted": "Support Devices",
    "implanted medical device": "Support Devices", "medical device": "Support Devices",
    "stents": "Support Devices", "surgical instruments": "Support Devices",
    "pacemaker, artificial": "Support Devices", "sutures": "Support Devices",
    "electrodes, implanted": "Support Devices", "heart valve prosthesis": "Support Devices",
    "calcified granuloma": "Granuloma", "granuloma": "Granuloma", "granulomatous disease": "Granuloma",
}
# heading -> (observation, qualifiers of which one must be present)
QUALIFIED: dict[str, tuple[str, tuple[str, ...]]] = {
    "cardiac shadow": ("Cardiomegaly", ("enlarged",)),
    "heart": ("Cardiomegaly", ("enlarged",)),
    "mediastinum": ("Enlarged Cardiomediastinum", ("enlarged", "widened")),
    "density": ("Lung Opacity", ("lung",)),
    "thickening": ("Pleural Other", ("pleura",)),
    "costophrenic angle": ("Pleural Effusion", ("blunted",)),
    "cicatrix": ("Lung Opacity", ("lung",)),
}
ABNORMAL = tuple(f for f in findings.FINDINGS if f not in (findings.NO_FINDING, "Support Devices"))
DEFAULT_CODING = Path("data/openi/openi-mesh.csv")


def code_terms(mesh: str) -> set[str] | None:
    """The observations one study's MeSH field codes; {"No Finding"} for "normal"; None when it
    codes only things the labeller does not label."""
    terms = [t.strip() for t in (mesh or "").split(";") if t.strip()]
    if [t.lower() for t in terms] == [NORMAL_TERM]:
        return {findings.NO_FINDING}
    out = set()
    for term in terms:
        heading, *qualifiers = [p.strip().lower() for p in term.split("/")]
        if heading in HEADINGS:
            out.add(HEADINGS[heading])
        elif heading in QUALIFIED and set(QUALIFIED[heading][1]) & set(qualifiers):
            out.add(QUALIFIED[heading][0])
    return out or None


def in_split(study: str, split: str) -> bool:
    heldout = int(study) % 5 == 0
    return split == "all" or (split == "heldout") == heldout


def load_coding(path: Path = DEFAULT_CODING) -> dict[str, set[str] | None]:
    """study -> coded observations (see code_terms) from a ``study,mesh`` CSV or IU-Xray's
    ``indiana_reports.csv`` (``uid,MeSH,...``)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            # this project's study,mesh file, or IU-Xray's indiana_reports.csv (uid, MeSH, ...)
            study, mesh = ("study", "mesh") if {"study", "mesh"} <= columns else ("uid", "MeSH")
            if not {study, mesh} <= columns:
                raise UsageError(f"{path}: expected a CSV with the columns study,mesh (or IU-Xray's uid,MeSH)")
            return {row[study]: code_terms(row[mesh] or "") for row in reader}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: not a readable UTF-8 CSV ({type(exc).__name__})") from None


def studies(reports_json: Path, coding: Mapping[str, set[str] | None], split: str = "all"
            ) -> Iterator[tuple[str, str, set[str]]]:
    """(study, report, coded observations) for each study of an OpenI ``annotations`` file that
    the coding maps (first view's caption; all views of a study share one report)."""
    seen = set()
    for ann in json.loads(Path(reports_json).read_text(encoding="utf-8"))["annotations"]:
        study = str(ann["image_id"]).split("_")[0]
        if study in seen or coding.get(study) is None or not in_split(study, split):
            continue
        seen.add(study)
        yield study, ann["caption"], coding[study]


def is_coded_normal(coded: set[str]) -> bool:
    return coded == {findings.NO_FINDING}


def is_coded_abnormal(coded: set[str]) -> bool:
    return bool(coded & set(ABNORMAL))


# The CheXpert labeller's published mention phrases (github.com/stanfordmlgroup/chexpert-labeler,
# phrases/mention/*.txt, commit 44ddeb3), stems completed to words ("atelecta" -> atelectasis).
# Phrases that only name an organ ("the heart", "cardiac silhouette", "contour") are mentions
# there because its rules then look for "enlarged": they are written here with it (ORGAN_PHRASES).
CHEXPERT_PHRASES: dict[str, list[str]] = {
    "Atelectasis": ["atelectasis", "collapse"],
    "Cardiomegaly": ["cardiomegaly", "cardiac enlargement", "enlarged heart"],
    "Consolidation": ["consolidation"],
    "Edema": ["edema", "heart failure", "chf", "vascular congestion", "pulmonary congestion", "indistinctness",
              "vascular prominence"],
    "Fracture": ["fracture"],
    "Lung Lesion": ["mass", "nodular density", "nodular densities", "nodular opacity", "nodular opacities",
                    "nodular opacification", "nodule", "lump", "cavitary lesion", "carcinoma", "neoplasm", "tumor"],
    "Lung Opacity": ["opacity", "decreased translucency", "increased density", "airspace disease", "air-space disease",
                     "air space disease", "infiltrate", "infiltration", "interstitial marking", "interstitial pattern",
                     "interstitial lung disease", "reticular pattern", "reticular marking", "reticulation",
                     "parenchymal scarring", "peribronchial thickening", "wall thickening", "scar"],
    "Pleural Effusion": ["pleural fluid", "effusion"],
    "Pleural Other": ["pleural thickening", "fibrosis", "fibrothorax", "pleural scar", "pleural parenchymal scar",
                      "pleuro-parenchymal scar", "pleuro-pericardial scar"],
    "Pneumonia": ["pneumonia", "infection", "infectious process"],
    "Pneumothorax": ["pneumothorax", "pneumothoraces"],
    "Support Devices": ["pacer", "line", "lines", "picc", "tube", "valve", "catheter", "pacemaker", "hardware",
                        "arthroplasty", "marker", "icd", "defibrillator", "device", "drain", "plate", "screw",
                        "cannula", "apparatus", "coil", "support", "equipment", "mediport"],
}
ORGAN_PHRASES: dict[str, tuple[list[str], str]] = {
    "Cardiomegaly": (["heart", "heart size", "cardiac size", "cardiac shadow", "cardiac contour",
                      "cardiac silhouette"], "enlarged"),
    "Enlarged Cardiomediastinum": (["mediastinum", "cardiomediastinum", "mediastinal contour",
                                    "mediastinal configuration", "mediastinal silhouette", "pericardial silhouette",
                                    "cardiac silhouette and vascularity"], "widened"),
}


def phrase_coverage() -> dict[str, tuple[int, int, list[str]]]:
    """observation -> (phrases the labeller reads as that observation, phrases, those it misses),
    each phrase said in a sentence ("There is {phrase}." / "The {organ} is enlarged.")."""
    out = {}
    sentences: dict[str, list[tuple[str, str]]] = {}
    for finding, phrases in CHEXPERT_PHRASES.items():
        sentences.setdefault(finding, []).extend((p, f"There is {p}.") for p in phrases)
    for finding, (organs, state) in ORGAN_PHRASES.items():
        sentences.setdefault(finding, []).extend((p, f"The {p} is {state}.") for p in organs)
    for finding, items in sentences.items():
        missed = [p for p, s in items if findings.label_report(s, "en")[finding] != findings.POSITIVE]
        out[finding] = (len(items) - len(missed), len(items), missed)
    return out


def labeller_scores(rows: list[tuple[str, str, set[str]]], lang: str) -> dict:
    """Micro-F1 (and per-observation counts) of the labeller's U-Ones labels against the coding,
    over the 13 abnormal observations, Support Devices and No Finding."""
    names = list(ABNORMAL) + ["Support Devices", findings.NO_FINDING]
    counts = {f: [0, 0, 0] for f in names}  # tp, fp, fn
    for _, report, coded in rows:
        labels = findings.to_binary(findings.label_report(report, lang))
        for f in names:
            got, want = labels[f] == 1, f in coded
            counts[f][0 if got and want else 1 if got else 2] += int(got or want)
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    micro = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"micro_f1": micro, "studies": len(rows), "counts": counts}


__all__ = ["ABNORMAL", "CHEXPERT_PHRASES", "phrase_coverage", "DEFAULT_CODING", "code_terms", "in_split", "is_coded_abnormal", "is_coded_normal",
           "labeller_scores", "load_coding", "studies"]
