"""Convert NIH ChestX-ray14 (14 findings + No Finding) into ms-swift JSONL, split by patient.

Usage:
    python scripts/convert_chestxray14.py --csv /data/nih/Data_Entry_2017.csv \
        --images_dir /data/nih/images_001/images --images_dir /data/nih/images_002/images \
        --output_dir data/cxr14_swift --lang en \
        [--train_val_list /data/nih/train_val_list.txt --test_list /data/nih/test_list.txt]

Writes to --output_dir:
  * ``train/val/test.jsonl``: generative (the answer lists the present findings in NIH's
    order, "No Finding" when none);
  * ``cls_train/val/test.jsonl``: for ``--task_type seq_cls --problem_type
    multi_label_classification --num_labels 15`` (a 15-long multi-hot ``label``);
  * ``labels.json``: label order and the positive-class weights of the training split;
  * ``skipped.tsv``, ``warnings.tsv``, ``summary.json``.

With the official lists, their test images form the test split and validation is taken
from train_val by patient; without them the split is by ``Patient ID`` with
--val_ratio/--test_ratio. Either way no patient is on two sides.

``--json FILE`` (repeat it for a train and a val file; ``--csv`` naming a .json/.jsonl file does the
same) reads the JSON form some Qwen-VL projects write from the CSV: a list or JSON lines of
``{"id", "image_path", "disease_labels", "disease_names"}``, ``disease_labels`` a 0/1 list of 15
(or 14, all zeros meaning No Finding), ``disease_names`` its positive names (``"pleural thickening"``
or ``"Pleural_Thickening"``). The writer known to us orders the labels alphabetically with
``no finding`` among them, not in NIH's order, so the order is the one (``--label_order``, default
``auto``: NIH or alphabetical) under which most records' labels and names agree; a record where
they disagree is a listed skip. ``image_path`` is relative to ``--images_dir`` (or found by its file
name there, as NIH ships flat folders). This form has no Patient ID: a record is grouped by the
patient prefix of its NIH image name (``00000001_000.png`` -> ``00000001``), else by the image
itself (summary.json counts both). Record ids are the image file names, as in the CSV form.

For research only, not for diagnosis.
"""
from __future__ import annotations

import re
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import read_text_utf8
from medswift.data.pipeline.command import add_common_args, converter_entry, converter_parser
from medswift.data.pipeline.image_index import index_images
from medswift.data.pipeline.last_conversion import CLASSIFICATION_LAUNCHERS
from medswift.data.pipeline.output_files import prepare_output_dir, summarise, write_lists
from medswift.data.pipeline.records import (BadRecord, Candidate, csv_rows, json_type, load_json_records, require_object,
                                   text_field)
from medswift.data.pipeline.splits import check_and_split

from medswift.core.labels import CHESTXRAY14
from medswift.data.pipeline.classification_outputs import write_task_outputs

REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
JSON_SUFFIXES = (".json", ".jsonl")
NO_FINDING = CHESTXRAY14.none_label
# The orders a disease_labels vector may come in: NIH's (No Finding last) and the alphabetical one
# of the known JSON writer ("no finding" between "mass" and "nodule").
LABEL_ORDERS = {
    "nih": CHESTXRAY14.labels,
    "alphabetical": tuple(sorted(CHESTXRAY14.labels, key=lambda lab: lab.lower().replace("_", " "))),
}
NIH_NAME = re.compile(r"(\d+)_\d+\.[A-Za-z0-9]+")  # <patient>_<follow-up>.png


def parse_labels(field: str) -> tuple[list[str], str | tuple[str, str] | None]:
    """``"Effusion|Infiltration"`` -> (labels, problem); NIH writes ``No Finding`` for none."""
    names = [n.strip() for n in (field or "").split("|") if n.strip()]
    if not names:
        return [], "empty label field"
    unknown = [n for n in names if n not in CHESTXRAY14.labels]
    if unknown:
        return [], ("unknown label", unknown[0])
    if "No Finding" in names and len(names) > 1:
        return [], "No Finding together with findings"
    return names, None


def read_list(path: str | None) -> set[str] | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"list file not found: {p}")
    return {line.strip() for line in read_text_utf8(p, "list file").splitlines() if line.strip()}


# --------------------------------------------------------------------------- the JSON form
def _label_name(name, where: str) -> str:
    """``"pleural thickening"``, ``"Pleural_Thickening"`` -> ``"Pleural_Thickening"``."""
    if not isinstance(name, str):
        raise BadRecord("wrong field type", f"{where}: a name in 'disease_names' is {json_type(name)}")
    key = " ".join(name.replace("_", " ").split()).lower()
    for lab in CHESTXRAY14.labels:
        if lab.replace("_", " ").lower() == key:
            return lab
    raise BadRecord("unknown label", name)


