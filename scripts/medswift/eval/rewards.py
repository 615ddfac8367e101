"""Rule-based clinical rewards for post-training (GRPO/DPO) on chest X-ray reports.

Research only, not diagnosis. The findings reward is a *proxy* built on the toolkit's own
rule-based labeller (medswift.eval.findings: 14 CheXpert observations, English and Chinese);
it is not CheXbert, RadGraph or a radiologist, and it only sees what the labeller sees.

Usage::

    from medswift.eval import rewards
    rewards.findings_reward("Mild cardiomegaly. No effusion.", "The heart is enlarged. No pleural effusion.")
    rewards.findings_rewards(completions, references, uncertain="partial")   # a list, one per pair
    rewards.format_reward(text, reference); rewards.repetition_reward(text); rewards.think_format_reward(text)

The findings reward, in [0, 1], is ``agreement x gates``:

* agreement: an F1 between the observations the reference states (recall: every positive,
  uncertain *and negative* statement of the reference must be matched, so "no effusion" needs a
  completion that also says no effusion) and those the completion states (precision: a finding
  the completion calls present or uncertain that the reference denies or does not mention is
  wrong). A negative statement about something the reference does not mention is neither credited
  nor penalised, so padding a report with "no X" phrases cannot dilute a wrong finding.
  Findings the reference calls present or uncertain weigh twice as much as negative statements.
  "No Finding" (a normal study) is one more observation: stated when the text states any
  observation and calls none present.
* gates, each in [0, 1] and multiplied: the completion is in the reference's language (share of
  its words in that script), reads as a report (share of its words in clauses that state an
  observation or an overall normal impression, at least half the reference's), is not degenerate (share of distinct word
  3-grams / character 4-grams) and is not a hedge (it may not call more findings present or
  uncertain than any report plausibly does). Empty text, or a Thinking answer whose
  ``<think>`` is never closed, scores 0.

Uncertain mentions ("possible effusion") follow ``uncertain=`` (the ORM reads the environment
variable MEDSWIFT_REWARD_UNCERTAIN): ``partial`` (default) gives half credit when one side is
uncertain and the other positive or negative, full credit when both are uncertain; ``positive``
reads uncertain as positive (the evaluation's U-Ones policy), ``negative`` as negative (U-Zeros).
Half credit never makes hedging pay: for any belief, committing to the likelier answer earns at
least as much in expectation.

A reference that states no observation at all cannot be scored: the reward is None there (the
ms-swift plugin scores such a group 0, which gives it no advantage either way).
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

from medswift.core import thinking
from medswift.core.errors import UsageError
from medswift.eval import findings
from medswift.eval.findings import FINDINGS, NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN

# The names scripts/swift_plugins/medswift_rewards.py registers with ms-swift (test_rewards.py
# checks they agree), for launchers that check --reward_funcs without importing ms-swift.
REWARD_NAMES = ("medswift_findings", "medswift_format", "medswift_repetition", "medswift_think_format",
                "medswift_boxes",  # medswift_boxes: medswift.eval.boxes.box_reward
                "chexbert_f1")  # medswift.eval.field_rewards (needs CheXbert's weights: docs/metrics.md)
UNCERTAIN_POLICIES = ("partial", "positive", "negative")
UNCERTAIN_ENV = "MEDSWIFT_REWARD_UNCERTAIN"
# Findings whose presence makes a study abnormal (devices do not).
ABNORMAL = tuple(f for f in FINDINGS if f not in (NO_FINDING, "Support Devices"))

# Word units: a CJK ideograph, a run of Latin letters, or a run of letters of any other script.
_UNITS = re.compile(r"[\u4e00-\u9fff]|[A-Za-z]+|[^\W\d_A-Za-z\u4e00-\u9fff]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")

# Gate ramps (value at which the gate is 0, value at which it is 1), set from the bundled OpenI
# reports: every one passes its own gates (test_rewards.py checks), random and degenerate text
# does not. Lowest shares among them: English 1.0 Latin, Chinese 0.93 CJK; distinct 0.77.
LANG_RAMP = (0.7, 0.88)         # share of words in the reference's script
# Report share of the completion relative to the reference's: the bundled references are
# chatty ("Do you have any questions ...") and the labeller reads only its 14 observations, so
# an absolute threshold would fail real references; a completion that is less than half as
# report-like as its reference is padded with something else.
REPORT_RAMP = (0.25, 0.5)
DISTINCT_RAMP = (0.45, 0.75)    # share of distinct n-grams
NGRAM = {"en": 3, "zh": 4}
# Words of one clause credited per statement in it: a long clause with one finding word in a
# sea of other words is not report language.
WORDS_PER_STATEMENT = {"en": 18, "zh": 30}
# Hedge: findings called present/uncertain beyond the larger of the reference's own count and
# HEDGE_BASE (of the bundled reports, 99% call at most 4 present, none more than 7); each one
# costs 1/HEDGE_SPAN of the gate.
HEDGE_BASE, HEDGE_SPAN = 4, 4
# Observations the reference calls present or uncertain weigh this much more than negative ones
# in both recall and precision: they are rarer and a miss matters more (a "normal" template
# must not earn most of the reward on an abnormal study).
FINDING_WEIGHT = 2.0


def _ramp(value: float, lo: float, hi: float) -> float:
    return 0.0 if value <= lo else 1.0 if value >= hi else (value - lo) / (hi - lo)


def uncertain_policy(value: str | None = None) -> str:
    """The policy named by ``value`` or, when None, by MEDSWIFT_REWARD_UNCERTAIN (default partial)."""
    policy = (value if value is not None else os.environ.get(UNCERTAIN_ENV, "partial")).strip().lower()
    if policy not in UNCERTAIN_POLICIES:
        raise UsageError(f"{UNCERTAIN_ENV}={policy!r}: must be one of {', '.join(UNCERTAIN_POLICIES)}")
    return policy


def _credit(ref: int, comp: int | None, policy: str) -> float:
    """Credit for the completion's status ``comp`` (None: not stated) of an observation the
    reference states as ``ref``."""
    if comp is None:
        return 0.0
    if policy != "partial":
        as_status = POSITIVE if policy == "positive" else NEGATIVE
        ref = as_status if ref == UNCERTAIN else ref
        comp = as_status if comp == UNCERTAIN else comp
        return float(ref == comp)
    if ref == comp:
        return 1.0
    return 0.5 if UNCERTAIN in (ref, comp) else 0.0


def units(text: str) -> list[str]:
    """Word units of ``text``: CJK characters, Latin words (lower-cased), other-script words."""
    return [u.lower() for u in _UNITS.findall(text or "")]


def language_share(text: str, lang: str) -> float:
    """Share of the word units of ``text`` written in ``lang``'s script (CJK for zh, Latin for en)."""
    total = len(_UNITS.findall(text or ""))
    if not total:
        return 0.0
    return len((_CJK if lang == "zh" else _LATIN_WORD).findall(text)) / total


