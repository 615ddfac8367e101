"""Change language in reports: which families of change words a report states, and a temporal F1.

Libra's temporal F1 asks whether a generated report describes change (new, worse, better,
stable, resolved) the way the reference does. Here the change words are grouped in five families
(``FAMILIES``), English and Chinese, and read negation-aware: "no new opacity" states no *new*,
"no interval change" / 无明显变化 state *stable*. Per record the families of the prediction are
compared with the reference's; ``f1`` is the micro F1 over (record, family) pairs, with per-family
precision, recall and F1. A model that was given no prior study cannot know what changed, so
``change_without_prior`` counts the predictions that describe change although their row says no
prior was given (``prior_given`` false, written by batch inference).

Usage::

    from medswift.eval import temporal
    temporal.change_families("The effusion has increased. No new opacity.")  # {"worsened"}
    temporal.change_families("与前片比较无明显变化。")                          # {"stable"}
    temporal.scores(references, predictions, prior_given)  # metrics.json's "temporal" section

Written here: no maintained offline package labels change words (RadEval's temporal variants need
its model weights); the lists are short and hand-checked. A proxy for research comparisons, not
for diagnosis.
"""
from __future__ import annotations

import re
from functools import lru_cache

from medswift.eval.findings import detect_lang

FAMILIES = ("new", "worsened", "improved", "stable", "resolved")

# Change words per family. "change" itself is no family: negated ("no interval change", 无变化) it
# states stability, otherwise ("has changed") it says too little to score.
TERMS = {
    "en": {
        "new": [r"\bnew(?:ly)?\b", r"\binterval(?:ly)? develop\w*", r"\bha(?:s|ve) (?:since )?developed\b",
                r"\b(?:has|have) appeared\b", r"\bnew onset\b"],
        "worsened": [r"\bwors(?:e|ened|ening)\b", r"\bincreas(?:e|ed|es|ing)\b", r"\bprogress(?:ed|ion|ing|ive)?\b",
                     r"\benlarging\b", r"\blarger\b", r"\bmore (?:prominent|conspicuous|pronounced|extensive)\b",
                     r"\bdeteriorat\w*"],
        "improved": [r"\bimprov(?:ed|ing|ement)\b", r"\bdecreas(?:e|ed|es|ing)\b", r"\bsmaller\b",
                     r"\breduc(?:ed|tion)\b", r"\bdiminish(?:ed|ing)\b", r"\bregress(?:ed|ion|ing)\b",
                     r"\bless (?:prominent|conspicuous|pronounced|extensive)\b", r"\bresolving\b"],
        "stable": [r"\bstable\b", r"\bstably\b", r"\bunchanged\b", r"\bsimilar\b", r"\bpersist(?:ent|s|ing)?\b",
                   r"\bredemonstrat\w*", r"\bagain (?:seen|noted|demonstrated|identified)\b"],
        "resolved": [r"\bresol(?:ved|ution)\b", r"\bno longer\b", r"\bcleared\b", r"\bdisappear(?:ed|ance)\b"],
        "change": [r"\bchang(?:e|ed|es)\b"],
    },
    "zh": {
        "new": [r"新(?:发|出现|见|增|的)", r"新近出现"],
        "worsened": [r"加重", r"增多", r"较前(?:[^，。；]{0,6})?(?:增大|扩大|增加)", r"进展", r"恶化", r"加剧"],
        "improved": [r"好转", r"减少", r"减轻", r"缩小", r"改善", r"部分吸收", r"较前(?:[^，。；]{0,6})?(?:变小|降低)"],
        "stable": [r"稳定", r"大致同前", r"同前", r"相仿", r"相似", r"持续存在", r"仍(?:可)?见"],
        "resolved": [r"消失", r"完全吸收", r"基本吸收", r"已吸收", r"消散", r"已(?:经)?清除"],
        "change": [r"变化", r"改变"],
    },
}
# A negation before a change word in its clause turns it off ("no new", 未见新发); "no longer" is a
# change word of its own (resolved), never a negation.
NEGATION = {
    "en": r"\b(?:no|not|without|neither|nor|negative for|free of|absence of|absent)\b(?! longer)",
    "zh": r"未见|未发现|未|没有|无(?![数法疑])|不|非",
}
CLAUSE = {"en": r"[.;!?\n]+|,|\b(?:but|however|although|though|whereas|except)\b",
          "zh": r"[。；！？;!?\n，,]+|但是?|然而|不过"}
