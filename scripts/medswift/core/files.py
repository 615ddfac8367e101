"""Reading and writing the project's text files: UTF-8 JSON lines, atomic writes, TSV lists."""
from __future__ import annotations

import codecs
import csv
import errno
import io
import json
import os
import stat
from pathlib import Path

from medswift.core.errors import UsageError

# Line breaks to str.splitlines that json.dumps(ensure_ascii=False) leaves raw: escaped, so a
# text holding one cannot cut its JSONL line in two for a reader that splits that way.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_line(row) -> str:
    return json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS)


def unresolvable(exc: OSError) -> str:
    """Why a path cannot be followed, in words (a hostile tree: ``ln -s loop loop``, a name too long)."""
    return {errno.ELOOP: "symlink loop", errno.ENAMETOOLONG: "path too long"}.get(
        exc.errno, f"unreadable ({exc.strerror or type(exc).__name__})")


def entry_kind(entry) -> str:
    """``"file"``, ``"dir"`` or ``"other"`` for an ``os.DirEntry`` or a path (links followed), or why it
    cannot be told (``unresolvable``). ``DirEntry.is_file()`` raises for a symlink loop, and
    ``Path.is_file()`` for a name too long: one such entry must not abort or hide a whole folder."""
    try:
        if isinstance(entry, os.DirEntry):
            return "file" if entry.is_file() else "dir" if entry.is_dir() else "other"
        st = os.stat(entry)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return unresolvable(exc)
    except ValueError:  # a NUL byte in the name
        return "other"
    return "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"


def may_be_file(entry) -> bool:
    """A regular file, or something that cannot be told (kept, so that opening it lists it with its reason)."""
    return entry_kind(entry) not in ("dir", "other", "missing")


MAX_CSV_LINE_CHARS = 1 << 20  # a MIMIC CSV row is ~100 characters


def bounded_lines(text, path, limit: int = MAX_CSV_LINE_CHARS):
    """The lines of an open text file, each read no further than ``limit`` characters: iterating the
    file would hold a whole line (one 512 MiB line in a 520 KB gzip peaked at 1.09 GB) before any
    check. A longer line stops the read with one error naming the ceiling."""
    n = 0
    while True:
        line = text.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit:
            raise UsageError(f"{path}: line {n} is longer than {limit:,} characters; not a CSV this reader takes")
        yield line


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


def json_lines(text):
    """``(line number, line)`` of a JSON-lines text (str or bytes), split on "\n" only (and a "\r"
    before it): U+2028, U+0085... are valid raw inside a JSON string (``swift infer`` writes them),
    and ``str.splitlines`` would cut such a row in two. The piece after the last "\n" is included."""
    newline, cr = ("\n", "\r") if isinstance(text, str) else (b"\n", b"\r")
    for n, line in enumerate(text.split(newline), 1):
        yield n, line[:-1] if line.endswith(cr) else line


def parse_json_line(line) -> tuple[object, str | None]:
    """``(value, None)``, or ``(None, why)`` for a line that is not JSON or is nested too deeply for
    Python's parser (a RecursionError, never a traceback)."""
    try:
        return json.loads(line), None
    except RecursionError:
        return None, "nested too deeply"
    except ValueError:  # UnicodeDecodeError included (bytes)
        return None, "not JSON"


def read_jsonl(path: Path, what: str) -> tuple[list[tuple[int, object]], list[str]]:
    """``([(line number, parsed value)], problems)`` of a JSON-lines file; blank lines are skipped
    and a line that is not JSON is a listed problem (``"line 7: not JSON"``), never a traceback.
    What a value must look like is the caller's to check."""
    rows, problems = [], []
    for n, line in json_lines(read_text_utf8(path, what)):
        if not line.strip():
            continue
        value, why = parse_json_line(line)
        if why:
            problems.append(f"line {n}: {why}")
        else:
            rows.append((n, value))
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
