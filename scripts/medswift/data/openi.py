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
written, with its reason), ``warnings.tsv`` (records written whose image deserves a look),
``summary.json`` and ``images/`` (8-bit copies of images that needed normalising: 16-bit,
palette, RGBA, CMYK; copies an earlier run left there and no output uses are removed).
Same inputs and seed give byte-identical outputs. Images must lie inside ``--images_dir``
(after following symlinks) unless ``--allow_outside_images`` is given.

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
from scripts.dataset_core import (add_common_args, SPLITS, BadRecord, UsageError, index_images,  # noqa: E402
                                  json_line, prepare_output_dir, read_text_utf8, require_object, run_cli,
                                  split_groups, text_field, validate_records, write_atomic, write_lists)


@dataclass
class Record:
    record_id: str  # "<study>_<view>"
    image_name: str  # file name (or stem) to look up in images_dir
    report: str
    source_prompt: str | None = None
    reasoning: str | None = None  # optional: written as <think>...</think> before the report
    problem: tuple[str, str] | None = None  # why the record cannot be used (wrong field type...)

    @property
    def study(self) -> str:
        return study_of(self.record_id)


def study_of(record_id: str) -> str:
    """``"162_1"`` -> ``"162"``; an id without a view suffix is its own study."""
    study, sep, view = record_id.rpartition("_")
    return study if sep and study else record_id


# --------------------------------------------------------------------------- reading
def load_records(path: Path) -> list[Record]:
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
        'or {"annotations": [{"image_id", "caption"}]}'
    )


def _from_annotation(ann, where: str) -> Record:
    try:
        require_object(ann, where)
        rid = text_field(ann, "image_id", where, id_like=True)
        if not rid:
            raise BadRecord("no image id", f"{where}: no 'image_id'")
        return Record(rid, rid, text_field(ann, "caption", where), reasoning=text_field(ann, "reasoning", where))
    except BadRecord as bad:
        rid = ann.get("image_id") if isinstance(ann, dict) else None
        return Record(rid.strip() if isinstance(rid, str) else "", "", "", problem=bad.problem)


def _from_reference(rec, where: str) -> Record:
    try:
        require_object(rec, where)
        img = text_field(rec, "img", where)
        if not img:
            raise BadRecord("no image path", f"{where}: no 'img'")
        # Paths belong to another machine: keep only the file name (either separator).
        name = img.replace("\\", "/").rsplit("/", 1)[-1]
        rid = name.rsplit(".", 1)[0] if "." in name else name
        return Record(rid, name, text_field(rec, "label", where), text_field(rec, "prompt", where) or None,
                      text_field(rec, "reasoning", where))
    except BadRecord as bad:
        return Record("", "", "", problem=bad.problem)


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
    prepare_output_dir(out_dir)
    copy_dir = out_dir / "images"
    checked = validate_records(
        [(r.record_id, r.image_name, r.problem or (None if r.report else "empty report")) for r in records],
        index, copy_dir, images_dirs=[images_dir], allow_outside=args.allow_outside_images,
        workers=args.workers, progress=not args.quiet)
    good = checked.good
    # The record kept for an id is the one validate_records checked (the first valid one).
    kept = [rec for i, rec in enumerate(records) if checked.kept.get(rec.record_id) == i]

    assignment = split_groups([rec.study for rec in kept], args.val_ratio, args.test_ratio, args.seed)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    template_use: Counter = Counter()
    for rec in kept:  # input order, so outputs are stable and easy to diff
        if args.keep_source_prompt and rec.source_prompt:
            prompt = rec.source_prompt
        else:
            idx = prompts.pick_index(rec.record_id, args.seed, args.lang)
            template_use[idx] += 1
            prompt = prompts.template(args.lang, idx)
        sample = build_sample(rec, good[rec.record_id], prompt, args.system)
        lines[assignment[rec.study]].append(json_line(sample))

    for split in SPLITS:
        write_atomic(out_dir / f"{split}.jsonl", "".join(line + "\n" for line in lines[split]))
    lists = write_lists(out_dir, checked, copy_dir)
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
        **lists,
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
