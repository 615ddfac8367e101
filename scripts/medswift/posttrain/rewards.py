"""Rule-based clinical rewards for post-training (GRPO/DPO) on chest X-ray reports.

Research only, not diagnosis. The findings reward is a *proxy* built on the toolkit's own
rule-based labeller (medswift.eval.findings: 14 CheXpert observations, English and Chinese);
it is not CheXbert, RadGraph or a radiologist, and it only sees what the labeller sees.

Usage::

    from medswift.posttrain import rewards
    rewards.findings_reward("Mild cardiomegaly. No effusion.", "The heart is enlarged. No pleural effusion.")
    rewards.findings_reward_batch(completions, references, uncertain="partial")   # a list, one per pair
    rewards.format_reward(text, reference); rewards.repetition_reward(text); rewards.think_format_reward(text)

The findings reward, in [0, 1], is ``agreement x critical x coherence x gates`` (docs/reward.md
has the rules as a radiologist would review them):

* agreement: an F1 between what the reference calls present (recall) and what the completion
  calls present (precision), "No Finding" (a study called normal) included. Statements of absence
  earn nothing: a correct normal report earns full reward however brief, and listing negatives
  earns nothing more. Denying a finding the reference reports is a false statement (a precision
  error). Laterality (left / right / bilateral) and severity (small-mild / moderate / large-severe)
  scale the credit of a finding both call present (SIDE_FACTOR, GRADE_FACTOR).
* critical: each critical finding (CRITICAL, and a large effusion) missed, invented, on the wrong
  side or at the wrong severity halves the reward.
* coherence: a completion that asserts and denies one finding earns nothing for it and half overall.
* gates, each in [0, 1] and multiplied: the completion is in the reference's language, reads as a
  report (share of its words in clauses that state an observation, relative to the reference's),
  is written in report words (report_vocabulary; junk words inside a clause lower it), is not
  degenerate (distinct n-grams) and is not a hedge. Empty text, or a Thinking answer whose
  ``<think>`` is never closed, scores 0.

Uncertain mentions ("possible effusion") follow ``uncertain=`` (MEDSWIFT_REWARD_UNCERTAIN, the
knob the report card reads too): ``partial`` (default) gives half credit when the reference is
uncertain and the completion is not, or the reference calls present what the completion calls
uncertain; an uncertain finding the reference does not report earns nothing (a false alarm, so a
hedge pays on no study). ``positive`` reads uncertain as present (U-Ones), ``negative`` as absent
(U-Zeros).

A reference that states no observation at all cannot be scored: the reward is None there (the
ms-swift plugin scores such a group 0, which gives it no advantage either way).
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

from medswift.core import thinking
from medswift.core.boxes import parse_boxes, soft_f1
from medswift.core.errors import UsageError
from medswift.eval import findings
from medswift.posttrain import report_vocabulary
from medswift.eval.findings import FINDINGS, NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN

# The names scripts/swift_plugins/medswift_rewards.py registers with ms-swift (test_rewards.py
# checks they agree), for launchers that check --reward_funcs without importing ms-swift.
REWARD_NAMES = ("medswift_findings", "medswift_format", "medswift_repetition", "medswift_think_format",
                "medswift_boxes",  # medswift_boxes: box_reward below
                "chexbert_f1", "radgraph_f1")  # medswift.posttrain.field_rewards (need weights: docs/metrics.md)
UNCERTAIN_POLICIES = tuple(findings.UNCERTAINTY_POLICIES)  # partial, positive (U-Ones), negative (U-Zeros)
UNCERTAIN_ENV = findings.UNCERTAINTY_ENV
# Findings whose presence makes a study abnormal (devices do not).
ABNORMAL = tuple(f for f in FINDINGS if f not in (NO_FINDING, "Support Devices")) + findings.EXTRA_FINDINGS
# Critical findings: each needs action within hours (the ACR's "critical results" list names
# pneumothorax, free intraperitoneal air and pneumomediastinum among chest radiograph findings); a
# large effusion (GRADED_CRITICAL with severity "large") may need drainage. Missing, inventing or
# misplacing one costs CRITICAL_FACTOR of the reward on top of the F1.
CRITICAL = ("Pneumothorax", "Pneumoperitoneum", "Pneumomediastinum")
GRADED_CRITICAL = ("Pleural Effusion",)
CRITICAL_FACTOR = 0.5
# A completion that asserts and denies one finding ("effusion ... no effusion"): the finding earns
# nothing (as a wrong one) and the whole reward is halved, so contradiction never beats an error.
CONTRADICTION_FACTOR = 0.5
# The right finding on the wrong side, or bilateral for one side; severity one or two grades off.
SIDE_FACTOR = {"opposite": 0.2, "bilateral": 0.75}
GRADE_FACTOR = {0: 1.0, 1: 0.75, 2: 0.5}
# Credit for calling a normal study normal with a single statement and no overall impression.
NARROW_NORMAL_CREDIT = 0.5
# A completion is scored on its first MAX_CHARS characters once its blanks are collapsed: the
# bundled and IU-Xray reports have at most 1,416 (99% under 750), and a cap bounds the work an
# adversarial rollout costs. What lies beyond it is not scored; its padding costs in the gates.
MAX_CHARS = 6000

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
# Share of the completion's words that reports use (medswift.posttrain.report_vocabulary), relative to
# the reference's share (capped at 1). Of 3,812 original IU-Xray reports (another text than the
# bundled one the list is built from) 95% have a share of at least 0.97, 99% at least 0.94, the
# lowest 0.857; "Effusion banana banana." has 1/3, and each junk word in a report lowers it.
VOCAB_RAMP = (0.6, 0.95)
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
    """The policy named by ``value`` or, when None, by MEDSWIFT_REWARD_UNCERTAIN (default partial);
    the report card reads the same knob (findings.uncertainty_policy)."""
    return findings.uncertainty_policy(value)


def units(text: str) -> list[str]:
    """Word units of ``text``: CJK characters, Latin words (lower-cased), other-script words."""
    return _UNITS.findall((text or "").lower())


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
    """What the labeller reads in one text: each observation's status, side and severity, the
    findings it both asserts and denies, its report share and its share of report words."""

    __slots__ = ("labels", "sides", "grades", "denied", "contradicted", "normal_stated", "report_share",
                 "vocab_share", "n_units", "abnormal_count")

    def __init__(self, text: str, lang: str):
        text = findings.normalize_space(text)[:MAX_CHARS]
        per: dict[str, list[tuple[int, str | None, int | None]]] = {}
        covered = 0
        cap = WORDS_PER_STATEMENT[lang]
        normal_stated = False
        # the whole text first: most texts state no overall normal impression at all
        maybe_normal = findings.is_normal_report(text, lang)
        for clause, mentions in findings.read_clauses(text, lang):
            statements = len(mentions)
            if maybe_normal and findings.is_normal_report(clause, lang):
                statements += 1
                normal_stated = True
            if statements:
                covered += min(len(_UNITS.findall(clause)), cap * statements)
            for finding, status, side, grade in mentions:
                per.setdefault(finding, []).append((status, side, grade))
        labels = {f: findings.aggregate(s for s, _, _ in ms) for f, ms in per.items()}
        self.labels = {f: s for f, s in labels.items() if s is not None}
        said = {f: [(side, grade) for s, side, grade in ms if s in (POSITIVE, UNCERTAIN)] for f, ms in per.items()}
        self.sides = {f: _side(side for side, _ in v) for f, v in said.items()}
        self.grades = {f: max((g for _, g in v if g), default=None) for f, v in said.items()}
        self.denied = {f for f, ms in per.items() if any(_denies(m, said[f]) for m in ms if m[0] == NEGATIVE)}
        self.contradicted = {f for f in self.denied if self.labels.get(f) == POSITIVE}
        self.normal_stated = normal_stated
        words = units(text)
        self.n_units = len(words)
        self.report_share = covered / self.n_units if self.n_units else 0.0
        known = report_vocabulary.vocabulary(lang)
        self.vocab_share = sum(w in known for w in words) / len(words) if words else 0.0
        self.abnormal_count = sum(1 for f in ABNORMAL if self.labels.get(f) in (POSITIVE, UNCERTAIN))

    def present(self, policy: str) -> dict[str, int]:
        """Observations called present (POSITIVE) or uncertain (UNCERTAIN, partial policy only;
        U-Ones reads it as present, U-Zeros drops it), with No Finding for a study called normal:
        once the text states anything and calls no abnormal finding present."""
        out = {}
        for f, status in self.labels.items():
            if status == UNCERTAIN and policy != "partial":
                status = POSITIVE if policy == "positive" else None
            if status in (POSITIVE, UNCERTAIN):
                out[f] = status
        abnormal = [out[f] for f in ABNORMAL if f in out]
        if not abnormal and (self.labels or self.normal_stated):
            out[NO_FINDING] = POSITIVE
        elif abnormal and POSITIVE not in abnormal:  # only uncertain findings (partial policy)
            out[NO_FINDING] = UNCERTAIN
        return out


def _side(sides: Iterable[str | None]) -> str | None:
    """One side for a finding's mentions: left and right together are bilateral."""
    named = {s for s in sides if s}
    if "bilateral" in named or {"left", "right"} <= named:
        return "bilateral"
    return named.pop() if named else None


