"""Tests for the rule-based finding labeller (medswift.eval.findings)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medswift.eval import findings
from medswift.eval.findings import FINDINGS, NEGATIVE, POSITIVE, UNCERTAIN

P, N, U = POSITIVE, NEGATIVE, UNCERTAIN
ROOT = Path(__file__).resolve().parents[1]
OPENI = {lang: ROOT / "data" / "openi" / f"openi-{lang}.json" for lang in ("en", "zh")}

EC, CM, LO, LL, ED = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema")
CO, PN, AT, PX, PE = ("Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion")
PO, FR, SD, GR, NF = ("Pleural Other", "Fracture", "Support Devices", "Granuloma", "No Finding")

# (text, expected labels of the observations it mentions). "No Finding" is
# checked only when listed; every other observation not listed must be absent.
EN_CASES = [
    # negation, including lists
    ("No pneumothorax, pleural effusion or focal consolidation.", {PX: N, PE: N, CO: N, NF: P}),
    ("Lungs are clear without focal airspace disease.", {LO: N, NF: P}),
    ("There is no evidence of pneumothorax or pleural effusion.", {PX: N, PE: N}),
    ("The lungs are free of any focal consolidation, effusion, or pneumothorax.", {CO: N, PE: N, PX: N}),
    ("The study is negative for pneumonia.", {PN: N}),
    ("The presence of pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses has been ruled out.",
     {PN: N, PE: N, ED: N, PX: N, LL: N}),
    ("The lungs are clear of any focal airspace disease, pneumothorax, or pleural effusion.", {LO: N, PX: N, PE: N}),
    ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified.",
     {CO: N, LO: N, PE: N, PX: N}),
    ("No focal airspace opacity is identified to suggest pneumonia.", {LO: N, PN: N}),
    # post-mention negation
    ("Pneumothorax is not seen.", {PX: N}),
    ("The previously observed bilateral pneumothoraces have resolved.", {PX: N}),
    ("The chest x-ray shows a left midlung opacity, which was not seen on the previous x-ray.", {LO: P}),
    ("The previously identified nodular density in the right upper lobe is not clearly visible.", {LL: N}),
    # uncertainty
    ("Possible small left pleural effusion.", {PE: U}),
    ("Pneumonia cannot be excluded.", {PN: U}),
    ("Cannot exclude early pneumonia.", {PN: U}),
    ("Bibasilar opacities may represent atelectasis.", {LO: P, AT: U}),
    ("Minimal opacity at the left lung base, which most likely represents atelectasis.", {LO: P, AT: U}),
    ("Findings are suspicious for pneumonia.", {PN: U}),
    ("Questionable nodule in the right upper lobe.", {LL: U}),
    ("Atelectasis versus infiltrate at the left base.", {AT: P, LO: U}),
    ("Borderline cardiomegaly.", {CM: U}),
    ("The heart size is borderline enlarged, but there are no other acute findings.", {CM: U}),
    ("The x-ray shows that the heart is borderline in size and the aorta is mildly tortuous.", {CM: U}),
    # contrast clauses and mixed reports
    ("No pneumothorax but small left effusion.", {PX: N, PE: P, NF: None}),
    ("Mild cardiomegaly. No pneumothorax. Small bilateral pleural effusions.", {CM: P, PX: N, PE: P, NF: None}),
    ("There is no focal consolidation, however there is a small right pleural effusion.", {CO: N, PE: P}),
    ("The lungs are clear except for a left midlung opacity.", {LO: P}),
    ("There is mild cardiomegaly and pulmonary edema, without pleural effusion.", {CM: P, ED: P, PE: N}),
    # "the lungs are clear" states the lungs carry no opacity
    ("The heart is not enlarged and the lungs are clear with no pleural effusion.", {CM: N, LO: N, PE: N, NF: P}),
    # positives
    ("The heart is enlarged.", {CM: P}),
    ("The heart is slightly enlarged and the lungs show interstitial edema.", {CM: P, ED: P}),
    ("The mediastinum is widened.", {EC: P}),
    ("There is no mediastinal widening.", {EC: N}),
    ("Central pulmonary vascular congestion.", {ED: P}),
    ("Right lower lobe consolidation consistent with pneumonia.", {CO: P, PN: P}),
    # blunting of a costophrenic angle is the plain film's sign of a small effusion
    ("Blunting of the left costophrenic angle.", {PE: P}),
    ("Apical pleural thickening is noted.", {PO: P}),
    ("There is an old healed fracture of the left 6th rib.", {FR: P}),
    ("A calcified granuloma is present in the right upper lobe.", {GR: P, NF: None}),
    ("Stable calcified granulomas consistent with prior granulomatous disease.", {GR: P}),
    ("A 1 cm nodule is seen in the left upper lobe.", {LL: P}),
    # support devices vs look-alikes; "No Finding" ignores devices
    ("A left-sided pacemaker is in place. No acute cardiopulmonary abnormality.", {SD: P, NF: P}),
    ("Sternotomy wires are intact.", {SD: P, NF: P}),
    ("The right PICC line tip is in the SVC.", {SD: P}),
    ("The endotracheal tube terminates above the carina.", {SD: P}),
    ("The trachea is midline.", {NF: P}),
    ("The cardiac outline is normal.", {NF: P}),
    ("There is no evidence of tuberculosis.", {NF: P}),
    # "normal" phrasing
    ("Normal heart size.", {CM: N}),
    ("Heart size is within normal limits.", {CM: N}),
    ("No acute cardiopulmonary abnormality.", {NF: P}),
    # one positive and one negated statement of each less frequent observation
    ("Left basilar atelectasis.", {AT: P}),
    ("No atelectasis.", {AT: N, NF: P}),
    ("Small right apical pneumothorax.", {PX: P}),
    ("Right pleural thickening.", {PO: P}),
    ("No pleural thickening.", {PO: N, NF: P}),
    ("Healed left rib fracture.", {FR: P}),
    ("No acute fracture.", {FR: N, NF: P}),
    ("Left chest wall pacemaker.", {SD: P, NF: P}),
    ("No lines or tubes.", {SD: N, NF: P}),
    ("Calcified granuloma in the right upper lobe.", {GR: P}),
    ("No calcified granuloma.", {GR: N, NF: P}),
]

ZH_CASES = [
    # negation, including lists
    ("没有局灶性气隙不透明、胸腔积液或气胸。", {LO: N, PE: N, PX: N, NF: P}),
    ("已经排除了肺炎、积液、水肿、气胸、腺病、结节或肿块的存在。", {PN: N, PE: N, ED: N, PX: N, LL: N}),
    ("未见气胸。", {PX: N}),
    ("无胸腔积液。", {PE: N}),
    ("未发现局灶性实变。", {CO: N}),
    ("没有任何病灶巩固，胸腔积液或气孔。", {CO: N, PE: N}),
    ("肺部清晰，没有急性局灶性固结或胸腔积液的迹象。", {LO: N, CO: N, PE: N}),
    ("没有迹象表明存在胸腔积液、气胸或肺炎。", {PE: N, PX: N, PN: N}),
    ("心脏大小正常，没有证据表明有任何病灶性的空隙疾病、气胸或胸腔积液。", {CM: N, LO: N, PX: N, PE: N}),
    ("没有局灶性空隙巩固、可疑的肺不张、气胸或胸腔积液的证据。", {CO: N, AT: N, PX: N, PE: N}),
    ("X光片显示心脏的大小和轮廓正常，没有纵隔增宽。", {CM: N, EC: N}),
    ("此外，没有典型的肺水肿的发现。", {ED: N}),
    ("肺炎阴性。", {PN: N}),
    # post-mention negation
    ("气胸已消失。", {PX: N}),
    ("右侧的胸腔积液已经完全消失。", {PE: N}),
    ("之前观察到的双侧气胸已经解决。", {PX: N}),
    # uncertainty
    ("左下肺可能有肺炎。", {PN: U}),
    ("不能排除肺炎。", {PN: U}),
    ("右下肺渗出，肺炎不除外。", {PE: P, PN: U}),
    ("疑似右下叶气隙不透明。", {LO: U}),
    ("考虑为肺不张。", {AT: U}),
    ("左上肺有一个可疑的结节。", {LL: U}),
    ("边缘性心脏肿大。", {CM: U}),
    ("心脏大小呈边缘性增大，但没有其他急性发现。", {CM: U}),
    ("双侧上肺有结节状不透明，这可能是伪影。", {LL: P, LO: P}),
    # contrast clauses and mixed reports
    ("没有气胸，但左侧有少量胸腔积液。", {PX: N, PE: P, NF: None}),
    ("心脏轻度肿大。没有气胸。双侧少量胸腔积液。", {CM: P, PX: N, PE: P, NF: None}),
    ("没有发现局灶性固结或大量胸腔积液，但存在气胸。", {CO: N, PE: N, PX: P}),
    ("除了胸腰椎的退行性病变外，没有发现急性骨质异常。", {NF: P}),
    ("没有急性心肺异常，心脏轻度肿大。", {CM: P, NF: None}),
    # positives
    ("心脏增大。", {CM: P}),
    ("心影增大，肺血管充血。", {CM: P, ED: P}),
    ("纵隔增宽。", {EC: P}),
    ("右下叶实变。", {CO: P}),
    ("左肺下叶可见斑片状阴影。", {LO: P}),
    ("双侧肺门浸润。", {LO: P}),
    ("右肺上叶见一结节。", {LL: P}),
    ("左侧肋膈角变钝。", {PE: P}),
    # a lung scar is a lung opacity in CheXpert's phrase lists (phrases/mention/lung_opacity.txt)
    ("左上肺叶出现稳定的瘢痕，胸膜增厚。", {LO: P, PO: P}),
    ("左侧第6肋骨陈旧性骨折。", {FR: P}),
    ("左上肺显示一个稳定的钙化肉芽肿。", {GR: P, NF: None}),
    ("右肺基底有肺不张。", {AT: P}),
    # support devices vs look-alikes
    ("左胸壁可见起搏器。没有急性心肺异常。", {SD: P, NF: P}),
    ("右侧颈内静脉导管尖端位于上腔静脉。", {SD: P}),
    ("胸骨中线切口愈合良好。", {NF: P}),
    ("气管位于中线。", {NF: P}),
    ("有完整的胸骨切开线。", {SD: P}),
    # "normal" phrasing
    ("心脏大小正常。", {CM: N}),
    ("心脏大小在正常范围内。", {CM: N}),
    ("总的来说，没有急性心肺功能异常。", {NF: P}),
    # 较少见所见各一条阳性、一条阴性
    ("右下肺炎。", {PN: P}),
    ("未见肺炎。", {PN: N, NF: P}),
    ("右侧胸膜增厚。", {PO: P}),
    ("未见胸膜增厚。", {PO: N, NF: P}),
    ("左侧肋骨骨折。", {FR: P}),
    ("未见骨折。", {FR: N, NF: P}),
    ("左胸壁起搏器。", {SD: P, NF: P}),
    ("未见起搏器。", {SD: N, NF: P}),
    ("右上肺钙化肉芽肿。", {GR: P}),
    ("未见肉芽肿。", {GR: N, NF: P}),
]


def _check(text: str, expected: dict, lang: str | None = None) -> None:
    labels = findings.label_report(text, lang)
    assert set(labels) == set(FINDINGS)
    for obs in FINDINGS:
        if obs == NF and NF not in expected:
            continue
        assert labels[obs] == expected.get(obs), f"{obs}: got {labels[obs]!r} for {text!r} (all: {labels})"


@pytest.mark.parametrize("text,expected", EN_CASES)
def test_english_sentences(text, expected):
    _check(text, expected)


@pytest.mark.parametrize("text,expected", ZH_CASES)
def test_chinese_sentences(text, expected):
    _check(text, expected)


@pytest.mark.parametrize("cases", [EN_CASES, ZH_CASES], ids=["en", "zh"])
def test_every_observation_is_exercised_in_each_language(cases):
    """The sentence tables above are the labeller's specification: in each language every
    observation has a positive case and a negated one, and uncertainty occurs."""
    statuses = {obs: {want[obs] for _, want in cases if obs in want} for obs in FINDINGS}
    untested = [obs for obs in FINDINGS if obs != NF and not {P, N} <= statuses[obs]]
    assert not untested, f"no positive and negated case for {untested}"
    assert any(U in v for v in statuses.values()), "no uncertain case"


def test_findings_order_and_constants():
    assert len(FINDINGS) == 15 and FINDINGS[-1] == NF and FINDINGS[0] == EC and FINDINGS[-2] == GR
    assert (POSITIVE, NEGATIVE, UNCERTAIN) == (1, 0, -1)


def test_language_detection_and_explicit_lang():
    assert findings.detect_lang("No pneumothorax.") == "en"
    assert findings.detect_lang("PICC 导管在位") == "zh"
    assert findings.label_report("未见气胸。", lang="zh")[PX] == N
    assert findings.label_report("") == {f: None for f in FINDINGS}, "an empty report is not a normal one"
    assert findings.label_report("Heart size normal.")[NF] == P
    with pytest.raises(ValueError):
        findings.label_report("text", lang="fr")


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert findings.aggregate([N, U, P]) == P
    assert findings.aggregate([N, U]) == U
    assert findings.aggregate([N, N]) == N
    assert findings.aggregate([]) is None
    # the same rule inside one report
    text = "Possible small effusion. No effusion on the right. Moderate left pleural effusion."
    assert findings.label_report(text)[PE] == P
    assert findings.label_report("No effusion on the right. Possible left effusion.")[PE] == U
    assert findings.label_report("右侧未见积液。左侧可能有少量积液。")[PE] == U
    assert findings.label_report("右侧未见积液。左侧胸腔积液。")[PE] == P


def test_no_finding_rule():
    assert findings.label_report("Possible pneumonia.")[NF] is None  # uncertain counts as abnormal
    assert findings.label_report("Right PICC line in place. Lungs are clear.")[NF] == P
    assert findings.label_report("No pneumothorax. Mild cardiomegaly.")[NF] is None


def test_to_binary_u_ones():
    labels = {f: None for f in FINDINGS}
    labels.update({CM: P, PE: U, PX: N})
    binary = findings.to_binary(labels)
    assert set(binary) == set(FINDINGS)
    assert binary[CM] == 1 and binary[PE] == 1 and binary[PX] == 0 and binary[ED] == 0
    assert findings.to_binary(findings.label_report("Borderline cardiomegaly."))[CM] == 1


NORMAL_EN = [
    "No acute cardiopulmonary abnormality.",
    "No acute disease.",
    "No active disease.",
    "Normal chest.",
    "The chest x-ray is within normal limits.",
    "The impression is that of a normal chest.",
    "There is no evidence of acute cardiopulmonary disease.",
    "The patient does not have any acute cardiopulmonary abnormality.",
    "Overall, there are no acute or active cardiopulmonary abnormalities.",
    "The impression is negative for acute cardiopulmonary abnormality.",
]
ABNORMAL_EN = [
    "Mild cardiomegaly with small bilateral effusions.",
    "No acute osseous abnormality.",
    "Right lower lobe pneumonia.",
    "The heart size is within normal limits.",
    "Lungs are clear.",
    "There is no acute bony abnormality; left basilar atelectasis.",
    "Left upper lobe mass.",
    "Possible early pneumonia.",
    "Moderate right pleural effusion.",
    "Enlarged cardiac silhouette.",
]
NORMAL_ZH = [
    "没有急性心肺异常。",
    "无急性心肺功能异常。",
    "未见急性心肺异常。",
    "胸部正常。",
    "未见明显异常。",
    "总体印象是胸部正常。",
    "总的来说，没有急性心肺疾病的证据。",
    "X光片显示没有活动性疾病。",
    "给人的印象是，没有急性的心肺过程。",
    "病人没有任何急性心肺功能异常。",
]
ABNORMAL_ZH = [
    "心脏轻度肿大，双侧少量胸腔积液。",
    "没有急性骨质异常。",
    "右下肺炎。",
    "心脏大小正常。",
    "肺部清晰。",
    "左上叶肿块。",
    "可能有早期肺炎。",
    "右侧中等量胸腔积液。",
    "心影增大。",
    "左肺基底有肺不张。",
]


@pytest.mark.parametrize("text", NORMAL_EN + NORMAL_ZH)
def test_is_normal_report_true(text):
    assert findings.is_normal_report(text) is True


@pytest.mark.parametrize("text", ABNORMAL_EN + ABNORMAL_ZH)
def test_is_normal_report_false(text):
    assert findings.is_normal_report(text) is False


def _openi_pairs():
    if not all(p.is_file() for p in OPENI.values()):
        pytest.skip("OpenI reports not present")
    en = {a["image_id"]: a["caption"] for a in json.loads(OPENI["en"].read_text())["annotations"]}
    zh = {a["image_id"]: a["caption"] for a in json.loads(OPENI["zh"].read_text())["annotations"]}
    assert en.keys() == zh.keys()
    return [(en[i], zh[i]) for i in sorted(en)]


# Measured on the 6,423 OpenI report pairs (rounded down; see the module docstring).
MIN_AGREEMENT = {f: 0.97 for f in FINDINGS}
MIN_AGREEMENT.update({EC: 0.99, CM: 0.99, LL: 0.99, CO: 0.99, PN: 0.99, PX: 0.99, PE: 0.99,
                      FR: 0.99, SD: 0.99, GR: 0.99, PO: 0.99})


def test_english_and_chinese_labels_agree_on_openi():
    """Sanity check of the two rule sets: same report, two languages, binary (U-Ones) labels."""
    pairs = _openi_pairs()
    agree = {f: 0 for f in FINDINGS}
    normal_agree = 0
    for en, zh in pairs:
        b_en = findings.to_binary(findings.label_report(en, "en"))
        b_zh = findings.to_binary(findings.label_report(zh, "zh"))
        for f in FINDINGS:
            agree[f] += b_en[f] == b_zh[f]
        normal_agree += findings.is_normal_report(en, "en") == findings.is_normal_report(zh, "zh")
    rates = {f: agree[f] / len(pairs) for f in FINDINGS}
    low = {f: round(r, 4) for f, r in rates.items() if r < MIN_AGREEMENT[f]}
    assert not low, f"en/zh agreement below threshold: {low}"
    assert normal_agree / len(pairs) >= 0.97


def test_openi_labels_have_plausible_prevalence():
    pairs = _openi_pairs()
    en_labels = [findings.label_report(en, "en") for en, _ in pairs[:2000]]
    # most OpenI reports are normal; effusion/pneumothorax are mostly mentioned negatively
    assert sum(lab[NF] == P for lab in en_labels) / len(en_labels) > 0.5
    assert sum(lab[PX] == N for lab in en_labels) > 10 * sum(lab[PX] == P for lab in en_labels)
    assert sum(lab[GR] == P for lab in en_labels) > 50


# ----------------------------------------------------------------------------- issue 25: labeller
def _cpu_seconds(fn) -> float:
    import time

    start = time.process_time()
    fn()
    return time.process_time() - start


@pytest.mark.parametrize("text", [
    "The heart is enlarged. Small left pleural effusion" + " " * 50000 + "and no pneumothorax.",
    "No effusion" + " \t" * 25000 + "no pneumothorax.",
    "心脏增大。左侧少量胸腔积液" + " " * 50000 + "没有气胸。",
])
def test_labelling_is_linear_on_runs_of_blanks(text):
    """Issue 24 defect 1: 50,000 spaces took 39-61 s (each cue starting with \\s* rescanned the
    run). The labels are those of the text with one blank, and CPU time stays far under a second
    (ceiling 2 CPU s, generous for a loaded machine; the old code needed 40)."""
    short = " ".join(text.split())
    lang = findings.detect_lang(text)
    assert findings.label_report(text, lang) == findings.label_report(short, lang)
    findings._read_clause.cache_clear()
    assert _cpu_seconds(lambda: findings.read_clauses(text, lang)) < 2.0


def test_labelling_work_grows_linearly():
    """One long clause, a long run of one letter, and ten times as much of each: ten times the
    work at most (with a margin for timer noise), never a hundred."""
    for unit in ("no effusion and the left effusion, right pneumothorax ", "a", "左侧少量胸腔积液，"):
        small, large = unit * 500, unit * 5000
        findings._read_clause.cache_clear()
        t_small = max(_cpu_seconds(lambda: findings.label_report(small)), 0.005)
        findings._read_clause.cache_clear()
        assert _cpu_seconds(lambda: findings.label_report(large)) < 30 * t_small, unit


@pytest.mark.parametrize("text, lang, finding, side, grade", [
    ("Small left pleural effusion.", "en", PE, "left", 1),
    ("Large right pneumothorax.", "en", PX, "right", 3),
    ("Bilateral pleural effusions.", "en", PE, "bilateral", None),
    ("Collapse of the left lower lobe.", "en", AT, "left", None),
    ("The heart is mildly enlarged.", "en", CM, None, 1),
    ("There is moderate cardiomegaly without interstitial edema.", "en", CM, None, 2),
    ("Pleural effusion on the right.", "en", PE, "right", None),
    ("右侧少量胸腔积液。", "zh", PE, "right", 1),
    ("左侧大量气胸。", "zh", PX, "left", 3),
    ("双侧胸腔积液。", "zh", PE, "bilateral", None),
    ("左下叶塌陷。", "zh", AT, "left", None),
    ("心脏轻度增大。", "zh", CM, None, 1),
])
def test_side_and_severity_of_a_mention(text, lang, finding, side, grade):
    mentions = [m for _, ms in findings.read_clauses(text, lang) for m in ms if m[0] == finding]
    assert mentions and mentions[0][2:] == (side, grade), mentions


def test_a_qualifier_belongs_to_the_nearest_mention():
    """'moderate' is the cardiomegaly's, not the edema's after it; 'left' is the effusion's."""
    (_, mentions), = findings.read_clauses("Moderate cardiomegaly without edema", "en")
    assert dict((f, g) for f, _, _, g in mentions) == {CM: 2, ED: None}
    (_, mentions), = findings.read_clauses("Right pneumothorax, small left effusion", "en")
    assert {f: s for f, _, s, _ in mentions} == {PX: "right", PE: "left"}


