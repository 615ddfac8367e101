"""What every converter shares: image lookup and checks, group-wise splits, skip lists,
atomic and deterministic output files, the summary line.

Used by convert_xray_swift.py (OpenI reports), convert_chestxray14.py,
convert_ham10000.py and convert_captions.py, so a rule such as "a skipped record is
listed with its reason" or "a patient never straddles two splits" lives in one place.
"""
from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scripts.imaging import ImageRejected, open_checked

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
SPLITS = ("train", "val", "test")


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def index_images(images_dirs: list[Path] | Path) -> dict[str, Path]:
    """Map file name and stem to a path (one scandir per folder, not a stat per record).

    Several folders may be given (HAM10000 ships two parts, ChestX-ray14 twelve); a name
    found in two folders keeps the first.
    """
    dirs = [images_dirs] if isinstance(images_dirs, (str, Path)) else list(images_dirs)
    index: dict[str, Path] = {}
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise UsageError(f"images folder not found: {folder}")
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_file():
                continue
            path = Path(entry.path)
            index.setdefault(entry.name, path)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.stem, path)
    return index


def _check_one(job: tuple[str, str, str]) -> tuple[str, str, str]:
    """Worker: ``(record_id, path, copy_dir)`` -> ``(record_id, "ok"|reason, final path|detail)``."""
    record_id, path, copy_dir = job
    try:
        checked = open_checked(path)
    except ImageRejected as exc:
        return record_id, exc.reason, exc.detail
    if not checked.changed:
        return record_id, "ok", path
    # 16-bit, palette, RGBA, CMYK, DICOM...: write an 8-bit copy the model will see correctly.
    out = Path(copy_dir) / f"{record_id}.png"
    checked.image.save(out, format="PNG")
    return record_id, "ok", str(out)


def check_images(jobs: list[tuple[str, str, str]], workers: int, progress: bool) -> list[tuple[str, str, str]]:
    """Decode every image (in ``workers`` processes); results in job order."""
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


def validate_records(candidates: list[tuple[str, str, str | tuple[str, str] | None]], index: dict[str, Path], copy_dir: Path,
                     workers: int, progress: bool, where: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Check ``(record_id, image_name, problem)`` candidates; ``problem`` is the converter's own
    reason to skip (empty report, unknown label...) or None.

    Returns ``(good, skipped)``: ``good`` maps record id to the image path the model should
    read (an 8-bit copy in ``copy_dir`` when the original needed normalising); ``skipped``
    lists ``(record_id, reason, detail)`` for everything else: no id, duplicate id, the
    converter's problem, missing image, unreadable image.
    """
    copy_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    jobs: list[tuple[str, str, str]] = []
    for record_id, image_name, problem in candidates:
        if not record_id:
            skipped.append(("", "no image id", image_name))
            continue
        if record_id in seen:
            skipped.append((record_id, "duplicate id", "kept the first record"))
            continue
        seen.add(record_id)
        if problem:  # "reason" or ("reason", "detail")
            reason, detail = problem if isinstance(problem, tuple) else (problem, image_name)
            skipped.append((record_id, reason, detail))
        elif image_name not in index:
            skipped.append((record_id, "missing image", f"{image_name} not in {where}"))
        else:
            jobs.append((record_id, str(index[image_name].resolve()), str(copy_dir.resolve())))
    good: dict[str, str] = {}
    for record_id, status, value in check_images(jobs, workers, progress):
        if status == "ok":
            good[record_id] = value
        else:
            skipped.append((record_id, status, value))
    return good, skipped


def kept_records(records: list[dict], good: dict[str, str]) -> list[dict]:
    """The records that will be written: valid image, first record of each id (as validate_records keeps)."""
    seen: set[str] = set()
    kept = []
    for rec in records:
        if rec["id"] in good and rec["id"] not in seen:
            seen.add(rec["id"])
            kept.append(rec)
    return kept


def split_groups(groups: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, str]:
    """Assign each group (study, patient, lesion) to train/val/test. Deterministic for a set and seed.

    Every split with a non-zero ratio gets at least one group when there are at least
    three, so a tiny sample still has something to validate on.
    """
    ordered = sorted(set(groups))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)

    def count(ratio: float) -> int:
        k = round(ratio * n)
        return max(k, 1) if ratio > 0 and n >= 3 else k

    n_test, n_val = count(test_ratio), count(val_ratio)
    if n_test + n_val >= n and n > 0:
        raise UsageError(f"val/test ratios leave no training group out of {n}")
    return {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(ordered)}


def check_ratios(val_ratio: float, test_ratio: float) -> None:
    for name, value in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0 <= value < 1:
            raise UsageError(f"--{name} must be in [0, 1), got {value}")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_skipped(path: Path, skipped: list[tuple[str, str, str]]) -> Counter:
    """``skipped.tsv`` sorted by reason then id; returns the count per reason."""
    rows = sorted(skipped, key=lambda s: (s[1], s[0]))
    write_atomic(path, "record_id\treason\tdetail\n" + "".join(f"{i}\t{r}\t{d}\n" for i, r, d in rows))
    return Counter(reason for _, reason, _ in skipped)


def summary_line(summary: dict) -> str:
    per = summary["records_per_split"]
    reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items()) or "none"
    return (f"read {summary['read']} = written {summary['written']} "
            f"(train {per['train']}, val {per['val']}, test {per['test']}) "
            f"+ skipped {summary['skipped']} ({reasons})")


def add_common_args(p, val_ratio: float, test_ratio: float, lang: str = "en") -> None:
    """Flags every converter has: language, split, seed, workers, strictness."""
    from scripts.prompts import LANGUAGES

    p.add_argument("--lang", choices=LANGUAGES, default=lang, help="language of prompts and answers")
    p.add_argument("--val_ratio", type=float, default=val_ratio)
    p.add_argument("--test_ratio", type=float, default=test_ratio)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=default_workers(), help="processes that decode images")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any record is skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(parser, convert, argv: list[str] | None, outputs: str) -> int:
    """The converters' ``main``: parse, convert, report; user mistakes are one ``error:`` line (exit 2).

    ``outputs`` names what was written, with ``{out}`` standing for --output_dir.
    """
    args = parser.parse_args(argv)
    try:
        check_ratios(args.val_ratio, args.test_ratio)
        summary = convert(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    return finish(summary, out, args.strict, outputs.format(out=out))


def finish(summary: dict, out_dir: Path, strict: bool, outputs: str) -> int:
    """Print the summary, write summary.json, and decide the exit code."""
    write_atomic(out_dir / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(summary_line(summary))
    print(f"wrote {outputs}; skips listed in {out_dir / 'skipped.tsv'}")
    print("Research use only, not for diagnosis.")
    if summary["written"] == 0:
        print("error: no record was written; see skipped.tsv for the reasons", file=sys.stderr)
        return 1
    if strict and summary["skipped"]:
        print(f"error: --strict and {summary['skipped']} records were skipped", file=sys.stderr)
        return 1
    return 0


def read_csv_rows(path: Path, required: tuple[str, ...], what: str) -> list[dict]:
    """Rows of a metadata CSV as dicts; a clear error when the file or a column is missing."""
    import csv

    if not path.is_file():
        raise UsageError(f"metadata CSV not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path} lacks column(s) {', '.join(missing)}; is it {what}?")
        return list(reader)


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