def _denies(negative: tuple[int, str | None, int | None], asserted: list[tuple[str | None, int | None]]) -> bool:
    """Whether a negative mention denies what the positive mentions assert: "no effusion" does,
    "no large effusion" beside a small one and "no left effusion" beside a right one do not."""
    _, side, grade = negative
    if not asserted:
        return True
    return any((side is None or a_side in (None, side, "bilateral")) and (grade is None or grade == a_grade)
               for a_side, a_grade in asserted)


def _weight(finding: str) -> float:
    return 1.0 if finding == "Support Devices" else FINDING_WEIGHT


def _qualifier_factor(ref: Analysis, comp: Analysis, finding: str) -> float:
    """Laterality and severity agreement of a finding both call present."""
    factor = 1.0
    r_side, c_side = ref.sides.get(finding), comp.sides.get(finding)
    if r_side and c_side and r_side != c_side:
        factor *= SIDE_FACTOR["bilateral" if "bilateral" in (r_side, c_side) else "opposite"]
    r_grade, c_grade = ref.grades.get(finding), comp.grades.get(finding)
    if r_grade and c_grade:
        factor *= GRADE_FACTOR[abs(r_grade - c_grade)]
    return factor


def _pair_credit(ref: Analysis, comp: Analysis, finding: str, r: int | None, c: int | None) -> float:
    """Credit for one observation called present (POSITIVE), uncertain or not present (None) by
    the reference (r) and the completion (c). Uncertain against anything else earns half (only
    the partial policy keeps UNCERTAIN), except an uncertain finding the reference does not
    report. Asserting and denying it earns nothing, unless the
    reference reads both ways too (then the labeller cannot tell)."""
    if finding in comp.contradicted and finding not in ref.contradicted:
        return 0.0
    if r == c:
        base = 1.0
    elif c == UNCERTAIN and (r is None or finding == NO_FINDING):
        # "possible X" on a study without X is a false alarm: a hedge over findings nobody saw
        # would otherwise earn half of each on every study
        return 0.0
    elif UNCERTAIN in (r, c):
        base = 0.5
    else:
        return 0.0
    if finding == NO_FINDING and r == c == POSITIVE:
        return base * _normal_breadth(ref, comp)
    if finding == NO_FINDING or r is None or c is None:
        return base
    return base * _qualifier_factor(ref, comp, finding)


