"""What a dataset reader produces, and the parsing every reader shares.

A reader turns its input into ``Candidate`` records (one per image, or per view of a study) and
returns them in a ``Reading``. A record it cannot use is not an exception that ends the run: it
is a ``BadRecord`` (or a candidate with its ``problem`` set), listed in skipped.tsv with its reason.
The JSON/JSONL and CSV readers here are the only ones the converters use.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medswift.core.errors import Rejected, UsageError
from medswift.core.files import bounded_lines, read_jsonl, read_text_utf8


class BadRecord(Rejected):
    """One input record a converter cannot use; listed in skipped.tsv as ``(reason, detail)``."""

    @property
    def problem(self) -> tuple[str, str]:
        return self.reason, self.detail


def json_type(value) -> str:
    """How a JSON value's type reads in a skip reason."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return {dict: "an object", list: "a list", str: "text"}.get(type(value), type(value).__name__)


def require_object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRecord("not a JSON object", f"{where}: {json_type(value)}")
    return value


def text_field(record: dict, key: str, where: str, *, id_like: bool = False) -> str:
    """``record[key]`` as stripped text, ``""`` when absent or null; any other type is a
    ``BadRecord`` (a dict caption must not become its repr in a training target). Integers
    pass only for ids (``"image_id": 162``)."""
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if id_like and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord("wrong field type", f"{where}: {key!r} is {json_type(value)}, expected text")


def load_json_records(path: Path, what: str) -> list[tuple[str, object]]:
    """``[(where, value)]`` for every record of a JSON list or a JSON-lines file, in order. A JSONL
    line that is not JSON comes back as a ``BadRecord`` to list, so one bad line costs one record;
    a file that is neither form is one error."""
    text = read_text_utf8(path, what)
    if not text.strip():
        return []
    try:
        whole = json.loads(text)
    except RecursionError:
        raise UsageError(f"{path} nests too deeply to read") from None
    except ValueError as exc:
        whole, first_error = None, exc
    else:
        if isinstance(whole, list):
            return [(f"record #{i}", rec) for i, rec in enumerate(whole)]
        if isinstance(whole, dict):  # JSON lines with a single line
            return [("line 1", whole)]
        raise UsageError(f"{path}: expected a JSON list of records or JSON lines, found {json_type(whole)}")
    lines, problems = read_jsonl(path, what)
    bad = [int(problem.split(":", 1)[0].removeprefix("line ")) for problem in problems]  # "line 7: not JSON"
    rows = sorted([(n, value) for n, value in lines] + [(n, BadRecord("not JSON", f"line {n}")) for n in bad],
                  key=lambda row: row[0])
    rows = [(f"line {n}", value) for n, value in rows]
    if all(isinstance(value, BadRecord) for _, value in rows):
        raise UsageError(f"{path} is not valid JSON or JSON lines: {first_error}")
    return rows


def csv_rows(path: Path, required: tuple[str, ...], what: str) -> Iterator[list[str]]:
    """Rows of a metadata CSV (``.gz`` read through gzip), streamed, as stripped cells in
    ``required``'s order; a short row gives ``""`` for its missing cells and a blank line is no
    row. A file that is missing, not UTF-8, not a readable CSV, or lacks a column (``what``
    names the file expected) is one clear error."""
    if not path.is_file():
        raise UsageError(f"metadata CSV not found: {path}")
    try:
        with _open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(bounded_lines(text, path))  # one huge line is an error, not 1 GB
            header = next(reader, None) or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UsageError(f"{path} lacks column(s) {', '.join(missing)}; is it {what}?")
            cols = [header.index(c) for c in required]
            width = max(cols) + 1
            for row in reader:
                if not row:
                    continue
                if len(row) < width:
                    row = row + [""] * (width - len(row))
                yield [row[c].strip() for c in cols]
    except UnicodeDecodeError:
        raise UsageError(_not_utf8(path)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UsageError(f"{path} is not a readable gzip file: {exc or type(exc).__name__}") from None
    except csv.Error as exc:  # a NUL byte, an unterminated quote at the end
        raise UsageError(f"{path} is not a readable CSV: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read metadata CSV {path}: {exc.strerror or exc}") from None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _not_utf8(path: Path) -> str:
    """The error of a file that is not UTF-8, naming the first bad byte's offset in the file the
    way ``read_text_utf8`` does (a streamed decoder only knows its offset within one block)."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with _open_bytes(path) as raw:
        while block := raw.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # the decoder may hold back the start of a character from the block before
                bad = offset + exc.start - len(exc.object) + len(block)
                return (f"{path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {bad}); "
                        "re-save it as UTF-8")
            offset += len(block)
    return f"{path} is not UTF-8"


@dataclass
class Candidate:
    """One record a reader proposes.

    ``record_id`` names it in the outputs and lists; ``images`` are the images it names (file
    names or paths relative to the images folder, looked up in the index): one, or the views of
    a study, frontal first; ``group`` is the unit that never straddles two splits (study,
    patient, lesion; default the record itself); ``split`` is the dataset's own split when it
    has one (train/val/test); ``problem`` is why the reader already knows it is unusable
    (``reason`` or ``(reason, detail)``: empty report, unknown label, wrong field type...).
    ``fields`` holds what the reader needs to write the sample (report, sections, labels,
    caption, source prompt, reasoning, view position, metadata...).
    """
    record_id: str
    images: list[str]
    problem: str | tuple[str, str] | None = None
    group: str = ""
    fields: dict = field(default_factory=dict)
    split: str | None = None

    def __post_init__(self):
        self.group = self.group or self.record_id
        if isinstance(self.images, str):
            self.images = [self.images] if self.images else []

    @property
    def image(self) -> str:
        return self.images[0] if self.images else ""


@dataclass
class Reading:
    """What a report reader found: candidates (one per image, or one per study with its views),
    where their images are, and what the format knows (studies, an official split, sections)."""
    candidates: list[Candidate]
    images_dirs: list[Path]
    index: dict[str, Path]
    default_unit: str = "study"  # "image" for the reference's own formats (kept for compatibility)
    studies: bool = False  # candidates are views carrying fields["study"] and can merge into studies
    official: bool = False  # candidates carry the dataset's own split
    sections: bool = False  # fields carry "findings" and "impression" instead of "report"
    own_prompts: bool = False  # fields["prompt"] is the dataset's own question (instruction data)
    dates: bool = False  # study candidates carry fields["study_day"] / ["study_time"] (--priors)
    extra: dict = field(default_factory=dict)  # what the summary should say about the input


def caption_id(image: str) -> str:
    """Record id from the image path as written: ``p1/slice_0.png`` -> ``p1__slice_0``.
    Normalised first, so ``a/../b.png`` and ``./b.png`` are the one record ``b``."""
    path = PurePosixPath(posixpath.normpath(image))
    if path.suffix:
        path = path.with_suffix("")
    return path.as_posix().replace("/", "__")


OFFICIAL_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                        "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def official_split(name) -> str | None:
    """A dataset's split name (R2Gen's val, MIMIC-CXR's validate...) as train/val/test, or None."""
    return OFFICIAL_SPLIT_NAMES.get(str(name).strip().lower()) if isinstance(name, str) else None
