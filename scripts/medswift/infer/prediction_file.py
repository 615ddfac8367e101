"""The prediction file every inference tool writes: checked before the model loads, appended a
batch at a time in one write, resumable after a kill.

Shared by batch inference, the server client and the classifier. A data-parallel run writes one
part file per rank beside the output (``<output>.part-<rank>-of-<world>.jsonl``), with the same
durability, and rank 0 merges them into the output when every rank is done.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import json_line, json_lines, parse_json_line


def _read_rows(data: bytes) -> tuple[list[dict], list[bytes], list[tuple[int, bytes, str]]]:
    """``(rows, their raw lines, unreadable)`` of a prediction file: every whole row, wherever it
    stands, and ``(line number, raw line, why)`` for each line that is not one (a NUL-filled block
    after a crash, a hand edit, a half-written last line after a kill)."""
    rows, raws, bad = [], [], []
    lines = list(json_lines(data))
    for n, raw in lines:
        if not raw.strip():
            continue
        if n == len(lines):  # after the last "\n": a line whose write was cut short
            bad.append((n, raw, "half-written last line"))
            continue
        row, why = parse_json_line(raw)
        if why is None and not (isinstance(row, dict) and isinstance(row.get("key"), str)):
            why = "not a result row (no key)"
        if why:
            bad.append((n, raw, why))
            continue
        rows.append(row)
        raws.append(raw)
    return rows, raws, bad


def unreadable_path(path: Path) -> Path:
    return path.with_name(path.name + ".unreadable")


def repair_rows(path: Path) -> list[dict]:
    """The whole rows of ``path``. Lines that are not rows are moved, as they were, to
    ``<path>.unreadable`` (appended, never lost) and listed on stdout; the file keeps every whole row."""
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, raws, bad = _read_rows(data)
    if bad:
        aside = unreadable_path(path)
        with open(aside, "ab") as fh:
            fh.write(b"".join(raw + b"\n" for _, raw, _ in bad))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(raw + b"\n" for raw in raws))
        os.replace(tmp, path)
        shown = ", ".join(f"line {n}: {why}" for n, _, why in bad[:5]) + (", ..." if len(bad) > 5 else "")
        print(f"[medswift] {path}: kept {len(rows)} whole rows; set aside {len(bad)} line(s) that are not rows "
              f"({shown}) in {aside}", flush=True)
    return rows


# The generation settings that change an answer (a row's "generation" also says how it was sent).
SETTINGS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "image_max_token_num")


def _settings(generation: dict) -> dict:
    return {k: generation.get(k) for k in SETTINGS}


def _shown(settings: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def repair_and_read_done(path: Path, generation: dict | None = None, mix: bool = False,
                         wanted: set[str] | None = None) -> set[str]:
    """Keys already written (see ``repair_rows``). ``generation``: this run's settings; rows written
    with other settings stop the run (one file, one set of settings) unless ``mix``, or unless
    nothing of ``wanted`` (the run's input keys) is left to write."""
    rows = repair_rows(path)
    left = wanted is None or bool(set(wanted) - {r["key"] for r in rows})
    if generation is not None and not mix and left:
        now = _settings(generation)
        other = next((_settings(r["generation"]) for r in rows if isinstance(r.get("generation"), dict)
                      and _settings(r["generation"]) != now), None)
        if other is not None:
            raise UsageError(f"{path} was written with other generation settings ({_shown(other)}; now "
                             f"{_shown(now)}); resume with the same settings, add --mix_settings to mix them "
                             "in one file, or use --overwrite")
    return {r["key"] for r in rows}


def part_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f"{out.name}.part-{rank}-of-{world}.jsonl")


def part_files(out: Path) -> list[Path]:
    """Part files of ``out`` from any world size (a killed run may have used another)."""
    pattern = re.compile(re.escape(out.name) + r"\.part-(\d+)-of-(\d+)\.jsonl")
    if not out.parent.is_dir():
        return []
    found = [(tuple(map(int, m.groups())), p) for p in out.parent.iterdir()
             if (m := pattern.fullmatch(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def check_output(out: Path, resume: bool, overwrite: bool, parts: bool = False, shards: int = 1) -> None:
    """The checks of ``prepare_output`` that change nothing (a launcher runs them before it
    starts the ranks). ``parts``: part files of an unfinished data-parallel run count as results;
    ``shards``: the part files this run will write (more than 1: a data-parallel run) must be files."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of {out}: {exc.strerror or exc}") from None
    side_files = [unreadable_path(out), *(part_path(out, r, shards) for r in range(shards) if shards > 1)]
    for path in [out, *side_files]:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UsageError(f"{path} is not a regular file; give --output_file a path for a .jsonl file "
                             "(its part and .unreadable files are written beside it)")
    if resume or overwrite:
        return
    if out.exists() and out.stat().st_size:
        raise UsageError(f"{out} already has results; use --resume to continue it or --overwrite to replace it")
    left = [p.name for p in part_files(out) if p.stat().st_size] if parts else []
    if left:
        raise UsageError(f"{out.parent} holds part files of an unfinished parallel run ({', '.join(left)}); "
                         "use --resume to finish it or --overwrite to start afresh")


def prepare_output(out: Path, resume: bool, overwrite: bool, parts: bool = False, shards: int = 1,
                   generation: dict | None = None, mix: bool = False, wanted: set[str] | None = None) -> set[str]:
    """Check the output file before the model loads; return the keys already done (--resume).

    ``parts``: also the part files of a data-parallel run (``--overwrite`` removes them,
    ``--resume`` repairs them and counts their keys as done). Only a regular file is ever
    truncated or replaced: ``--overwrite --output_file /dev/full`` must not unlink a device node.
    ``generation``/``mix``/``wanted``: see ``repair_and_read_done``.
    """
    check_output(out, resume, overwrite, parts, shards)
    try:
        if overwrite:
            for path in [out, *(part_files(out) if parts else [])]:
                if path.exists():
                    path.unlink()
        done = repair_and_read_done(out, generation, mix, wanted) if resume else set()
        if parts and resume:
            for path in part_files(out):
                done |= repair_and_read_done(path, generation, mix, wanted)
        with open(out, "ab"):  # writable now, not after an hour of inference
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return done


def merge_parts(out: Path, order: dict[str, int], expected: set[str] = frozenset()) -> int:
    """Append the rows of every part file of ``out`` that ``out`` lacks, in input order
    (``order``: key -> position; unknown keys last), in one write; then remove the parts.

    ``expected``: keys the ranks say they wrote. One missing from ``out`` and the parts (a node
    writing to a folder rank 0 does not see) stops with one line and leaves the parts alone.
    Returns the number of rows added. A kill between the write and the removal is harmless: a
    resume skips the keys already in ``out``.
    """
    parts = part_files(out)
    have = repair_and_read_done(out)
    rows: dict[str, dict] = {}
    for path in parts:
        for row in repair_rows(path):
            if row["key"] not in have:
                rows.setdefault(row["key"], row)
    missing = set(expected) - have - set(rows)
    if missing:
        raise UsageError(f"{len(missing)} results the ranks wrote are in no part file beside {out} (e.g. "
                         f"{sorted(missing)[0]}); every node must write to the same shared folder. Part files "
                         "are kept: re-run with --resume on shared storage")
    new = sorted(rows.values(), key=lambda r: order.get(r["key"], len(order)))
    if new:
        append_lines(out, new)
    for path in parts:
        path.unlink()
    return len(new)


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