@pytest.mark.parametrize("text, lang, expected", [
    # CheXpert/NegBio mention phrases and the radiologists' synonyms issue 25 lists
    ("Increased cardiothoracic ratio.", "en", {CM: P}),
    ("Kerley B lines.", "en", {ED: P}),
    ("Blunting of the costophrenic angles.", "en", {PE: P}),
    ("Collapse of the right middle lobe.", "en", {AT: P}),
    ("No vertebral body collapse.", "en", {}),
    ("Patchy air-space disease at the right base.", "en", {LO: P}),
    ("Increased interstitial markings.", "en", {LO: P}),
    ("Small pericardial effusion.", "en", {}),
    ("Stable scarring in the left apex. Apical pleural scarring.", "en", {LO: P, PO: P}),
    ("Free air under the right hemidiaphragm.", "en", {}),  # pneumoperitoneum: not one of the 14
    ("心胸比增大。", "zh", {CM: P}),
    ("可见克氏B线。", "zh", {ED: P}),
    ("双侧肋膈角变钝。", "zh", {PE: P}),
    ("右中叶塌陷。", "zh", {AT: P}),
    ("双肺间质纹理增多。", "zh", {LO: P}),
    ("少量心包积液。", "zh", {}),
])
def test_vocabulary_of_issue_25(text, lang, expected):
    labels = findings.label_report(text, lang)
    stated = {f: v for f, v in labels.items() if v is not None and f != NF}
    assert stated == expected


