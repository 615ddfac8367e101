"""The prediction file every inference tool writes: checked before the model loads, appended a
batch at a time in one write, resumable after a kill.

Shared by batch inference, the server client and the classifier.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import json_line


def repair_and_read_done(path: Path) -> set[str]:
    """Keys already written; a half-written last line (a kill mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    done = set()
    good = 0
    for raw in keep.splitlines(keepends=True):
        try:
            done.add(json.loads(raw)["key"])
            good += len(raw)
        except (ValueError, KeyError, TypeError):
            break  # anything after a broken line is suspect: drop it and redo those inputs
    if good != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def prepare_output(out: Path, resume: bool, overwrite: bool) -> set[str]:
    """Check the output file before the model loads; return the keys already done (--resume).

    Only a regular file is ever truncated or replaced: ``--overwrite --output_file /dev/full``
    must not unlink a device node.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of {out}: {exc.strerror or exc}") from None
    if out.exists() and not out.is_file():
        raise UsageError(f"{out} is not a regular file; give --output_file a path for a .jsonl file")
    if out.exists() and out.stat().st_size and not (resume or overwrite):
        raise UsageError(f"{out} already has results; use --resume to continue it or --overwrite to replace it")
    try:
        if overwrite and out.exists():
            out.unlink()
        done = repair_and_read_done(out) if resume else set()
        with open(out, "ab"):  # writable now, not after an hour of inference
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return done


def append_lines(path: Path, rows: list[dict]) -> None:
    """All rows of a batch in one write(): a kill leaves the whole batch or none of it."""
    payload = "".join(json_line(r) + "\n" for r in rows).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(28, "short write (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


LISTED_AS = {"skipped": "skipped", "warnings": "warning", "failed": "failed"}


def print_run_summary(summary: dict, tail: str = "", listed: tuple[str, ...] = ("skipped",)) -> int:
    """The closing lines every inference tool prints: ``inputs N = written + already done + skipped
    (by reason)`` and a tail, then each listed input with its reason; returns the exit code (1 when
    nothing was written or done before)."""
    from collections import Counter

    from medswift.core.constants import NOTICE

    reasons = Counter(reason.split(" (")[0] for _, reason in summary["skipped"])
    print(f"inputs {summary['inputs']} = written {summary['written']} + already done {summary['already_done']} "
          f"+ skipped {len(summary['skipped'])}"
          + (f" ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))})" if reasons else "") + tail)
    for kind in listed:
        for where, reason in summary.get(kind, ()):
            print(f"  {LISTED_AS[kind]} {where}: {reason}")
    print(f"results: {summary['output_file']}")
    print(NOTICE)
    return 0 if summary["written"] or summary["already_done"] else 1
