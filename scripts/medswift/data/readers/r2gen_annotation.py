"""Reader: R2Gen's ``annotation.json`` (IU-Xray and MIMIC-CXR as the R2Gen line of work ships them).

``{"train": [...], "val": [...], "test": [...]}``, items
``{"id", "report", "image_path": [...], "split"}``; the image paths are relative to
``--images_dir``: IU-Xray items name two views (``CXR2384_IM-0942/0.png``, ``.../1.png``),
MIMIC-CXR items one (``p10/p10000032/s50414267/<dicom_id>.jpg``). The summary says which
flavour the file is (``r2gen_flavour``: iu_xray when most items have two images).

* The split is the file's own: the key an item sits under wins. An item whose own ``split``
  disagrees with its key, an item under a key that is no split, and an id already seen under
  another key are listed skips; ``test`` is read first, so an id or image found in test and in
  train stays in test and never reaches training.
* ``--unit study`` (the default): an item is one sample, its images in the order the file gives
  them (at most ``--max_views``). ``--unit image``: every image is a sample of its own (id
  ``<id>_<k>``, k counting from 0) with the item's report; views of an item share its split.
* ``--split seeded`` splits by item, or by patient (``p<8 digits>`` folder) for MIMIC paths.
* No report sections: the target is ``report`` as written (``--section`` is refused).

The file (10-100 MB) is parsed once, in ``read``; ``detect`` reads its first bytes only.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import read_text_utf8
from medswift.data.readers.contract import ReaderOptions
from medswift.data.pipeline.records import BadRecord, Candidate, Reading, json_type, official_split, require_object, text_field

NAME = "r2gen"
VIEWS = False  # no view positions: --views does not apply
Options = ReaderOptions  # no flags of its own
add_args = Options.add_args
# json.dump writes {"train": [{"id": ...: the first key is a split holding a list.
_HEAD = re.compile(rb'\A(?:\xef\xbb\xbf)?\s*\{\s*"(?:train|val|test)"\s*:\s*\[')
_PATIENT = re.compile(r"(?:^|/)(p\d{8})/s\d+/")  # MIMIC-CXR-JPG: files/p10/p10000032/s50414267/x.jpg
READ_ORDER = {"test": 0, "val": 1, "train": 2}


def detect(path: Path) -> bool:
    try:
        if not (path.is_file() and path.suffix.lower() == ".json"):
            return False
        with open(path, "rb") as fh:
            return bool(_HEAD.match(fh.read(256)))
    except (OSError, ValueError):
        return False


def load(path: Path) -> dict:
    text = read_text_utf8(path, "annotation file")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not any(official_split(k) for k in raw):
        raise UsageError(f'{path}: not R2Gen\'s layout; expected {{"train": [...], "val": [...], "test": [...]}}')
    for key, value in raw.items():
        if official_split(key) and not isinstance(value, list):
            raise UsageError(f"{path}: {key!r} is {json_type(value)}, expected a list of items")
    return raw


def image_paths(item: dict, where: str) -> list[str]:
    value = item.get("image_path")
    if isinstance(value, str):
        value = [value]
    if value is None or value == []:
        raise BadRecord("no image", f"{where}: no 'image_path'")
    if not isinstance(value, list):
        raise BadRecord("wrong field type", f"{where}: 'image_path' is {json_type(value)}, expected a list")
    paths: list[str] = []
    for k, p in enumerate(value):
        if not isinstance(p, str):
            raise BadRecord("wrong field type", f"{where}: image_path[{k}] is {json_type(p)}, expected text")
        if not p.strip():
            raise BadRecord("no image", f"{where}: image_path[{k}] is empty")
        if p.strip() not in paths:  # one file named twice is one view
            paths.append(p.strip())
    return paths


def item_candidates(item, key: str, split: str | None, where: str, seen: dict[str, str]) -> list[Candidate]:
    """The views of one item (each with ``study`` = the item's id), or one listed problem."""
    rid = ""
    try:
        require_object(item, where)
        rid = text_field(item, "id", where, id_like=True)
        if not rid:
            raise BadRecord("no id", f"{where}: no 'id'")
        if split is None:
            raise BadRecord("not in the official split", f"{where}: {key!r} is not train/val/test")
        own = item.get("split")
        if own is not None and official_split(own) != split:
            raise BadRecord("split disagrees with its key", f"{where}: 'split' is {own!r} under {key!r}")
        if rid in seen:
            raise BadRecord("duplicate id", f"{where}: id already under {seen[rid]!r}")
        seen[rid] = key  # claimed even if this item proves unusable: a test id never reaches train
        report = text_field(item, "report", where)
        paths = image_paths(item, where)
        if not report:
            raise BadRecord("empty report", where)
    except BadRecord as bad:
        return [Candidate(rid or where, [], bad.problem, split=split)]
    patient = _PATIENT.search(paths[0])
    group = patient.group(1) if patient else rid
    return [Candidate(f"{rid}_{k}", [p], group=group, split=split,
                      fields={"report": report, "study": rid, "view_order": str(k)})
            for k, p in enumerate(paths)]


def read(options: ReaderOptions) -> Reading:
    if not options.images_dir:
        raise UsageError("--images_dir is required for this format (the folder the image paths start from)")
    images_dir = Path(options.images_dir)
    if not images_dir.is_dir():
        raise UsageError(f"images folder not found: {images_dir}")
    raw = load(Path(options.input))
    keys = sorted(raw, key=lambda k: (READ_ORDER.get(official_split(k) or "", 3), list(raw).index(k)))
    candidates: list[Candidate] = []
    seen: dict[str, str] = {}
    two_views = items = 0
    for key in keys:
        if not isinstance(raw[key], list):
            continue  # a non-list under a key that is no split holds no items
        for i, item in enumerate(raw[key]):
            candidates += item_candidates(item, key, official_split(key), f"{key} #{i}", seen)
            if isinstance(item, dict) and isinstance(item.get("image_path"), list):
                items += 1
                two_views += len(item["image_path"]) == 2
    # The paths are relative to the images folder: look each up once (a stat, not a folder scan:
    # MIMIC-CXR holds 377k files in 65k folders). Where a path leads is checked by the converter.
    index = {}
    for cand in candidates:
        for name in cand.images:
            if name not in index and os.path.isfile(images_dir / name):
                index[name] = images_dir / name
    flavour = "iu_xray" if items and 2 * two_views > items else "mimic_cxr"
    return Reading(candidates, [images_dir], index, default_unit="study", studies=True, official=True,
                   sections=False, extra={"r2gen_flavour": flavour})