def distinct_share(text: str, lang: str) -> float:
    """Share of distinct word n-grams (en: 3 words; zh: 4 characters); 1.0 for very short text."""
    toks = units(text)
    n = NGRAM[lang]
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if len(grams) >= 4 else 1.0


class Analysis:
    """What the labeller reads in one text: its observation statuses and its report share."""

    __slots__ = ("labels", "normal_stated", "report_share", "n_units", "abnormal_count")

    def __init__(self, text: str, lang: str):
        clauses = findings.labelled_clauses(text, lang)
        per: dict[str, list[int]] = {}
        covered = 0
        cap = WORDS_PER_STATEMENT[lang]
        normal_stated = False
        # the whole text first: most texts state no overall normal impression at all
        maybe_normal = findings.is_normal_report(text, lang)
        for clause, mentions in clauses:
            statements = len(mentions)
            if maybe_normal and findings.is_normal_report(clause, lang):
                statements += 1
                normal_stated = True
            if statements:
                covered += min(len(_UNITS.findall(clause)), cap * statements)
            for finding, status in mentions:
                per.setdefault(finding, []).append(status)
        labels = {f: findings.aggregate(s) for f, s in per.items()}
        self.labels = {f: s for f, s in labels.items() if s is not None}
        self.normal_stated = normal_stated
        self.n_units = len(_UNITS.findall(text))
        self.report_share = covered / self.n_units if self.n_units else 0.0
        self.abnormal_count = sum(1 for f in ABNORMAL if self.labels.get(f) in (POSITIVE, UNCERTAIN))

    def observations(self, policy: str) -> dict[str, int]:
        """Stated observations plus No Finding, which is stated once the text states anything:
        negative when a finding is present, positive (a normal study) when none is present or
        uncertain; when the only abnormal findings are uncertain it follows the policy."""
        out = dict(self.labels)
        abnormal = {self.labels.get(f) for f in ABNORMAL}
        if POSITIVE in abnormal:
            out[NO_FINDING] = NEGATIVE
        elif UNCERTAIN in abnormal:
            out[NO_FINDING] = {"partial": UNCERTAIN, "positive": NEGATIVE, "negative": POSITIVE}[policy]
        elif out or self.normal_stated:
            out[NO_FINDING] = POSITIVE
        return out


