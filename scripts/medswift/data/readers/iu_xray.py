"""Reader: IU-Xray (Indiana University chest X-rays, OpenI) as the NLM publishes it.

``--input`` is the folder of report XMLs (``ecgen-radiology/<n>.xml`` from NLMCXR_reports.tgz),
that folder's parent, or one XML file; ``--images_dir`` is the PNG folder (``NLMCXR_png/``,
``CXR<n>_<k>_IM-xxxx-xxxx.png``). One XML is one study::

    <eCitation>
      <uId id="CXR1"/>
      <MedlineCitation><Article><Abstract>
        <AbstractText Label="COMPARISON">...</AbstractText>   (ignored, as INDICATION)
        <AbstractText Label="FINDINGS">...</AbstractText>
        <AbstractText Label="IMPRESSION">...</AbstractText>
      </Abstract></Article></MedlineCitation>
      <MeSH><major>Cardiomegaly/mild</major><minor>...</minor></MeSH>
      <parentImage id="CXR1_1_IM-0001-3001">...</parentImage>   (one per view; PNG stem)
    </eCitation>

Each ``parentImage`` is a view of the study (``<uId>``, else the file stem). The XML has no
PA/lateral tag per view (its ``caption`` names the whole exam), so the views keep the order the
XML lists them in; that order is what ``--unit study`` calls "frontal first". The targets are
the FINDINGS / IMPRESSION sections (``--section``); the de-identification tokens ``XXXX`` stay
in the text, as the published IU-Xray results keep them. The manual MeSH terms go into each
sample's ``meta`` (``uid``, ``mesh_major``, ``mesh_minor``). There is no official split: studies
are split with --seed.

XML is parsed with ``defusedxml`` (the maintained guard, installed with ms-swift through nltk):
entity declarations (billion laughs, quadratic blow-up) and external entities are refused, and a
file over ``MAX_XML_BYTES`` is not parsed at all, so one hostile or broken file is one listed
skip ("unreadable XML"), never a traceback or a memory blow-up.
"""
from __future__ import annotations

import os
from pathlib import Path

from medswift.core.errors import UsageError, describe
from medswift.core.files import entry_kind
from medswift.data.pipeline.image_index import index_images
from medswift.data.readers.contract import ReaderOptions
from medswift.data.pipeline.records import BadRecord, Candidate, Reading

NAME = "iu_xray"
VIEWS = False  # no view positions: --views does not apply
Options = ReaderOptions  # no flags of its own
add_args = Options.add_args
REPORTS_FOLDER = "ecgen-radiology"  # what NLMCXR_reports.tgz unpacks to
MAX_XML_BYTES = 1 << 20  # the NLM's reports are 3-6 KB each; anything near 1 MiB is not one
_MARKER = b"<eCitation"


def _head(path: Path, size: int = 2048) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def detect(path: Path) -> bool:
    """The ``ecgen-radiology`` folder, its parent, or a folder/file of ``<eCitation>`` XMLs."""
    try:
        if path.is_file():
            return path.suffix.lower() == ".xml" and _MARKER in _head(path)
        if not path.is_dir():
            return False
        if path.name == REPORTS_FOLDER or (path / REPORTS_FOLDER).is_dir():
            return True
        with os.scandir(path) as entries:
            for n, entry in enumerate(entries):
                if n > 10_000:
                    return False
                if entry.name.lower().endswith(".xml") and entry_kind(entry) == "file":
                    return _MARKER in _head(Path(entry.path))
    except (OSError, ValueError):
        pass
    return False


def xml_files(path: Path) -> tuple[Path, list[Path], list[Candidate]]:
    """The reports folder, its XML files (1.xml, 2.xml, ..., 10.xml: numeric order), and a
    listed problem for each ``*.xml`` entry that is not a regular file (a FIFO would block)."""
    if path.is_file():
        return path.parent, [path], []
    folder = path / REPORTS_FOLDER if (path / REPORTS_FOLDER).is_dir() else path
    if not folder.is_dir():
        raise UsageError(f"input folder not found: {path}")
    files, odd = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.lower().endswith(".xml"):
                continue
            kind = entry_kind(entry)  # a symlink loop raises in DirEntry.is_file(): one listed problem
            if kind == "file":
                files.append(Path(entry.path))
            else:
                problem = ("unreadable XML", f"{entry.name}: {'not a regular file' if kind in ('dir', 'other') else kind}")
                odd.append(Candidate(Path(entry.name).stem, [], problem))
    if not files and not odd:
        raise UsageError(f"{folder} holds no report XML files; give the NLM's {REPORTS_FOLDER}/ folder "
                         "(NLMCXR_reports.tgz) or its parent")

    def natural(p: Path):
        return (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name)
    return folder, sorted(files, key=natural), sorted(odd, key=lambda c: c.record_id)