def _json_record(rec, where: str) -> dict:
    """One JSON record, type-checked: ``{rid, path, vector, names, json_id}`` (``names`` is None
    when the record gives no ``disease_names``)."""
    require_object(rec, where)
    path = text_field(rec, "image_path", where)
    if not path:
        raise BadRecord("no image path", f"{where}: no 'image_path'")
    json_id = text_field(rec, "id", where, id_like=True)
    where = f"{where} (id {json_id})" if json_id else where
    vector = rec.get("disease_labels")
    if vector is not None:
        if not isinstance(vector, list) or not all(v in (0, 1) and not isinstance(v, float) for v in vector):
            raise BadRecord("wrong field type", f"{where}: 'disease_labels' must be a list of 0/1")
        if len(vector) not in (14, 15):
            raise BadRecord("wrong label count", f"{where}: {len(vector)} labels, expected 15 (or 14)")
    names = rec.get("disease_names")
    if names is not None:
        if not isinstance(names, list):
            raise BadRecord("wrong field type", f"{where}: 'disease_names' is {json_type(names)}, expected a list")
        names = {_label_name(n, where) for n in names}
    if vector is None and names is None:
        raise BadRecord("empty label field", f"{where}: no 'disease_labels' or 'disease_names'")
    return {"rid": path.replace("\\", "/").rsplit("/", 1)[-1], "path": path, "vector": vector, "names": names}


def _vector_labels(vector: list[int], order: tuple[str, ...]) -> set[str]:
    """The labels a 0/1 vector sets; the 14-long form has no No Finding column: all zeros mean it."""
    labels = {lab for lab, v in zip([lab for lab in order if len(vector) == 15 or lab != NO_FINDING], vector) if v}
    return labels or ({NO_FINDING} if len(vector) == 14 else set())


def _labels_of(rec: dict, order: tuple[str, ...] | None) -> set[str]:
    names = rec["names"]
    if names is not None and not names and rec["vector"] is not None and len(rec["vector"]) == 14:
        names = {NO_FINDING}  # no positive name where the labels have no No Finding column
    if rec["vector"] is None or order is None:
        return names
    labels = _vector_labels(rec["vector"], order)
    if names is not None and names != labels:
        raise BadRecord("labels and names disagree", f"disease_labels say {sorted(labels)}, disease_names "
                                                     f"{sorted(names)}")
    return labels


def choose_order(records: list[dict], wanted: str) -> tuple[str | None, dict[str, int]]:
    """The order of ``disease_labels``: ``wanted``, or (auto) the one under which most records'
    labels agree with their names (the known writer's alphabetical one on a tie)."""
    agree = {name: sum(1 for r in records if r["vector"] is not None and r["names"] is not None
                       and _agrees(r, order)) for name, order in LABEL_ORDERS.items()}
    if wanted != "auto":
        return wanted, agree
    if not any(r["vector"] is not None for r in records):
        return None, agree  # names only: no order needed
    if not any(r["names"] is not None for r in records):
        raise UsageError("no record has disease_names, so the order of disease_labels is unknown; "
                         "give --label_order nih or alphabetical")
    return max(("alphabetical", "nih"), key=lambda name: agree[name]), agree


def _agrees(rec: dict, order: tuple[str, ...]) -> bool:
    try:
        _labels_of(rec, order)
        return True
    except BadRecord:
        return False


def json_candidates(paths: list[Path], images_dirs: list[Path], wanted_order: str):
    """Candidates of the JSON form, the image index, and what summary.json says about them."""
    parsed: list[tuple[dict | None, tuple[str, str] | None]] = []
    for path in paths:
        for where, rec in load_json_records(path, "ChestX-ray14 JSON file"):
            try:
                if isinstance(rec, BadRecord):
                    raise rec
                parsed.append((_json_record(rec, f"{path.name} {where}"), None))
            except BadRecord as bad:
                rid = rec.get("image_path") if isinstance(rec, dict) else None
                parsed.append(({"rid": rid.replace("\\", "/").rsplit("/", 1)[-1]} if isinstance(rid, str) else None,
                               bad.problem))
    order_name, agree = choose_order([r for r, problem in parsed if not problem], wanted_order)
    order = LABEL_ORDERS.get(order_name)
    by_name = index_images(images_dirs)  # NIH ships flat folders: a path from elsewhere is found by its name
    index: dict[str, Path] = {}
    candidates, grouped = [], {"patient prefix of the image name": 0, "the image itself": 0}
    for rec, problem in parsed:
        rid = (rec or {}).get("rid", "")
        if problem:
            candidates.append(Candidate(rid, "", problem))
            continue
        try:
            labels = sorted(_labels_of(rec, order), key=CHESTXRAY14.labels.index)
        except BadRecord as bad:
            candidates.append(Candidate(rid, "", bad.problem))
            continue
        if not labels:
            candidates.append(Candidate(rid, "", ("empty label field", rid)))
            continue
        if NO_FINDING in labels and len(labels) > 1:
            candidates.append(Candidate(rid, "", ("No Finding together with findings", rid)))
            continue
        found = next((d / rec["path"] for d in images_dirs if (d / rec["path"]).is_file()), by_name.get(rid))
        if found is not None:
            index[rec["path"]] = found
        patient = NIH_NAME.fullmatch(rid)
        grouped["patient prefix of the image name" if patient else "the image itself"] += 1
        candidates.append(Candidate(rid, rec["path"], group=patient.group(1) if patient else f"image {rid}",
                                    fields={"labels": labels}))
    extra = {"input_form": "json", "label_order": order_name, "records_agreeing_per_order": agree,
             "grouped_by": grouped,
             "grouping_note": "the JSON form has no Patient ID; records are grouped by the patient prefix "
                              "of their NIH image name when it has one"}
    return candidates, index, extra


