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

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import prompts  # noqa: E402
from scripts.imaging import ImageRejected, open_checked  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
SPLITS = ("train", "val", "test")


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


@dataclass
class Record:
    record_id: str  # "<study>_<view>"
    image_name: str  # file name (or stem) to look up in images_dir
    report: str
    source_prompt: str | None = None

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
            records.append(Record(rid, rid, str(ann.get("caption") or "").strip()))
    elif isinstance(raw, list) and all(isinstance(r, dict) and "img" in r for r in raw):
        for r in raw:
            # Paths belong to another machine: keep only the file name (either separator).
            name = str(r["img"]).replace("\\", "/").rsplit("/", 1)[-1]
            rid = name.rsplit(".", 1)[0] if "." in name else name
            records.append(Record(rid, name, str(r.get("label") or "").strip(), r.get("prompt")))
    else:
        raise UsageError(
            f"{path}: unknown layout; expected a list of {{img, prompt, label}} "
            'or {"annotations": [{"image_id", "caption"}]}'
        )
    return records


def index_images(images_dir: Path) -> dict[str, Path]:
    """Map both file name and stem to a path, for one scandir instead of a stat per record."""
    if not images_dir.is_dir():
        raise UsageError(f"images folder not found: {images_dir}")
    index: dict[str, Path] = {}
    for entry in sorted(os.scandir(images_dir), key=lambda e: e.name):
        if not entry.is_file():
            continue
        path = Path(entry.path)
        index[entry.name] = path
        if path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(path.stem, path)
    return index


# --------------------------------------------------------------------------- checking
def _check_one(job: tuple[str, str, str]) -> tuple[str, str, str]:
    """Worker: ``(record_id, path, copy_dir)`` -> ``(record_id, "ok"|reason, final path|detail)``."""
    record_id, path, copy_dir = job
    try:
        checked = open_checked(path)
    except ImageRejected as exc:
        return record_id, exc.reason, exc.detail
    if not checked.changed:
        return record_id, "ok", path
    # 16-bit, palette, RGBA, CMYK...: write an 8-bit copy the model will see correctly.
    out = Path(copy_dir) / f"{record_id}.png"
    checked.image.save(out, format="PNG")
    return record_id, "ok", str(out)


def check_images(jobs: list[tuple[str, str, str]], workers: int, progress: bool) -> list[tuple[str, str, str]]:
    from tqdm import tqdm  # ships with transformers/ms-swift

    bar = tqdm(total=len(jobs), desc="checking images", unit="img", disable=not progress, file=sys.stderr)
    results = []
    if workers <= 1 or len(jobs) < 64:
        for job in jobs:
            results.append(_check_one(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_check_one, jobs, chunksize=64):
                results.append(res)
                bar.update()
    bar.close()
    return results


# --------------------------------------------------------------------------- splitting
def split_studies(studies: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, str]:
    """Assign each study to train/val/test. Deterministic for the same set and seed.

    Every split with a non-zero ratio gets at least one study when there are at least
    three studies, so a tiny sample still has something to validate on.
    """
    ordered = sorted(set(studies))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)

    def count(ratio: float) -> int:
        k = round(ratio * n)
        return max(k, 1) if ratio > 0 and n >= 3 else k

    n_test, n_val = count(test_ratio), count(val_ratio)
    if n_test + n_val >= n and n > 0:
        raise UsageError(f"val/test ratios leave no training study out of {n}")
    assignment = {}
    for i, study in enumerate(ordered):
        assignment[study] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


# --------------------------------------------------------------------------- writing
def build_sample(record: Record, image_path: str, prompt: str, system: str | None) -> dict:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"<image>{prompt}"})
    messages.append({"role": "assistant", "content": record.report})
    return {"messages": messages, "images": [image_path], "id": record.record_id}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
    copy_dir.mkdir(exist_ok=True)

    skipped: list[tuple[str, str, str]] = []  # (record id, reason, detail)
    seen: set[str] = set()
    jobs: list[tuple[str, str, str]] = []
    by_id: dict[str, Record] = {}
    for rec in records:
        if not rec.record_id:
            skipped.append(("", "no image id", rec.image_name))
        elif rec.record_id in seen:
            skipped.append((rec.record_id, "duplicate id", "kept the first record"))
        elif not rec.report:
            seen.add(rec.record_id)
            skipped.append((rec.record_id, "empty report", ""))
        elif rec.image_name not in index:
            seen.add(rec.record_id)
            skipped.append((rec.record_id, "missing image", f"{rec.image_name} not in {images_dir}"))
        else:
            seen.add(rec.record_id)
            by_id[rec.record_id] = rec
            jobs.append((rec.record_id, str(index[rec.image_name].resolve()), str(copy_dir.resolve())))

    checked = check_images(jobs, args.workers, progress=not args.quiet)
    good: dict[str, str] = {}
    for record_id, status, value in checked:
        if status == "ok":
            good[record_id] = value
        else:
            skipped.append((record_id, status, value))

    assignment = split_studies([by_id[r].study for r in good], args.val_ratio, args.test_ratio, args.seed)
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
        _write_atomic(out_dir / f"{split}.jsonl", "".join(line + "\n" for line in lines[split]))
    skipped.sort(key=lambda s: (s[1], s[0]))
    _write_atomic(
        out_dir / "skipped.tsv",
        "record_id\treason\tdetail\n" + "".join(f"{i}\t{r}\t{d}\n" for i, r, d in skipped),
    )
    reasons = Counter(reason for _, reason, _ in skipped)
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
    _write_atomic(out_dir / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary


def summary_line(summary: dict) -> str:
    per = summary["records_per_split"]
    reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items()) or "none"
    return (
        f"read {summary['read']} = written {summary['written']} "
        f"(train {per['train']}, val {per['val']}, test {per['test']}) "
        f"+ skipped {summary['skipped']} ({reasons})"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "--source_json", "--annotations", dest="input", required=True,
                   help="reports JSON: reference list format or {annotations: [...]}")
    p.add_argument("--images_dir", required=True, help="folder holding the image files")
    p.add_argument("--output_dir", default=str(ROOT / "data" / "openi_swift"))
    p.add_argument("--lang", choices=prompts.LANGUAGES, default="zh", help="language of the prompts")
    p.add_argument("--val_ratio", type=float, default=0.05)
    p.add_argument("--test_ratio", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--system", default=None, help="optional system prompt for every record")
    p.add_argument("--keep_source_prompt", action="store_true",
                   help="use the record's own prompt (reference format) instead of the templates")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes that decode images")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any record is skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("val_ratio", "test_ratio"):
        value = getattr(args, name)
        if not 0 <= value < 1:
            print(f"error: --{name} must be in [0, 1), got {value}", file=sys.stderr)
            return 2
    try:
        summary = convert(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    print(summary_line(summary))
    print(f"wrote {out / 'train.jsonl'}, {out / 'val.jsonl'}, {out / 'test.jsonl'}; skips listed in {out / 'skipped.tsv'}")
    print("Research use only, not for diagnosis.")
    if summary["written"] == 0:
        print("error: no record was written; see skipped.tsv for the reasons", file=sys.stderr)
        return 1
    if args.strict and summary["skipped"]:
        print(f"error: --strict and {summary['skipped']} records were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
