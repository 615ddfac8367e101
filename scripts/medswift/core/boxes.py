"""Boxes in answers: Qwen3-VL's grounding JSON, its parsing and IoU matching.

The one text form of boxes in the toolkit, shared by the grounding converter (training targets),
batch inference rows (raw answers), the report card, the GRPO box reward and the demo:

    [{"bbox_2d": [x1, y1, x2, y2], "label": "Atelectasis"}]

integer coordinates on Qwen3-VL's relative 0-1000 scale of the image as stored:
``int(round(x / width * 1000))``, the rounding ms-swift's template applies to ``objects`` boxes
(``Template.normalize_bbox`` with ``norm_bbox='norm1000'``), and with ``QWENVL_BBOX_FORMAT=new``
the same ``[x1, y1, x2, y2]`` text it writes for a ``<bbox>``. ``[]`` means no finding.

The box report card is medswift/eval/box_card.py, the GRPO box reward medswift/posttrain/rewards.py.
For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

from medswift.core import thinking

SCALE = 1000  # Qwen3-VL's relative coordinate range
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


# --------------------------------------------------------------------------- the text form
def to_scale(value: float, size: int) -> int:
    """A pixel coordinate as Qwen3-VL's 0-1000 integer (ms-swift's own rounding), kept in range."""
    return min(SCALE, max(0, int(round(value / size * SCALE))))


def normalise_box(box: Box, width: int, height: int) -> Box:
    return Box(box.label, to_scale(box.x1, width), to_scale(box.y1, height), to_scale(box.x2, width),
               to_scale(box.y2, height))


def format_boxes(boxes: list[Box]) -> str:
    """The answer text; ``json.dumps``' default separators give ``[x1, y1, x2, y2]``, the form
    ms-swift writes for a box with QWENVL_BBOX_FORMAT=new."""
    return json.dumps([{"bbox_2d": [int(b.x1), int(b.y1), int(b.x2), int(b.y2)], "label": b.label} for b in boxes],
                      ensure_ascii=False)


def pixel_boxes(boxes: list[Box], width: int, height: int) -> list[tuple[tuple[int, int, int, int], str]]:
    """Boxes in an image's pixels, as Gradio's AnnotatedImage takes them: ((x1, y1, x2, y2), label)."""
    return [((int(round(b.x1 * width / SCALE)), int(round(b.y1 * height / SCALE)),
              int(round(b.x2 * width / SCALE)), int(round(b.y2 * height / SCALE))), b.label or "box")
            for b in boxes]


def label_key(label: str) -> str:
    """Labels compare without case, underscores or extra spaces ("Pleural_Thickening" = "pleural thickening")."""
    return " ".join(str(label).replace("_", " ").split()).lower()


def _json_candidates(text: str):
    stripped = text.strip()
    yield stripped
    if "bbox" not in text:  # prose with a bracket in it ("[]" inside a report) is not a box answer
        return
    for fenced in _FENCE.findall(text):  # models often wrap JSON in ```json fences
        yield fenced.strip()
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        yield text[start:end + 1]


def parse_boxes(text) -> list[Box] | None:
    """The boxes of an answer, or None when it is not box JSON (the report card counts those as
    invalid; the reward scores them 0). ``[]`` is a valid answer: no finding. Text after a
    Thinking model's ``</think>`` is what is read. Coordinates are clamped to 0-1000 and each
    box's corners put in order."""
    return parse_first_boxes(text, None)[0]


def parse_first_boxes(text, limit: int | None) -> tuple[list[Box] | None, bool]:
    """``(boxes, cut)``: ``parse_boxes`` reading at most ``limit`` boxes of the answer (None: all), and
    whether more followed. The array is decoded item by item, so a huge answer costs ``limit`` items."""
    if not isinstance(text, str):
        return None, False
    text = thinking.split(text)[1] or ""
    for candidate in _json_candidates(text):
        try:
            value, cut = _first_items(candidate, limit) if limit is not None else (json.loads(candidate), False)
        except (ValueError, RecursionError):
            continue
        boxes = _boxes_of(value)
        if boxes is not None:
            return boxes, cut
    return None, False


def _first_items(text: str, limit: int) -> tuple[object, bool]:
    """The first ``limit`` items of the JSON array ``text`` and whether more follow (what follows the
    cut is not read); any other JSON value whole. Hand-written over json.JSONDecoder.raw_decode:
    json has no incremental array reader."""
    if not text.startswith("["):
        return json.loads(text), False
    decoder, items = json.JSONDecoder(), []
    i = _JSON_SPACE.match(text, 1).end()
    if text.startswith("]", i):
        return json.loads(text), False  # [] (and anything after it is refused by json.loads)
    while True:
        item, i = decoder.raw_decode(text, i)
        items.append(item)
        i = _JSON_SPACE.match(text, i).end()
        if text.startswith("]", i):
            if text[i + 1:].strip():
                raise ValueError("text after the array")
            return items, False
        if not text.startswith(",", i):
            raise ValueError("expected , or ]")
        if len(items) == limit:
            return items, True
        i = _JSON_SPACE.match(text, i + 1).end()


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return min(SCALE, max(0, v))  # ints stay ints, so a row's parsed boxes read as the answer did


def _boxes_of(value) -> list[Box] | None:
    if isinstance(value, dict):  # a single box object
        value = [value]
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if not isinstance(item, dict):
            return None
        coords = item.get("bbox_2d", item.get("bbox"))
        label = item.get("label", "")
        if not isinstance(coords, list) or len(coords) != 4 or not isinstance(label, str):
            return None
        nums = [_number(v) for v in coords]
        if any(v is None for v in nums):
            return None
        x1, y1, x2, y2 = nums
        out.append(Box(label, min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return out


# --------------------------------------------------------------------------- matching
def iou(a: Box, b: Box) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.area + b.area - inter)


def matched_ious(pred: list[Box], ref: list[Box]) -> list[float]:
    """IoUs of a one-to-one matching of predicted to reference boxes of the same label that
    maximises their sum (scipy's Hungarian solver); boxes of different labels never match."""
    if not pred or not ref:
        return []
    from scipy.optimize import linear_sum_assignment

    matrix = np.array([[iou(p, r) if label_key(p.label) == label_key(r.label) else 0.0 for r in ref] for p in pred])
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return [float(matrix[i, j]) for i, j in zip(rows, cols) if matrix[i, j] > 0]


def soft_f1(pred: list[Box], ref: list[Box]) -> float:
    """IoU-matched soft F1: precision = sum of matched IoUs / predicted boxes, recall = the same
    sum / reference boxes (RadVLM-GRPO's one-to-one box reward). Both empty (a correct "no
    finding"): 1; one empty: 0."""
    if not pred and not ref:
        return 1.0
    total = sum(matched_ious(pred, ref))
    if total == 0:
        return 0.0
    precision, recall = total / len(pred), total / len(ref)
    return 2 * precision * recall / (precision + recall)


def query_iou(pred: list[Box], ref: list[Box]) -> float:
    """A query's IoU (phrase grounding): matched IoUs summed over the larger of the two box
    counts, so a missing or an extra box costs; both empty: 1."""
    if not pred and not ref:
        return 1.0
    return sum(matched_ious(pred, ref)) / max(len(pred), len(ref))
