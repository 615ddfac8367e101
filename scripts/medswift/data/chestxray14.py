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

For research only, not for diagnosis.
"""
from __future__ import annotations

from pathlib import Path

from medswift.core.errors import UsageError
from medswift.data.core import (Candidate, add_common_args, check_and_split, converter_entry, converter_parser,
                                index_images, prepare_output_dir, read_csv_rows, read_text_utf8, summarise,
                                write_lists)
from medswift.data.tasks import CHESTXRAY14, write_task_outputs

REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


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


def convert(args) -> dict:
    rows = read_csv_rows(Path(args.csv), REQUIRED, "Data_Entry_2017.csv")
    images_dirs = [Path(d) for d in args.images_dir]
    index = index_images(images_dirs)
    out_dir = Path(args.output_dir)
    train_val, test = read_list(args.train_val_list), read_list(args.test_list)
    if (train_val is None) != (test is None):
        raise UsageError("give both --train_val_list and --test_list, or neither")
    prepare_output_dir(out_dir)

    candidates = []
    for row in rows:
        rid = (row.get("Image Index") or "").strip()
        labels, problem = parse_labels(row.get("Finding Labels", ""))
        patient = (row.get("Patient ID") or "").strip()
        if not problem and not patient:
            problem = "no patient id"
        if not problem and test is not None and rid not in test and rid not in train_val:
            problem = "not in the official lists"
        candidates.append(Candidate(rid, rid, problem, group=patient, fields={"labels": labels}))
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
    return summarise("chestxray14", len(rows), per_split, conv, write_lists(out_dir, conv.validated), args,
                     "patients", split="official lists" if test is not None else "by patient")


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--csv", required=True, help="Data_Entry_2017.csv")
    p.add_argument("--images_dir", action="append", required=True, help="image folder (repeat for several)")
    p.add_argument("--train_val_list", help="official train_val_list.txt")
    p.add_argument("--test_list", help="official test_list.txt")
    add_common_args(p, "cxr14_swift", val_ratio=0.1, test_ratio=0.2, lang="en")
    return p


main = converter_entry(build_parser, convert, '{out}/{{train,val,test}}.jsonl, cls_*.jsonl, labels.json')
