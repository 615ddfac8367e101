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

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.classification import HAM10000, write_task_outputs  # noqa: E402
from scripts.dataset_core import (add_common_args, index_images, kept_records, prepare_output_dir,  # noqa: E402
                                  read_csv_rows, run_cli, split_groups, validate_records, write_lists)

REQUIRED = ("lesion_id", "image_id", "dx")


def convert(args) -> dict:
    rows = read_csv_rows(Path(args.csv), REQUIRED, "HAM10000_metadata.csv")
    index = index_images([Path(d) for d in args.images_dir])
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    records, candidates = [], []
    for row in rows:
        rid = (row.get("image_id") or "").strip()
        dx = (row.get("dx") or "").strip().lower()
        lesion = (row.get("lesion_id") or "").strip()
        problem = ("empty label field" if not dx else None if dx in HAM10000.labels else ("unknown label", dx))
        if not problem and not lesion:
            problem = "no lesion id"
        records.append({"id": rid, "group": lesion, "labels": [dx]})
        candidates.append((rid, rid, problem))
    checked = validate_records(candidates, index, out_dir / "images", images_dirs=[Path(d) for d in args.images_dir],
                               allow_outside=args.allow_outside_images, workers=args.workers,
                               progress=not args.quiet)
    good = checked.good
    kept = kept_records(records, checked)
    assignment = split_groups([r["group"] for r in kept], args.val_ratio, args.test_ratio, args.seed)
    written = write_task_outputs(HAM10000, kept, good, assignment, out_dir, args.lang, args.seed)
    lists = write_lists(out_dir, checked)
    return {"task": "ham10000", "read": len(rows), "written": written["written"], **lists,
            "records_per_split": written["records_per_split"],
            "lesions_per_split": {s: sum(1 for v in assignment.values() if v == s) for s in ("train", "val", "test")},
            "seed": args.seed, "lang": args.lang}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True, help="HAM10000_metadata.csv")
    p.add_argument("--images_dir", action="append", required=True,
                   help="HAM10000_images_part_1, HAM10000_images_part_2 (repeat the flag)")
    p.add_argument("--output_dir", default=str(ROOT / "data" / "ham10000_swift"))
    add_common_args(p, val_ratio=0.1, test_ratio=0.2, lang="en")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), convert, argv, '{out}/{{train,val,test}}.jsonl, cls_*.jsonl, labels.json')


if __name__ == "__main__":
    sys.exit(main())
