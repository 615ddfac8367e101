"""From views to samples: the views of one study become one sample (frontal first), and a
sectioned report (findings / impression) gives the sample's target text."""
from __future__ import annotations

from dataclasses import dataclass

from medswift.core.prompts import FRONTAL
from medswift.data.pipeline.records import Candidate


# Frontal views first (the literature's order for a study), then lateral, then anything else.
_VIEW_RANK = {"PA": 0, "AP": 1, "AP AXIAL": 1, "PA LLD": 1, "AP LLD": 1, "AP RLD": 1, "PA RLD": 1,
              "LATERAL": 2, "LL": 2, "LAO": 3, "RAO": 3, "LPO": 3, "SWIMMERS": 3}


def view_rank(view) -> tuple:
    """Sort key of a view: its position name (PA/AP before LATERAL), else its order number."""
    text = str(view or "").strip().upper()
    if text in _VIEW_RANK:
        return (0, _VIEW_RANK[text], "")
    return (1, int(text) if text.isdigit() else 10**9, text)


def to_units(candidates: list[Candidate], unit: str, max_views: int) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """``unit == "study"``: the problem-free views of one study (``fields["study"]``) become one
    candidate with their images frontal first, at most ``max_views`` (the others listed as
    warnings); candidates with a problem pass through to be listed. ``"image"``: unchanged."""
    if unit == "image":
        return candidates, []
    out: list[Candidate] = []
    studies: dict[str, tuple[Candidate, list[Candidate]]] = {}  # study -> (its merged candidate, its views)
    for cand in candidates:
        study = cand.fields.get("study")
        if cand.problem or not study or not cand.images:
            out.append(cand)
            continue
        if study not in studies:
            studies[study] = (Candidate(study, [], group=cand.group, fields=cand.fields, split=cand.split), [])
            out.append(studies[study][0])
        studies[study][1].append(cand)
    notes: list[tuple[str, str]] = []
    for cand, views in studies.values():
        ordered = sorted(views, key=lambda v: view_rank(v.fields.get("view") or v.fields.get("view_order")))
        cand.images = [name for v in ordered for name in v.images][:max_views]
        cand.fields = {**ordered[0].fields, "views": [v.record_id for v in ordered][:max_views],
                       "view_positions": [v.fields.get("view") for v in ordered][:max_views]}
        extra = [name for v in ordered for name in v.images][max_views:]
        notes += [(cand.record_id, f"view {name} not used (--max_views {max_views})") for name in extra]
    return out, notes


SECTIONS = ("findings", "impression", "both")


def choose_section(fields: dict, section: str) -> tuple[str, str | tuple[str, str] | None]:
    """The target text of a sectioned report: ``(text, problem)``; a study whose chosen section
    is missing is a listed skip (the published IU-Xray/MIMIC-CXR setups drop them the same way)."""
    findings, impression = (fields.get("findings") or "").strip(), (fields.get("impression") or "").strip()
    if section == "findings":
        return findings, None if findings else "no findings section"
    if section == "impression":
        return impression, None if impression else "no impression section"
    if not findings and not impression:
        return "", "no findings or impression section"
    parts = ([f"Findings: {findings}"] if findings else []) + ([f"Impression: {impression}"] if impression else [])
    return "\n".join(parts), None


# --------------------------------------------------------------------------- priors (--priors)
@dataclass(frozen=True)
class Prior:
    """The prior study of a sample: its id (``s<study>``), how many days before the current study it
    was taken, its report's findings and impression, and its frontal view's checked image path."""
    study: str
    days: int
    findings: str
    impression: str
    image: str


def frontal_image(rec: Candidate, good: list[str], warnings: set[tuple[str, str]]) -> str | None:
    """The checked path of a study's frontal view (its first view, frontal first by view_rank), or
    None when its first view is not frontal or was refused by the image checks."""
    positions = rec.fields.get("view_positions") or [rec.fields.get("view")]
    if not good or str(positions[0] or "").strip().upper() not in FRONTAL:
        return None
    if len(good) < len(rec.images) and (rec.record_id, rec.images[0]) in warnings:
        return None  # its frontal view failed; good[0] is another view
    return good[0]


def link_priors(records: list[Candidate], images: dict[str, list[str]], warnings: list[tuple[str, str]],
                split_of) -> tuple[dict[str, Prior | None], list[tuple[str, str]]]:
    """Libra's rule over the checked studies: order each patient's studies by date and time; a study's
    prior is the latest usable study of the same patient from a strictly earlier date, so studies of
    one day share one prior. Usable: a findings or impression section, a checked frontal view and the
    same split; when the latest earlier study is not usable, the latest usable one before it serves.
    Returns the prior (None: none) of every record, and a warning for each study whose latest
    earlier study could not serve (naming the one used instead, or "no prior").

    Written here: no maintained library selects priors; one sort per patient (O(n log n))."""
    refused = {(rid, note[len("view "):].split(" refused", 1)[0]) for rid, note in warnings
               if note.startswith("view ") and " refused (" in note}  # keep_first_valid's wording
    by_patient: dict[str, list[Candidate]] = {}
    for rec in records:
        by_patient.setdefault(rec.group, []).append(rec)
    prior_of: dict[str, Prior | None] = {}
    notes: list[tuple[str, str]] = []
    for studies in by_patient.values():
        studies.sort(key=lambda r: (r.fields["study_day"], r.fields["study_time"], r.record_id))
        best: tuple[Candidate, str] | None = None  # the latest usable study of the days before
        latest_earlier: Candidate | None = None
        k = 0
        while k < len(studies):
            day = studies[k].fields["study_day"]
            same_day = [r for r in studies[k:] if r.fields["study_day"] == day]
            for rec in same_day:
                usable = best is not None and split_of(best[0]) == split_of(rec)
                prior_of[rec.record_id] = _prior(best, day) if usable else None
                if latest_earlier is not None and (not usable or best[0] is not latest_earlier):
                    notes.append((rec.record_id, f"prior {latest_earlier.record_id} unusable (no report section, "
                                                 "no checked frontal view or another split); "
                                                 + (f"used {best[0].record_id}" if usable else "no prior")))
            for rec in same_day:  # the latest usable of this day serves the later days
                image = frontal_image(rec, images.get(rec.record_id, []), refused)
                has_report = (rec.fields.get("findings") or rec.fields.get("impression") or "").strip()
                if image and has_report:
                    best = (rec, image)
            latest_earlier = same_day[-1]
            k += len(same_day)
    return prior_of, notes


def _prior(best: tuple[Candidate, str], day: int) -> Prior:
    rec, image = best
    return Prior(rec.record_id, day - rec.fields["study_day"], (rec.fields.get("findings") or "").strip(),
                 (rec.fields.get("impression") or "").strip(), image)