_PATTERNS = {lang: {family: re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE)
                    for family, pats in table.items()} for lang, table in TERMS.items()}
_NEGATION = {lang: re.compile(p, re.IGNORECASE) for lang, p in NEGATION.items()}
_CLAUSE = {lang: re.compile(p, re.IGNORECASE) for lang, p in CLAUSE.items()}


@lru_cache(maxsize=65536)  # a file repeats references (views of one study, models compared)
def change_families(text: str, lang: str | None = None) -> frozenset[str]:
    """The change families ``text`` states, negation-aware (see the module docstring)."""
    lang = lang or detect_lang(text or "")
    found: set[str] = set()
    for clause in _CLAUSE[lang].split(text or ""):
        spans: list[tuple[int, int]] = []  # a longer change word hides the words inside it (新发 in 未见新发)
        for family, pattern in _PATTERNS[lang].items():
            for match in pattern.finditer(clause):
                if any(a <= match.start() < b for a, b in spans):
                    continue
                spans.append(match.span())
                negated = _NEGATION[lang].search(clause[:match.start()]) is not None
                if family == "change":
                    found.update(("stable",) if negated else ())
                elif not negated:
                    found.add(family)
    return frozenset(found)


def _f1(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1}


def scores(references: list[str], predictions: list[str], prior_given: list[bool | None] | None = None,
           langs: list[str | None] | None = None) -> dict:
    """metrics.json's ``temporal`` section: micro ``f1`` over (record, family) pairs (None when
    neither side states any change), per-family scores, how many records state change, and the
    predictions that describe change although no prior was given (``prior_given`` False; None: not
    known, e.g. rows written before batch inference recorded it)."""
    n = len(references)
    prior_given = list(prior_given) if prior_given is not None else [None] * n
    langs = list(langs) if langs is not None else [None] * n
    refs = [change_families(r, lg) for r, lg in zip(references, langs)]
    preds = [change_families(p, lg) for p, lg in zip(predictions, langs)]
    per_family = {}
    for family in FAMILIES:
        tp = sum(1 for r, p in zip(refs, preds) if family in r and family in p)
        fp = sum(1 for r, p in zip(refs, preds) if family not in r and family in p)
        fn = sum(1 for r, p in zip(refs, preds) if family in r and family not in p)
        per_family[family] = {**_f1(tp, fp, fn), "in_references": tp + fn, "in_predictions": tp + fp}
    totals = [sum(per_family[f][k] for f in FAMILIES) for k in ("in_references", "in_predictions")]
    tp = sum(len(r & p) for r, p in zip(refs, preds))
    without = [p for p, given in zip(preds, prior_given) if given is False]
    changing = sum(1 for p in without if p)
    return {
        **_f1(tp, totals[1] - tp, totals[0] - tp), "families": list(FAMILIES), "per_family": per_family,
        "references_with_change": sum(1 for r in refs if r), "predictions_with_change": sum(1 for p in preds if p),
        "rows_without_prior": len(without), "rows_prior_unknown": sum(1 for g in prior_given if g is None),
        "change_without_prior": changing,
        "change_without_prior_share": changing / len(without) if without else None,
        "note": "Change words in five families (new, worsened, improved, stable, resolved), negation-aware, English "
                "and Chinese (medswift/eval/temporal.py); micro F1 over (record, family) pairs. A rule-based proxy.",
    }
