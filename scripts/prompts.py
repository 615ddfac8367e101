"""Prompt templates for chest X-ray report generation, twelve per language.

Shared by the converter (training data), batch inference and the demo so that the
model is asked at inference time in the same words it was trained on.
"""
from __future__ import annotations

import hashlib

LANGUAGES = ("zh", "en")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "请根据这张胸部X光片写出影像学报告，包括所见和印象。",
        "这张胸片显示了什么？请给出完整的放射科报告。",
        "作为放射科医生，请描述这张胸部X线影像的表现并给出诊断印象。",
        "请阅读这张胸部正位或侧位片，写出检查所见与结论。",
        "请分析这张胸部X光影像，说明心脏、纵隔、肺野、胸膜和骨骼的情况。",
        "根据这张X光片，请生成一份简明的胸部影像报告。",
        "请仔细观察这张胸部平片，列出异常发现；如无异常，请说明。",
        "这是一张胸部X线检查图像，请写出所见和印象两部分。",
        "请对这张胸片进行解读，并给出影像学印象。",
        "通过这张胸部X光影像，你能得出哪些影像学发现？",
        "请用规范的放射学术语描述这张胸部X光片。",
        "请为这张胸部X光片撰写诊断报告（仅供科研使用）。",
    ),
    "en": (
        "Write a radiology report for this chest X-ray, with findings and impression.",
        "What does this chest radiograph show? Give a complete report.",
        "As a radiologist, describe the findings on this chest X-ray and state your impression.",
        "Read this frontal or lateral chest film and write the findings and conclusion.",
        "Assess the heart, mediastinum, lungs, pleura and bones on this chest X-ray.",
        "Generate a concise chest imaging report for this radiograph.",
        "Look carefully at this chest film and list any abnormality; say so if there is none.",
        "This is a chest X-ray examination. Write the findings and the impression.",
        "Interpret this chest radiograph and give your radiological impression.",
        "Which radiological findings can you see on this chest X-ray?",
        "Describe this chest radiograph in standard radiological terms.",
        "Draft a diagnostic report for this chest X-ray (for research use).",
    ),
}

assert all(len(t) == 12 for t in TEMPLATES.values()), "twelve templates per language"


def template(lang: str, index: int) -> str:
    """Template ``index`` (0-11) in ``lang``; a clear error for anything else."""
    if lang not in TEMPLATES:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGUAGES)}")
    choices = TEMPLATES[lang]
    if not 0 <= index < len(choices):
        raise ValueError(f"template id must be 0..{len(choices) - 1}, got {index}")
    return choices[index]


def pick_index(record_id: str, seed: int, lang: str) -> int:
    """Deterministic template choice per record: same id and seed, same template.

    A hash rather than ``random`` so the choice does not depend on record order.
    """
    digest = hashlib.sha256(f"{seed}:{lang}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % len(TEMPLATES[lang])
