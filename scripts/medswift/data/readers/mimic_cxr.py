"""Reader: MIMIC-CXR-JPG images with the MIMIC-CXR free-text reports.

Layout (PhysioNet's, unchanged):
* images ``files/pXX/p<subject>/s<study>/<dicom_id>.jpg`` under ``--images_dir`` (default
  ``--input``, the MIMIC-CXR-JPG folder; its ``files/`` folder itself is accepted too);
* reports ``files/pXX/p<subject>/s<study>.txt`` from MIMIC-CXR (``mimic-cxr-reports.zip``),
  under ``--reports_dir`` (default ``--input``);
* ``mimic-cxr-2.0.0-split.csv[.gz]`` (dicom_id, study_id, subject_id, split) and
  ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (dicom_id, ..., ViewPosition, ...) in ``--input``, or
  given with ``--split_csv`` / ``--metadata_csv``.

Usage:
    python scripts/convert_xray_swift.py --input /data/mimic-cxr-jpg/2.0.0 \
        --reports_dir /data/mimic-cxr-reports --output_dir data/mimic_cxr_swift --lang en
    python scripts/convert_xray_swift.py --input /data/mimic-cxr-jpg/2.0.0 --views frontal --max_views 1 ...

One candidate per image: grouped by subject (the official split is by patient), merged per study
by the converter (frontal first by ViewPosition), split as the split file says (validate -> val).
The split file is patient-disjoint; should a copy of it put one patient (or one study) in two
splits, the rows outside the most protected of them (test, then val) are listed skips, so a test
patient never reaches training. ``--views`` keeps only some ViewPositions (``frontal`` = PA, AP;
``lateral`` = LATERAL, LL); the others are listed skips ("view not selected").
The report is cut into sections the way the MIMIC-CXR authors' ``section_parser.py`` does (see
``report_sections``); FINDINGS and IMPRESSION are the targets (``--section``).
Images on disk or in the metadata file that the split file does not list are listed skips.
With the converter's ``--priors`` the metadata's StudyDate/StudyTime date each study (a study without a valid
date is a listed skip) and ``medswift.data.pipeline.studies.link_priors`` gives each its prior; ``--context`` keeps
the indication (else history), technique and comparison sections for the prompt. See docs/priors.md.

For research only, not for diagnosis.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import entry_kind, may_be_file
from medswift.data.readers.contract import ReaderOptions, flag
from medswift.data.pipeline.records import Candidate, Reading, csv_rows, official_split

NAME = "mimic_cxr"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "study_id", "subject_id", "ViewPosition")
IMAGE_SUFFIX = ".jpg"
MAX_REPORT_BYTES = 1 << 20  # real reports are a few KB; a bigger file is not a report
NUMERIC_ID = re.compile(r"[0-9]{1,12}")
DICOM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VIEWS = True  # the converter's --views applies to this reader (it knows each image's ViewPosition)
DATES = True  # --priors applies: the metadata gives each study's StudyDate and StudyTime
CONTEXT = True  # --context applies: reports have indication, technique and comparison sections
DATE_COLUMNS = ("StudyDate", "StudyTime")
VIEW_GROUPS = {"FRONTAL": ("PA", "AP"), "LATERAL": ("LATERAL", "LL")}
PROTECTION = {"test": 2, "val": 1, "train": 0}  # a patient found in two splits stays in the highest


# --------------------------------------------------------------------------- report sections
# The conventions of the MIMIC-CXR authors' txt/section_parser.py and create_section_files.py
# (github.com/MIT-LCP/mimic-cxr), written here from their description:
# 1. a section header is an upper-case name ([A-Z ()/,-]) and a colon at the start of a line
#    (MIMIC lines start with one space), followed by white space; text before the first header
#    is the "preamble" (the "FINAL REPORT" title, a WET READ line...) and never a target;
# 2. the line right after a header belongs to that header's section, whatever it holds (their
#    "skip past the first newline to avoid some bad parses");
# 3. header names are normalised: a table of frequent spellings and typos, then names holding a
#    main section's name, then names describing the views of a chest study ("PA AND LATERAL
#    CHEST:") count as findings;
# 4. empty FINDINGS/IMPRESSION sections are dropped (report titles, repeated headers) and the
#    *last* section of each name is the one used;
# 5. a report with neither FINDINGS nor IMPRESSION: the paragraphs after the first blank line of
#    its last section are its "last paragraph", which (then a COMPARISON section, where such
#    reports were often written) stands in for the impression, as their conclusion file does.
# Not reproduced: their per-study manual fixes (custom section names and offsets for a few
# hundred reports, and a typo list), which are data about single studies, not rules.
_HEADER = re.compile(r"\n[ \t]*([A-Z][A-Z ()/,-]*):\s")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

_NAMES = {
    "impression": "impression", "conclusion": "impression", "findings and impression": "impression",
    "findings/impression": "impression", "findings/ impression": "impression",
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findings": "findings", "finding": "findings", "findins": "findings", "findindgs": "findings",
    "findgings": "findings", "findngs": "findings", "findnings": "findings", "finidngs": "findings",
    "reference findings": "findings", "chest, two views": "findings",
    "comparison": "comparison", "comparisons": "comparison", "reference exam": "comparison",
    "comparison exam": "comparison", "comparison film": "comparison", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
    "indication": "indication", "reason for examination": "indication", "reason for exam": "indication",
    "clinical indication": "indication", "idication": "indication",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history",
    "examination": "examination", "exam": "examination", "type of examination": "examination",
    "technique": "technique", "notification": "notification", "addendum": "addendum",
    "recommendation(s)": "recommendations", "recommendation": "recommendations",
    "recommendations": "recommendations", "wet read": "wet read", "wetread": "wet read",
    "date": "date", "comment": "comment",
}
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
_VIEWS_OF_A_STUDY = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright"
    "|frontal semi-upright|ribs|pa and lat")


_NAME_CACHE: dict[str, str] = {}  # a few hundred distinct headers in 227,835 reports


def section_name(header: str) -> str:
    """A header as written (``"FINDINGS AND IMPRESSION"``) -> its normalised section name."""
    known = _NAME_CACHE.get(header)
    if known is None:
        known = _normalise_header(header)
        if len(_NAME_CACHE) < 10_000:
            _NAME_CACHE[header] = known
    return known


def _normalise_header(header: str) -> str:
    name = " ".join(header.lower().split())
    if name in _NAMES:
        return _NAMES[name]
    for main in _MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if _VIEWS_OF_A_STUDY.search(name) else name


def split_sections(text: str) -> list[tuple[str, str]]:
    """``[(normalised name, raw text)]`` in report order; the first is ``preamble`` (text before
    the first header), or ``full report`` when there is no header at all."""
    text = "\n" + text.replace("\r\n", "\n").replace("\r", "\n")
    match = _HEADER.search(text)
    if match is None:
        return [("full report", text)]
    sections = [("preamble", text[:match.start()])]
    while match is not None:
        start = match.end()
        line_end = text.find("\n", start)
        match_next = _HEADER.search(text, start if line_end == -1 else line_end)
        sections.append((section_name(match.group(1)), text[start:match_next.start() if match_next else len(text)]))
        match = match_next
    return sections


def _clean(text: str) -> str:
    return " ".join(text.split())  # reports are hard-wrapped at ~80 columns


def context_sections(text: str) -> dict[str, str]:
    """The current study's context for ``--context``: its indication (else its history),
    technique and comparison sections, the last of each name, cleaned; never findings."""
    last = {name: _clean(body) for name, body in split_sections(text)}
    return {"indication": last.get("indication") or last.get("history", ""),
            "technique": last.get("technique", ""), "comparison": last.get("comparison", "")}


def study_when(date: str, time: str) -> tuple[int, float] | None:
    """``(day ordinal, seconds into the day)`` of MIMIC's StudyDate (``21800506``, shifted into the
    future by the de-identification) and StudyTime (``213014.531``, ``74555.0``: HHMMSS.fff without
    its leading zero); None when either is not such a value."""
    try:
        day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])).toordinal() if len(date) == 8 else None
        clock = float(time)
    except ValueError:
        return None
    if day is None or not 0 <= clock < 240000:
        return None
    whole = int(clock)
    return day, (whole // 10000) * 3600 + (whole // 100 % 100) * 60 + clock % 100


def report_sections(text: str) -> tuple[str, str, str]:
    """``(findings, impression, where the impression came from)`` of a MIMIC-CXR report;
    missing sections are ``""``. The source is ``impression``, ``last paragraph``,
    ``comparison`` or ``""`` (see the conventions above)."""
    sections = [(name, body) for name, body in split_sections(text)
                if name not in ("findings", "impression") or body.strip()]
    last = {name: body for name, body in sections}  # a later section of a name wins
    findings, impression = _clean(last.get("findings", "")), _clean(last.get("impression", ""))
    if findings or impression:
        return findings, impression, "impression" if impression else ""
    paragraphs = _BLANK_LINE.split(sections[-1][1].strip("\n"), maxsplit=1)
    if len(paragraphs) == 2 and _clean(paragraphs[1]):
        return "", _clean(paragraphs[1]), "last paragraph"
    comparison = _clean(last.get("comparison", ""))
    return "", comparison, "comparison" if comparison else ""


# --------------------------------------------------------------------------- files
def _csv_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):  # a gunzipped copy first: faster
        if candidate.is_file():
            return candidate
    return None


def detect(path: Path) -> bool:
    """The MIMIC-CXR-JPG folder: its split file, or its ``files/p1x/`` folders."""
    try:
        if not path.is_dir():
            return False
        if _csv_in(path, SPLIT_FILE) is not None:
            return True
        files = path / "files"
        return files.is_dir() and any((files / f"p1{digit}").is_dir() for digit in range(10))
    except OSError:
        return False


def files_folder(path: Path, what: str) -> Path:
    """The ``files`` folder of a MIMIC-CXR(-JPG) copy given its root or the folder itself."""
    if (path / "files").is_dir():
        return path / "files"
    if path.is_dir() and any(path.glob("p1[0-9]")):
        return path
    raise UsageError(f"{what} folder {path} has no files/p1x/ folders (the MIMIC-CXR layout)")


def find_csv(given: str | None, root: Path, name: str, flag: str) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise UsageError(f"{flag} file not found: {path}")
        return path
    path = _csv_in(root, name)
    if path is None:
        raise UsageError(f"{name} (or .csv.gz) not found in {root}; give {flag}")
    return path


def image_name(subject: str, study: str, dicom: str) -> str:
    """Path of an image under ``files/``: ``p10/p10000032/s50414267/<dicom_id>.jpg``."""
    return f"p{subject[:2]}/p{subject}/s{study}/{dicom}{IMAGE_SUFFIX}"


def images_on_disk(files: Path) -> Iterator[str]:
    """Every ``.jpg`` under ``files/pXX/p<subject>/s<study>/`` as its name under ``files/``: one
    scandir per folder (never a stat per image), which also finds images no CSV lists."""
    def subfolders(path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return sorted(e.name for e in entries if e.name[:1] in ("p", "s") and entry_kind(e) == "dir")
        except OSError:
            return []

    for group in subfolders(str(files)):
        for patient in subfolders(f"{files}/{group}"):
            for study in subfolders(f"{files}/{group}/{patient}"):
                folder = f"{group}/{patient}/{study}"
                try:
                    with os.scandir(f"{files}/{folder}") as entries:
                        # may_be_file: a looping link is kept, and its check lists it; DirEntry.is_file()
                        # raised for it and hid the whole study
                        names = sorted(e.name for e in entries if e.name.endswith(IMAGE_SUFFIX) and may_be_file(e))
                except OSError:
                    continue
                yield from (f"{folder}/{name}" for name in names)


class ImageIndex(Mapping):
    """Image name -> its path (as text) for the images found on disk, built when the converter
    asks: no Path object per image held or made (377,110 of them at MIMIC's size). ``found``
    maps each image name the split file lists to whether it is on disk."""

    def __init__(self, files: Path, found: dict[str, bool]):
        self.prefix, self.found = f"{files}/", found

    def __contains__(self, name) -> bool:
        return self.found.get(name, False)

    def __getitem__(self, name: str) -> str:
        if not self.found.get(name, False):
            raise KeyError(name)
        return self.prefix + name

    def __iter__(self):
        return (name for name, on_disk in self.found.items() if on_disk)

    def __len__(self) -> int:
        return sum(self.found.values())


def read_report(path: str, context: bool = False) -> tuple | tuple[str, str]:
    """``(findings, impression, impression source)`` of a report file (with ``context``, its
    ``context_sections`` dict as a fourth item), or ``(reason, detail)``."""
    name = path.rsplit("/", 1)[-1]
    try:
        st = os.stat(path)  # before opening: a FIFO in its place would block the open
        if not stat.S_ISREG(st.st_mode):
            return "unreadable report", f"{name}: not a regular file"
        if st.st_size > MAX_REPORT_BYTES:
            return "unreadable report", f"{name}: larger than {MAX_REPORT_BYTES} bytes"
        with open(path, "rb") as fh:
            data = fh.read(st.st_size + 1)  # its size, not the cap: read(n) allocates n bytes
    except FileNotFoundError:
        return "missing report", f"{name} not in the reports folder"
    except OSError as exc:
        return "unreadable report", f"{name}: {exc.strerror or exc}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return "unreadable report", f"{name}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    return report_sections(text) + ((context_sections(text),) if context else ())


def parse_views(text: str | None) -> frozenset[str] | None:
    """``--views``: comma-separated ViewPositions (``PA,AP``) or ``frontal`` / ``lateral``;
    None keeps every image."""
    if not text:
        return None
    chosen: set[str] = set()
    for word in (w.strip().upper() for w in text.split(",")):
        if word:
            chosen.update(VIEW_GROUPS.get(word, (word,)))
    if not chosen:
        raise UsageError(f"--views {text!r} names no view position (e.g. frontal, lateral, PA,AP)")
    return frozenset(chosen)



@dataclass(frozen=True)
class Options(ReaderOptions):
    reports_dir: str | None = flag("mimic_cxr: folder holding MIMIC-CXR's files/pXX/p<subject>/s<study>.txt "
                                   "(default: --input)")
    split_csv: str | None = flag("mimic_cxr: mimic-cxr-2.0.0-split.csv[.gz] (default: found in --input)")
    metadata_csv: str | None = flag("mimic_cxr: mimic-cxr-2.0.0-metadata.csv[.gz] (default: found in --input)")
    views: str | None = flag("mimic_cxr: keep only these ViewPositions, comma-separated (PA,AP), or frontal "
                             "(PA,AP) / lateral (LATERAL,LL); the others are listed skips (default: all)")


add_args = Options.add_args


def _keep_most_protected_split(candidates: list[Candidate], patient_split: dict[str, str], split_csv: Path) -> None:
    """A patient in two splits (never in PhysioNet's file; possible in an edited copy): only the
    rows in its most protected split stay, so neither the patient nor a study straddles splits."""
    for cand in candidates:
        top = patient_split.get(cand.group) if cand.split else None
        if top and cand.split != top and not cand.problem:
            cand.problem = ("patient in two splits", f"{cand.group} is also in {top} in {split_csv.name}")


def _list_unlisted_images(candidates: list[Candidate], images: Path, listed: dict[str, bool],
                          view_of: dict[str, str], split_csv: Path, metadata_csv: Path) -> None:
    """Images the split file does not list: listed skips, never silently dropped."""
    for name in images_on_disk(images):
        if name in listed:
            listed[name] = True  # keeps the key the candidate holds: no second string per image
            continue
        dicom = name.rsplit("/", 1)[-1][:-len(IMAGE_SUFFIX)]
        view_of.pop(dicom, None)
        candidates.append(Candidate(dicom, name, ("not in the official split", f"{name} is not in {split_csv.name}")))
    for dicom in sorted(view_of):
        candidates.append(Candidate(dicom, "", ("not in the official split",
                                                f"{dicom} is in {metadata_csv.name}, not in {split_csv.name}")))


# --------------------------------------------------------------------------- reader
def read_metadata(metadata_csv: Path, dates: bool) -> tuple[dict[str, str], dict[str, tuple[int, float] | None]]:
    """``(dicom_id -> ViewPosition, study_id -> its earliest (day, time) or None)``; the dates only
    when asked (``--priors``), so a metadata copy without StudyDate/StudyTime still converts."""
    view_of: dict[str, str] = {}  # a few distinct values, interned
    when_of: dict[str, tuple[int, float] | None] = {}
    columns = METADATA_COLUMNS + (DATE_COLUMNS if dates else ())
    for dicom, study, _subject, view, *date_time in csv_rows(metadata_csv, columns, METADATA_FILE):
        view_of.setdefault(dicom, sys.intern(view.upper()))
        if date_time:
            when, known = study_when(*date_time), when_of.get(study)
            when_of[study] = when if known is None or (when is not None and when < known) else known
    return view_of, when_of


def longitudinal_fields(fields: dict, options: Options, when: tuple[int, float] | None, report: tuple,
                        metadata_name: str) -> tuple[str, str] | None:
    """Adds a view's ``study_day``/``study_time`` (--priors) and its study's context sections
    (--context) to ``fields``; a study without a valid date under --priors is a listed skip (its
    prior cannot be known, and is never guessed)."""
    if options.context and len(report) == 4:
        fields.update(report[3])
    if not options.priors:
        return None
    if when is None:
        return "no study date", f"{fields['study']}: no valid StudyDate/StudyTime in {metadata_name}"
    fields["study_day"], fields["study_time"] = when
    return None


def read(options: Options) -> Reading:
    root = Path(options.input)
    if not root.exists():
        raise UsageError(f"input folder not found: {root}")
    if not root.is_dir():
        raise UsageError(f"--input must be the MIMIC-CXR-JPG folder (holding {SPLIT_FILE}); got {root}")
    views = parse_views(options.views)
    images = files_folder(Path(options.images_dir or root), "images")
    reports = files_folder(Path(options.reports_dir or root), "reports")
    split_csv = find_csv(options.split_csv, root, SPLIT_FILE, "--split_csv")
    metadata_csv = find_csv(options.metadata_csv, root, METADATA_FILE, "--metadata_csv")
    view_of, when_of = read_metadata(metadata_csv, bool(options.priors))  # when_of: --priors only
    candidates: list[Candidate] = []
    # study -> (read_report's answer, "s<study>", "p<subject>"): read once, shared by its views
    studies: dict[str, tuple] = {}
    metas: dict[tuple, dict] = {}  # one meta dict per distinct content, shared (nothing changes them)
    listed: dict[str, bool] = {}  # image name the split file lists -> found on disk (filled below)
    patient_split: dict[str, str] = {}  # "p<subject>" -> the most protected split it appears in
    for dicom, study, subject, split_name in csv_rows(split_csv, SPLIT_COLUMNS, SPLIT_FILE):
        if not (DICOM_ID.fullmatch(dicom) and NUMERIC_ID.fullmatch(study) and NUMERIC_ID.fullmatch(subject)):
            detail = f"dicom_id {dicom[:60]!r}, study_id {study[:20]!r}, subject_id {subject[:20]!r}"
            candidates.append(Candidate(dicom[:60], "", ("bad id in the split file", detail)))
            continue
        name = image_name(subject, study, dicom)
        if name in listed:
            candidates.append(Candidate(dicom, "", ("duplicate row", f"{dicom} is listed twice in {split_csv.name}")))
            continue
        listed[name] = False
        known = studies.get(study)
        if known is None:
            known = studies[study] = (read_report(f"{reports}/p{subject[:2]}/p{subject}/s{study}.txt",
                                                  bool(options.context)), f"s{study}", f"p{subject}")
        report, study_key, patient = known
        split = official_split(split_name)
        problem = None if split else ("unknown split", f"{split_name[:40]!r} in {split_csv.name}")
        if patient != f"p{subject}":  # its views would merge across two patients' folders
            problem = ("study under two subjects", f"{study_key} is listed under {patient} and p{subject}")
        elif split and PROTECTION[split] > PROTECTION[patient_split.get(patient, "train")]:
            patient_split[patient] = split
        if len(report) == 2:
            problem, findings, impression, source = problem or report, "", "", ""
        else:
            findings, impression, source = report[:3]
        view = view_of.pop(dicom, "")
        if views is not None and not problem and view not in views:
            problem = ("view not selected", f"ViewPosition {view or '(none)'} not in --views {options.views}")
        meta = metas.get((view, source)) or metas.setdefault(
            (view, source), {"view_position": view, "impression_from": source})
        fields = {"findings": findings, "impression": impression, "study": study_key, "view": view, "meta": meta}
        problem = problem or longitudinal_fields(fields, options, when_of.get(study), report, metadata_csv.name)
        candidates.append(Candidate(dicom, name, problem, group=patient, split=split, fields=fields))
    if studies and all(len(known[0]) == 2 and known[0][0] == "missing report" for known in studies.values()):
        # the usual slip: mimic-cxr-reports unpacked elsewhere; one line, not a skip per image
        raise UsageError(f"no report (files/pXX/p<subject>/s<study>.txt) found under {reports}; "
                         "give --reports_dir, the folder mimic-cxr-reports.zip unpacked to")
    del studies
    _keep_most_protected_split(candidates, patient_split, split_csv)
    _list_unlisted_images(candidates, images, listed, view_of, split_csv, metadata_csv)
    return Reading(candidates, [images], ImageIndex(images, listed), default_unit="study", studies=True,
                   official=True, sections=True, dates=bool(options.priors),
                   extra={"images_root": str(images.resolve()), "reports_root": str(reports.resolve()),
                          "split_csv": str(split_csv.resolve()), "metadata_csv": str(metadata_csv.resolve()),
                          "views": sorted(views) if views is not None else "all"})
