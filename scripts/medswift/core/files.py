"""Reading and writing the project's text files: UTF-8 JSON lines, atomic writes, TSV lists."""
from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

from medswift.core.errors import UsageError

# Line breaks to str.splitlines that json.dumps(ensure_ascii=False) leaves raw: escaped, so a
# text holding one cannot cut its JSONL line in two for a reader that splits that way.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_line(row) -> str:
    return json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS)


def read_text_utf8(path: Path, what: str) -> str:
    """The whole file as text: UTF-8, with or without a BOM (Excel and Notepad write one).
    Any other encoding is one clear error instead of a traceback or mojibake."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{what} is a folder, not a file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise UsageError(f"{path} is not UTF-8 (byte 0x{data[offset]:02x} at offset {offset}); "
                         "re-save it as UTF-8") from None


def read_jsonl(path: Path, what: str) -> tuple[list[tuple[int, object]], list[str]]:
    """``([(line number, parsed value)], problems)`` of a JSON-lines file; blank lines are skipped
    and a line that is not JSON is a listed problem (``"line 7: not JSON"``), never a traceback.
    What a value must look like is the caller's to check."""
    rows, problems = [], []
    # split on "\n" only: str.splitlines would also cut at U+2028, legal inside a JSON string
    for n, line in enumerate(read_text_utf8(path, what).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except (ValueError, RecursionError):
            problems.append(f"line {n}: not JSON")
    return rows, problems


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it: readers see the old file
    or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_jsonl(path: Path, rows: list) -> None:
    write_atomic(path, "".join(json_line(r) + "\n" for r in rows))


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    """A tab-separated file any CSV reader round-trips (``csv.reader(f, dialect="excel-tab")``):
    a tab, newline or quote inside an id is quoted, so a hostile id stays on its own row."""
    buf = io.StringIO()
    writer = csv.writer(buf, dialect="excel-tab", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())