def convert(args) -> dict:
    json_files = list(args.json or [])
    if args.csv and Path(args.csv).suffix.lower() in JSON_SUFFIXES:
        json_files.append(args.csv)
    images_dirs = [Path(d) for d in args.images_dir]
    out_dir = Path(args.output_dir)
    train_val, test = read_list(args.train_val_list), read_list(args.test_list)
    if (train_val is None) != (test is None):
        raise UsageError("give both --train_val_list and --test_list, or neither")

    extra: dict = {}
    if json_files:
        paths = [Path(f) for f in json_files]
        for path in paths:
            if not path.is_file():
                raise UsageError(f"ChestX-ray14 JSON file not found: {path}")
        candidates, index, extra = json_candidates(paths, images_dirs, args.label_order)
        if not candidates:
            raise UsageError(f"{', '.join(json_files)} holds no records")
        read = len(candidates)
        prepare_output_dir(out_dir)
    else:
        rows = [dict(zip(REQUIRED, cells)) for cells in csv_rows(Path(args.csv), REQUIRED, "Data_Entry_2017.csv")]
        read = len(rows)
        index = index_images(images_dirs)
        prepare_output_dir(out_dir)
        candidates = []
        for row in rows:
            rid = (row.get("Image Index") or "").strip()
            labels, problem = parse_labels(row.get("Finding Labels", ""))
            patient = (row.get("Patient ID") or "").strip()
            if not problem and not patient:
                problem = "no patient id"
            candidates.append(Candidate(rid, rid, problem, group=patient, fields={"labels": labels}))
    if test is not None:
        for cand in candidates:
            if not cand.problem and cand.record_id not in test and cand.record_id not in train_val:
                cand.problem = "not in the official lists"
    fixed = None
    if test is not None:
        # Official split: test patients are fixed; validation patients come from train_val.
        usable = [c for c in candidates if not c.problem]
        test_patients = {c.group for c in usable if c.record_id in test}
        overlap = {c.group for c in usable if c.record_id in train_val} & test_patients
        if overlap:
            raise UsageError(f"the official lists put patient {sorted(overlap)[0]} on both sides")
        fixed = {p: "test" for p in test_patients}
    conv = check_and_split(candidates, index, out_dir, args, images_dirs=images_dirs, fixed=fixed)
    per_split = write_task_outputs(CHESTXRAY14, conv, out_dir, args.lang, args.seed)
    return summarise("chestxray14", read, per_split, conv, write_lists(out_dir, conv.validated), args,
                     "patients", split="official lists" if test is not None else "by patient", **extra)


def build_parser():
    p = converter_parser(__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="Data_Entry_2017.csv (a .json/.jsonl file is read as with --json)")
    source.add_argument("--json", action="append",
                        help="the JSON form {id, image_path, disease_labels, disease_names} (repeat for several files)")
    p.add_argument("--label_order", choices=("auto", *LABEL_ORDERS), default="auto",
                   help="JSON form: the order of disease_labels (auto: the one its disease_names agree with)")
    p.add_argument("--images_dir", action="append", required=True, help="image folder (repeat for several)")
    p.add_argument("--train_val_list", help="official train_val_list.txt")
    p.add_argument("--test_list", help="official test_list.txt")
    add_common_args(p, "cxr14_swift", val_ratio=0.1, test_ratio=0.2, lang="en")
    return p


main = converter_entry(build_parser, convert, '{out}/{{train,val,test}}.jsonl, cls_*.jsonl, labels.json',
                       launchers=CLASSIFICATION_LAUNCHERS)
