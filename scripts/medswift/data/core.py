"""What every converter shares: image lookup and checks, group-wise splits, skip lists,
atomic and deterministic output files, the summary line.

Used by convert_xray_swift.py (OpenI reports), convert_chestxray14.py,
convert_ham10000.py and convert_captions.py, so a rule such as "a skipped record is
listed with its reason" or "a patient never straddles two splits" lives in one place.
The same goes for hostile input: whatever a decoder raises, or a wrongly typed field, costs
one listed record; inputs must be UTF-8; images must resolve inside the images folders
(unless --allow_outside_images); an output the system refuses is one ``error:`` line.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import json
import io
import os
import random
import re
import shlex
import stat
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from medswift.core.cli import command_parser
from medswift.core.constants import IMAGE_SUFFIXES, LANGUAGES, NOTICE, RESULTS, ROOT, SPLITS
from medswift.core.errors import Rejected, UsageError
from medswift.core.files import read_text_utf8, write_atomic, write_json, write_jsonl, write_tsv
from medswift.core.images import ImageRejected, open_checked

SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")  # an id usable as a copy's file name as it is
SAFE_FILE = re.compile(r"[A-Za-z0-9._-]{1,255}")  # a name copy_name can produce
# Names of the files a converter wrote into one of its output folders (images/, hf_images/),
# so a later run removes only its own stale files, never one a user put there.
MANIFEST = ".written_by_converter"


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
    rows: list[tuple[str, object]] = []
    # split on "\n" only: str.splitlines would also cut at U+2028, legal inside a JSON string
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"line {n}", json.loads(line)))
            except (ValueError, RecursionError):
                rows.append((f"line {n}", BadRecord("not JSON", f"line {n}")))
    if all(isinstance(value, BadRecord) for _, value in rows):
        raise UsageError(f"{path} is not valid JSON or JSON lines: {first_error}")
    return rows


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
    extra: dict = field(default_factory=dict)  # what the summary should say about the input


# Frontal views first (the literature's order for a study), then lateral, then anything else.
_VIEW_RANK = {"PA": 0, "AP": 1, "AP AXIAL": 1, "PA LLD": 1, "AP LLD": 1, "AP RLD": 1, "PA RLD": 1,
              "LATERAL": 2, "LL": 2, "LAO": 3, "RAO": 3, "LPO": 3, "SWIMMERS": 3}


def view_rank(view) -> tuple:
    """Sort key of a view: its position name (PA/AP before LATERAL), else its order number."""
    text = str(view or "").strip().upper()
    if text in _VIEW_RANK:
        return (0, _VIEW_RANK[text], "")
    return (1, int(text) if text.isdigit() else 10**9, text)


def to_units(candidates: list[Candidate], unit: str, max_views: int) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """``unit == "study"``: the problem-free views of one study (``fields["study"]``) become one
    candidate with their images frontal first, at most ``max_views`` (the others listed as
    warnings); candidates with a problem pass through to be listed. ``"image"``: unchanged."""
    if unit == "image":
        return candidates, []
    out: list[Candidate] = []
    studies: dict[str, tuple[Candidate, list[Candidate]]] = {}  # study -> (its merged candidate, its views)
    for cand in candidates:
        study = cand.fields.get("study")
        if cand.problem or not study or not cand.images:
            out.append(cand)
            continue
        if study not in studies:
            studies[study] = (Candidate(study, [], group=cand.group, fields=cand.fields, split=cand.split), [])
            out.append(studies[study][0])
        studies[study][1].append(cand)
    notes: list[tuple[str, str]] = []
    for cand, views in studies.values():
        ordered = sorted(views, key=lambda v: view_rank(v.fields.get("view") or v.fields.get("view_order")))
        cand.images = [name for v in ordered for name in v.images][:max_views]
        cand.fields = {**ordered[0].fields, "views": [v.record_id for v in ordered][:max_views],
                       "view_positions": [v.fields.get("view") for v in ordered][:max_views]}
        extra = [name for v in ordered for name in v.images][max_views:]
        notes += [(cand.record_id, f"view {name} not used (--max_views {max_views})") for name in extra]
    return out, notes


SECTIONS = ("findings", "impression", "both")


def choose_section(fields: dict, section: str) -> tuple[str, str | tuple[str, str] | None]:
    """The target text of a sectioned report: ``(text, problem)``; a study whose chosen section
    is missing is a listed skip (the published IU-Xray/MIMIC-CXR setups drop them the same way)."""
    findings, impression = (fields.get("findings") or "").strip(), (fields.get("impression") or "").strip()
    if section == "findings":
        return findings, None if findings else "no findings section"
    if section == "impression":
        return impression, None if impression else "no impression section"
    if not findings and not impression:
        return "", "no findings or impression section"
    parts = ([f"Findings: {findings}"] if findings else []) + ([f"Impression: {impression}"] if impression else [])
    return "\n".join(parts), None


class CheckResult(NamedTuple):
    record_id: str
    status: str  # "ok", WRITE_FAILED, or the reason the image was refused
    value: str  # ok: the image path the model should read; else the detail
    warnings: tuple[str, ...] = ()


WRITE_FAILED = "cannot write copy"


def copy_name(record_id: str) -> str:
    """File name of a record's 8-bit copy: the id when it is a safe file name, else a cleaned
    id plus a hash, so no id (``../x``, ``a/b``, a tab) can write outside the copy folder."""
    if SAFE_NAME.fullmatch(record_id) and not record_id.startswith("."):
        return f"{record_id}.png"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).lstrip(".")[:80]
    return f"{cleaned}-{hashlib.sha256(record_id.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}.png"


def _check_one(job: tuple[str, str, str]) -> CheckResult:
    """Worker: decode ``path`` and write an 8-bit copy when needed. Never raises: whatever a
    decoder throws (MemoryError included) becomes a refused image, so one hostile file costs one
    record, never the run (an exception here would re-raise from ``pool.map`` and end it)."""
    record_id, path, copy_dir = job
    try:
        checked = open_checked(path)
    except ImageRejected as exc:
        return CheckResult(record_id, exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not take the whole conversion down
        return CheckResult(record_id, "unreadable image", _describe(Path(path).name, exc))
    warnings = tuple(str(w) for w in (getattr(checked, "warnings", None) or ()))
    if not checked.changed:
        return CheckResult(record_id, "ok", path, warnings)
    # 16-bit, palette, RGBA, CMYK, DICOM...: write an 8-bit copy the model will see correctly.
    out = Path(copy_dir) / copy_name(record_id)
    try:
        checked.image.save(out, format="PNG")
    except OSError as exc:
        if exc.errno is not None:  # disk full, folder gone: an output problem, reported as one error
            return CheckResult(record_id, WRITE_FAILED, f"{out}: {exc.strerror or exc}")
        return CheckResult(record_id, "unreadable image", _describe(Path(path).name, exc))
    except Exception as exc:  # noqa: BLE001 - an image Pillow decoded but cannot encode
        return CheckResult(record_id, "unreadable image", _describe(Path(path).name, exc))
    return CheckResult(record_id, "ok", str(out), warnings)


def _describe(name: str, exc: BaseException) -> str:
    text = str(exc).replace("\t", " ").replace("\n", " ").strip()
    return f"{name}: {type(exc).__name__}" + (f": {text[:200]}" if text else "")


class CheckCache:
    """Validated images of earlier runs into the same output folder, keyed on the file's path,
    size and modification time (and the copy it got), so an interrupted conversion of a large
    set re-runs without decoding again what it had checked. One JSON line per image, appended
    as results come in."""

    NAME = ".image_checks.jsonl"

    def __init__(self, out_dir: Path | None):
        self.path = out_dir / self.NAME if out_dir is not None else None
        # key -> (status, value, warnings); value None when it is the key's own path (most rows),
        # so a re-run of a large set holds one string per image, not a parsed row.
        self.known: dict[tuple, tuple[str, str | None, tuple[str, ...]]] = {}
        if self.path is not None and self.path.is_file():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        key = tuple(row["key"])
                        value = row["value"]
                        self.known[key] = (row["status"], None if value == key[0] else value, tuple(row["warnings"]))
                    except (ValueError, KeyError, TypeError, IndexError):
                        continue  # a line cut short by a kill: that image is checked again

    @staticmethod
    def key(job: tuple[str, str, str]) -> tuple | None:
        copy_key, path, _ = job
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (path, st.st_size, st.st_mtime_ns, copy_key)

    def lookup(self, job, key: tuple | None = None) -> CheckResult | None:
        key = key or self.key(job)
        row = self.known.get(key) if key else None
        if row is None:
            return None
        status, value, warnings = row
        value = job[1] if value is None else value
        if status == "ok" and value != job[1] and not os.path.isfile(value):  # its 8-bit copy is gone
            return None
        return CheckResult(job[0], status, value, warnings)

    def add(self, pairs: list[tuple[tuple, CheckResult]]) -> None:
        if self.path is None or not pairs:
            return
        lines = [json.dumps({"key": list(key), "status": r.status, "value": r.value, "warnings": list(r.warnings)},
                            ensure_ascii=False) + "\n" for key, r in pairs if key and r.status != WRITE_FAILED]
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        except OSError:
            self.path = None  # a cache that cannot be written only costs speed on the next run


def check_images(jobs: list[tuple[str, str, str]], workers: int, progress: bool,
                 cache: CheckCache | None = None) -> tuple[list[CheckResult], int, int]:
    """Decode every image (in ``workers`` processes); results in job order, how many jobs were
    re-checked in this process because a worker process died, and how many came from ``cache``.

    A worker that dies (killed by the OOM killer, a crash inside a C decoder) breaks the whole
    pool; the jobs it had not returned are then checked here, one by one, after a warning line,
    so the results already in are kept and the run is not lost.
    """
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm  # ships with transformers/ms-swift

    cache = cache or CheckCache(None)
    keys = [cache.key(job) for job in jobs] if cache.path is not None else [None] * len(jobs)
    results: list[CheckResult | None] = [cache.lookup(job, key) if key else None for job, key in zip(jobs, keys)]
    todo = [i for i, r in enumerate(results) if r is None]
    cached = len(jobs) - len(todo)
    bar = tqdm(total=len(jobs), initial=cached, desc="checking images", unit="img", disable=not progress,
               file=sys.stderr)
    pending: list[tuple[tuple, CheckResult]] = []

    def done(i: int, res: CheckResult) -> None:
        results[i] = res
        pending.append((keys[i], res))
        if len(pending) >= 256:
            cache.add(pending)
            pending.clear()
        bar.update()

    finished = 0
    rechecked = 0
    if workers > 1 and len(todo) >= 64:
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(64, len(todo) // (4 * workers)))
                for res in pool.map(_check_one, [jobs[i] for i in todo], chunksize=chunk):
                    done(todo[finished], res)
                    finished += 1
        except BrokenProcessPool:
            rechecked = len(todo) - finished
            print(f"warning: an image-checking process died (killed, perhaps out of memory); checking the "
                  f"remaining {rechecked} images in this process", file=sys.stderr)
    for i in todo[finished:]:
        done(i, _check_one(jobs[i]))
    cache.add(pending)
    bar.close()
    return results, rechecked, cached


@dataclass
class Validated:
    """What ``validate_records`` decided, one entry per candidate accounted for."""
    good: dict[str, list[str]]  # record id -> the image paths the model should read, in view order
    kept: dict[str, int]  # record id -> index of the candidate kept for it (the first valid one)
    skipped: list[tuple[str, str, str]]  # (record_id, reason, detail)
    warnings: list[tuple[str, str]]  # (record_id, warning) of kept records, refused extra views included
    copies: set[str] = field(default_factory=set)  # file names written into the copy folder
    rechecked_in_process: int = 0  # images checked here after a worker process died
    from_cache: int = 0  # images whose check an earlier run had done


class FolderCachedResolve:
    """``str(Path(path).resolve())``, with each folder resolved once instead of once per file.

    ``Path.resolve`` walks every component with an lstat (nine for a MIMIC-CXR image), which at
    377,110 images was the largest cost of a re-run. A folder's real path is kept (most recent
    folders only, so memory stays flat) and a file is then one lstat: real(folder/name) is
    real(folder)/name whenever name is no symlink. Anything else (a symlink, a relative or
    unnormalised path) takes ``Path.resolve`` itself, so the answer and its errors (a symlink
    loop, a NUL byte) are the same."""

    def __init__(self, keep: int = 4096):
        self.folders: dict[str, str] = {}
        self.keep = keep

    def __call__(self, path) -> str:
        text = os.fspath(path)
        if not text.startswith("/") or text.startswith("//") or text != os.path.normpath(text) or text == "/":
            return str(Path(text).resolve())
        return self._real(text)

    def _real(self, text: str) -> str:
        head, _, name = text.rpartition("/")
        real_head = "" if not head else self.folders.get(head)
        if real_head is None:
            real_head = self._real(head).rstrip("/")
            if len(self.folders) >= self.keep:
                self.folders.clear()
            self.folders[head] = real_head
        candidate = f"{real_head}/{name}"
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:  # missing: Path.resolve keeps the name as it is
            is_link = False
        return str(Path(text).resolve()) if is_link else candidate


def validate_records(candidates: list[Candidate], index: dict[str, Path],
                     copy_dir: Path, *, images_dirs: list[Path], allow_outside: bool, workers: int,
                     progress: bool, cache_dir: Path | None = None) -> Validated:
    """Check the readers' candidates.

    Every image of every problem-free candidate is looked up (inside ``images_dirs`` after
    following symlinks unless ``allow_outside``) and decoded once. A candidate is valid when
    at least one of its images decodes; views of a study that do not are listed as warnings
    ("view refused"), the study is kept with the others. For each id the first *valid*
    candidate is kept; every other candidate is listed in ``skipped`` with its reason:
    "duplicate id" when it comes after the kept candidate of its id, else its own problem or
    its first image's ("duplicate image" when a record of another group uses the same file). Images that
    need normalising get an 8-bit copy in ``copy_dir``. Every candidate ends up either kept or
    skipped. ``cache_dir``: where a CheckCache of earlier runs lives.
    """
    roots = [Path(d).resolve() for d in images_dirs]
    copy_root = copy_dir.resolve()
    if copy_root in roots:
        raise UsageError(f"{copy_dir} is also an images folder; choose another --output_dir")
    copy_dir.mkdir(parents=True, exist_ok=True)
    where = ", ".join(str(d) for d in images_dirs)
    claimed: dict[str, tuple[str, str]] = {}  # resolved image path -> the first (id, group) that uses it
    inside = tuple(str(root).rstrip("/") + "/" for root in roots)  # a resolved path below a root starts so
    resolve = FolderCachedResolve()

    def resolve_view(record_id: str, group: str, image_name: str) -> tuple[str | None, tuple[str, str] | None]:
        if image_name not in index:
            return None, ("missing image", f"{image_name} not in {where}")
        try:
            resolved = resolve(index[image_name])
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
            return None, ("unusable image path", _describe(image_name, exc))
        if not allow_outside and not resolved.startswith(inside):
            return None, ("image outside --images_dir", f"{image_name} resolves to {resolved}")
        # One file reached from two groups (a symlink, a second spelling) could land in train and val;
        # records of one group may share it (several questions about one image).
        owner, owner_group = claimed.setdefault(resolved, (record_id, group))
        if owner_group != group:
            return None, ("duplicate image", f"{image_name} is the image of record {owner}")
        return resolved, None

    failure: dict[int, tuple[str, str]] = {}  # candidate index -> (reason, detail)
    views: dict[int, list[tuple[str | None, tuple[str, str] | None]]] = {}  # per view: (path, failure)
    jobs: dict[str, tuple[str, str, str]] = {}  # resolved path -> job
    for i, cand in enumerate(candidates):
        if cand.problem:
            failure[i] = cand.problem if isinstance(cand.problem, tuple) else (cand.problem, cand.image)
        elif not cand.record_id:
            failure[i] = ("no image id", cand.image)
        elif not cand.images:
            failure[i] = ("no image", cand.record_id)
        else:
            views[i] = [resolve_view(cand.record_id, cand.group, name) for name in cand.images]
            for k, (path, _) in enumerate(views[i]):
                if path is not None and path not in jobs:
                    copy_key = cand.record_id if k == 0 else f"{cand.record_id}__view{k}"
                    jobs[path] = (copy_key, path, str(copy_root))
    job_list = list(jobs.values())
    results, rechecked, cached = check_images(job_list, workers, progress, CheckCache(cache_dir))
    checked = {job[1]: res for job, res in zip(job_list, results)}
    for res in results:
        if res.status == WRITE_FAILED:
            raise UsageError(f"cannot write the 8-bit copy {res.value}")

    good: dict[str, list[str]] = {}
    kept: dict[str, int] = {}
    warnings: list[tuple[str, str]] = []
    for i, cand in enumerate(candidates):
        if i in failure or cand.record_id in kept:
            continue
        paths, notes, first_failure = [], [], None
        for name, (path, view_failure) in zip(cand.images, views[i]):
            res = checked.get(path) if path is not None else None
            reason = view_failure or ((res.status, res.value) if res is not None and res.status != "ok" else None)
            if reason is None:
                paths.append(res.value)
                notes += list(res.warnings)
            else:
                first_failure = first_failure or reason
                if len(cand.images) > 1:
                    notes.append(f"view {name} refused ({reason[0]}); the study keeps its other views")
        if paths:
            good[cand.record_id], kept[cand.record_id] = paths, i
            warnings += [(cand.record_id, n) for n in notes]
        else:
            failure[i] = first_failure

    skipped = []
    for i, cand in enumerate(candidates):
        if kept.get(cand.record_id) == i:
            continue
        if kept.get(cand.record_id, len(candidates)) < i:
            skipped.append((cand.record_id, "duplicate id", "kept the first valid record"))
        else:
            skipped.append((cand.record_id, *failure[i]))
    copy_prefix = f"{copy_root}/"  # string tests: two Path objects per image cost seconds at MIMIC's size
    copies = {v[len(copy_prefix):] for paths in good.values() for v in paths
              if v.startswith(copy_prefix) and "/" not in v[len(copy_prefix):]}
    return Validated(good, kept, skipped, warnings, copies, rechecked, cached)


def kept_records(candidates: list[Candidate], validated: Validated) -> list[Candidate]:
    """The candidates that will be written, in input order: for each id the one whose image
    validate_records checked and kept (the first valid one)."""
    return [candidates[i] for i in sorted(validated.kept.values())]


@dataclass
class Conversion:
    """What ``check_and_split`` decided: the kept candidates, the images each will read, the split
    of each group (or each record's own, official split), and the checks behind them."""
    kept: list[Candidate]
    images: dict[str, list[str]]  # record id -> the image paths the model should read
    split_of: dict[str, str]  # group -> "train" | "val" | "test"
    validated: Validated
    official: bool = False  # each record keeps the dataset's own split

    def split(self, cand: Candidate) -> str:
        return cand.split if self.official else self.split_of[cand.group]


OFFICIAL_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                        "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def official_split(name) -> str | None:
    """A dataset's split name (R2Gen's val, MIMIC-CXR's validate...) as train/val/test, or None."""
    return OFFICIAL_SPLIT_NAMES.get(str(name).strip().lower()) if isinstance(name, str) else None


def check_and_split(candidates: list[Candidate], index: dict[str, Path], out_dir: Path, args, *,
                    images_dirs: list[Path], fixed: dict[str, str] | None = None,
                    official: bool = False) -> Conversion:
    """Decode and check every candidate's images (8-bit copies into ``out_dir/images``), keep the
    first valid record of each id, and split: with ``official`` every record keeps its own
    ``split``; else ``fixed`` groups keep the split given (an official test set) and the other
    groups are split with --val_ratio/--test_ratio and --seed."""
    validated = validate_records(candidates, index, out_dir / "images", images_dirs=images_dirs,
                                 allow_outside=args.allow_outside_images, workers=args.workers,
                                 progress=not args.quiet, cache_dir=out_dir)
    kept = kept_records(candidates, validated)
    if official:
        return Conversion(kept, validated.good, {c.group: c.split for c in kept}, validated, official=True)
    fixed = fixed or {}
    free = [c.group for c in kept if c.group not in fixed]
    test_ratio = 0.0 if "test" in fixed.values() else args.test_ratio  # an official test set is the test set
    split_of = split_groups(free, args.val_ratio, test_ratio, args.seed)
    split_of.update({g: s for g, s in fixed.items() if any(c.group == g for c in kept)})
    return Conversion(kept, validated.good, split_of, validated)


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


def write_skipped(path: Path, skipped: list[tuple[str, str, str]]) -> Counter:
    """``skipped.tsv`` sorted by reason then id; returns the count per reason."""
    write_tsv(path, ("record_id", "reason", "detail"), sorted(skipped, key=lambda s: (s[1], s[0], s[2])))
    return Counter(reason for _, reason, _ in skipped)


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


def converter_parser(doc: str):
    """The argument parser of a converter (see medswift.core.cli)."""
    return command_parser(doc)


def add_common_args(p, output_dir: str, val_ratio: float, test_ratio: float, lang: str = "en") -> None:
    """Flags every converter has: output folder (default data/<output_dir>), language, split, seed,
    workers, strictness."""
    from medswift.core.constants import DATA

    p.add_argument("--output_dir", default=str(DATA / output_dir))
    p.add_argument("--lang", choices=LANGUAGES, default=lang, help="language of prompts and answers")
    p.add_argument("--val_ratio", type=float, default=val_ratio)
    p.add_argument("--test_ratio", type=float, default=test_ratio)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=default_workers(), help="processes that decode images")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any record is skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow_outside_images", action="store_true",
                   help="accept image paths that resolve outside --images_dir (symlinks, ../, absolute paths)")


