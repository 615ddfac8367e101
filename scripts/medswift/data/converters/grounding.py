"""Convert public chest X-ray box annotations into Qwen3-VL grounding samples, split by patient.

Usage:
    python scripts/convert_grounding.py --csv /data/nih/BBox_List_2017.csv --images_dir /data/nih/images \
        --output_dir data/cxr14_boxes_swift
    python scripts/convert_grounding.py --csv /data/vindr-cxr/train.csv --images_dir /data/vindr-cxr/train \
        --output_dir data/vindr_boxes_swift --fusion majority --fusion_iou 0.4 --task detect
    python scripts/convert_grounding.py --csv /data/rsna/stage_2_train_labels.csv.gz \
        --images_dir /data/rsna/stage_2_train_images --output_dir data/rsna_boxes_swift --task ground

The layout is detected from the CSV's columns (``--format`` forces one); the file may be gzipped:
  * ``chestxray14``: NIH's ``BBox_List_2017.csv`` (``Image Index, Finding Label, Bbox [x,y,w,h]``,
    pixels of the 1024-pixel PNG); grouped by the patient prefix of the image name;
  * ``vindr``: VinDr-CXR's ``train.csv`` (``image_id, class_name, class_id, rad_id, x_min, y_min,
    x_max, y_max``; "No finding" rows carry no box; several radiologists per image, fused by
    ``--fusion``), or the PhysioNet release's ``annotations_train.csv`` (the same columns without
    class_id, 22 local labels); images ``<image_id>.dicom`` (or .dcm/.png); grouped by image (the CSV
    names no patient);
  * ``rsna``: RSNA pneumonia ``stage_2_train_labels.csv`` (``patientId, x, y, width, height, Target``;
    Target 0 rows carry no box); images ``<patientId>.dcm``; grouped by patient; label "Lung Opacity".

Tasks (``--task``): ``detect`` (default): one sample per image, every box with its label;
``ground``: one sample per (image, finding) asking where that finding is, answered with its boxes.
The answer is Qwen3-VL's grounding JSON with integer coordinates on its 0-1000 scale of the image as
stored (medswift/core/boxes.py); an image without finding answers ``[]``. Each sample repeats it in a
``solution`` column, where GRPO's box reward (``--reward_funcs medswift_boxes``) reads it.

Every box is checked against its decoded image: coordinates that are not numbers (ASCII decimals only:
"١٠٠" and "1_000" are not), zero or negative area (in pixels, and again once rounded to 0-1000: a box
under one unit would be written as a line and score IoU 0), an unknown label and a box outside the image
are listed in ``skipped_boxes.tsv`` (the box, not the image); a missing or unreadable image, an image
with more than ``--max_boxes_per_image`` box rows, or an image none of whose boxes is usable, is listed
in ``skipped.tsv``. The CSV is read as a stream in bounded memory; blank lines are counted
(``csv_blank_lines``). Writes train/val/test.jsonl, skipped.tsv, skipped_boxes.tsv, warnings.tsv,
summary.json.

For research only, not for diagnosis.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medswift.core import prompts
from medswift.core.boxes import Box, format_boxes, iou, label_key, normalise_box
from medswift.core.constants import SPLITS
from medswift.core.errors import UsageError
from medswift.core.labels import CHESTXRAY14, CHESTXRAY14_BOXED
from medswift.data.pipeline.command import add_common_args, converter_entry, converter_parser
from medswift.data.pipeline.image_index import index_images
from medswift.data.pipeline.last_conversion import REPORT_LAUNCHERS
from medswift.data.pipeline.output_files import prepare_output_dir, sample, summarise, write_lists, write_skipped, write_splits
from medswift.data.pipeline.records import Candidate
from medswift.data.pipeline.splits import Conversion, check_and_split

# Finding names per source, with the Chinese wording used in prompts (answers keep the English label).
CXR14_FINDINGS = {label: CHESTXRAY14.zh[label] for label in CHESTXRAY14_BOXED}
CXR14_ALIASES = {"infiltrate": "Infiltration"}  # the box list says "Infiltrate", Data_Entry "Infiltration"
VINDR_FINDINGS = {"Aortic enlargement": "主动脉增宽", "Atelectasis": "肺不张", "Calcification": "钙化",
                  "Cardiomegaly": "心脏增大", "Consolidation": "实变", "ILD": "间质性肺病", "Infiltration": "浸润",
                  "Lung Opacity": "肺部阴影", "Nodule/Mass": "结节/肿块", "Other lesion": "其他病变",
                  "Pleural effusion": "胸腔积液", "Pleural thickening": "胸膜增厚", "Pneumothorax": "气胸",
                  "Pulmonary fibrosis": "肺纤维化",
                  # the further local labels of the PhysioNet release (annotations_train.csv, 22 in all)
                  "Clavicle fracture": "锁骨骨折", "Edema": "肺水肿", "Emphysema": "肺气肿", "Enlarged PA": "肺动脉增宽",
                  "Lung cavity": "肺空洞", "Lung cyst": "肺囊肿", "Mediastinal shift": "纵隔移位", "Rib fracture": "肋骨骨折"}
RSNA_FINDINGS = {"Lung Opacity": "肺部阴影"}
FINDINGS_ZH = {**CXR14_FINDINGS, **VINDR_FINDINGS, **RSNA_FINDINGS}
VINDR_NO_FINDING = "no finding"

FORMATS = ("chestxray14", "vindr", "rsna")
COLUMNS = {"chestxray14": ("Image Index", "Finding Label"),
           "vindr": ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max"),
           "rsna": ("patientId", "x", "y", "width", "height", "Target")}
FUSIONS = ("majority", "union")
# Box rows per image, all readers together: VinDr-CXR's busiest image has a few dozen (3 readers);
# more is a broken or hostile file. Also bounds majority fusion (boxes x clusters per image).
MAX_BOXES_PER_IMAGE = 200
MAX_BOXES_CEILING = 2000
FUSION_RULES = {
    "majority": "boxes of one finding from different radiologists are clustered greedily (each box joins the "
                "cluster whose mean box overlaps it most, at IoU >= {iou}, one box per radiologist per cluster); "
                "a cluster drawn by more than half of the radiologists who read the image is kept as the mean of "
                "its boxes, the others are dropped",
    "union": "every radiologist's box is kept as drawn",
}


@dataclass
class RawBox:
    box: Box | None  # pixels of the stored image; None when the row's coordinates are unusable
    reader: str  # radiologist (VinDr's rad_id), "" when the source has one reader
    row: int  # line of the CSV (header = 1)
    problem: tuple[str, str] | None = None


# --------------------------------------------------------------------------- reading the CSV
CHUNK_BYTES = 1 << 20  # the CSV is read in chunks of this many (decompressed) bytes: bounded memory
MAX_LINE_BYTES = 16 << 20  # a longer line is no box CSV (NIH's lines are ~40 bytes)
BLANK_RUN = re.compile(rb"(?m)^(?:[ \t\r]*\n)+")  # whole blank lines, a run in one match (a bomb is one run)
GZIP_MAGIC = b"\x1f\x8b"


class CsvTable:
    """A box CSV, gzipped or not (told by its first bytes, not its name), read as a stream: ``header``,
    then ``rows()`` yields ``(line number, cells)``; blank lines are skipped in C-speed runs and counted
    (``blank_lines``), so a small .csv.gz that inflates to gigabytes of newlines costs seconds and a few
    MB, not a MemoryError. UTF-8 with or without a BOM; anything else is one error line. Hand-written
    over ``csv.reader`` because neither csv nor gzip bounds what a line or a file inflates to."""

    def __init__(self, path: Path):
        self.path, self.line, self.blank_lines, self.rows_read = path, 0, 0, 0
        try:
            with open(path, "rb") as probe:
                gzipped = probe.read(2) == GZIP_MAGIC
            self.stream = gzip.open(path, "rb") if gzipped else open(path, "rb")
        except FileNotFoundError:
            raise UsageError(f"box CSV not found: {path}") from None
        except OSError as exc:
            raise UsageError(f"cannot read box CSV {path}: {exc.strerror or exc}") from None
        self.reader = csv.reader(self._lines())
        self.header = [h.strip() for h in self._next_row() or []]
        if not self.header:
            raise UsageError(f"{path} is empty")

    def _read(self) -> bytes:
        try:
            return self.stream.read(CHUNK_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise UsageError(f"{self.path} is a damaged gzip file: {exc}") from None

    def _decoded(self, data: bytes) -> io.StringIO:
        try:
            return io.StringIO(data.decode("utf-8"), newline="")
        except UnicodeDecodeError as exc:
            line = self.line + data[:exc.start].count(b"\n") + 1
            raise UsageError(f"{self.path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); "
                             "re-save it as UTF-8") from None

    def _text_lines(self, data: bytes):
        for text in self._decoded(data):
            self.line += 1
            yield text

    def _lines(self):
        carry, first = b"", True
        while chunk := self._read():
            if first:
                chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if len(carry) > MAX_LINE_BYTES:
                raise UsageError(f"{self.path} line {self.line + 1} is longer than {MAX_LINE_BYTES >> 20} MB: "
                                 "not a box CSV")
            pos = 0
            for run in BLANK_RUN.finditer(data):
                yield from self._text_lines(data[pos:run.start()])
                blank = data.count(b"\n", run.start(), run.end())
                self.blank_lines += blank
                self.line += blank
                pos = run.end()
            yield from self._text_lines(data[pos:])
        if carry.strip():
            yield from self._text_lines(carry)
        self.stream.close()

    def _next_row(self) -> list[str] | None:
        try:
            return next(self.reader, None)
        except csv.Error as exc:
            raise UsageError(f"{self.path} is not a readable CSV (line {self.line}): {exc}") from None

    def rows(self):
        """``(line, cells)`` of every row after the header; rows of empty cells count as blank lines."""
        while (row := self._next_row()) is not None:
            if not any(cell.strip() for cell in row):
                self.blank_lines += 1
                continue
            self.rows_read += 1
            yield self.line, row


def detect_format(header: list[str], wanted: str, path: Path) -> str:
    if wanted != "auto":
        missing = [c for c in COLUMNS[wanted] if c not in header]
        if missing:
            raise UsageError(f"{path} lacks column(s) {', '.join(missing)} of the {wanted} layout")
        return wanted
    found = [name for name, cols in COLUMNS.items() if all(c in header for c in cols)]
    if len(found) != 1:
        raise UsageError(f"cannot tell the layout of {path} from its columns ({', '.join(header[:8])}); expected "
                         "BBox_List_2017.csv (Image Index, Finding Label, Bbox [x,y,w,h]), VinDr-CXR train.csv "
                         "(image_id, class_name, rad_id, x_min...) or RSNA stage_2_train_labels.csv (patientId, x, "
                         "y, width, height, Target); --format forces one")
    return found[0]


# A coordinate as CSV files write one: ASCII digits only (float() also takes "١٠٠" and "1_000").
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _float(text) -> float | None:
    text = str(text).strip()
    if not NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _raw_box(label: str, coords: list, corners: bool, reader: str, row: int) -> RawBox:
    """A box from ``(x, y, w, h)`` or (``corners``) ``(x1, y1, x2, y2)`` text cells."""
    values = [_float(v) for v in coords]
    if any(v is None for v in values):
        return RawBox(None, reader, row, ("coordinates not numbers", f"line {row}: {label} {coords}"))
    x1, y1, a, b = values
    x2, y2 = (a, b) if corners else (x1 + a, y1 + b)
    if x2 <= x1 or y2 <= y1:
        return RawBox(None, reader, row, ("zero or negative area", f"line {row}: {label} {coords}"))
    return RawBox(Box(label, x1, y1, x2, y2), reader, row)


def _known(label: str, findings: dict[str, str], aliases: dict[str, str] | None = None) -> str | None:
    key = label_key(label)
    if aliases and key in aliases:
        return aliases[key]
    return next((name for name in findings if label_key(name) == key), None)


class ImageBoxes:
    """What the CSV says about one image: its boxes (or their problems), its readers, whether a
    reader said "no finding"."""

    def __init__(self, image_id: str, file_names: tuple[str, ...], group: str):
        self.image_id, self.file_names, self.group = image_id, file_names, group
        self.boxes: list[RawBox] = []
        self.readers: set[str] = set()


def read_images(fmt: str, header: list[str], rows) -> tuple[dict[str, ImageBoxes], list]:
    """Images in CSV order with their raw boxes (``rows``: ``(line, cells)``, CsvTable.rows()); rows that
    name no image are returned as problems."""
    col = {name: header.index(name) for name in header if name}
    images: dict[str, ImageBoxes] = {}
    bad_rows = []

    def cell(r: list[str], name: str) -> str:
        i = col.get(name)
        return r[i].strip() if i is not None and i < len(r) else ""

    for n, r in rows:
        if fmt == "chestxray14":
            # NIH's header is "Image Index,Finding Label,Bbox [x,y,w,h],,," unquoted: the four numbers sit in
            # the four columns after the label whatever the header calls them.
            image_id, label = cell(r, "Image Index"), cell(r, "Finding Label")
            if not image_id:
                bad_rows.append((f"line {n}", "no image id", f"line {n}"))
                continue
            start = col["Finding Label"] + 1
            coords = [c.strip() for c in r[start:start + 4]]
            entry = images.setdefault(image_id, ImageBoxes(image_id, (image_id,), image_id.split("_")[0]))
            known = _known(label, CXR14_FINDINGS, CXR14_ALIASES)
            entry.readers.add("")
            if known is None:
                entry.boxes.append(RawBox(None, "", n, ("unknown label", f"line {n}: {label!r}")))
            else:
                entry.boxes.append(_raw_box(known, coords, False, "", n))
        elif fmt == "vindr":
            image_id, label, reader = cell(r, "image_id"), cell(r, "class_name"), cell(r, "rad_id")
            if not image_id:
                bad_rows.append((f"line {n}", "no image id", f"line {n}"))
                continue
            entry = images.setdefault(image_id, ImageBoxes(
                image_id, (f"{image_id}.dicom", f"{image_id}.dcm", image_id), image_id))
            entry.readers.add(reader)
            if label_key(label) == VINDR_NO_FINDING:
                continue
            known = _known(label, VINDR_FINDINGS)
            if known is None:
                entry.boxes.append(RawBox(None, reader, n, ("unknown label", f"line {n}: {label!r}")))
            else:
                entry.boxes.append(_raw_box(known, [cell(r, c) for c in ("x_min", "y_min", "x_max", "y_max")],
                                            True, reader, n))
        else:  # rsna
            image_id, target = cell(r, "patientId"), cell(r, "Target")
            if not image_id:
                bad_rows.append((f"line {n}", "no image id", f"line {n}"))
                continue
            entry = images.setdefault(image_id, ImageBoxes(image_id, (f"{image_id}.dcm", image_id), image_id))
            entry.readers.add("")
            if target == "0":
                continue
            if target != "1":
                entry.boxes.append(RawBox(None, "", n, ("unknown label", f"line {n}: Target {target!r}")))
            else:
                entry.boxes.append(_raw_box("Lung Opacity", [cell(r, c) for c in ("x", "y", "width", "height")],
                                            False, "", n))
    return images, bad_rows


# --------------------------------------------------------------------------- fusion
def fuse(boxes: list[tuple[str, Box]], readers: int, rule: str, min_iou: float) -> tuple[list[Box], int]:
    """Boxes of one image from ``readers`` radiologists ``[(reader, box)]`` -> (fused boxes, boxes
    dropped). Hand-written (about twenty lines) rather than a weighted-box-fusion package: WBF
    needs confidence scores, which reader boxes do not have, and ensemble-boxes pulls numba."""
    if rule == "union" or readers <= 1:
        return [b for _, b in boxes], 0
    need = readers // 2 + 1
    out, dropped = [], 0
    for key in sorted({label_key(b.label) for _, b in boxes}):
        clusters: list[Cluster] = []
        for reader, box in sorted(((r, b) for r, b in boxes if label_key(b.label) == key),
                                  key=lambda rb: (rb[0], rb[1].x1, rb[1].y1, rb[1].x2, rb[1].y2)):
            best, best_iou = None, min_iou
            for cluster in clusters:  # O(boxes x clusters): bounded by --max_boxes_per_image
                if reader in cluster.readers:
                    continue
                overlap = iou(box, cluster.mean)
                if overlap >= best_iou:
                    best, best_iou = cluster, overlap
            if best is None:
                best = Cluster(box.label)
                clusters.append(best)
            best.add(reader, box)
        for cluster in clusters:
            if len(cluster.readers) >= need:
                out.append(cluster.mean)
            else:
                dropped += cluster.size
    return out, dropped


class Cluster:
    """Boxes of one finding from different readers, with their running mean (no re-summing per box)."""

    def __init__(self, label: str):
        self.label, self.readers, self.size, self.sums = label, set(), 0, [0, 0, 0, 0]
        self.mean: Box | None = None

    def add(self, reader: str, box: Box) -> None:
        self.readers.add(reader)
        self.size += 1
        self.sums = [total + value for total, value in zip(self.sums, (box.x1, box.y1, box.x2, box.y2))]
        self.mean = Box(self.label, *(total / self.size for total in self.sums))


# --------------------------------------------------------------------------- samples
def finding_word(label: str, lang: str) -> str:
    return FINDINGS_ZH.get(label, label) if lang == "zh" else label


def has_area(box: Box) -> bool:
    return box.x2 > box.x1 and box.y2 > box.y1


def _sorted(boxes: list[Box]) -> list[Box]:
    return sorted(boxes, key=lambda b: (label_key(b.label), b.y1, b.x1, b.y2, b.x2))


def crowded_images(entries: dict[str, ImageBoxes], most: int) -> dict[str, tuple[str, str, str]]:
    """The skip line of each image with more than ``most`` box rows. Such an image is listed whole, its boxes
    not cut (a partial answer would teach the model to miss findings); fusion's work stays bounded too."""
    return {e.image_id: (e.image_id, "too many boxes", f"{len(e.boxes):,} box rows; at most {most} per image "
                                                       "(--max_boxes_per_image)")
            for e in entries.values() if len(e.boxes) > most}


