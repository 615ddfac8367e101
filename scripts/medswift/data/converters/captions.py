"""Convert captioned medical images (CT slices, MedTrinity-style) into ms-swift JSONL.

Usage:
    python scripts/convert_captions.py --input /data/ct/captions.jsonl --images_dir /data/ct/images \
        --output_dir data/captions_swift --lang en [--group_key patient_id]

``--input`` may be:
  * a JSONL or CSV file with an image column and a caption column (``--image_key``,
    ``--caption_key``; image paths relative to ``--images_dir``, default the file's folder);
  * a folder of images with a ``<name>.txt`` caption beside each;
  * a Hugging Face ``datasets`` folder written by ``save_to_disk`` (image column of
    decoded images or paths; images are written to ``<output_dir>/images``).

Each row is one record: several rows may name one image (more captions, or questions VQA style);
the first keeps the image's id, the others get ``<id>__2``, ``__3``... in input order. Records are
split by ``--group_key`` (a patient or series column) when given, else by image (all rows of an
image in one split), and written like the other converters: ``train/val/test.jsonl``, ``skipped.tsv``,
``warnings.tsv``, ``summary.json``. Image paths must stay inside the images folder (no
``../``, absolute path or symlink out of it) unless ``--allow_outside_images`` is given.

For research only, not for diagnosis.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from medswift.core import prompts
from medswift.core.constants import IMAGE_SUFFIXES
from medswift.core.errors import UsageError
from medswift.core.files import read_text_utf8
from medswift.data.pipeline.command import add_common_args, converter_entry, converter_parser
from medswift.data.pipeline.output_files import prepare_output_dir, remove_stale_files, sample, summarise, write_lists, write_splits
from medswift.data.pipeline.records import (BadRecord, Candidate, caption_id, csv_rows, load_json_records, require_object,
                                   text_field)
from medswift.data.pipeline.splits import check_and_split


def _row(image: str, caption: str, group: str, path: Path | None, problem: tuple[str, str] | None = None) -> dict:
    """One input record: ``image`` as written in the input (its id comes from it), ``path`` the
    file to check, ``problem`` why it cannot be used."""
    return {"image": image, "caption": caption, "group": group, "path": path, "problem": problem}


def _fields(rec, where: str, image_key: str, caption_key: str, group_key: str | None) -> tuple[str, str, str]:
    """``(image, caption, group)`` of one JSONL/CSV/datasets row, every field type-checked."""
    require_object(rec, where)
    image = text_field(rec, image_key, where)
    if not image:
        raise BadRecord("no image path", f"{where}: no {image_key!r}")
    caption = text_field(rec, caption_key, where)
    group = text_field(rec, group_key, where, id_like=True) if group_key else ""
    if group_key and not group:  # falling back to one group per image could leak a patient
        raise BadRecord("no group", f"{where}: no {group_key!r}")
    return image, caption, group


def rows_from_table(path: Path, images_dir: Path, image_key: str, caption_key: str,
                    group_key: str | None) -> list[dict]:
    if path.suffix.lower() == ".csv":
        required = (image_key, caption_key) + ((group_key,) if group_key else ())
        table = [(f"data row {n}", dict(zip(required, cells))) for n, cells in
                 enumerate(csv_rows(path, required, f"a CSV with {', '.join(required)} columns"), 1)]
    else:
        table = load_json_records(path, "input")
        objects = [r for _, r in table if isinstance(r, dict)]
        if table and not objects:
            raise UsageError(f"{path}: no line is a JSON object; is it JSONL?")
        for key in (image_key, caption_key) + ((group_key,) if group_key else ()):
            if objects and not any(key in r for r in objects):
                raise UsageError(f"{path}: no row has the key {key!r}; see --image_key, --caption_key, --group_key")
    rows = []
    for where, rec in table:
        try:
            if isinstance(rec, BadRecord):
                raise rec
            image, caption, group = _fields(rec, where, image_key, caption_key, group_key)
            rows.append(_row(image, caption, group, images_dir / image))
        except BadRecord as bad:
            image = rec.get(image_key) if isinstance(rec, dict) else None
            rows.append(_row(image if isinstance(image, str) else "", "", "", None, bad.problem))
    return rows


def rows_from_folder(folder: Path) -> list[dict]:
    rows = []
    for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = img.with_suffix(".txt")
        try:
            caption = read_text_utf8(txt, "caption").strip() if txt.is_file() else ""
            rows.append(_row(img.name, caption, "", img))
        except UsageError as exc:  # one caption file in another encoding costs one record
            rows.append(_row(img.name, "", "", img, ("unreadable caption", str(exc))))
    return rows


def rows_from_hf(folder: Path, images_dir: Path, image_key: str, caption_key: str, group_key: str | None,
                 out_images: Path) -> tuple[list[dict], set[str]]:
    """Rows of a ``save_to_disk`` dataset, and the names of the decoded images written out as
    PNG files into ``out_images`` (path columns are taken relative to ``images_dir``)."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    ds = load_from_disk(str(folder))
    if isinstance(ds, DatasetDict):
        ds = concatenate_datasets([ds[k] for k in sorted(ds)])
    missing = [k for k in (image_key, caption_key) + ((group_key,) if group_key else ()) if k not in ds.column_names]
    if missing:
        raise UsageError(f"{folder}: dataset lacks column(s) {', '.join(missing)}; columns are {ds.column_names}")
    out_images.mkdir(parents=True, exist_ok=True)
    rows, written = [], set()
    for i in range(len(ds)):
        where, image = f"row {i}", ""
        try:
            try:
                rec = dict(ds[i])
            except Exception as exc:  # noqa: BLE001 - datasets decodes lazily; one bad image is one record
                raise BadRecord("unreadable image", f"{where}: {type(exc).__name__}") from None
            if hasattr(rec.get(image_key), "save"):  # a decoded PIL image: give it a file the model can read
                rec[image_key] = image = _save_decoded(rec[image_key], out_images, f"hf_{i:07d}", where)
                written.add(image)
                base = out_images
            else:
                base = images_dir
            image, caption, group = _fields(rec, where, image_key, caption_key, group_key)
            rows.append(_row(image, caption, group, base / image))
        except BadRecord as bad:
            rows.append(_row(image, "", "", None, bad.problem))
    return rows, written