def _normal_breadth(ref: Analysis, comp: Analysis) -> float:
    """A study called normal: in full by an overall impression ("no acute cardiopulmonary
    abnormality") or by statements on two observations (heart and lungs, say); one statement alone
    ("No pneumothorax.") says the study is normal only in part, unless the reference says no more."""
    if comp.normal_stated or len(comp.labels) >= min(2, max(len(ref.labels), 1)):
        return 1.0
    return NARROW_NORMAL_CREDIT


def _is_critical(ref: Analysis, comp: Analysis, finding: str) -> bool:
    if finding in CRITICAL:
        return True
    return finding in GRADED_CRITICAL and 3 in (ref.grades.get(finding), comp.grades.get(finding))


def agreement_parts(ref: Analysis, comp: Analysis, policy: str = "partial") -> dict[str, float]:
    """F1 of what the reference calls present (recall) against what the completion calls present
    (precision), No Finding included; statements of absence earn nothing, but a completion that
    denies a finding the reference reports makes a false statement (a precision error). With it
    the multipliers: critical findings missed, invented or misplaced, and self-contradiction."""
    ref_pos, comp_pos = ref.present(policy), comp.present(policy)
    if not ref_pos or not (comp_pos or comp.labels):
        return {"f1": 0.0, "critical": 1.0, "coherence": 1.0}
    credit = {f: _pair_credit(ref, comp, f, ref_pos.get(f), comp_pos.get(f)) for f in set(ref_pos) | set(comp_pos)}
    recall = _weighted((credit[f], _weight(f)) for f in ref_pos)
    judged = [(credit[f], _weight(f)) for f in comp_pos]
    judged += [(0.0, _weight(f)) for f in ref_pos if f in comp.denied and f not in comp_pos]
    precision = _weighted(judged) if judged else 0.0
    f1 = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
    critical = 1.0
    for f, value in credit.items():
        if value < 1.0 and f != NO_FINDING and _is_critical(ref, comp, f):
            critical *= CRITICAL_FACTOR
    coherence = CONTRADICTION_FACTOR if comp.contradicted - ref.contradicted else 1.0
    return {"f1": f1, "critical": critical, "coherence": coherence}


