"""The words chest X-ray reports are written in, for the clinical reward's report-likeness gate:
a completion padded with words no report uses ("Effusion banana banana.") is not a report, even
when every clause also names a finding. Research only, not diagnosis.

The list is built from the bundled OpenI reports (data/openi/openi-en.json, openi-zh.json: every
English word, every Chinese character used in at least MIN_COUNT reports' texts) plus the
clinical terms the labeller reads (its English phrase tables, which include the CheXpert
labeller's published mention phrases, and every Chinese character of its Chinese tables), so a
synonym the labeller knows is never junk. It is stored in report_vocabulary.json beside this
module; ``python -m medswift.posttrain.report_vocabulary`` rebuilds it (test_rewards.py checks the
stored file is what the build gives).
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

VOCAB_FILE = Path(__file__).with_name("report_vocabulary.json")
MIN_COUNT = 2
_LATIN = re.compile(r"[A-Za-z]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Report words the bundled set happens not to use (or uses once): anatomy, signs and devices a
# radiologist writes (the labeller's synonyms are added from its tables).
EXTRA_EN = """
angle angles apices apex basal base bases basilar bibasilar biapical costophrenic cardiophrenic hilar
hila hilum perihilar retrocardiac paratracheal subpulmonic subsegmental segmental lobar lingula lingular
hemithorax hemidiaphragm hemidiaphragms diaphragm kerley septal cardiothoracic ratio collapse collapsed
blunting blunted meniscus cephalization redistribution pneumoperitoneum pneumomediastinum free air
tension shift deviation tracheal trachea carina endotracheal nasogastric enteric tip projects terminates
svc cavoatrial junction cm mm ground glass reticular reticulation reticulonodular interstitial
peribronchial cuffing thickening bronchiectasis bullae bulla emphysema hyperinflation hyperexpanded
lucency lucent osteopenia scoliosis kyphosis spondylosis osteophytes degenerative sternotomy wires
clips picc port catheter pacemaker leads icd defibrillator stent valve prosthetic arthroplasty
hardware cannula drain tube tubes line lines severe marked massive tiny trace minimal moderate large
small mild mildly moderately markedly bilateral bilaterally left right unchanged stable increased
decreased new interval improved worsening resolved resolving prior comparison
""".split()


def _report_texts(path: Path) -> list[str]:
    return [a["caption"] for a in json.loads(Path(path).read_text(encoding="utf-8"))["annotations"]]


def _frequent(units_per_report, min_count: int) -> set[str]:
    counts = Counter(u for units in units_per_report for u in set(units))
    return {u for u, n in counts.items() if n >= min_count}


def build(en_json: Path, zh_json: Path, min_count: int = MIN_COUNT) -> dict[str, list[str]]:
    """{"en": sorted words, "zh": sorted characters} from the two OpenI files and the labeller."""
    from medswift.eval import findings  # the labeller's phrase tables

    en = _frequent(([w.lower() for w in _LATIN.findall(t)] for t in _report_texts(en_json)), min_count)
    zh = _frequent((_CJK.findall(t) for t in _report_texts(zh_json)), min_count)
    en |= set(EXTRA_EN)
    for table in (findings.MENTIONS_EN, findings.NORMAL_EN):
        for pats in table.values():
            # letters of the patterns, escapes (\\b, \\s) left out; a stem ("opacit") is harmless
            en |= {w.lower() for p in pats for w in re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]", " ", p))}
    for table in (findings.MENTIONS_ZH, findings.NORMAL_ZH):
        for pats in table.values():
            zh |= {c for p in pats for c in _CJK.findall(p)}
    return {"en": sorted(en), "zh": sorted(zh)}


@lru_cache(maxsize=None)
def vocabulary(lang: str) -> frozenset[str]:
    """The stored vocabulary of one language ("en": lower-case words, "zh": characters)."""
    return frozenset(json.loads(VOCAB_FILE.read_text(encoding="utf-8"))[lang])


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    data = Path(args[0]) if args else Path("data/openi")
    built = build(data / "openi-en.json", data / "openi-zh.json")
    VOCAB_FILE.write_text(json.dumps(built, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {VOCAB_FILE}: {len(built['en'])} English words, {len(built['zh'])} Chinese characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
