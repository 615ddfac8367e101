"""Prompt templates for chest X-ray report generation, twelve per language.

Shared by the converter (training data), batch inference and the demo so that the
model is asked at inference time in the same words it was trained on.
"""
from __future__ import annotations

import hashlib

from medswift.core.constants import LANGUAGES  # re-exported: prompts.LANGUAGES

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

# Study samples (several views of one study, --unit study): the same twelve requests, speaking of
# the views the sample shows; {views} is filled by views_phrase ("frontal and lateral chest radiographs").
STUDY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "请根据这{views}写出影像学报告，包括所见和印象。",
        "这{views}显示了什么？请给出完整的放射科报告。",
        "作为放射科医生，请描述这{views}的表现并给出诊断印象。",
        "请结合阅读这{views}，写出检查所见与结论。",
        "请分析这{views}，说明心脏、纵隔、肺野、胸膜和骨骼的情况。",
        "根据这{views}，请生成一份简明的胸部影像报告。",
        "请仔细观察这{views}，列出异常发现；如无异常，请说明。",
        "这是同一次胸部X线检查的{views}，请写出所见和印象两部分。",
        "请对这{views}进行解读，并给出影像学印象。",
        "通过这{views}，你能得出哪些影像学发现？",
        "请用规范的放射学术语描述这{views}。",
        "请为这{views}撰写诊断报告（仅供科研使用）。",
    ),
    "en": (
        "Write a radiology report for these {views}, with findings and impression.",
        "What do these {views} show? Give a complete report.",
        "As a radiologist, describe the findings on these {views} and state your impression.",
        "Read these {views} together and write the findings and conclusion.",
        "Assess the heart, mediastinum, lungs, pleura and bones on these {views}.",
        "Generate a concise chest imaging report for these {views}.",
        "Look carefully at these {views} and list any abnormality; say so if there is none.",
        "These are {views} of one chest examination. Write the findings and the impression.",
        "Interpret these {views} and give your radiological impression.",
        "Which radiological findings can you see on these {views}?",
        "Describe these {views} in standard radiological terms.",
        "Draft a diagnostic report for these {views} (for research use).",
    ),
}

assert all(len(t) == 12 for t in (*TEMPLATES.values(), *STUDY_TEMPLATES.values())), "twelve templates per language"

# View positions (DICOM ViewPosition, as MIMIC-CXR writes them) by the kind of view they are.
FRONTAL = {"PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD"}
LATERAL = {"LATERAL", "LL"}
_COUNT = {"en": {2: "two", 3: "three", 4: "four"}, "zh": {2: "两", 3: "三", 4: "四"}}
_KIND = {"en": {"frontal": "frontal", "lateral": "lateral"}, "zh": {"frontal": "正位", "lateral": "侧位"}}


def views_phrase(lang: str, count: int, positions: list | None = None) -> str:
    """What a study sample shows, for STUDY_TEMPLATES: with every view's position known, its kinds
    ("frontal and lateral chest radiographs", "两张胸部X光片（正位和侧位）"), else their number
    ("two chest radiographs", "两张胸部X光片")."""
    kinds = []
    for position in positions or []:
        text = str(position or "").strip().upper()
        kinds.append("frontal" if text in FRONTAL else "lateral" if text in LATERAL else None)
    number = _COUNT[lang].get(count, str(count))
    if len(kinds) != count or None in kinds:
        return f"{number} chest radiographs" if lang == "en" else f"{number}张胸部X光片"
    distinct = [_KIND[lang][k] for k in dict.fromkeys(kinds)]
    if lang == "en":
        return f"{' and '.join(distinct)} chest radiographs" if len(distinct) > 1 else \
            f"{number} {distinct[0]} chest radiographs"
    return f"{number}张胸部X光片（{'和'.join(distinct)}）" if len(distinct) > 1 else f"{number}张胸部{distinct[0]}X光片"


def study_template(lang: str, index: int, count: int, positions: list | None = None) -> str:
    """Report template ``index`` for a sample of ``count`` views (one view: the single-image one)."""
    template(lang, index)  # the same checks of language and index
    if count < 2:
        return TEMPLATES[lang][index]
    return STUDY_TEMPLATES[lang][index].format(views=views_phrase(lang, count, positions))

