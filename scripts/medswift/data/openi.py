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
from collections import Counter
from pathlib import Path

from medswift.core import prompts, thinking
from medswift.core.errors import UsageError
from medswift.data.core import (BadRecord, Candidate, add_common_args, check_and_split, converter_entry,
                                converter_parser, index_images, prepare_output_dir, read_text_utf8, require_object,
                                sample, summarise, text_field, write_lists, write_splits)
from medswift.core.files import json_line

OUTPUTS = "{out}/train.jsonl, {out}/val.jsonl, {out}/test.jsonl"


def study_of(record_id: str) -> str:
    """``"162_1"`` -> ``"162"``; an id without a view suffix is its own study."""
    study, sep, _view = record_id.rpartition("_")
    return study if sep and study else record_id


def report_candidate(record_id: str, image: str, report: str, prompt: str | None = None,
                     reasoning: str | None = None) -> Candidate:
    return Candidate(record_id, image, None if report else "empty report", group=study_of(record_id),
                     fields={"report": report, "prompt": prompt, "reasoning": reasoning})


# --------------------------------------------------------------------------- reading
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
        'or {"annotations": [{"image_id", "caption"}]}'
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


# --------------------------------------------------------------------------- writing
def convert(args: argparse.Namespace) -> dict:
    input_path, images_dir, out_dir = Path(args.input), Path(args.images_dir), Path(args.output_dir)
    records = load_records(input_path)
    if not records:
        raise UsageError(f"{input_path} holds no records")
    index = index_images(images_dir)
    prepare_output_dir(out_dir)
    conv = check_and_split(records, index, out_dir, args, images_dirs=[images_dir])

    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    template_use: Counter = Counter()
    for rec in conv.kept:  # input order, so outputs are stable and easy to diff
        prompt = rec.fields["prompt"] if args.keep_source_prompt else None
        if not prompt:
            idx = prompts.pick_index(rec.record_id, args.seed, args.lang)
            template_use[idx] += 1
            prompt = prompts.template(args.lang, idx)
        answer = thinking.join(rec.fields["reasoning"], rec.fields["report"])
        rows[conv.split(rec)].append(sample(rec.record_id, [conv.images[rec.record_id]], prompt, answer,
                                            args.system))
    per_split = write_splits(out_dir, rows)
    lists = write_lists(out_dir, conv.validated)
    copy_root = (out_dir / "images").resolve()
    return summarise(
        "report", len(records), per_split, conv, lists, args, "studies",
        input=str(input_path.resolve()), images_dir=str(images_dir.resolve()),
        val_ratio=args.val_ratio, test_ratio=args.test_ratio,
        normalised_copies=sum(1 for v in conv.images.values() if Path(v).parent == copy_root),
        templates_used={str(k): template_use[k] for k in sorted(template_use)},
        content_sha256=hashlib.sha256("".join(json_line(r) + "\n" for s in ("train", "val", "test")
                                              for r in rows[s]).encode()).hexdigest())


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--input", "--source_json", "--annotations", dest="input", required=True,
                   help="reports JSON: reference list format or {annotations: [...]}")
    p.add_argument("--images_dir", required=True, help="folder holding the image files")
    p.add_argument("--system", default=None, help="optional system prompt for every record")
    p.add_argument("--keep_source_prompt", action="store_true",
                   help="use the record's own prompt (reference format) instead of the templates")
    add_common_args(p, "openi_swift", val_ratio=0.05, test_ratio=0.05, lang="zh")
    return p


main = converter_entry(build_parser, convert, OUTPUTS)