def test_critical_findings_outside_the_14_are_read_for_the_reward():
    reads = {f for _, ms in findings.read_clauses("Free air under the diaphragm. Pneumomediastinum.", "en")
             for f, *_ in ms}
    assert reads == {"Pneumoperitoneum", "Pneumomediastinum"}
    reads = {f for _, ms in findings.read_clauses("膈下游离气体。纵隔气肿。", "zh") for f, *_ in ms}
    assert reads == {"Pneumoperitoneum", "Pneumomediastinum"}


def test_uncertainty_policies_binarise_uncertain_mentions():
    labels = findings.label_report("Possible left pleural effusion. Cardiomegaly.")
    assert findings.to_binary(labels, "positive")[PE] == findings.to_binary(labels, "partial")[PE] == 1
    assert findings.to_binary(labels, "negative")[PE] == 0
    assert findings.to_binary(labels, "negative")[CM] == 1
    with pytest.raises(ValueError):
        findings.to_binary(labels, "U-Twos")


# Expert coding: the NLM indexers' MeSH terms of the bundled studies (data/openi/openi-mesh.csv).
# Before issue 25 the labeller scored micro-F1 0.850 (en) and 0.830 (zh) on the held-out fifth, 0.888
# and 0.862 after;
# the rules were changed looking at the other four fifths only.
MIN_HELDOUT_F1 = {"en": 0.88, "zh": 0.855}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_labeller_against_expert_coding_on_the_held_out_studies(lang):
    from medswift.eval import expert_coding

    coding = expert_coding.load_coding(ROOT / "data" / "openi" / "openi-mesh.csv")
    rows = list(expert_coding.studies(OPENI[lang], coding, "heldout"))
    assert len(rows) > 500
    assert all(int(study) % 5 == 0 for study, _, _ in rows)
    assert expert_coding.labeller_scores(rows, lang)["micro_f1"] >= MIN_HELDOUT_F1[lang]