# Longitudinal samples (--priors): the same twelve requests, asked against the prior study. {views} names
# the current views (current_views_phrase), {prior} the prior's frontal view and its age (prior_phrase); the
# images are the current views first, then the prior's frontal view (MAIRA-2's order), and the prior's
# report follows in its own marked section (prior_sections).
PRIOR_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "请根据本次{views}写出影像学报告，包括所见和印象，并与{prior}对比。",
        "与{prior}相比，本次{views}显示了什么？请给出完整的放射科报告。",
        "作为放射科医生，请对照{prior}描述本次{views}的表现并给出诊断印象。",
        "请结合{prior}阅读本次{views}，写出检查所见与结论，说明变化。",
        "请分析本次{views}，说明心脏、纵隔、肺野、胸膜和骨骼的情况，并与{prior}比较。",
        "根据本次{views}和{prior}，请生成一份简明的胸部影像报告。",
        "请仔细观察本次{views}，列出异常发现及其与{prior}相比的变化；如无异常，请说明。",
        "这是本次检查的{views}和{prior}，请写出所见和印象两部分。",
        "请对照{prior}对本次{views}进行解读，并给出影像学印象。",
        "与{prior}相比，本次{views}能得出哪些影像学发现？",
        "请用规范的放射学术语描述本次{views}，并与{prior}比较。",
        "请为本次{views}撰写诊断报告，并与{prior}对比（仅供科研使用）。",
    ),
    "en": (
        "Write a radiology report for the current {views}, with findings and impression, compared with {prior}.",
        "Compared with {prior}, what is seen on the current {views}? Give a complete report.",
        "As a radiologist, describe the findings on the current {views} against {prior} and state your impression.",
        "Read the current {views} together with {prior} and write the findings and conclusion, noting any change.",
        "Assess the heart, mediastinum, lungs, pleura and bones on the current {views}, compared with {prior}.",
        "Generate a concise chest imaging report for the current {views}, compared with {prior}.",
        "Look carefully at the current {views} and list any abnormality and its change since {prior}; "
        "say so if there is none.",
        "These are the current {views} and {prior}. Write the findings and the impression.",
        "Interpret the current {views} against {prior} and give your radiological impression.",
        "Which radiological findings, and which changes since {prior}, can you see on the current {views}?",
        "Describe the current {views} in standard radiological terms, compared with {prior}.",
        "Draft a diagnostic report for the current {views}, compared with {prior} (for research use).",
    ),
}
assert all(len(t) == 12 for t in PRIOR_TEMPLATES.values()), "twelve prior-aware templates per language"

# Marked sections of a longitudinal user turn (MAIRA-2's inputs: prior report; indication, technique,
# comparison of the current study). Names stay fixed so a model learns where each part starts.
SECTION_TITLES = {
    "en": {"prior": "PRIOR REPORT", "prior_end": "END OF PRIOR REPORT", "current": "CURRENT STUDY",
           "findings": "Findings", "impression": "Impression", "indication": "Indication",
           "technique": "Technique", "comparison": "Comparison"},
    "zh": {"prior": "既往报告", "prior_end": "既往报告结束", "current": "本次检查",
           "findings": "所见", "impression": "印象", "indication": "临床指征",
           "technique": "检查技术", "comparison": "对比"},
}
CONTEXT_FIELDS = ("indication", "technique", "comparison")  # never the current findings or impression


def current_views_phrase(lang: str, count: int, positions: list | None = None) -> str:
    """The current study's views for PRIOR_TEMPLATES, one view included ("frontal chest radiograph",
    "胸部正位X光片"); several as views_phrase says them."""
    if count >= 2:
        return views_phrase(lang, count, positions)
    text = str((positions or [None])[0] or "").strip().upper() if positions and len(positions) == 1 else ""
    kind = "frontal" if text in FRONTAL else "lateral" if text in LATERAL else None
    if lang == "en":
        return f"{kind} chest radiograph" if kind else "chest radiograph"
    return f"胸部{_KIND['zh'][kind]}X光片" if kind else "胸部X光片"


def prior_phrase(lang: str, days: int | None) -> str:
    """The prior's frontal view, the last image, and how long before the current study it was taken."""
    if lang == "en":
        plural = "s" if days != 1 else ""
        when = "" if days is None else ", taken the same day" if days == 0 else f", taken {days} day{plural} earlier"
        return f"the prior study's frontal chest radiograph (the last image{when})"
    when = "" if days is None else "，同日拍摄" if days == 0 else f"，{days}天前拍摄"
    return f"前次检查的胸部正位X光片（最后一张图像{when}）"


def prior_template(lang: str, index: int, count: int, positions: list | None, days: int | None) -> str:
    """Prior-aware template ``index`` for ``count`` current views and the prior's frontal view."""
    template(lang, index)  # the same checks of language and index
    views = current_views_phrase(lang, count, positions)
    return PRIOR_TEMPLATES[lang][index].format(views=views, prior=prior_phrase(lang, days))


def marked_sections(lang: str, prior: dict | None, context: dict | None) -> str:
    """The text after the request: the prior's findings and impression (or its whole ``report``, as a
    user typed it) in a marked section, then the current study's indication, technique and
    comparison (``context``); "" when neither."""
    titles = SECTION_TITLES[lang]
    colon = ": " if lang == "en" else "："
    parts = []
    if prior is not None:
        lines = [f"{titles[k]}{colon}{prior[k].strip()}" for k in ("findings", "impression")
                 if (prior.get(k) or "").strip()]
        if not lines and (prior.get("report") or "").strip():  # a whole report as a user gave it (demo, CLI)
            lines = [prior["report"].strip()]
        if lines:  # a prior image alone: the request names it, no empty section
            parts.append("\n".join([f"[{titles['prior']}]", *lines, f"[{titles['prior_end']}]"]))
    context_lines = [f"{titles[k]}{colon}{context[k].strip()}" for k in CONTEXT_FIELDS
                     if context and (context.get(k) or "").strip()]
    if context_lines:
        parts.append("\n".join([f"[{titles['current']}]", *context_lines]))
    return "\n\n".join(parts)


