"""The image checks: every candidate's images looked up (inside the images folders), decoded
once in a pool of worker processes (8-bit copies where needed), cached across runs, and the
verdict per record (kept, or skipped with its reason).

Whatever a decoder raises costs one listed record, never the run; a worker process that dies
costs a warning and a re-check here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from medswift.core.errors import UsageError, describe
from medswift.core.images import ImageRejected, open_checked
from medswift.data.pipeline.image_index import FolderCachedResolve
from medswift.data.pipeline.records import Candidate


SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")  # an id usable as a copy's file name as it is


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
    return f"{name}: {describe(exc)}"


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
    resolve_view = view_resolver(index, images_dirs, roots, allow_outside)
    failure, views, jobs = plan_checks(candidates, resolve_view, copy_root)
    job_list = list(jobs.values())
    results, rechecked, cached = check_images(job_list, workers, progress, CheckCache(cache_dir))
    checked = {job[1]: res for job, res in zip(job_list, results)}
    for res in results:
        if res.status == WRITE_FAILED:
            raise UsageError(f"cannot write the 8-bit copy {res.value}")
    good, kept, warnings = keep_first_valid(candidates, failure, views, checked)
    skipped = list_skipped(candidates, kept, failure)
    copy_prefix = f"{copy_root}/"  # string tests: two Path objects per image cost seconds at MIMIC's size
    copies = {v[len(copy_prefix):] for paths in good.values() for v in paths
              if v.startswith(copy_prefix) and "/" not in v[len(copy_prefix):]}
    return Validated(good, kept, skipped, warnings, copies, rechecked, cached)


# A view as looked up: the resolved path of its image, or why it has none ((reason, detail)).
View = tuple[str | None, tuple[str, str] | None]


def view_resolver(index: dict[str, Path], images_dirs: list[Path], roots: list[Path], allow_outside: bool):
    """``resolve_view(record_id, group, image_name) -> View``: the image's real path, refused when
    it is missing, unresolvable, outside the images folders, or already the image of another group."""
    where = ", ".join(str(d) for d in images_dirs)
    claimed: dict[str, tuple[str, str]] = {}  # resolved image path -> the first (id, group) that uses it
    inside = tuple(str(root).rstrip("/") + "/" for root in roots)  # a resolved path below a root starts so
    resolve = FolderCachedResolve()

    def resolve_view(record_id: str, group: str, image_name: str) -> View:
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

    return resolve_view


def plan_checks(candidates: list[Candidate], resolve_view, copy_root: Path) -> tuple[
        dict[int, tuple[str, str]], dict[int, list[View]], dict[str, tuple[str, str, str]]]:
    """Per candidate index: why it fails before any decoding, or its views looked up; and one
    check job per distinct image (resolved path -> (copy key, path, copy folder))."""
    failure: dict[int, tuple[str, str]] = {}  # candidate index -> (reason, detail)
    views: dict[int, list[View]] = {}  # per view: (path, failure)
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
    return failure, views, jobs


def keep_first_valid(candidates: list[Candidate], failure: dict[int, tuple[str, str]],
                     views: dict[int, list[View]], checked: dict[str, CheckResult]) -> tuple[
        dict[str, list[str]], dict[str, int], list[tuple[str, str]]]:
    """For each id the first candidate with at least one good view: ``(good, kept, warnings)``.
    A candidate with no good view gets its first view's failure in ``failure``."""
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
    return good, kept, warnings


def list_skipped(candidates: list[Candidate], kept: dict[str, int],
                 failure: dict[int, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(record_id, reason, detail)`` of every candidate not kept."""
    skipped = []
    for i, cand in enumerate(candidates):
        if kept.get(cand.record_id) == i:
            continue
        if kept.get(cand.record_id, len(candidates)) < i:
            skipped.append((cand.record_id, "duplicate id", "kept the first valid record"))
        else:
            skipped.append((cand.record_id, *failure[i]))
    return skipped


def kept_records(candidates: list[Candidate], validated: Validated) -> list[Candidate]:
    """The candidates that will be written, in input order: for each id the one whose image
    validate_records checked and kept (the first valid one)."""
    return [candidates[i] for i in sorted(validated.kept.values())]