def _weight(finding: str, status: int) -> float:
    return FINDING_WEIGHT if finding != NO_FINDING and status in (POSITIVE, UNCERTAIN) else 1.0


def _weighted(pairs: Iterable[tuple[float, float]]) -> float:
    pairs = list(pairs)
    return sum(c * w for c, w in pairs) / sum(w for _, w in pairs)


def agreement(ref: Analysis, comp: Analysis, policy: str = "partial") -> float:
    """F1 of the reference's stated observations (recall) against the completion's (precision)."""
    ref_obs, comp_obs = ref.observations(policy), comp.observations(policy)
    if not ref_obs or not comp_obs:
        return 0.0
    recall = _weighted((_credit(s, comp_obs.get(f), policy), _weight(f, s)) for f, s in ref_obs.items())
    judged = []
    for f, s in comp_obs.items():
        if f in ref_obs:
            judged.append((_credit(ref_obs[f], s, policy), _weight(f, ref_obs[f])))
        elif s != NEGATIVE:
            # Present or uncertain where the reference says nothing: the reference lists what it
            # saw, so this is an unsupported finding (partial policy: half for uncertain).
            judged.append((_credit(NEGATIVE, s, policy), _weight(f, s)))
        # "no X" where the reference says nothing: agrees with an unmentioned X, not credited.
    if not judged:
        return 0.0
    precision = _weighted(judged)
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def text_gates(text: str, lang: str) -> dict[str, float]:
    """The gates that need no labelling: language and repetition."""
    return {"language": _ramp(language_share(text, lang), *LANG_RAMP),
            "distinct": _ramp(distinct_share(text, lang), *DISTINCT_RAMP)}


def label_gates(comp: Analysis, ref: Analysis) -> dict[str, float]:
    """The gates read from the labels: report share (relative to the reference's) and hedging."""
    extra = comp.abnormal_count - max(ref.abnormal_count, HEDGE_BASE)
    return {"report": _ramp(comp.report_share / ref.report_share, *REPORT_RAMP),
            "hedge": 1.0 - _ramp(extra, 0, HEDGE_SPAN)}


def report_of(completion: str) -> str:
    """The report part of an answer (after ``</think>`` for the Thinking variant; "" when unclosed)."""
    return thinking.split(completion)[1]


def findings_details(completion: str, reference: str, uncertain: str | None = None) -> dict | None:
    """The findings reward with its parts (agreement, gates, language); None when the reference
    states no observation."""
    policy = uncertain_policy(uncertain)
    lang = findings.detect_lang(reference)
    ref = _reference(reference, lang)
    if not ref.labels and not ref.normal_stated:
        return None
    text = report_of(completion)
    parts = text_gates(text, lang) if text.strip() else {}
    if not parts or 0.0 in parts.values():  # empty, wrong language or degenerate: no need to label
        return {"reward": 0.0, "agreement": None, "gates": parts, "lang": lang}
    comp = Analysis(text, lang)
    agree = agreement(ref, comp, policy)
    parts.update(label_gates(comp, ref))
    reward = agree
    for value in parts.values():
        reward *= value
    return {"reward": reward, "agreement": agree, "gates": parts, "lang": lang}


def findings_reward(completion: str, reference: str, uncertain: str | None = None) -> float | None:
    """Clinical agreement of ``completion`` with ``reference`` in [0, 1] (see the module docstring);
    None when the reference states no observation. ``uncertain``: partial | positive | negative
    (default: MEDSWIFT_REWARD_UNCERTAIN, else partial)."""
    details = findings_details(completion, reference, uncertain)
    return None if details is None else details["reward"]


def findings_rewards(completions: Sequence[str], references: Sequence[str],
                     uncertain: str | None = None) -> list[float | None]:
    """findings_reward for each (completion, reference) pair; the policy is resolved once."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    policy = uncertain_policy(uncertain)
    return [findings_reward(c, r, policy) for c, r in zip(completions, references)]


# A GRPO group shares one reference: analyse each distinct reference once per process.
_REF_CACHE: dict[tuple[str, str], Analysis] = {}
_REF_CACHE_MAX = 4096


def _reference(reference: str, lang: str) -> Analysis:
    key = (reference, lang)
    hit = _REF_CACHE.get(key)
    if hit is None:
        if len(_REF_CACHE) >= _REF_CACHE_MAX:
            _REF_CACHE.clear()
        hit = _REF_CACHE[key] = Analysis(reference, lang)
    return hit


def clear_caches() -> None:
    """Forget analysed references and the labeller's clause cache (for a cold benchmark)."""
    _REF_CACHE.clear()
    findings._label_clause.cache_clear()