def longitudinal_prompt(lang: str, index: int, count: int, positions: list | None = None, *,
                        prior: dict | None = None, days: int | None = None, context: dict | None = None) -> str:
    """The user turn of a study sample: with a ``prior`` ({"findings", "impression"}; its frontal view
    is the last image, not counted in ``count``) the prior-aware template and the marked prior report,
    else today's study template; ``context`` adds the current indication, technique and comparison."""
    request = prior_template(lang, index, count, positions, days) if prior is not None \
        else study_template(lang, index, count, positions)
    sections = marked_sections(lang, prior, context)
    return f"{request}\n\n{sections}" if sections else request


# The sibling jobs: a smaller set each, same deterministic choice per record.
TASK_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "report": TEMPLATES,
    "chestxray14": {
        "zh": ("这张胸部X光片显示了哪些异常？请列出所见。", "请判断这张胸片中存在的病变类型。",
               "请列出这张胸部X线影像中的所有阳性发现；如无异常请回答未见异常。", "这张胸片有哪些病理表现？",
               "请对这张胸部X光片进行多标签分类。", "阅读这张胸片，指出存在的异常。"),
        "en": ("Which abnormalities does this chest X-ray show? List the findings.",
               "Name the pathologies present on this chest radiograph.",
               "List every positive finding on this chest X-ray, or say No Finding.",
               "What findings are visible on this chest film?",
               "Classify this chest X-ray into its findings (several may apply).",
               "Read this radiograph and state which abnormalities are present."),
    },
    "ham10000": {
        "zh": ("这张皮肤镜图像最可能是哪种皮肤病变？", "请判断这处皮损的诊断类别。", "这张皮肤镜照片属于哪一类病变？",
               "请对这张皮肤病变图像进行分类。", "根据皮肤镜表现，这处病变的诊断是什么？", "这是哪种皮肤病变？请给出类别。"),
        "en": ("Which kind of skin lesion does this dermoscopy image show?",
               "Give the diagnostic category of this lesion.",
               "Classify this dermoscopic image into one of the seven lesion types.",
               "What is the most likely diagnosis of this skin lesion?",
               "Name the lesion category shown in this dermoscopy photo.",
               "Which of the HAM10000 classes does this lesion belong to?"),
    },
    # Grounding (scripts/convert_grounding.py): answers are Qwen3-VL box JSON; "{finding}" is filled in.
    "grounding_detect": {
        "zh": ("请找出这张胸部X光片中的所有异常，并用边界框标出（JSON 格式，坐标为0-1000）。",
               "请在这张胸片上框出所有病变，给出每个框的类别。", "这张胸部X光片有哪些异常？请输出它们的边界框。",
               "请检测这张胸片中的异常并以JSON列出边界框和标签；如无异常请回答[]。"),
        "en": ("Find every abnormality on this chest X-ray and give its bounding box (JSON, 0-1000 coordinates).",
               "Locate all findings on this chest radiograph with boxes and labels.",
               "Which abnormalities does this chest X-ray show? Output their bounding boxes.",
               "Detect the abnormalities on this chest film as JSON boxes with labels; answer [] if there are none."),
    },
    "grounding_phrase": {
        "zh": ("请在这张胸部X光片上框出{finding}的位置。", "{finding}在这张胸片的哪里？请给出边界框。",
               "请定位这张胸片中的{finding}，以JSON输出边界框。"),
        "en": ("Where is the {finding} on this chest X-ray? Give its bounding box.",
               "Locate the {finding} on this chest radiograph with a box.",
               "Draw a bounding box around the {finding} on this chest film (JSON, 0-1000 coordinates)."),
    },
    "caption": {
        "zh": ("请描述这张医学影像。", "这张影像显示了什么？", "请写出这张影像的简要描述。",
               "请描述影像中的解剖结构和异常。", "请为这张医学图像写一段说明。", "这张图像中可以看到哪些表现？"),
        "en": ("Describe this medical image.", "What does this image show?", "Write a short description of this scan.",
               "Describe the anatomy and any abnormality in this image.", "Caption this medical image.",
               "What findings can be seen in this image?"),
    },
}



def template(lang: str, index: int, task: str = "report") -> str:
    """Template ``index`` in ``lang`` for ``task``; a clear error for anything else."""
    if lang not in TEMPLATES:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGUAGES)}")
    choices = TASK_TEMPLATES[task][lang]
    if not 0 <= index < len(choices):
        raise ValueError(f"template id must be 0..{len(choices) - 1}, got {index}")
    return choices[index]


def pick_index(record_id: str, seed: int, lang: str, task: str = "report") -> int:
    """Deterministic template choice per record: same id and seed, same template.

    A hash rather than ``random`` so the choice does not depend on record order.
    """
    digest = hashlib.sha256(f"{seed}:{lang}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % len(TASK_TEMPLATES[task][lang])


def pick(record_id: str, seed: int, lang: str, task: str = "report") -> str:
    return template(lang, pick_index(record_id, seed, lang, task), task)