def _save_decoded(image, folder: Path, stem: str, where: str) -> str:
    """Write a decoded image losslessly; returns the file name (PNG, or TIFF for the modes PNG
    cannot hold, such as CMYK or 32-bit float, which open_checked then normalises)."""
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this record's problem
        raise BadRecord("unreadable image", f"{where}: {type(exc).__name__}: {exc}") from None
    fmt = "PNG" if image.mode in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA") else "TIFF"
    name = f"{stem}.{fmt.lower()}"
    try:
        image.save(folder / name, format=fmt)
    except OSError as exc:
        if exc.errno is not None:  # disk full, read-only: the output's problem, not the record's
            raise UsageError(f"cannot write {folder / name}: {exc.strerror}") from None
        raise BadRecord("unreadable image", f"{where}: {exc}") from None
    return name


def convert(args) -> dict:
    src = Path(args.input)
    out_dir = Path(args.output_dir)
    if args.images_dir and not Path(args.images_dir).is_dir():
        raise UsageError(f"images folder not found: {args.images_dir}")
    prepare_output_dir(out_dir)
    hf_images, hf_written = out_dir / "hf_images", None
    if src.is_dir() and ((src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists()):
        images_dir = Path(args.images_dir) if args.images_dir else src
        rows, hf_written = rows_from_hf(src, images_dir, args.image_key, args.caption_key, args.group_key, hf_images)
        roots = [images_dir, hf_images]
    elif src.is_dir():
        rows, images_dir = rows_from_folder(src), src
        roots = [images_dir]
    elif src.is_file():
        images_dir = Path(args.images_dir) if args.images_dir else src.parent
        rows = rows_from_table(src, images_dir, args.image_key, args.caption_key, args.group_key)
        roots = [images_dir]
    else:
        raise UsageError(f"input not found: {src}")
    if not rows:
        raise UsageError(f"{src} holds no records")

    # Images are looked up by their path as written (sub-folders allowed); validate_records
    # refuses those that resolve outside the images folder.
    index = {r["image"]: r["path"] for r in rows if r["path"] is not None and r["path"].is_file()}
    candidates = []
    rows_per_image: Counter = Counter()
    for r in rows:
        image_id = caption_id(r["image"]) if r["image"] else ""
        # Several captions or questions may name one image (VQA style): each row is its own record
        # (the image's id, then <id>__2, __3... in input order), the image their split group.
        rows_per_image[image_id] += 1
        rid = image_id if rows_per_image[image_id] == 1 or not image_id else f"{image_id}__{rows_per_image[image_id]}"
        candidates.append(Candidate(rid, r["image"], r["problem"] or (None if r["caption"] else "empty caption"),
                                    group=r["group"] or image_id, fields={"caption": r["caption"]}))
    conv = check_and_split(candidates, index, out_dir, args, images_dirs=roots)
    rows_out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for rec in conv.kept:
        prompt = prompts.pick(rec.record_id, args.seed, args.lang, "caption")
        rows_out[conv.split(rec)].append(sample(rec.record_id, conv.images[rec.record_id], prompt,
                                                rec.fields["caption"]))
    per_split = write_splits(out_dir, rows_out)
    lists = write_lists(out_dir, conv.validated)
    if hf_written is not None:
        lists["stale_copies_removed"] += remove_stale_files(hf_images, hf_written)[0]
    return summarise("caption", len(rows), per_split, conv, lists, args, "groups", split_by=args.group_key or "image")


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--input", required=True, help="JSONL/CSV file, folder of images + .txt, or save_to_disk folder")
    p.add_argument("--images_dir",
                   help="base folder of the image paths in a JSONL/CSV/datasets column (default: the input's folder)")
    p.add_argument("--image_key", default="image")
    p.add_argument("--caption_key", default="caption")
    p.add_argument("--group_key", help="column that groups records (patient, series): never split apart")
    add_common_args(p, "captions_swift", val_ratio=0.1, test_ratio=0.1, lang="en")
    return p


main = converter_entry(build_parser, convert, '{out}/{{train,val,test}}.jsonl')