def _weighted(pairs: Iterable[tuple[float, float]]) -> float:
    pairs = list(pairs)
    return sum(c * w for c, w in pairs) / sum(w for _, w in pairs)


def agreement(ref: Analysis, comp: Analysis, policy: str = "partial") -> float:
    """Clinical agreement in [0, 1]: agreement_parts' F1 times its critical and coherence factors."""
    parts = agreement_parts(ref, comp, policy)
    return parts["f1"] * parts["critical"] * parts["coherence"]


def text_gates(text: str, lang: str) -> dict[str, float]:
    """The gates that need no labelling: language and repetition."""
    return {"language": _ramp(language_share(text, lang), *LANG_RAMP),
            "distinct": _ramp(distinct_share(text, lang), *DISTINCT_RAMP)}


def label_gates(comp: Analysis, ref: Analysis) -> dict[str, float]:
    """The gates read from the labels: report share (relative to the reference's), report words
    and hedging."""
    extra = comp.abnormal_count - max(ref.abnormal_count, HEDGE_BASE)
    return {"report": _ramp(comp.report_share / ref.report_share, *REPORT_RAMP),
            "vocabulary": _ramp(min(1.0, comp.vocab_share / max(ref.vocab_share, 1e-9)), *VOCAB_RAMP),
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
    text = findings.normalize_space(report_of(completion))[:MAX_CHARS]
    parts = text_gates(text, lang) if text.strip() else {}
    if not parts or 0.0 in parts.values():  # empty, wrong language or degenerate: no need to label
        return {"reward": 0.0, "agreement": None, "gates": parts, "lang": lang}
    comp = Analysis(text, lang)
    agree = agreement_parts(ref, comp, policy)
    parts.update(label_gates(comp, ref))
    reward = agree["f1"] * agree["critical"] * agree["coherence"]
    for value in parts.values():
        reward *= value
    return {"reward": reward, "agreement": agree["f1"], "critical": agree["critical"],
            "coherence": agree["coherence"], "gates": parts, "lang": lang}


def findings_reward(completion: str, reference: str, uncertain: str | None = None) -> float | None:
    """Clinical agreement of ``completion`` with ``reference`` in [0, 1] (see the module docstring);
    None when the reference states no observation. ``uncertain``: partial | positive | negative
    (default: MEDSWIFT_REWARD_UNCERTAIN, else partial)."""
    details = findings_details(completion, reference, uncertain)
    return None if details is None else details["reward"]


def findings_reward_batch(completions: Sequence[str], references: Sequence[str],
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
    findings._read_clause.cache_clear()


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
    if not 0 < lo < hi < float("inf"):  # nan fails every comparison; inf (1e400 too) is no band
        raise UsageError(f"{LENGTH_BAND_ENV}={raw!r}: expected finite ratios 0 < lo < hi")
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


# --------------------------------------------------------------------------- boxes (grounding)
def box_reward(completion: str, reference: str) -> float | None:
    """The GRPO reward of one completion: soft F1 against the reference's boxes; 0 for an answer
    that is not box JSON; None (NaN to ms-swift) when the reference itself is not box JSON."""
    ref = parse_boxes(reference)
    if ref is None:
        return None
    pred = parse_boxes(completion)
    return 0.0 if pred is None else soft_f1(pred, ref)


__all__ = [
    "REWARD_NAMES", "UNCERTAIN_POLICIES", "UNCERTAIN_ENV", "LENGTH_BAND_ENV", "Analysis", "agreement",
    "agreement_parts", "CRITICAL", "box_reward",
    "clear_caches", "distinct_share", "findings_details", "findings_reward", "findings_reward_batch",
    "format_reward", "label_gates", "language_share", "length_band", "repetition_reward", "report_of",
    "text_gates", "think_format_reward", "uncertain_policy", "units",
]
