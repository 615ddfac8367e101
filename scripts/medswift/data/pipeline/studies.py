"""From views to samples: the views of one study become one sample (frontal first), and a
sectioned report (findings / impression) gives the sample's target text."""
from __future__ import annotations

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
