"""The Qwen3-VL-*-Thinking answer form: ``<think>reasoning</think>`` before the report.

Shared by the converter (writes it when a record has reasoning), batch inference and the
demo (show or hide the reasoning) and the evaluation (scores only the report).
"""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def join(reasoning: str | None, report: str) -> str:
    """The training target; records without reasoning stay exactly as they were."""
    reasoning = (reasoning or "").strip()
    return f"{OPEN}\n{reasoning}\n{CLOSE}\n\n{report}" if reasoning else report


def split(text: str | None) -> tuple[str | None, str]:
    """``(reasoning or None, report)``. An unclosed ``<think>`` (generation cut short) is all
    reasoning and no report."""
    text = text or ""
    if CLOSE in text:
        head, report = text.rsplit(CLOSE, 1)
        return head.split(OPEN, 1)[-1].strip(), report.strip()
    if text.lstrip().startswith(OPEN):
        return text.lstrip()[len(OPEN):].strip(), ""
    return None, text.strip()
