"""The classification tasks' label sets, answer wording and answer parsing, and labels.json's reader.

One definition per task (ChestX-ray14's fourteen findings live here and nowhere else), shared by
its converter (data/converters: the generative and ``--task_type seq_cls`` JSONL, labels.json),
the grounding converter (the box labels), the prediction script (which parses generative
answers back to labels) and the classification report card (which reads labels.json).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medswift.core import thinking
from medswift.core.constants import MULTI_LABEL as MULTI
from medswift.core.constants import SINGLE_LABEL as SINGLE
from medswift.core.errors import UsageError
from medswift.core.files import read_text_utf8


@dataclass(frozen=True)
class Task:
    name: str
    problem_type: str
    labels: tuple[str, ...]
    zh: dict[str, str]  # label -> Chinese name
    en: dict[str, str] = field(default_factory=dict)  # label -> English wording, when not the label itself
    none_label: str | None = None  # multi-label: the label meaning "nothing else"

    def english(self, label: str) -> str:
        return self.en.get(label, label.replace("_", " "))

    def word(self, label: str, lang: str) -> str:
        return self.zh[label] if lang == "zh" else self.english(label)


CHESTXRAY14 = Task(
    name="chestxray14", problem_type=MULTI, none_label="No Finding",
    # NIH's order; "No Finding" last, as the 15th label
    labels=("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
            "No Finding"),
    zh={"Atelectasis": "肺不张", "Cardiomegaly": "心脏增大", "Effusion": "胸腔积液", "Infiltration": "浸润",
        "Mass": "肿块", "Nodule": "结节", "Pneumonia": "肺炎", "Pneumothorax": "气胸", "Consolidation": "实变",
        "Edema": "肺水肿", "Emphysema": "肺气肿", "Fibrosis": "肺纤维化", "Pleural_Thickening": "胸膜增厚",
        "Hernia": "膈疝", "No Finding": "未见异常"},
)
# The eight findings NIH drew boxes for (BBox_List_2017.csv), the first eight in NIH's order.
CHESTXRAY14_BOXED = CHESTXRAY14.labels[:8]

HAM10000 = Task(
    name="ham10000", problem_type=SINGLE,
    labels=("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
    en={"akiec": "actinic keratosis / intraepithelial carcinoma", "bcc": "basal cell carcinoma",
        "bkl": "benign keratosis-like lesion", "df": "dermatofibroma", "mel": "melanoma",
        "nv": "melanocytic nevus", "vasc": "vascular lesion"},
    zh={"akiec": "光线性角化病/上皮内癌", "bcc": "基底细胞癌", "bkl": "良性角化样病变", "df": "皮肤纤维瘤",
        "mel": "黑色素瘤", "nv": "黑色素细胞痣", "vasc": "血管病变"},
)

TASKS = {t.name: t for t in (CHESTXRAY14, HAM10000)}


# --------------------------------------------------------------------------- answers
def format_answer(task: Task, labels: list[str], lang: str) -> str:
    """The generative target: labels in the task's fixed order, in words a reader understands."""
    ordered = [lab for lab in task.labels if lab in labels]
    if task.problem_type == SINGLE:
        (lab,) = ordered
        return f"诊断：{task.zh[lab]}（{lab}）。" if lang == "zh" else f"Diagnosis: {task.english(lab)} ({lab})."
    words = [task.word(lab, lang) for lab in ordered]
    return f"所见：{'、'.join(words)}。" if lang == "zh" else f"Findings: {', '.join(words)}."


def _patterns(task: Task) -> list[tuple[str, re.Pattern]]:
    pats = []
    for lab in task.labels:
        forms = {lab, task.english(lab), task.zh[lab], lab.replace("_", " ")}
        ascii_forms = [re.escape(f) for f in forms if f.isascii()]
        cjk_forms = [re.escape(f) for f in forms if not f.isascii()]
        parts = []
        if ascii_forms:  # whole words only: "mel" must not match "melanocytic"
            parts.append(r"(?<![A-Za-z])(?:" + "|".join(sorted(ascii_forms, key=len, reverse=True)) + r")(?![A-Za-z])")
        parts += cjk_forms
        pats.append((lab, re.compile("|".join(parts), re.IGNORECASE)))
    return pats


def parse_answer(task: Task, text: str | None) -> list[str] | None:
    """Labels named in a generated answer, in task order; None when it names none (unparseable)
    or, for a single-label task, names several different classes."""
    if not text:
        return None
    text = thinking.split(text)[1]
    found = [lab for lab, pat in _patterns(task) if pat.search(text)]
    if task.problem_type == SINGLE:
        return found if len(found) == 1 else None
    if task.none_label in found and len(found) > 1:
        found.remove(task.none_label)  # "No Finding" next to a finding: the finding wins
    return found or None


def multi_hot(task: Task, labels: list[str]) -> list[int]:
    return [1 if lab in labels else 0 for lab in task.labels]


def load_labels(path: Path) -> dict:
    """A ``labels.json``: its problem type and label order, checked (any task name; the
    prediction script also needs it to be one of ``TASKS`` to parse generated answers)."""
    path = Path(path)
    try:
        spec = json.loads(read_text_utf8(path, "labels file"))
    except ValueError:
        raise UsageError(f"labels file is not JSON: {path}") from None
    if not isinstance(spec, dict) or spec.get("problem_type") not in (SINGLE, MULTI):
        raise UsageError(f"{path}: problem_type must be {MULTI!r} or {SINGLE!r}")
    labels = spec.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels)
            or len(set(labels)) != len(labels)):
        raise UsageError(f"{path}: 'labels' must be a list of at least two distinct names")
    return {**spec, "task": spec.get("task", "unknown")}