def usable_boxes(entry: ImageBoxes, width: int, height: int, box_skips: list) -> list[tuple[str, Box]]:
    """``(reader, box)`` of the entry's boxes that fit its ``width`` x ``height`` image and keep an area once
    on the 0-1000 scale; each other box is appended to ``box_skips`` with its reason."""
    usable = []
    for raw in entry.boxes:
        problem, box = raw.problem, raw.box
        where = f"line {raw.row}: {box.label} [{box.x1:g}, {box.y1:g}, {box.x2:g}, {box.y2:g}]" if box else ""
        if problem is None and (box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height):
            problem = ("box outside the image", f"{where} in {width}x{height}")
        if problem is None and not has_area(normalise_box(box, width, height)):
            problem = ("zero area at 0-1000", f"{where} is under one unit of 1000 in {width}x{height}")
        if problem:
            box_skips.append((entry.image_id, *problem))
        else:
            usable.append((raw.reader, box))
    return usable


def image_size(path: str) -> tuple[int, int]:
    """The stored image's size (its header only; DICOMs were decoded into 8-bit copies by the checks)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def checked_answers(conv: Conversion, entries: dict, args) -> tuple[dict[str, list[Box]], list, list, int]:
    """Each kept image's answer: its boxes checked against the image's size, fused across
    readers, on the 0-1000 scale. Returns (answers, box skips, images whose every box was
    refused, boxes dropped by fusion)."""
    box_skips: list[tuple[str, str, str]] = []
    fused_away = 0
    answers: dict[str, list[Box]] = {}
    no_box = []
    for cand in conv.kept:
        entry = entries[cand.record_id]
        width, height = image_size(conv.images[cand.record_id][0])
        usable = usable_boxes(entry, width, height, box_skips)
        if entry.boxes and not usable:
            no_box.append(cand)  # it had findings, none usable: writing [] would call it normal
            continue
        fused, dropped = fuse(usable, len(entry.readers), args.fusion, args.fusion_iou)
        fused_away += dropped
        scaled = [normalise_box(b, width, height) for b in fused]
        box_skips += [(entry.image_id, "zero area at 0-1000", f"a fused {b.label} box is under one unit of 1000")
                      for b in scaled if not has_area(b)]  # a mean of thin boxes can round to a line
        answers[cand.record_id] = _sorted([b for b in scaled if has_area(b)])
    return answers, box_skips, no_box, fused_away


def grounding_samples(kept: list[Candidate], conv: Conversion, answers: dict[str, list[Box]],
                      args) -> tuple[dict[str, list[dict]], dict[str, int], int]:
    """The samples per split (one per image for ``detect``, one per finding for ``ground``), the
    images per split, and the images without finding."""
    written: dict[str, list[dict]] = {s: [] for s in SPLITS}
    images_per_split = dict.fromkeys(SPLITS, 0)
    no_finding_images = 0
    for cand in kept:
        split, boxes, images = conv.split(cand), answers[cand.record_id], conv.images[cand.record_id]
        if args.task == "detect":
            prompt = prompts.pick(cand.record_id, args.seed, args.lang, "grounding_detect")
            text = format_boxes(boxes)
            written[split].append(sample(cand.record_id, images, prompt, text, solution=text))
        else:
            for label in sorted({b.label for b in boxes}, key=label_key):
                rid = f"{cand.record_id}__{label_key(label).replace(' ', '_').replace('/', '_')}"
                prompt = prompts.pick(rid, args.seed, args.lang, "grounding_phrase").format(
                    finding=finding_word(label, args.lang))
                text = format_boxes([b for b in boxes if b.label == label])
                written[split].append(sample(rid, images, prompt, text, solution=text))
        if not boxes:
            no_finding_images += 1
            if args.task == "ground":  # nothing to ask where: listed, so read = written + skipped holds
                conv.validated.skipped.append((cand.record_id, "no finding to ground (--task ground)", ""))
                continue
        images_per_split[split] += 1
    return written, images_per_split, no_finding_images


def boxes_summary(entries: dict, conv: Conversion, answers: dict, box_skips: list, no_box: list,
                  fused_away: int) -> dict:
    """summary.json's ``boxes``, also printed as one line."""
    boxes_read = sum(len(e.boxes) for e in entries.values())
    box_reasons = Counter(reason for _, reason, _ in box_skips)
    refused = {c.record_id for c in no_box}  # their boxes are counted in skipped_boxes.tsv already
    boxes_on_skipped = sum(len(entries[rid].boxes) for rid, *_ in conv.validated.skipped if rid in entries
                           and rid not in answers and rid not in refused)
    summary = {"read": boxes_read, "skipped": len(box_skips),
               "skipped_by_reason": dict(sorted(box_reasons.items())),
               "on_skipped_images": boxes_on_skipped, "dropped_by_fusion": fused_away,
               "written": sum(len(b) for b in answers.values())}
    print(f"boxes: read {boxes_read}, skipped {len(box_skips)} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(box_reasons.items())) or 'none'}; listed in skipped_boxes.tsv), "
          f"on skipped images {boxes_on_skipped}, dropped by fusion {fused_away}, written {summary['written']}")
    return summary