def parse_xml(path: Path):
    """The root element of one report, or ``BadRecord("unreadable XML", ...)``."""
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring
    except ImportError:  # pragma: no cover - ms-swift installs it (through nltk)
        raise UsageError("the iu_xray reader needs defusedxml (pip install defusedxml)") from None
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_XML_BYTES + 1)
    except OSError as exc:
        raise BadRecord("unreadable XML", f"{path.name}: {exc.strerror or exc}") from None
    if len(data) > MAX_XML_BYTES:
        raise BadRecord("unreadable XML", f"{path.name}: larger than {MAX_XML_BYTES} bytes, not a report")
    try:
        return fromstring(data)
    except DefusedXmlException as exc:  # entity declarations, external references
        raise BadRecord("unreadable XML", f"{path.name}: refused ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - ParseError, and whatever else expat meets in a hostile file
        raise BadRecord("unreadable XML", f"{path.name}: {describe(exc)}") from None


def _text(element) -> str:
    """An element's text with its children's, whitespace runs collapsed (XML indentation)."""
    return " ".join("".join(element.itertext()).split())


def report_fields(root) -> dict:
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        if label in ("FINDINGS", "IMPRESSION") and not sections.get(label):
            sections[label] = _text(node)
    mesh = {"major": [], "minor": []}
    for block in root.iter("MeSH"):
        for term in block:
            if term.tag in mesh and _text(term):
                mesh[term.tag].append(_text(term))
    return {"findings": sections.get("FINDINGS", ""), "impression": sections.get("IMPRESSION", ""),
            "mesh_major": mesh["major"], "mesh_minor": mesh["minor"]}


def study_candidates(path: Path, seen: dict[str, str]) -> list[Candidate]:
    """One candidate per view of the XML at ``path`` (or one listed problem for the study).
    ``seen``: study id -> the XML that first used it (two XMLs with one uId must not merge)."""
    try:
        root = parse_xml(path)
    except BadRecord as bad:
        return [Candidate(path.stem, [], bad.problem)]
    uid_node = root.find(".//uId")
    uid = " ".join((uid_node.get("id") or "").split()) if uid_node is not None else ""
    uid = uid or path.stem
    if uid in seen:
        return [Candidate(uid, [], ("duplicate id", f"{path.name}: study {uid} is already {seen[uid]}"))]
    seen[uid] = path.name
    fields = report_fields(root)
    meta = {"uid": uid, "mesh_major": fields.pop("mesh_major"), "mesh_minor": fields.pop("mesh_minor")}
    views: list[str] = []
    out: list[Candidate] = []
    for k, node in enumerate(root.iter("parentImage"), start=1):
        image_id = (node.get("id") or "").strip()
        if not image_id:
            out.append(Candidate(f"{uid}#view{k}", [], ("no image id", f"{path.name}: parentImage #{k} has no id")))
        elif image_id not in views:  # the same image listed twice is one view
            views.append(image_id)
    if not views and not out:
        return [Candidate(uid, [], ("no image", f"{path.name}: no parentImage"))]
    return [Candidate(image_id, [image_id], group=uid,
                      fields={**fields, "study": uid, "view_order": str(k), "meta": meta})
            for k, image_id in enumerate(views, start=1)] + out


def read(options: ReaderOptions) -> Reading:
    if not options.images_dir:
        raise UsageError("--images_dir is required for this format (the NLMCXR_png folder)")
    images_dir = Path(options.images_dir)
    index = index_images(images_dir)
    folder, files, candidates = xml_files(Path(options.input))
    seen: dict[str, str] = {}
    for path in files:
        candidates += study_candidates(path, seen)
    return Reading(candidates, [images_dir], index, default_unit="study", studies=True, official=False,
                   sections=True, extra={"reports_dir": str(folder.resolve()), "xml_files": len(files),
                                         "view_order": "as the XML lists parentImage (it has no PA/lateral tag)"})
