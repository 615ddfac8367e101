"""Reader: the reference system's own files (OpenI reports as distributed with it).

* the reference's list ``[{"img": ".../162_1.png", "prompt": ..., "label": ...}]``; ``img`` paths
  come from another machine and are resolved by file name inside ``--images_dir``;
* annotations ``{"annotations": [{"image_id": "162_1", "caption": ...}]}`` (zh or en); the image is
  ``<image_id>.<png|jpg|...|dcm>`` inside ``--images_dir``.

Ids are ``<study>_<view>``: with ``--unit study`` the views of one study become one sample; the
default stays one sample per image, as the reference trains. Either way a study never straddles
two splits. A record may carry ``reasoning`` (written as ``<think>...</think>`` before the report).
"""
from __future__ import annotations

import json
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import read_text_utf8
from medswift.data.pipeline.image_index import index_images
from medswift.data.readers.contract import ReaderOptions
from medswift.data.pipeline.records import BadRecord, Candidate, Reading, require_object, text_field

NAME = "openi"
VIEWS = False  # no view positions: --views does not apply
Options = ReaderOptions  # no flags of its own
add_args = Options.add_args


def study_of(record_id: str) -> str:
    """``"162_1"`` -> ``"162"``; an id without a view suffix is its own study."""
    study, sep, _view = record_id.rpartition("_")
    return study if sep and study else record_id


def view_of(record_id: str) -> str:
    return record_id.rpartition("_")[2] if "_" in record_id else ""


def report_candidate(record_id: str, image: str, report: str, prompt: str | None = None,
                     reasoning: str | None = None) -> Candidate:
    study = study_of(record_id)
    return Candidate(record_id, image, None if report else "empty report", group=study,
                     fields={"report": report, "prompt": prompt, "reasoning": reasoning, "study": study,
                             "view_order": view_of(record_id)})


def detect(path: Path) -> bool:
    """Any JSON file no other reader claims (this reader is tried last): its errors then name
    what is wrong with the file instead of "unknown format"."""
    return path.is_file() and path.suffix.lower() == ".json"


def load_records(path: Path) -> list[Candidate]:
    """Every record of the file, in order; a record with a missing or wrongly typed field comes
    back with its ``problem`` set (listed as a skip), so one bad record never refuses the file."""
    text = read_text_utf8(path, "input file")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None

    if isinstance(raw, dict) and isinstance(raw.get("annotations"), list):
        return [_from_annotation(ann, f"annotation #{i}") for i, ann in enumerate(raw["annotations"])]
    if isinstance(raw, list) and any(isinstance(r, dict) and "img" in r for r in raw):
        return [_from_reference(r, f"record #{i}") for i, r in enumerate(raw)]
    raise UsageError(
        f"{path}: unknown layout; expected a list of {{img, prompt, label}} "
        'or {"annotations": [{"image_id", "caption"}]} (or give --format)'
    )


def _from_annotation(ann, where: str) -> Candidate:
    try:
        require_object(ann, where)
        rid = text_field(ann, "image_id", where, id_like=True)
        if not rid:
            raise BadRecord("no image id", f"{where}: no 'image_id'")
        return report_candidate(rid, rid, text_field(ann, "caption", where),
                                reasoning=text_field(ann, "reasoning", where))
    except BadRecord as bad:
        rid = ann.get("image_id") if isinstance(ann, dict) else None
        return Candidate(rid.strip() if isinstance(rid, str) else "", "", bad.problem)


def _from_reference(rec, where: str) -> Candidate:
    try:
        require_object(rec, where)
        img = text_field(rec, "img", where)
        if not img:
            raise BadRecord("no image path", f"{where}: no 'img'")
        # Paths belong to another machine: keep only the file name (either separator).
        name = img.replace("\\", "/").rsplit("/", 1)[-1]
        rid = name.rsplit(".", 1)[0] if "." in name else name
        return report_candidate(rid, name, text_field(rec, "label", where), text_field(rec, "prompt", where) or None,
                                text_field(rec, "reasoning", where))
    except BadRecord as bad:
        return Candidate("", "", bad.problem)


def read(options: ReaderOptions) -> Reading:
    if not options.images_dir:
        raise UsageError("--images_dir is required for this format (the folder holding the image files)")
    images_dir = Path(options.images_dir)
    return Reading(load_records(Path(options.input)), [images_dir], index_images(images_dir), default_unit="image",
                   studies=True)
