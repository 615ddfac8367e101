"""Convert chest X-ray reports + images into ms-swift JSONL, split by study.

Usage (the bundled OpenI sample):
    python scripts/convert_xray_swift.py --input data/openi/openi-zh.json \
        --images_dir data/openi/images --output_dir data/openi_swift --lang zh

Inputs (format detected from the file):
  * the reference system's list ``[{"img": ".../162_1.png", "prompt": ..., "label": ...}]``;
    ``img`` paths from another machine are resolved by file name inside ``--images_dir``;
  * annotations ``{"annotations": [{"image_id": "162_1", "caption": ...}]}`` (zh or en);
    the image is ``<image_id>.<png|jpg|jpeg|bmp|tif|tiff|dcm>`` inside ``--images_dir``
    (DICOM is decoded and written as an 8-bit PNG copy).

Outputs in ``--output_dir``: ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (one
``{"messages": [...], "images": [...]}`` per image), ``skipped.tsv`` (every record not
written, with its reason), ``summary.json`` and ``images/`` (8-bit copies of images
that needed normalising: 16-bit, palette, RGBA, CMYK). Same inputs and seed give
byte-identical outputs.

Ids are ``<study>_<view>``; all views of one study land in the same split, so no
patient study leaks between training and evaluation.

A record may carry a ``reasoning`` field (either format): the answer is then written as
``<think>reasoning</think>`` followed by the report, the form Qwen3-VL-*-Thinking models
are trained on. Records without it are unchanged.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import prompts, thinking  # noqa: E402
from scripts.dataset_core import (add_common_args, SPLITS, UsageError, index_images, run_cli,  # noqa: E402
                                  split_groups, validate_records, write_atomic, write_skipped)


@dataclass
class Record:
    record_id: str  # "<study>_<view>"
    image_name: str  # file name (or stem) to look up in images_dir
    report: str
    source_prompt: str | None = None
    reasoning: str | None = None  # optional: written as <think>...</think> before the report

    @property
    def study(self) -> str:
        return study_of(self.record_id)


def study_of(record_id: str) -> str:
    """``"162_1"`` -> ``"162"``; an id without a view suffix is its own study."""
    study, sep, view = record_id.rpartition("_")
    return study if sep and study else record_id


# --------------------------------------------------------------------------- reading
def load_records(path: Path) -> list[Record]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None

    records: list[Record] = []
    if isinstance(raw, dict) and isinstance(raw.get("annotations"), list):
        for i, ann in enumerate(raw["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise UsageError(f"{path}: annotation #{i} has no image_id")
            rid = str(ann["image_id"]).strip()
            records.append(Record(rid, rid, str(ann.get("caption") or "").strip(), reasoning=ann.get("reasoning")))
    elif isinstance(raw, list) and all(isinstance(r, dict) and "img" in r for r in raw):
        for r in raw:
            # Paths belong to another machine: keep only the file name (either separator).
            name = str(r["img"]).replace("\\", "/").rsplit("/", 1)[-1]
            rid = name.rsplit(".", 1)[0] if "." in name else name
            records.append(Record(rid, name, str(r.get("label") or "").strip(), r.get("prompt"), r.get("reasoning")))
    else:
        raise UsageError(
            f"{path}: unknown layout; expected a list of {{img, prompt, label}} "
            'or {"annotations": [{"image_id", "caption"}]}'
        )
    return records


# --------------------------------------------------------------------------- writing
def build_sample(record: Record, image_path: str, prompt: str, system: str | None) -> dict:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"<image>{prompt}"})
    messages.append({"role": "assistant", "content": thinking.join(record.reasoning, record.report)})
    return {"messages": messages, "images": [image_path], "id": record.record_id}


def convert(args: argparse.Namespace) -> dict:
    input_path = Path(args.input)
    images_dir = Path(args.images_dir)
    out_dir = Path(args.output_dir)
    records = load_records(input_path)
    if not records:
        raise UsageError(f"{input_path} holds no records")
    index = index_images(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_dir = out_dir / "images"
    # The first record of an id is the one kept: by_id must agree with validate_records.
    by_id: dict[str, Record] = {}
    for rec in records:
        by_id.setdefault(rec.record_id, rec)
    good, skipped = validate_records(
        [(r.record_id, r.image_name, None if r.report else "empty report") for r in records],
        index, copy_dir, args.workers, progress=not args.quiet, where=str(images_dir))

    assignment = split_groups([by_id[r].study for r in good], args.val_ratio, args.test_ratio, args.seed)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    template_use: Counter = Counter()
    for rec in records:  # input order, so outputs are stable and easy to diff
        if rec.record_id not in good or by_id.get(rec.record_id) is not rec:
            continue
        if args.keep_source_prompt and rec.source_prompt:
            prompt = rec.source_prompt
        else:
            idx = prompts.pick_index(rec.record_id, args.seed, args.lang)
            template_use[idx] += 1
            prompt = prompts.template(args.lang, idx)
        sample = build_sample(rec, good[rec.record_id], prompt, args.system)
        lines[assignment[rec.study]].append(json.dumps(sample, ensure_ascii=False))

    for split in SPLITS:
        write_atomic(out_dir / f"{split}.jsonl", "".join(line + "\n" for line in lines[split]))
    reasons = write_skipped(out_dir / "skipped.tsv", skipped)
    studies_per_split = Counter(assignment.values())
    summary = {
        "input": str(input_path.resolve()),
        "images_dir": str(images_dir.resolve()),
        "lang": args.lang,
        "seed": args.seed,
        "val_ratio": args.val_ratio,
        "test_ratio": args.test_ratio,
        "read": len(records),
        "written": sum(len(v) for v in lines.values()),
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "records_per_split": {s: len(lines[s]) for s in SPLITS},
        "studies_per_split": {s: studies_per_split.get(s, 0) for s in SPLITS},
        "normalised_copies": sum(1 for v in good.values() if Path(v).parent == copy_dir.resolve()),
        "templates_used": {str(k): template_use[k] for k in sorted(template_use)},
        "content_sha256": hashlib.sha256("".join("".join(lines[s]) for s in SPLITS).encode()).hexdigest(),
    }
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "--source_json", "--annotations", dest="input", required=True,
                   help="reports JSON: reference list format or {annotations: [...]}")
    p.add_argument("--images_dir", required=True, help="folder holding the image files")
    p.add_argument("--output_dir", default=str(ROOT / "data" / "openi_swift"))
    p.add_argument("--system", default=None, help="optional system prompt for every record")
    p.add_argument("--keep_source_prompt", action="store_true",
                   help="use the record's own prompt (reference format) instead of the templates")
    add_common_args(p, val_ratio=0.05, test_ratio=0.05, lang="zh")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), convert, argv, '{out}/train.jsonl, {out}/val.jsonl, {out}/test.jsonl')


if __name__ == "__main__":
    sys.exit(main())