def test_mesh_terms_map_to_observations():
    from medswift.eval import expert_coding

    assert expert_coding.code_terms("normal") == {NF}
    assert expert_coding.code_terms("Cardiomegaly/borderline;Pulmonary Artery/enlarged") == {CM}
    assert expert_coding.code_terms("Costophrenic Angle/right/blunted/mild;Density/lung/base") == {PE, LO}
    assert expert_coding.code_terms("Cardiac Shadow/enlarged;Thickening/pleura/apex") == {CM, PO}
    assert expert_coding.code_terms("Spine/degenerative;Calcinosis") is None


def test_report_card_names_the_shared_uncertainty_policy(tmp_path):
    """The card binarises uncertain mentions under the reward's policy knob and says which in its
    header; a bad value is one line before anything is scored."""
    import os
    import subprocess
    import sys

    rows = [{"response": "Cardiomegaly. Possible small left effusion.",
             "reference": "The heart is enlarged. Small left pleural effusion."},
            {"response": "Heart size is normal. The lungs are clear.", "reference": "No acute cardiopulmonary abnormality."}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    for value, named in (("negative", "U-Zeros"), ("bogus", None)):
        env = dict(os.environ, MEDSWIFT_REWARD_UNCERTAIN=value)
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--predictions",
                               str(tmp_path / "p.jsonl"), "--output_dir", str(tmp_path / value)],
                              capture_output=True, text=True, timeout=900, env=env)
        if named is None:
            assert proc.returncode == 2 and proc.stderr.strip() == (
                "error: MEDSWIFT_REWARD_UNCERTAIN='bogus': must be one of partial, positive, negative")
            continue
        assert proc.returncode == 0, proc.stderr
        header = (tmp_path / value / "report.md").read_text(encoding="utf-8").split("## Provenance")[0]
        assert f"uncertainty policy (MEDSWIFT_REWARD_UNCERTAIN, shared with the GRPO findings reward): {named}" in header
        metrics = json.loads((tmp_path / value / "metrics.json").read_text(encoding="utf-8"))
        per = metrics["findings"]["per_finding"]["Pleural Effusion"]
        assert per["predicted"] == (0 if value == "negative" else 1)


def test_coverage_of_the_chexpert_mention_phrases():
    """Of the CheXpert labeller's published mention phrases, each said in a sentence, the labeller
    reads at least 85% as their observation (82 of 94 when written; 74 before issue 25's rules).
    Left out on purpose: bare "line(s)" (B-lines, midline), "valve", "marker", "support",
    "equipment", "apparatus", and plate/screw/coil without context; "fibrosis" (lung, not pleura)."""
    from medswift.eval import expert_coding

    coverage = expert_coding.phrase_coverage()
    read, total = sum(v[0] for v in coverage.values()), sum(v[1] for v in coverage.values())
    assert total == 94 and read / total >= 0.85, {f: v[2] for f, v in coverage.items() if v[2]}