# The launcher that trains on a converter's output, and where the last conversion is remembered so
# that a launcher that finds no data can name it (tests point MEDSWIFT_STATE_DIR elsewhere).
REPORT_LAUNCHERS = ("finetune_qwen3vl_lora.sh",)
CLASSIFICATION_LAUNCHERS = ("finetune_qwen3vl_cls.sh", "finetune_qwen3vl_lora.sh")
STATE_ENV = "MEDSWIFT_STATE_DIR"


def last_conversion_file() -> Path:
    return Path(os.environ.get(STATE_ENV) or RESULTS) / ".last_conversion.json"


def _shown(path: Path, relative: bool) -> str:
    """A path as the user would type it here: relative under the working folder, else absolute."""
    path = Path(path).resolve()
    if relative:
        try:
            return str(path.relative_to(Path.cwd().resolve()))
        except ValueError:
            pass
    return str(path)


def training_commands(out_dir: Path, launchers: tuple[str, ...], relative: bool = True) -> list[str]:
    """The exact lines that train on ``out_dir`` (first: the usual one); absolute paths work anywhere."""
    return [f"DATA_DIR={shlex.quote(_shown(out_dir, relative))} "
            f"bash {shlex.quote(_shown(ROOT / 'tools' / 'swift' / name, relative))}" for name in launchers]