# ----------------------------------------------------------------------------- small rewards
LENGTH_BAND_ENV = "MEDSWIFT_REWARD_LENGTH_BAND"
# Completion length as a ratio of the reference's (word units); without a reference, absolute
# word-unit bounds per language.
DEFAULT_LENGTH_BAND = (0.5, 2.0)
ABSOLUTE_BAND = {"en": (8, 200), "zh": (15, 400)}
_TERMINAL = re.compile(r"[.!?。！？…」』\"')）]\s*$")


def length_band(value: str | None = None) -> tuple[float, float]:
    """``"lo,hi"`` (ratios of the reference's length) from ``value`` or MEDSWIFT_REWARD_LENGTH_BAND."""
    raw = value if value is not None else os.environ.get(LENGTH_BAND_ENV)
    if not raw:
        return DEFAULT_LENGTH_BAND
    try:
        lo, hi = (float(x) for x in raw.split(","))
    except ValueError:
        raise UsageError(f"{LENGTH_BAND_ENV}={raw!r}: expected two ratios 'lo,hi', e.g. 0.5,2") from None
    if not 0 < lo < hi:
        raise UsageError(f"{LENGTH_BAND_ENV}={raw!r}: expected 0 < lo < hi")
    return lo, hi


def format_reward(completion: str, reference: str | None = None,
                  band: tuple[float, float] | None = None) -> float:
    """1.0 for a non-empty report whose length lies in the band (a ratio of the reference's word
    units, default 0.5-2x) and that ends a sentence (not cut off); falls linearly to 0 at half
    the lower bound and twice the upper; 0.5x when it stops mid-sentence; 0 when empty."""
    text = report_of(completion)
    n = len(_UNITS.findall(text))
    if not n:
        return 0.0
    lang = findings.detect_lang(reference) if reference else findings.detect_lang(text)
    if reference and _UNITS.search(reference):
        lo, hi = band or length_band()
        n_ref = len(_UNITS.findall(reference))
        lo, hi = lo * n_ref, hi * n_ref
    else:
        lo, hi = ABSOLUTE_BAND[lang]
    if n < lo:
        score = _ramp(n, lo / 2, lo)
    elif n > hi:
        score = 1.0 - _ramp(n, hi, 2 * hi)
    else:
        score = 1.0
    return score * (1.0 if _TERMINAL.search(text) else 0.5)


def repetition_reward(completion: str, reference: str | None = None) -> float:
    """Share of distinct n-grams mapped to [0, 1] (the findings reward's degeneracy gate)."""
    text = report_of(completion)
    if not text.strip():
        return 0.0
    lang = findings.detect_lang(reference) if reference else findings.detect_lang(text)
    return _ramp(distinct_share(text, lang), *DISTINCT_RAMP)


def think_format_reward(completion: str) -> float:
    """For Qwen3-VL-*-Thinking: 1.0 for ``[<think>] reasoning </think> report`` with non-empty
    reasoning and report and one tag pair (the chat template may have opened ``<think>`` in the
    prompt); 0.5 when the reasoning is empty; 0 otherwise (no ``</think>``, tags repeated or
    in the wrong order, no report after the reasoning)."""
    text = completion or ""
    if text.count(thinking.CLOSE) != 1 or text.count(thinking.OPEN) > 1:
        return 0.0
    head, _ = text.split(thinking.CLOSE, 1)
    if thinking.OPEN in head and head.strip() and not head.lstrip().startswith(thinking.OPEN):
        return 0.0  # text before <think>
    reasoning, report = thinking.split(text)
    if not report or thinking.OPEN in report:
        return 0.0
    return 1.0 if reasoning else 0.5


__all__ = [
    "REWARD_NAMES", "UNCERTAIN_POLICIES", "UNCERTAIN_ENV", "LENGTH_BAND_ENV", "Analysis", "agreement",
    "clear_caches", "distinct_share", "findings_details", "findings_reward", "findings_rewards",
    "format_reward", "label_gates", "language_share", "length_band", "repetition_reward", "report_of",
    "text_gates", "think_format_reward", "uncertain_policy", "units",
]
