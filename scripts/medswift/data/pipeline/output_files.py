"""What a converter writes: ms-swift samples per split, skipped.tsv and warnings.tsv, the removal
of stale 8-bit copies (only the converter's own, listed in a manifest), summary.json and its
one-line summary. Every file is written atomically and deterministically."""
from __future__ import annotations

import heapq
import os
import re
from collections import Counter
from pathlib import Path

from medswift.core.constants import SPLITS
from medswift.core.errors import UsageError
from medswift.core.files import write_atomic, write_jsonl, write_tsv
from medswift.data.pipeline.checks import Validated
from medswift.data.pipeline.splits import Conversion


SAFE_FILE = re.compile(r"[A-Za-z0-9._-]{1,255}")  # a name copy_name can produce


# Names of the files a converter wrote into one of its output folders (images/, hf_images/),
# so a later run removes only its own stale files, never one a user put there.
MANIFEST = ".written_by_converter"


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def sample(record_id: str, images: list[str], prompt: str, answer: str | None = None, system: str | None = None,
           **extra) -> dict:
    """One ms-swift record: one ``<image>`` tag per image before the prompt, then the answer
    (absent for a classification-head record, which carries ``label`` in ``extra``)."""
    messages = [message("system", system)] if system else []
    messages.append(message("user", "<image>" * len(images) + prompt))
    if answer is not None:
        messages.append(message("assistant", answer))
    return {"messages": messages, "images": list(images), **extra, "id": record_id}


def write_splits(out_dir: Path, rows: dict[str, list[dict]], prefix: str = "") -> dict[str, int]:
    """``{prefix}train/val/test.jsonl``; returns the rows per split."""
    for split in SPLITS:
        write_jsonl(out_dir / f"{prefix}{split}.jsonl", rows[split])
    return {split: len(rows[split]) for split in SPLITS}


def summarise(task: str, read: int, per_split: dict[str, int], conv: Conversion, lists: dict, args,
              groups_name: str, **extra) -> dict:
    """The summary every converter writes (summary.json) and prints (summary_line)."""
    groups = conv.split_of if not conv.official else {c.group: conv.split(c) for c in conv.kept}
    return {"task": task, "read": read, "written": sum(per_split.values()), **lists, "records_per_split": per_split,
            f"{groups_name}_per_split": {s: sum(1 for v in groups.values() if v == s) for s in SPLITS},
            "seed": args.seed, "lang": args.lang, **extra}


# Lines per reason in skipped.tsv (and skipped_boxes.tsv): a 349 KB gzip of 3 million duplicate rows
# once wrote a 276 MB list of identical lines. Beyond the cap, one line per reason gives the count.
# 10,000 keeps real lists whole (the bundled OpenI reports: 6,415 missing images) at under 1 MB a reason.
LISTED_PER_REASON = 10_000
MORE_ID = "*"  # record_id of a reason's count line


def write_skipped(path: Path, skipped: list[tuple[str, str, str]], header=("record_id", "reason", "detail"),
                  cap: int = LISTED_PER_REASON) -> Counter:
    """``skipped.tsv`` sorted by reason then id, at most ``cap`` lines per reason (the first by id),
    then ``* <reason> N more skipped for this reason, not listed``; returns the exact count per reason."""
    by_reason: dict[str, list[tuple[str, str, str]]] = {}
    for entry in skipped:
        by_reason.setdefault(entry[1], []).append(entry)
    rows = []
    for reason in sorted(by_reason):
        entries = by_reason[reason]
        rows += heapq.nsmallest(cap, entries, key=lambda s: (s[0], s[2])) if len(entries) > cap \
            else sorted(entries, key=lambda s: (s[0], s[2]))
        if len(entries) > cap:
            rows.append((MORE_ID, reason, f"{len(entries) - cap} more skipped for this reason, not listed "
                                          f"(the first {cap} by id are); summary.json has the exact counts"))
    write_tsv(path, header, rows)
    return Counter({reason: len(entries) for reason, entries in by_reason.items()})


def prepare_output_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it writable before any work, so a read-only folder or a
    path under a regular file is one error line, not a traceback after the image checks."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to --output_dir {out_dir}: {exc.strerror or exc}") from None
    return out_dir


def remove_stale_files(folder: Path, written: set[str]) -> tuple[int, int]:
    """Delete the files an earlier run wrote into ``folder`` (listed in its manifest) that this
    run did not write, and record this run's files. Returns ``(removed, kept)``: ``kept``
    counts files there that no run of the converter listed, left alone."""
    if not folder.is_dir():
        return 0, 0
    manifest = folder / MANIFEST
    try:
        earlier = set(manifest.read_text(encoding="utf-8").splitlines()) if manifest.is_file() else set()
    except (OSError, UnicodeDecodeError):
        earlier = set()
    removed = 0
    for name in sorted(earlier - written):
        stale = folder / name
        # only plain file names this converter could have written, never a path elsewhere
        if SAFE_FILE.fullmatch(name) and not name.startswith(".") and stale.is_file() and not stale.is_symlink():
            try:
                stale.unlink()
                removed += 1
            except OSError as exc:
                raise UsageError(f"cannot remove the stale copy {stale}: {exc.strerror or exc}") from None
    write_atomic(manifest, "".join(f"{name}\n" for name in sorted(written)))
    kept = sum(1 for e in os.scandir(folder) if e.name not in written and e.name != MANIFEST
               and not e.name.startswith(MANIFEST))
    return removed, kept


def write_lists(out_dir: Path, validated: Validated, copy_dir: Path | None = None) -> dict:
    """``skipped.tsv``, ``warnings.tsv`` and the clean-up of stale 8-bit copies; returns the
    summary fields every converter reports."""
    reasons = write_skipped(out_dir / "skipped.tsv", validated.skipped)
    write_tsv(out_dir / "warnings.tsv", ("record_id", "warning"), sorted(validated.warnings))
    removed, kept = remove_stale_files(copy_dir or out_dir / "images", validated.copies)
    return {"skipped": len(validated.skipped), "skipped_by_reason": dict(sorted(reasons.items())),
            "warnings": len(validated.warnings),
            "warnings_by_text": dict(sorted(Counter(w for _, w in validated.warnings).items())),
            "stale_copies_removed": removed, "other_files_in_images_kept": kept,
            "rechecked_in_process": validated.rechecked_in_process, "checks_from_cache": validated.from_cache}


def summary_line(summary: dict) -> str:
    per = summary["records_per_split"]
    reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items()) or "none"
    line = (f"read {summary['read']} = written {summary['written']} "
            f"(train {per['train']}, val {per['val']}, test {per['test']}) "
            f"+ skipped {summary['skipped']} ({reasons})")
    if summary.get("warnings"):
        line += f"; {summary['warnings']} warnings (written, listed in warnings.tsv)"
    return line