def convert(args) -> dict:
    if not 0 < args.fusion_iou <= 1:
        raise UsageError(f"--fusion_iou must be in (0, 1], got {args.fusion_iou}")
    if not 1 <= args.max_boxes_per_image <= MAX_BOXES_CEILING:
        raise UsageError(f"--max_boxes_per_image must be 1-{MAX_BOXES_CEILING}, got {args.max_boxes_per_image}")
    csv_path = Path(args.csv)
    table = CsvTable(csv_path)
    header = table.header
    fmt = detect_format(header, args.format, csv_path)
    images_dirs = [Path(d) for d in args.images_dir]
    index = index_images(images_dirs)
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    entries, bad_rows = read_images(fmt, header, table.rows())
    crowded = crowded_images(entries, args.max_boxes_per_image)
    candidates = []
    for entry in entries.values():
        if entry.image_id in crowded:
            continue
        name = next((f for f in entry.file_names if f in index), entry.file_names[0])
        candidates.append(Candidate(entry.image_id, name, group=entry.group))
    conv = check_and_split(candidates, index, out_dir, args, images_dirs=images_dirs)
    answers, box_skips, no_box, fused_away = checked_answers(conv, entries, args)
    # an image whose every box was refused leaves the written set: listed with the images
    for cand in no_box:
        conv.validated.skipped.append((cand.record_id, "no usable box", "every box of the image was refused; "
                                                                         "see skipped_boxes.tsv"))
    kept = [c for c in conv.kept if c.record_id in answers]
    written, images_per_split, no_finding_images = grounding_samples(kept, conv, answers, args)
    write_splits(out_dir, written)
    write_skipped(out_dir / "skipped_boxes.tsv", box_skips, header=("image_id", "reason", "detail"))
    conv.validated.skipped.extend(bad_rows)
    conv.validated.skipped.extend(crowded.values())
    kept_groups = {c.group for c in kept}
    conv_written = Conversion(kept, conv.images, {g: s for g, s in conv.split_of.items() if g in kept_groups},
                              conv.validated)
    summary_of_boxes = boxes_summary(entries, conv, answers, box_skips, no_box, fused_away)
    lists = write_lists(out_dir, conv.validated)
    return summarise("grounding", len(entries) + len(bad_rows), images_per_split, conv_written, lists, args,
                     "patients" if fmt != "vindr" else "images",
                     format=fmt, grounding_task=args.task, csv_rows=table.rows_read,
                     csv_blank_lines=table.blank_lines,
                     samples_per_split={s: len(written[s]) for s in SPLITS}, boxes=summary_of_boxes,
                     no_finding_images=no_finding_images,
                     fusion={"rule": args.fusion if fmt == "vindr" else "none (one reader per image)",
                             "iou": args.fusion_iou,
                             "text": (FUSION_RULES[args.fusion].format(iou=args.fusion_iou) if fmt == "vindr"
                                      else "one reader per image: boxes kept as drawn")},
                     coordinates="Qwen3-VL relative 0-1000 of the image as stored: int(round(x / width * 1000)), "
                                 "[x1, y1, x2, y2]",
                     grouped_by={"chestxray14": "patient prefix of the image name", "vindr": "image (the CSV "
                                 "names no patient)", "rsna": "patientId"}[fmt])


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--csv", required=True, help="BBox_List_2017.csv, VinDr-CXR train.csv or RSNA "
                                                "stage_2_train_labels.csv (gzipped or not)")
    p.add_argument("--images_dir", action="append", required=True, help="image folder (repeat for several)")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="default: told by the columns")
    p.add_argument("--task", choices=("detect", "ground"), default="detect",
                   help="detect: all findings of an image; ground: where is <finding>?")
    p.add_argument("--fusion", choices=FUSIONS, default="majority",
                   help="VinDr-CXR: how several radiologists' boxes become one answer (docs/grounding.md)")
    p.add_argument("--fusion_iou", type=float, default=0.4, help="majority fusion: IoU that joins two boxes")
    p.add_argument("--max_boxes_per_image", type=int, default=MAX_BOXES_PER_IMAGE,
                   help=f"an image with more box rows (all readers) is listed in skipped.tsv, not written "
                        f"(default {MAX_BOXES_PER_IMAGE}; at most {MAX_BOXES_CEILING})")
    add_common_args(p, "grounding_swift", val_ratio=0.1, test_ratio=0.1, lang="en")
    return p


main = converter_entry(build_parser, convert, "{out}/{{train,val,test}}.jsonl (Qwen3-VL box JSON, 0-1000)",
                       launchers=REPORT_LAUNCHERS)  # generative: the LoRA launcher trains on it