def remember_conversion(out_dir: Path, commands: list[str], summary: dict) -> None:
    """Best effort: a workspace that cannot be written costs this hint, not the conversion."""
    record = {"output_dir": str(Path(out_dir).resolve()), "commands": commands, "written": summary.get("written"),
              "format": summary.get("format") or summary.get("task"),
              "when": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        path = last_conversion_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    except OSError:
        pass


def last_conversion_hint() -> str:
    """What a launcher that finds no data tells the user: the last conversion and its command."""
    try:
        record = json.loads(last_conversion_file().read_text(encoding="utf-8"))
        return f"the last conversion ({record['when']}) wrote {record['output_dir']}: {record['commands'][0]}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "convert data first: python scripts/convert_xray_swift.py --help"


def converter_entry(build_parser, convert, outputs: str, launchers: tuple[str, ...] = REPORT_LAUNCHERS):
    """A reader's ``main(argv=None) -> int``: the shared flow of ``converter_main``."""
    def main(argv: list[str] | None = None) -> int:
        return converter_main(build_parser(), convert, argv, outputs, launchers)
    return main


def converter_main(parser, convert, argv: list[str] | None, outputs: str,
                   launchers: tuple[str, ...] = REPORT_LAUNCHERS) -> int:
    """The converters' ``main``: parse, convert, report; user mistakes are one ``error:`` line (exit 2).

    ``outputs`` names what was written, with ``{out}`` standing for --output_dir; ``launchers``
    the training launchers its output feeds (the converter prints their exact command lines).
    """
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    try:
        check_ratios(args.val_ratio, args.test_ratio)
        summary = convert(args)
        write_json(out / "summary.json", summary)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the system refused: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return finish(summary, out, args.strict, outputs.format(out=out), launchers)


def finish(summary: dict, out_dir: Path, strict: bool, outputs: str,
           launchers: tuple[str, ...] = REPORT_LAUNCHERS) -> int:
    """Print the summary (summary.json is written by converter_main) and decide the exit code."""
    print(summary_line(summary))
    print(f"wrote {outputs}; skips listed in {out_dir / 'skipped.tsv'}")
    if summary.get("stale_copies_removed"):
        print(f"removed {summary['stale_copies_removed']} 8-bit copies an earlier run left in {out_dir / 'images'}")
    if summary["written"]:
        commands = training_commands(out_dir, launchers)
        print(f"train on it: {commands[0]}")
        for other in commands[1:]:
            print(f"         or: {other}")
        remember_conversion(out_dir, training_commands(out_dir, launchers, relative=False), summary)
    print(NOTICE)
    if summary["written"] == 0:
        print("error: no record was written; see skipped.tsv for the reasons", file=sys.stderr)
        return 1
    if strict and summary["skipped"]:
        print(f"error: --strict and {summary['skipped']} records were skipped", file=sys.stderr)
        return 1
    return 0


def read_csv_rows(path: Path, required: tuple[str, ...], what: str) -> list[dict]:
    """Rows of a metadata CSV as dicts; a clear error when the file or a column is missing or
    the file is not UTF-8. A short row has None for its missing cells (csv.DictReader)."""
    if not path.is_file():
        raise UsageError(f"metadata CSV not found: {path}")
    text = read_text_utf8(path, "metadata CSV")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path} lacks column(s) {', '.join(missing)}; is it {what}?")
        return list(reader)
    except csv.Error as exc:  # a NUL byte, an unterminated quote at the end
        raise UsageError(f"{path} is not a readable CSV: {exc}") from None


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
