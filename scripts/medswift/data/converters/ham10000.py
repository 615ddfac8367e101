"""Convert HAM10000 dermoscopy images (7 classes) into ms-swift JSONL, split by lesion.

Usage:
    python scripts/convert_ham10000.py --csv /data/ham/HAM10000_metadata.csv \
        --images_dir /data/ham/HAM10000_images_part_1 --images_dir /data/ham/HAM10000_images_part_2 \
        --output_dir data/ham10000_swift --lang en

Writes ``train/val/test.jsonl`` (generative: "Diagnosis: melanoma (mel)."),
``cls_train/val/test.jsonl`` (``--task_type seq_cls`` single-label, ``label`` = class
index), ``labels.json``, ``skipped.tsv``, ``warnings.tsv`` and ``summary.json``. Several images of one
lesion (``lesion_id``) always land in the same split.

For research only, not for diagnosis.
"""
from __future__ import annotations

from pathlib import Path

from medswift.data.pipeline.command import add_common_args, converter_entry, converter_parser
from medswift.data.pipeline.image_index import index_images
from medswift.data.pipeline.last_conversion import CLASSIFICATION_LAUNCHERS
from medswift.data.pipeline.output_files import prepare_output_dir, summarise, write_lists
from medswift.data.pipeline.records import Candidate, csv_rows
from medswift.data.pipeline.splits import check_and_split
from medswift.core.labels import HAM10000
from medswift.data.pipeline.classification_outputs import write_task_outputs

REQUIRED = ("lesion_id", "image_id", "dx")


def convert(args) -> dict:
    rows = [dict(zip(REQUIRED, cells)) for cells in csv_rows(Path(args.csv), REQUIRED, "HAM10000_metadata.csv")]
    images_dirs = [Path(d) for d in args.images_dir]
    index = index_images(images_dirs)
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    candidates = []
    for row in rows:
        rid = (row.get("image_id") or "").strip()
        dx = (row.get("dx") or "").strip().lower()
        lesion = (row.get("lesion_id") or "").strip()
        problem = ("empty label field" if not dx else None if dx in HAM10000.labels else ("unknown label", dx))
        if not problem and not lesion:
            problem = "no lesion id"
        candidates.append(Candidate(rid, rid, problem, group=lesion, fields={"labels": [dx]}))
    conv = check_and_split(candidates, index, out_dir, args, images_dirs=images_dirs)
    per_split = write_task_outputs(HAM10000, conv, out_dir, args.lang, args.seed)
    return summarise("ham10000", len(rows), per_split, conv, write_lists(out_dir, conv.validated), args, "lesions")


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--csv", required=True, help="HAM10000_metadata.csv")
    p.add_argument("--images_dir", action="append", required=True,
                   help="HAM10000_images_part_1, HAM10000_images_part_2 (repeat the flag)")
    add_common_args(p, "ham10000_swift", val_ratio=0.1, test_ratio=0.2, lang="en")
    return p


main = converter_entry(build_parser, convert, '{out}/{{train,val,test}}.jsonl, cls_*.jsonl, labels.json',
                       launchers=CLASSIFICATION_LAUNCHERS)
