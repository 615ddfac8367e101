"""R2Gen's report normalisation, so text metrics line up with the published IU-Xray/MIMIC-CXR tables.

R2Gen (Chen et al., EMNLP 2020; github.com/cuhksz-nlp/R2Gen, modules/tokenizers.py and
modules/metrics.py) cleans every report with ``clean_report_iu_xray`` or
``clean_report_mimic_cxr``, splits the result on whitespace, and hands the space-joined
tokens straight to pycocoevalcap's Bleu/Meteor/Rouge (no PTB tokenizer). Its ground truths
are also cut to ``max_seq_length - 1`` tokens (60 for IU-Xray, 100 for MIMIC-CXR in its run
scripts; the first id is the start token), because they are decoded back from the truncated
id sequences.

No maintained package exposes these rules, so they are written here from R2Gen's published
behaviour (the facts: which replacements, how often, in which order; the code is ours).
The quirks are kept on purpose, because they change the scores:

* string replacements run a fixed number of times (``..`` -> ``.`` three times for IU-Xray,
  eight for MIMIC-CXR), so long runs of dots or underscores are only partly collapsed;
* ``"1. "`` is removed anywhere (``"11. x"`` becomes ``"1x"``), ``"2. "``..``"5. "`` after a
  space become sentence breaks, later numbers stay;
* the per-sentence character filter is the class ``[.,?;*!%^&_+():-\\[\\]{}]``, in which
  ``:-\\[`` is a *range* (``:`` to ``[``): it removes ``: ; < = > ? @ [`` and ``A-Z`` but
  keeps the hyphen;
* empty sentences are kept (R2Gen's emptiness test compares a string with a list, so it is
  always true), which leaves a lone ``.`` token behind them;
* IU-Xray newlines are not replaced (they only act as whitespace when the text is split).

Not mirrored: R2Gen maps words seen fewer than 3 (IU-Xray) or 10 (MIMIC-CXR) times in its
training split to ``<unk>`` in the ground truth. That needs R2Gen's own training split and
vocabulary, and an ``<unk>`` in the reference can only be matched by a model that writes
``<unk>``; a model writing real words is scored against the real words here.
"""
from __future__ import annotations

import re

STYLES = ("iu_xray", "mimic_cxr")
# R2Gen's --max_seq_length in run_iu_xray.sh / run_mimic_cxr.sh, less the start token.
REFERENCE_MAX_TOKENS = {"iu_xray": 59, "mimic_cxr": 99}

# R2Gen's character class, character for character: ":-\[" is the range ':'..'['.
_DROP_CHARS = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _replace_times(text: str, old: str, new: str, times: int) -> str:
    for _ in range(times):
        text = text.replace(old, new)
    return text


def _number_breaks(text: str) -> str:
    """Enumerations: "1. " goes, ". 2. ".. ". 5. " and " 2. ".. " 5. " become ". "."""
    text = text.replace("1. ", "")
    for k in "2345":
        text = text.replace(f". {k}. ", ". ")
    for k in "2345":
        text = text.replace(f" {k}. ", ". ")
    return text


def _clean_sentence(sentence: str) -> str:
    for quote_or_slash in ('"', "/", "\\", "'"):
        sentence = sentence.replace(quote_or_slash, "")
    return _DROP_CHARS.sub("", sentence.strip().lower())


def _join(sentences: list[str]) -> str:
    return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def clean_iu_xray(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``: the cleaned report, sentences joined by ``" . "``."""
    text = _number_breaks(_replace_times(report, "..", ".", 3))
    return _join(text.strip().lower().split(". "))


def clean_mimic_cxr(report: str) -> str:
    """R2Gen's ``clean_report_mimic_cxr``: newlines to spaces, then the same steps with more passes."""
    text = report.replace("\n", " ")
    text = _replace_times(text, "__", "_", 7)
    text = _replace_times(text, "  ", " ", 6)
    text = _number_breaks(_replace_times(text, "..", ".", 8))
    return _join(text.strip().lower().split(". "))


CLEANERS = {"iu_xray": clean_iu_xray, "mimic_cxr": clean_mimic_cxr}


def tokens(report: str, style: str, max_tokens: int | None = None) -> list[str]:
    """The whitespace tokens R2Gen scores; ``max_tokens`` cuts them as R2Gen cuts its ground truths."""
    words = CLEANERS[style](report).split()
    return words[:max_tokens] if max_tokens else words


def style_from_format(fmt) -> tuple[str, str]:
    """(style, why) from a converter summary's ``format``: MIMIC wording -> mimic_cxr, else iu_xray."""
    if isinstance(fmt, str) and "mimic" in fmt.lower():
        return "mimic_cxr", f"from the dataset summary's format {fmt!r}"
    if isinstance(fmt, str) and re.search(r"(?:^|[^a-z])iu|r2gen|openi", fmt.lower()):
        return "iu_xray", f"from the dataset summary's format {fmt!r}"
    return "iu_xray", "default (no dataset summary format names IU-Xray or MIMIC-CXR)"
