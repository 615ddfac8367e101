"""The one format of a prediction row, for reports and for labels.

Report rows are written by batch inference and by the server client and read by the report
card; label rows are written by the classifier and read by the classification report card.
"""
from __future__ import annotations

from medswift.core import thinking
from medswift.core.boxes import parse_boxes
from medswift.infer.inputs import Item

REPORT_ROW_FIELDS = ("key", "id", "image", "images", "control", "prompt", "response", "reasoning", "reference",
                     "model", "adapter", "backend", "generation", "dataset", "seconds", "warnings", "boxes",
                     "prior_given", "prior_study_id", "finish_reason")


def report_row(item: Item, text: str | None, *, model: str, adapter: str | None, backend: str, generation: dict,
               seconds: float, hide_reasoning: bool = False, warnings: list[str] | None = None,
               finish_reason: str | None = None) -> dict:
    """``response`` is the model's text (only the report after ``</think>`` with
    ``hide_reasoning``); ``reasoning`` is what a Thinking model wrote before it, or None;
    ``boxes`` the parsed boxes when the answer is box JSON, else None; ``finish_reason`` the engine's
    ("length": cut by max_new_tokens, "stop": finished), None where unknown."""
    reasoning, report = thinking.split(text)
    row = {"key": item.key, "id": item.record_id, "image": item.image, "images": list(item.images),
           "control": item.control, "prompt": item.prompt, "response": report if hide_reasoning else (text or ""),
           "reasoning": reasoning, "reference": item.reference, "model": model, "adapter": adapter,
           "backend": backend, "generation": generation, "dataset": item.dataset, "seconds": round(seconds, 4),
           "warnings": list(warnings or []), "boxes": parsed_boxes(text), "finish_reason": finish_reason,
           # the report card counts change described without a prior (medswift/eval/temporal.py)
           "prior_given": item.prior_given, "prior_study_id": item.prior_study_id}
    return row


def parsed_boxes(text: str | None) -> list[dict] | None:
    """The boxes of an answer that is Qwen3-VL box JSON (grounding), as ``[{"bbox_2d", "label"}]`` on
    the 0-1000 scale; None for any other answer. ``response`` keeps the raw text either way."""
    found = parse_boxes(text)
    return None if found is None else [{"bbox_2d": [b.x1, b.y1, b.x2, b.y2], "label": b.label} for b in found]


def label_row(item: Item, true: list[str], pred: list[str] | None, scores: list[float] | None,
              response: str | None) -> dict:
    """``pred`` None: an answer that names no label (counted as wrong, never dropped)."""
    return {"key": item.key, "id": item.record_id, "true": true, "pred": pred, "scores": scores, "response": response}
