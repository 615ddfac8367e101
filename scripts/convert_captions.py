"""Convert captioned medical images (CT slices, MedTrinity-style) into ms-swift JSONL.

Usage:
    python scripts/convert_captions.py --input /data/ct/captions.jsonl --images_dir /data/ct/images \
        --output_dir data/captions_swift --lang en [--group_key patient_id]

``--input`` may be:
  * a JSONL or CSV file with an image column and a caption column (``--image_key``,
    ``--caption_key``; image paths relative to ``--images_dir``, default the file's folder);
  * a folder of images with a ``<name>.txt`` caption beside each;
  * a Hugging Face ``datasets`` folder written by ``save_to_disk`` (image column of
    decoded images or paths; images are written to ``<output_dir>/images``).

Records are split by ``--group_key`` (a patient or series column) when given, else by
image, and written like the other converters: ``train/val/test.jsonl``, ``skipped.tsv``,
``summary.json``.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import prompts  # noqa: E402
from scripts.dataset_core import (add_common_args, IMAGE_SUFFIXES, SPLITS, UsageError, kept_records,  # noqa: E402
                                  message,
                                  read_csv_rows, run_cli, split_groups, validate_records, write_jsonl,
                                  write_skipped)


def _row(image, caption, group) -> dict:
    return {"image": image, "caption": str(caption or "").strip(), "group": str(group or "").strip()}


def rows_from_table(path: Path, image_key: str, caption_key: str, group_key: str | None) -> list[dict]:
    if path.suffix.lower() == ".csv":
        table = read_csv_rows(path, (image_key, caption_key), f"a CSV with {image_key} and {caption_key} columns")
    else:
        table = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    table.append(json.loads(line))
                except ValueError:
                    raise UsageError(f"{path}:{n} is not JSON") from None
        if table and (image_key not in table[0] or caption_key not in table[0]):
            raise UsageError(f"{path}: rows need {image_key!r} and {caption_key!r} keys")
    return [_row(r.get(image_key), r.get(caption_key), r.get(group_key) if group_key else None) for r in table]


def rows_from_folder(folder: Path) -> list[dict]:
    rows = []
    for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = img.with_suffix(".txt")
        rows.append(_row(img.name, txt.read_text(encoding="utf-8") if txt.is_file() else "", None))
    return rows


def rows_from_hf(folder: Path, image_key: str, caption_key: str, group_key: str | None, out_images: Path):
    """Rows of a ``save_to_disk`` dataset; decoded images are written out as PNG files first."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    ds = load_from_disk(str(folder))
    if isinstance(ds, DatasetDict):
        ds = concatenate_datasets([ds[k] for k in sorted(ds)])
    missing = [k for k in (image_key, caption_key) if k not in ds.column_names]
    if missing:
        raise UsageError(f"{folder}: dataset lacks column(s) {', '.join(missing)}; columns are {ds.column_names}")
    out_images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, rec in enumerate(ds):
        image = rec[image_key]
        if hasattr(image, "save"):  # a decoded PIL image: give it a file the model can read
            name = f"hf_{i:07d}.png"
            image.save(out_images / name)
            image = name
        rows.append(_row(image, rec[caption_key], rec.get(group_key) if group_key else None))
    return rows


def convert(args) -> dict:
    src = Path(args.input)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and ((src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists()):
        images_dir = out_dir / "hf_images"
        rows = rows_from_hf(src, args.image_key, args.caption_key, args.group_key, images_dir)
    elif src.is_dir():
        rows, images_dir = rows_from_folder(src), src
    elif src.is_file():
        rows = rows_from_table(src, args.image_key, args.caption_key, args.group_key)
        images_dir = Path(args.images_dir) if args.images_dir else src.parent
    else:
        raise UsageError(f"input not found: {src}")
    if not rows:
        raise UsageError(f"{src} holds no records")

    # Images are looked up by their path relative to images_dir (sub-folders allowed).
    index = {str(r["image"]): images_dir / str(r["image"]) for r in rows
             if r["image"] and (images_dir / str(r["image"])).is_file()}
    records, candidates = [], []
    for r in rows:
        rid = Path(str(r["image"] or "")).with_suffix("").as_posix().replace("/", "__")
        problem = None if r["caption"] else "empty caption"
        records.append({"id": rid, "group": r["group"] or rid, "caption": r["caption"]})
        candidates.append((rid, str(r["image"] or ""), problem))
    good, skipped = validate_records(candidates, index, out_dir / "images", args.workers, not args.quiet,
                                     where=str(images_dir))
    kept = kept_records(records, good)
    assignment = split_groups([r["group"] for r in kept], args.val_ratio, args.test_ratio, args.seed)
    lines = {s: [] for s in SPLITS}
    for rec in kept:
        prompt = prompts.pick(rec["id"], args.seed, args.lang, "caption")
        lines[assignment[rec["group"]]].append({"messages": [message("user", f"<image>{prompt}"),
                                                             message("assistant", rec["caption"])],
                                                "images": [good[rec["id"]]], "id": rec["id"]})
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", lines[split])
    reasons = write_skipped(out_dir / "skipped.tsv", skipped)
    return {"task": "caption", "read": len(rows), "written": sum(len(v) for v in lines.values()),
            "skipped": len(skipped), "skipped_by_reason": dict(sorted(reasons.items())),
            "records_per_split": {s: len(lines[s]) for s in SPLITS},
            "split_by": args.group_key or "image", "seed": args.seed, "lang": args.lang}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="JSONL/CSV file, folder of images + .txt, or save_to_disk folder")
    p.add_argument("--images_dir", help="base folder of the image paths in a JSONL/CSV (default: its folder)")
    p.add_argument("--output_dir", default=str(ROOT / "data" / "captions_swift"))
    p.add_argument("--image_key", default="image")
    p.add_argument("--caption_key", default="caption")
    p.add_argument("--group_key", help="column that groups records (patient, series): never split apart")
    add_common_args(p, val_ratio=0.1, test_ratio=0.1, lang="en")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), convert, argv, '{out}/{{train,val,test}}.jsonl')


if __name__ == "__main__":
    sys.exit(main())
