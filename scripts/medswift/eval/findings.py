"""Rule-based finding labeller for chest X-ray reports (English and Chinese).

This is a *proxy* used by the evaluation to compute "finding F1 (rule-based)"
between generated and reference reports. It is NOT CheXbert (nor CheXpert's
NegBio labeller) and must not be reported as such: no maintained offline
library labels Chinese radiology reports, so the rules here are hand-written
(regex synonym tables + negation / uncertainty cues, in the spirit of the
CheXpert labeller's mention -> negation/uncertainty -> aggregation pipeline).
It is meant for research comparisons, not for diagnosis.

Labels per observation: ``POSITIVE`` (1), ``NEGATIVE`` (0), ``UNCERTAIN`` (-1),
or ``None`` when the report does not mention it.

Usage::

    from medswift.eval import findings
    labels = findings.label_report("No pneumothorax but small left effusion.")
    labels["Pleural Effusion"]   # -> 1
    labels["Pneumothorax"]       # -> 0
    labels["Edema"]              # -> None
    findings.to_binary(labels)   # U-Ones: positive/uncertain -> 1, else 0
    findings.is_normal_report("没有急性心肺异常。")  # -> True

Pipeline for one report:
 1. split into sentences, then into clauses at contrast words ("but",
    "however", "except", 但/然而/除...外 ...) so negation cannot leak across;
 2. find mentions of each observation with the synonym tables below;
 3. decide each mention's status from cues in its clause: a post-mention
    uncertainty cue ("cannot be excluded") -> uncertain; otherwise the nearest
    pre-mention cue (negation "no/without/未见/没有" or uncertainty
    "possible/可能") wins; otherwise a post-mention negation cue ("is not seen",
    "has resolved", 消失) -> negative; otherwise positive;
 4. aggregate mentions per observation as CheXpert does: positive if any
    mention is positive, else uncertain if any uncertain, else negative if any
    negative, else absent;
 5. "No Finding" is positive when no observation other than Support Devices is
    positive or uncertain, and absent otherwise.

For the clinical reward, ``read_clauses`` also gives each mention its side (left / right /
bilateral: the nearest side word in its scope, no other mention between) and severity grade
(1 small/mild, 2 moderate, 3 large/severe), and reads two critical findings outside the 14
(EXTRA_FINDINGS: pneumoperitoneum, pneumomediastinum). The phrase tables include the CheXpert
labeller's published mention phrases (github.com/stanfordmlgroup/chexpert-labeler,
phrases/mention and phrases/unmention); expert_coding.py measures their coverage and the labels
against the NLM's MeSH coding of the bundled studies (docs/reward.md).

Linear time on any input: text is lower-cased and its blanks collapsed first (normalize_space;
cue patterns starting with ``\\s*`` were quadratic on long blank runs), clauses are cut at
CLAUSE_MAX_CHARS, and each regex has bounded repetition or a literal anchor.

Sanity check: on the 6,423 OpenI report pairs (same report in English and in
Chinese) the binary U-Ones labels of the two rule sets agree on 97.4-100% of
reports per observation (Atelectasis lowest, 97.4%; No Finding 98.3%);
test/test_findings.py keeps that above fixed thresholds.

Known limits: no syntax parsing, so negation scope is approximated by clause
boundaries and a few scope-breaking words; historical mentions ("prior
pneumonia") count as positive; the Chinese OpenI reports are machine
translations with inconsistent terms (consolidation -> 合并/固结/巩固/实变,
atelectasis -> 肺不张/无气症/...), so some English mentions have no
recognisable Chinese counterpart.
"""
from __future__ import annotations

import bisect
import os
import re
from functools import lru_cache
from typing import Iterable, Iterator, Mapping

from medswift.core.errors import UsageError

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

FINDINGS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices", "Granuloma", "No Finding",
)
NO_FINDING = "No Finding"
# Observations outside CheXpert's 14 that the labeller also reads, for the clinical reward's
# critical findings; label_report (and so the report card) leaves them out.
EXTRA_FINDINGS: tuple[str, ...] = ("Pneumoperitoneum", "Pneumomediastinum")
# Uncertainty policies, shared by the reward and the report card: how an "uncertain" mention
# ("possible effusion") counts. U-Ones: as present; U-Zeros: as absent; partial: half (the
# reward's half credit; for the card's binary F1 it counts as present, as U-Ones does).
UNCERTAINTY_POLICIES: dict[str, str] = {
    "partial": "partial: an uncertain finding earns half credit in the reward and counts as present in "
               "the card's binary F1",
    "positive": "U-Ones: an uncertain finding counts as present",
    "negative": "U-Zeros: an uncertain finding counts as absent",
}
# The one knob both read (the GRPO reward plugin and evaluate.py), default partial.
UNCERTAINTY_ENV = "MEDSWIFT_REWARD_UNCERTAIN"


def uncertainty_policy(value: str | None = None) -> str:
    """The policy named by ``value`` or, when None, by MEDSWIFT_REWARD_UNCERTAIN (default partial)."""
    policy = (value if value is not None else os.environ.get(UNCERTAINTY_ENV, "partial")).strip().lower()
    if policy not in UNCERTAINTY_POLICIES:
        raise UsageError(f"{UNCERTAINTY_ENV}={policy!r}: must be one of {', '.join(UNCERTAINTY_POLICIES)}")
    return policy

# ---------------------------------------------------------------------------
# Synonym tables. Each entry is a regex; if it has a group named "m", only that
# group is the mention (the rest is required context), so a cue inside the
# context ("heart is NOT enlarged") still applies to the mention.
# ---------------------------------------------------------------------------
_HEART_EN = r"\b(?:heart|cardiac(?: silhouette| size| shadow| contour)?)\b"
_NOT_ACROSS = r"[^.;,]"  # context window stays inside a comma-free span

MENTIONS_EN: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        r"\b(?:mediastin(?:um|al)|cardiomediastin(?:al|um)(?: silhouette| contours?)?|pericardial silhouette)\b" + _NOT_ACROSS
        + r"{0,30}?\b(?P<m>widen(?:ed|ing)|enlarged|enlargement)\b",
        r"\b(?P<m>widen(?:ed|ing)|enlarged|enlargement of the)\s+(?:the\s+)?(?:mediastin(?:um|al)|cardiomediastinal)\b",
    ],
    "Cardiomegaly": [
        r"\bcardiomegaly\b",
        r"\bcardiac enlargement\b",
        r"\b(?:increased|enlarged|elevated|high) cardio-?thoracic ratio\b",
        r"\bcardio-?thoracic ratio\b[^.;,]{0,25}?\b(?P<m>increased|enlarged|elevated|greater than|above|exceeds?)\b",
        _HEART_EN + _NOT_ACROSS + r"{0,30}?\b(?P<m>enlarged|enlargement|large)\b",
        r"\b(?P<m>enlarged|large)\s+(?:heart|cardiac silhouette)\b",
        r"\b(?P<m>enlargement) of (?:the )?(?:heart|cardiac silhouette)\b",
    ],
    "Lung Opacity": [
        r"\bopacit(?:y|ies)\b", r"\bopacification\b",
        r"\bair[- ]?space (?:disease|process)\b", r"\bairspace\b(?= opacit)",
        r"\binfiltrat(?:e|es|ion|ive)\b",
        r"\bincreased (?:lung |pulmonary )?densit(?:y|ies)\b",
        # CheXpert phrases/mention/lung_opacity.txt
        r"\bdecreased translucency\b", r"\binterstitial (?:markings?|pattern|lung disease|prominence)\b",
        r"\breticular (?:pattern|markings?|opacit)", r"\breticulation\b", r"\bparenchymal scarring\b",
        r"\bperibronchial (?:thickening|cuffing)\b", r"\bground[- ]glass\b", r"\b(?:bronchial )?wall thickening\b",
        r"\bscar(?<!pleural scar)(?<!parenchymal scar)(?<!pericardial scar)(?:s|ring|red)?\b",
    ],
    "Lung Lesion": [
        r"\b(?:reticulo|fibro|micro)?nodul(?:e|es|ar)\b", r"\bmass(?:es)?\b",
        # the literal first, its exclusions after it: a pattern that opens with a lookbehind cannot
        # use the regex engine's fast literal search
        r"\blesion(?<!lytic lesion)(?<!osseous lesion)(?<!bony lesion)(?<!sclerotic lesion)s?\b",
        r"\b(?:tumou?rs?|neoplasms?|carcinoma|malignancy|metastas[ie]s|metastatic)\b",
        r"\bcavitary\b", r"\bnodular (?:densit(?:y|ies)|opacit(?:y|ies)|opacification)\b", r"\blumps?\b",
    ],
    "Edema": [
        r"\bo?edema\b", r"\b(?:vascular|pulmonary|venous) congestion\b", r"\bcongestion\b",
        # CheXpert phrases/mention/edema.txt, and the signs radiologists name for it
        r"\b(?:congestive )?heart failure\b", r"\bchf\b", r"\bkerley (?:a |b |c )?lines?\b",
        r"\bseptal lines\b", r"\bcephali[sz]ation\b", r"\bvascular (?:prominence|indistinctness)\b",
        r"\bindistinctness\b",
        r"\bperihilar haze\b",
    ],
    "Consolidation": [r"\bconsolidat(?:ion|ions|ive|ed)\b"],
    "Pneumonia": [r"\bpneumonias?\b", r"\bpneumonitis\b", r"\binfect(?:ion|ions|ious)\b"],
    # CheXpert phrases/mention/atelectasis.txt: "atelecta", "collapse" (not of a vertebra)
    "Atelectasis": [r"\batelecta(?:sis|ses|tic)\b", r"\b(?:lung|lobar|lobe) collapse\b",
                    r"\bcollapsed lung\b",
                    r"\bcollapse(?<!vertebral collapse)(?<!vertebra collapse)(?<!body collapse)(?<!compression collapse)d?\b"
                    r"(?! of (?:the |a )?(?:\w+ )?vertebr)"],
    "Pneumothorax": [r"\b(?:hydro)?pneumothora(?:x|ces|xes)\b"],
    # "pericardial effusion" is not pleural (CheXpert phrases/unmention/pleural_effusion.txt)
    "Pleural Effusion": [r"\beffusion(?<!pericardial effusion)s?\b", r"\bpleural fluid\b", r"\bhydro(?:pneumo)?thorax\b",
                         # blunting of a costophrenic angle is the plain film's sign of a small effusion
                         r"\bblunt(?:ing|ed)\b", r"\bmeniscus sign\b"],
    "Pleural Other": [
        r"\bpleural (?:thickening|scarring|scar|plaques?|calcifications?)\b",
        r"\bpleur(?:al|o)[- ]?(?:parenchymal|pericardial) scar",
        r"\bfibrothorax\b",
    ],
    "Fracture": [r"\bfractur(?:e|es|ed)\b"],
    "Support Devices": [
        r"\bpace(?:maker|r)s?\b", r"\bpacing (?:leads?|wires?)\b", r"\b(?:a?icd)\b", r"\bdefibrillator\b",
        r"\bcatheters?\b", r"\bpicc\b", r"\btub(?:e|es|ing)\b", r"\bstents?\b", r"\bwires?\b", r"\bclips?\b",
        r"\bsutures?\b", r"\bshunts?\b", r"\bport-?a-?cath\b",
        # "line" only with a device qualifier: never "midline", "outline", "B-lines"
        r"\b(?:picc|central(?: venous)?|venous|arterial|jugular|subclavian|dialysis|swan[- ]ganz)\s+(?P<m>lines?)\b",
        r"\blines? and tubes?\b",
        r"\b(?:prosthetic|mechanical|replaced)\s+(?:\w+\s+)?valve\b", r"\bvalve replacement\b",
        r"\b(?:cardiac|electronic|monitoring|closure|implantable|retention|orthopedic) devices?\b",
        r"\boccluder\b", r"\bstimulator\b", r"\b(?:monitor|generator) leads\b",
        # CheXpert phrases/mention/support_devices.txt
        r"\bhardware\b", r"\barthroplast(?:y|ies)\b", r"\bdevices?\b", r"\bcannulas?\b", r"\bmediport\b", r"\bdrains?\b",
        r"\b(?:surgical |orthopedic |fixation )?(?:plates?|screws?)\b(?= (?:in|of|and|over|across|transfix))",
        r"\b(?:embolization )?coils?\b(?= (?:in|of|over|project))",
    ],
    "Granuloma": [r"\bgranulom(?:a|as|ata|atous)\b"],
    # Not CheXpert observations: critical findings the reward must see (EXTRA_FINDINGS).
    "Pneumoperitoneum": [r"\bpneumoperitoneum\b",
                         r"\bfree (?:intra-?peritoneal |intra-?abdominal |sub-?diaphragmatic )?air\b"],
    "Pneumomediastinum": [r"\bpneumomediastinum\b", r"\bmediastinal emphysema\b"],
}

MENTIONS_ZH: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        r"纵[隔膈](?:影|轮廓)?(?:[^，。；]{0,4}?)(?P<m>增宽|变宽|扩大|增大|加宽)",
        r"心(?:脏)?纵[隔膈](?:轮廓|影|廓形)?(?:[^，。；]{0,4}?)(?P<m>增宽|扩大|增大|肿大)",
    ],
    "Cardiomegaly": [
        r"心脏(?:肿大|增大|扩大|肥大)", r"心胸比(?:率|例)?[^，。；]{0,4}?(?P<m>增大|增加|升高|增高|大于|超过)", r"心影(?:增大|扩大)", r"心肌(?:肿大|肥大)",
        r"(?:心脏|心影)(?:大小|尺寸)?[^，。；]{0,4}?(?P<m>略大|较大|很大|偏大)",
        r"(?:心脏|心影|心脏轮廓)(?:[^，。；纵]{0,8}?)(?P<m>肿大|增大|扩大|变大|肥大)",
    ],
    "Lung Opacity": [
        r"不透明", r"[混浑]浊", r"阴影", r"浸润(?<!膈肌的浸润)(?<!膈肌有浸润)",
        r"(?:气隙|空隙|空域|气腔|气室|空气空间|气囊)(?:疾病|病变?|不透明)",
        r"密度[^，。；]{0,3}?(?:增高|增加)", r"磨玻璃", r"[瘢疤]痕(?<!胸膜瘢痕)(?<!胸膜疤痕)", r"间质(?:纹理|标记|性?改变|性?病变)", r"网状(?:影|纹理|改变)",
    ],
    "Lung Lesion": [
        # 病灶 is left out: the translations use it for "focal" (病灶性不透明).
        r"结节", r"肿块(?!切除)", r"肿瘤(?!切除)", r"(?:空洞性|块状?|肺部?)病变", r"转移", r"恶性",
        r"占位",
    ],
    "Edema": [r"水肿", r"充血(?!性心)", r"淤血", r"瘀血", r"(?:充血性)?心力衰竭", r"心衰",
              r"(?:克氏|Kerley ?)[ABC]?线", r"间隔线", r"血管(?:纹理)?(?:模糊|重新分布)"],
    "Consolidation": [r"实变", r"巩固", r"固结", r"固化", r"合并(?!了)", r"整合"],
    "Pneumonia": [r"肺炎", r"感染"],
    # The OpenI Chinese reports are machine translated; atelectasis often comes out
    # as 无气症/无气肿/漏气/无渗漏 (never with those meanings elsewhere in the set).
    "Atelectasis": [r"肺?不张", r"(?:肺|叶|段)(?:部分)?(?:塌陷|萎陷|萎缩)", r"膨胀不全", r"萎陷", r"塌陷", r"无气(?:症|肿|孔|隙)", r"无气(?=[或的区])",
                    r"漏气", r"无渗漏", r"无脑症"],
    "Pneumothorax": [r"气胸"],
    "Pleural Effusion": [r"水气胸", r"积液(?<!心包积液)", r"胸水", r"积水", r"渗出物?", r"(?:肋膈角|肋隔角)?(?:钝化|变钝)"],
    "Pleural Other": [r"胸膜(?:增厚|瘢痕|疤痕|斑块|钙化)", r"纤维胸"],
    "Fracture": [r"骨折"],
    "Support Devices": [
        r"起搏器", r"除颤器", r"导管", r"插管", r"(?:胸|胃|引流|分流|气管内|鼻胃|喂养)管", r"PICC",
        r"导线", r"支架", r"钢丝", r"金属丝", r"切开线", r"胸骨线", r"夹子", r"(?:纵[隔膈]|手术|外科|血管|止血)夹",
        r"缝线", r"缝合线?", r"造口管", r"静脉管", r"中心(?:静脉)?线", r"遥测线", r"装置", r"刺激器",
        r"分流器", r"封堵器", r"闭塞器", r"人工瓣膜", r"瓣膜置换", r"(?:心脏|电子|监测|起搏)装置",
    ],
    "Granuloma": [r"肉芽肿", r"肉芽"],
    "Pneumoperitoneum": [r"气腹", r"(?:膈下|腹腔内?)游离气体", r"游离气体"],
    "Pneumomediastinum": [r"纵[隔膈]气肿", r"纵[隔膈]积气"],
}

# Phrases that directly state an observation is normal (a NEGATIVE mention).
NORMAL_EN: dict[str, list[str]] = {
    "Cardiomegaly": [
        r"\bnormal(?:[- ]sized?)? (?:heart|cardiac)(?: size| silhouette)?\b",
        r"\bheart (?:size )?(?:is |was |appears |remains |looks )?(?:of )?(?:normal|within normal limits|unremarkable)\b",
        r"\bheart size and [a-z ]{1,40}? (?:are |appear |remain )?(?:normal|within normal limits)\b",
        r"\bheart is normal in size\b",
    ],
    "Lung Opacity": [r"\blungs? (?:are |is |appears? |remains? )?(?:well[- ]expanded and )?(?:clear|normal)\b(?! (?:of|from|without|except))",
                     r"\bclear lungs\b"],
    "Enlarged Cardiomediastinum": [
        r"\b(?:normal|unremarkable) (?:cardio)?mediastinal (?:silhouette|contours?)\b",
        r"\b(?:cardio)?mediastinal (?:silhouette|contours?) (?:is |are |appears? |remains? )?(?:normal|within normal limits|unremarkable)\b",
    ],
}
NORMAL_ZH: dict[str, list[str]] = {
    "Cardiomegaly": [
        r"心脏(?:的)?大小(?:是|在|均|都|也)?(?:正常|在正常范围内)", r"心脏(?:的)?大小和[^，。；]{1,12}?(?:都|均)?(?:很)?正常",
        r"心影(?:大小)?正常", r"正常大小的心脏",
    ],
    "Lung Opacity": [r"(?:双肺|两肺|肺部?|肺野)(?:是|都|均|也)?(?:很)?(?:清晰|清楚|清澈|正常)"],
    "Enlarged Cardiomediastinum": [
        r"(?:心脏)?纵[隔膈](?:轮廓|影|廓形)?(?:是|在|均|都|也)?(?:很)?(?:正常|在正常范围内|不明显)",
        r"心胸廓[形貌](?:是|在|均|都|也)?(?:正常|在正常范围内)",
    ],
}

# Borderline heart size is an UNCERTAIN mention ("heart size is borderline").
BORDERLINE_EN = {"Cardiomegaly": [_HEART_EN + r"(?: size)? (?:is |appears |remains )?(?:at )?(?:in )?borderline\b"]}
BORDERLINE_ZH = {"Cardiomegaly": [r"(?:心脏|心影)(?:的)?(?:大小)?(?:[^，。；]{0,4}?)(?:临界|边缘状态)"]}

# ---------------------------------------------------------------------------
# Cues. Uncertainty cues are matched (and masked) before negation cues so that
# "cannot be excluded" / 不能排除 / 不除外 are never read as plain negation.
# ---------------------------------------------------------------------------
UNCERTAIN_PRE_EN = [
    r"\bpossibl[ey]\b", r"\bmay\b", r"\bmight\b", r"\bcould\b", r"\b(?<!un)likely\b", r"\bprobabl[ey]\b",
    r"\bsuspicious for\b", r"\bsuspect(?:ed)?\b",
    r"\bcannot (?:be )?(?:excluded?|ruled? out)\b", r"\bcan ?not (?:exclude|rule out)\b",
    r"\b(?:cannot|can ?not|not) exclude\b", r"\bversus\b", r"\bvs\.?\b", r"\bborderline\b",
    r"\bconcern(?:ing)? for\b", r"\bdifferential\b", r"\bquestion of\b",
    r"\bmay represent\b", r"\bconsistent with\b(?= (?:possible|early))", r"\bpresum(?:ed|ably)\b",
]
UNCERTAIN_POST_EN = [
    r"\b(?:cannot|can ?not|could not|not) (?:be )?(?:entirely |completely )?(?:excluded|ruled out)\b",
    r"\b(?:is|are) (?:not )?(?:excluded|ruled out)\b(?=\s*(?:clinically|by ct))",
    r"\b(?:is|are) (?:possible|suspected|questioned|likely|not excluded)\b",
]
NEGATION_PRE_EN = [
    r"\bno\b", r"\bnot\b", r"\bwithout\b", r"\bnegative for\b", r"\bfree (?:of|from)\b", r"\bclear of\b",
    r"\babsen(?:ce|t) of\b", r"\bresolution of\b", r"\bresolved\b", r"\brules? out\b", r"\bruled out\b",
    r"\bnor\b", r"\bneither\b", r"\bnone\b", r"\bexcluded?\b", r"\bno longer\b", r"\brather than\b",
]
NEGATION_POST_EN = [
    r"\b(?:is|are|was|were|has been|have been)?\s*(?:not|no longer|never)\s+(?:been\s+)?(?:clearly\s+|well\s+|definitely\s+)?"
    r"(?:seen|identified|present|visualized|appreciated|demonstrated|evident|noted|visible|detected|observed|found|shown)\b",
    r"\b(?:has|have)\s+(?:since\s+|now\s+)?(?:resolved|cleared|disappeared)\b", r"\bresolved\b",
    r"\b(?:has|have) been (?:ruled out|excluded)\b", r"\b(?:is|are|was|were) (?:ruled out|excluded|absent)\b",
    r"\bruled out\b", r"\babsent\b", r"\b(?:is|are|was|were|appears?|remains?) within normal limits\b",
]
# Uncertainty words that merely modify a noun: inside a negation ("no
# suspicious opacity", "没有可疑的肺不张") they do not make the mention uncertain.
WEAK_UNCERTAIN = {"en": [r"\bquestionable\b", r"\bpotential\b", r"\bsuspicious\b", r"\bdefinite\b",
                         r"\bsuggest(?:s|ed|ing|ive of)?\b"],
                  "zh": [r"可疑的?", r"潜在的?", r"明确的?", r"提示"]}
# Look like negation but are not ("no change in the surgical clips"): masked first.
PSEUDO_NEGATION = {
    "en": [r"\bno (?:\w+ )?changes?\b(?: (?:in|of|from|since))?", r"\bnot (?:significantly )?changed\b",
           r"\bunchanged\b"],
    "zh": [r"(?:没有|无|未)(?:明显|显著)?的?(?:变化|改变)"],
}
# Words that end a negation/uncertainty scope inside a clause.
SCOPE_BREAK_EN = [
    r",?\s*\band\s+(?=(?:there|the|it|this|these|a|an|mild|moderate|severe|small|large|stable|new|minimal|slight|some|persistent)\b)",
    r"\b(?:which|who|whereas|while|yet)\b",
    r",\s*(?=(?:there|the|it|this|these|with|and|only)\b)",
]

UNCERTAIN_PRE_ZH = [
    r"可能", r"疑似", r"疑为", r"怀疑", r"考虑", r"不除外", r"不能排除", r"无法排除", r"不排除", r"不能除外",
    r"待排", r"或为", r"(?<![类相近])似(?!乎没|乎无)", r"倾向", r"边缘性?", r"临界", r"不确定", r"鉴别诊断",
]
UNCERTAIN_POST_ZH = [r"不能(?:完全)?排除", r"不除外", r"无法(?:完全)?排除", r"待排", r"可能(?!性)"]
NEGATION_PRE_ZH = [
    r"未见", r"未发现", r"未显示", r"未观察到", r"未(?!改变|变化|变)", r"没有", r"没",
    r"(?<![有])无(?![数论法需疑意])",  # not 无数 (numerous), 无法 (unable), 无疑 ...
    r"排除了?",
    r"已经排除", r"不存在", r"不(?:表明|提示|支持|显示)", r"并非", r"不是", r"不伴", r"免于", r"消退", r"消失",
]
NEGATION_POST_ZH = [
    r"(?:已经?|已被|被)?(?:排除|消失|消退|吸收)", r"(?:已经?|得到了?)(?:被)?(?:解决|清除|消除|缓解|消散)",
    r"阴性", r"不存在", r"(?:均|都|也)?(?:未见|未发现|未显示|没有看到|没有发现|不明显)",
    r"(?:均|都|也)?在正常范围内",
]
SCOPE_BREAK_ZH = [r"而且?", r"并且", r"同时", r"因此", r"所以"]

SENTENCE_SPLIT = {"en": r"[.;!?](?:\s+|$)|\n+", "zh": r"[。；！？;!?\n]+|\.(?:\s+|$)"}
CLAUSE_SPLIT = {
    "en": r"\b(?:but|however|although|though|whereas|except(?: for)?|with the exception of|other than"
          r"|apart from|aside from|besides|despite|nevertheless|otherwise)\b",
    # 除...外 ("except"), but not the 除 of 排除/切除/不除外/除颤器 nor the 外 of 另外/此外
    "zh": r"但是|但|然而|不过|虽然|尽管|除此之外|(?<![排切消去免剔删解不])除了?(?!颤)"
          r"|(?<![另此额意内除])(?:以|之)?外(?=[，,])|否则|其他方面",
}

NORMAL_REPORT = {
    "en": [
        # "no acute cardiopulmonary abnormality", "without any active disease", ...
        r"\b(?:no|not|without|negative for|free (?:of|from)|absence of)\b[^.;]{0,50}?\b(?:acute|active)\b[^.;]{0,40}?"
        r"\b(?:abnormalit(?:y|ies)|diseases?|process(?:es)?|findings?|pathology|illness|issues?|problems?|conditions?)\b",
        r"\bno (?:significant|notable|remarkable|obvious|apparent) abnormalit(?:y|ies)\b", r"\bnegative chest\b",
        r"\bno (?:\w+ )?cardiopulmonary (?:abnormalit(?:y|ies)|disease)\b",
        r"\bnormal (?:chest|study|examination|exam|radiograph|chest (?:x-?ray|radiograph|film|study))\b",
        r"\b(?:chest|study|exam(?:ination)?|chest (?:x-?ray|radiograph|film)|x-?ray|radiograph) "
        r"(?:is|was|appears|looks) (?:entirely |completely |essentially )?(?:normal|within normal limits|unremarkable)\b",
        r"\bimpression[^.;]{0,40}\b(?:normal|within normal limits|unremarkable)\b(?! (?:heart|cardiac|lung|size))",
        r"\beverything is normal\b",
    ],
    "zh": [
        r"(?:没有|无|未见|未发现|不存在|未显示|未观察到|不表示|不表明)[^，。；]{0,20}?(?:急性|活动性|活跃)[^，。；]{0,12}?"
        r"(?:异常|疾病|病变|过程|发现|问题|改变|结果|症状)",
        r"急性[^，。；]{0,14}阴性", r"(?:胸部|X光片?|X线)[^，。；]{0,8}(?:不引人注目|并不明显|并不突出)",
        r"(?:没有|无|未见)(?:任何)?心肺(?:功能)?(?:异常|疾病)",
        r"(?:没有|无|未见|未发现)(?:任何|什么)?(?:明显|明确)?的?异常(?!的)",
        r"胸部[^，。；心肺骨椎纵隔膈]{0,8}?(?:是|为|都|均)?(?:完全)?正常",
        r"正常的?胸部", r"一切(?:都)?正常", r"(?:急性心肺|心肺)[^，。]{0,6}阴性", r"正常范围内的胸部",
    ],
}
# A "no acute ..." statement about bones only is not an overall normal impression.
_NOT_OVERALL = re.compile(r"osseous|bony|bone|skeletal|fractur|spine|骨|脊")


def _lower_pattern(pattern: str) -> str:
    """A pattern for lower-cased text: its letters lower-cased, its escapes (\\S, \\B) and
    named groups kept."""
    return re.sub(r"(\\.|\(\?P<)|([A-Z])", lambda m: m.group(1) or m.group(2).lower(), pattern)


def _compile(table: Mapping[str, list[str]], flags: int) -> dict[str, list[re.Pattern]]:
    return {k: [re.compile(_lower_pattern(p), flags) for p in v] for k, v in table.items()}


def _compile_list(pats: Iterable[str], flags: int) -> re.Pattern:
    return re.compile("|".join(f"(?:{_lower_pattern(p)})" for p in pats), flags)


# The labeller reads lower-cased text (lower_text) with case-sensitive patterns: IGNORECASE
# makes Python's regex engine give up its fast literal search (about 1.7 times slower here).
_F = {"en": 0, "zh": 0}
_MENTIONS = {"en": _compile(MENTIONS_EN, _F["en"]), "zh": _compile(MENTIONS_ZH, _F["zh"])}
_NORMALS = {"en": _compile(NORMAL_EN, _F["en"]), "zh": _compile(NORMAL_ZH, _F["zh"])}
_BORDERLINE = {"en": _compile(BORDERLINE_EN, _F["en"]), "zh": _compile(BORDERLINE_ZH, _F["zh"])}
_CUES = {
    lang: {name: _compile_list(pats, _F[lang]) for name, pats in table.items()}
    for lang, table in {
        "en": {"unc_pre": UNCERTAIN_PRE_EN + WEAK_UNCERTAIN["en"], "weak_unc": WEAK_UNCERTAIN["en"],
               "pseudo": PSEUDO_NEGATION["en"], "unc_post": UNCERTAIN_POST_EN, "neg_pre": NEGATION_PRE_EN,
               "neg_post": NEGATION_POST_EN, "break": SCOPE_BREAK_EN},
        "zh": {"unc_pre": UNCERTAIN_PRE_ZH + WEAK_UNCERTAIN["zh"], "weak_unc": WEAK_UNCERTAIN["zh"],
               "pseudo": PSEUDO_NEGATION["zh"], "unc_post": UNCERTAIN_POST_ZH, "neg_pre": NEGATION_PRE_ZH,
               "neg_post": NEGATION_POST_ZH, "break": SCOPE_BREAK_ZH},
    }.items()
}
_SENT = {k: re.compile(v) for k, v in SENTENCE_SPLIT.items()}
_CLAUSE = {k: re.compile(v, _F[k]) for k, v in CLAUSE_SPLIT.items()}
_NORMAL_REPORT = {k: _compile_list(v, _F[k]) for k, v in NORMAL_REPORT.items()}
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Chinese commas usually separate statements; a negation only continues across
# one when the next piece is a bare list ("没有任何病灶巩固，胸腔积液或气孔").
_ZH_COMMA = re.compile(r"[，,]")
_ZH_VERBISH = re.compile(r"有|是|显示|见|为|表明|存在|可能|正常|清晰|稳定|提示|看|呈|伴")


def detect_lang(text: str) -> str:
    """'zh' if the text contains any CJK ideograph, else 'en'."""
    return "zh" if _CJK.search(text or "") else "en"


def _clauses(text: str, lang: str) -> list[str]:
    out = []
    for sent in _SENT[lang].split(text):
        for clause in _CLAUSE[lang].split(sent):
            if clause and clause.strip():
                out.append(clause)
    return out


def _zh_subclauses(clause: str) -> list[str]:
    """Split a Chinese clause at commas, re-joining bare list continuations."""
    parts = _ZH_COMMA.split(clause)
    out = [parts[0]]
    for part in parts[1:]:
        if re.search(r"或|、", part) and not _ZH_VERBISH.search(part):
            out[-1] += "，" + part
        else:
            out.append(part)
    return out


def _mention_prefilter(lang: str) -> dict[str, re.Pattern]:
    """One alternation per observation of all its patterns: a clause is run through an
    observation's patterns only when its alternation matches somewhere, which is exactly when one
    of them does. Most clauses mention a few observations or none; running ~90 patterns one by one
    on every clause took twice as long (measured on the OpenI reports)."""
    per: dict[str, list[str]] = {}
    for table in (NORMAL_EN, BORDERLINE_EN, MENTIONS_EN) if lang == "en" else (NORMAL_ZH, BORDERLINE_ZH, MENTIONS_ZH):
        for finding, pats in table.items():
            per.setdefault(finding, []).extend(p.replace("(?P<m>", "(?:") for p in pats)
    return {f: _compile_list(pats, _F[lang]) for f, pats in per.items()}


_FINDING_MENTION = {lang: _mention_prefilter(lang) for lang in ("en", "zh")}


def _find_mentions(clause: str, lang: str) -> list[tuple[int, int, str, int | None]]:
    """(start, end, finding, preset_status) for each mention; phrases with a fixed
    status (normal heart size, borderline) and then longer matches win on overlap."""
    candidates = {f for f, pat in _FINDING_MENTION[lang].items() if pat.search(clause)}
    found = []
    for table, preset in ((_NORMALS[lang], NEGATIVE), (_BORDERLINE[lang], UNCERTAIN), (_MENTIONS[lang], None)):
        for finding, pats in table.items():
            if finding not in candidates:
                continue
            for pat in pats:
                for m in pat.finditer(clause):
                    s, e = (m.span("m") if "m" in pat.groupindex and m.group("m") else m.span())
                    found.append((s, e, finding, preset, m.start(), m.end()))
    # Prefer fixed-status phrases, then longer matches; drop mentions overlapping a
    # kept one of the *same* finding (different findings may share words).
    found.sort(key=lambda t: (t[3] is None, -(t[5] - t[4]), t[0]))
    kept: list[tuple] = []
    for cand in found:
        if any(k[2] == cand[2] and cand[4] < k[5] and k[4] < cand[5] for k in kept):
            continue
        kept.append(cand)
    return [(s, e, f, p) for s, e, f, p, _, _ in kept]


def _spans(pat: re.Pattern, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pat.finditer(text) if m.end() > m.start()]


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """Blank out spans with a filler that is neither a word char nor whitespace,
    keeping offsets (so "\\s*" in a cue cannot swallow a masked mention)."""
    chars = list(text)
    for s, e in spans:
        chars[s:e] = "#" * (e - s)
    return "".join(chars)


# Laterality and severity words a mention takes from its neighbourhood (the nearest one before
# it, else one right after it, inside its negation scope). Chinese 左右 means "about", not a side.
SIDE_WORDS = {
    "en": [(r"\b(?:bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bilaterally)\b", "bilateral"),
           (r"\bleft(?:-sided)?\b", "left"), (r"\bright(?:-sided)?\b", "right")],
    "zh": [(r"双侧|两侧|双肺|两肺|双下|双上|双", "bilateral"), (r"左(?!右)", "left"), (r"(?<!左)右", "right")],
}
GRADE_WORDS = {  # 1 small/mild, 2 moderate, 3 large/severe
    "en": [(r"\b(?:small|tiny|trace|minimal(?:ly)?|mild(?:ly)?|slight(?:ly)?|subtle)\b", 1),
           (r"\bmoderate(?:ly)?\b", 2),
           (r"\b(?:large|massive|severe(?:ly)?|marked(?:ly)?|extensive|huge|tension)\b", 3)],
    "zh": [(r"少量|微量|少许|轻度|轻微|微小|小量|细小|小", 1), (r"中等|中度|中量", 2),
           (r"大量|重度|严重|广泛|巨大|大面积|张力性", 3)],
}
_SIDE = {lang: [(re.compile(p), v) for p, v in pats] for lang, pats in SIDE_WORDS.items()}
_GRADE = {lang: [(re.compile(p), v) for p, v in pats] for lang, pats in GRADE_WORDS.items()}
# How far (characters) a side or severity word may stand before / after its mention.
_REACH = {"en": (40, 20), "zh": (8, 3)}


def _qualifier(words: list[tuple[int, int, object]], start: int, end: int, left: int, right: int,
               lang: str) -> object | None:
    """The value of the nearest qualifier word before the mention (within reach and scope), else
    of the first one right after it; None when there is none."""
    before, after = _REACH[lang]
    prior = [(e, v) for s, e, v in words if left <= s and e <= start and start - e <= before]
    if prior:
        return max(prior, key=lambda t: t[0])[1]
    nxt = [(s, v) for s, e, v in words if s >= end and s < right and s - end <= after]
    return min(nxt, key=lambda t: t[0])[1] if nxt else None


def _qualifier_words(table, clause: str, mentions) -> list[tuple[int, int, object]]:
    masked = _mask(clause, [(s, e) for s, e, _, _ in mentions])
    return [(m.start(), m.end(), value) for pat, value in table for m in pat.finditer(masked)]


# Radiology reports repeat their sentences ("The lungs are clear."), and a clause's labels depend
# on the clause alone: cached, a 100,000-report file labels each distinct clause once.
@lru_cache(maxsize=1 << 17)
def _read_clause(clause: str, lang: str) -> tuple[tuple[str, int, str | None, int | None], ...]:
    """(observation, status, side, severity grade) for each mention in one clause."""
    mentions = _find_mentions(clause, lang)
    if not mentions:
        return ()
    cues = _CUES[lang]
    # Mask mention words so cue words inside them (无气症, 不张) do not fire,
    # and mask uncertainty cues before looking for negation ("cannot exclude").
    masked = _mask(clause, [(s, e) for s, e, _, _ in mentions])
    masked = _mask(masked, _spans(cues["pseudo"], masked))
    unc_pre = _spans(cues["unc_pre"], masked)
    unc_post = _spans(cues["unc_post"], masked)
    masked_neg = _mask(masked, unc_pre + unc_post)
    neg_pre = _spans(cues["neg_pre"], masked_neg)
    weak = set(_spans(cues["weak_unc"], masked))
    neg_post = _spans(cues["neg_post"], masked_neg)
    breaks = sorted(s for s, _ in _spans(cues["break"], masked_neg))
    sides = _qualifier_words(_SIDE[lang], clause, mentions)
    grades = _qualifier_words(_GRADE[lang], clause, mentions)

    ends = sorted(e for _, e, _, _ in mentions)
    starts = sorted(s for s, _, _, _ in mentions)
    out = []
    for start, end, finding, preset in mentions:
        i = bisect.bisect_left(breaks, start)
        left = breaks[i - 1] if i else 0
        j = bisect.bisect_left(breaks, end)
        right = breaks[j] if j < len(breaks) else len(clause)
        # a qualifier belongs to the nearest mention: none may stand between them
        k = bisect.bisect_right(ends, start)
        q_left = max(left, ends[k - 1]) if k else left
        k = bisect.bisect_left(starts, end)
        q_right = min(right, starts[k]) if k < len(starts) else right
        side = _qualifier(sides, start, end, q_left, q_right, lang)
        grade = _qualifier(grades, start, end, q_left, q_right, lang)
        out.append((finding, _status(start, end, preset, left, right, unc_pre, unc_post, neg_pre,
                                     neg_post, weak), side, grade))
    return tuple(out)


def _status(start, end, preset, left, right, unc_pre, unc_post, neg_pre, neg_post, weak) -> int:
    """One mention's status from the cues around it (see the module docstring, step 3)."""
    if preset is not None:
        return preset
    if any(end <= s < right for s, _ in unc_post):
        return UNCERTAIN
    negs = [e for s, e in neg_pre if left <= s and e <= start]
    uncs = [e for s, e in unc_pre if left <= s and e <= start]
    strong_uncs = [e for s, e in unc_pre if left <= s and e <= start and (s, e) not in weak]
    if negs and (not uncs or max(negs) > max(uncs) or not strong_uncs or max(negs) > max(strong_uncs)):
        return NEGATIVE  # the nearest cue is a negation (weak modifiers ignored)
    if uncs:
        return UNCERTAIN
    if any(end <= s < right for s, _ in neg_post):
        return NEGATIVE
    return POSITIVE


def _label_clause(clause: str, lang: str) -> tuple[tuple[str, int], ...]:
    return tuple((finding, status) for finding, status, _, _ in _read_clause(clause, lang))


def aggregate(statuses: Iterable[int]) -> int | None:
    """CheXpert aggregation: positive > uncertain > negative > absent."""
    statuses = set(statuses)
    for status in (POSITIVE, UNCERTAIN, NEGATIVE):
        if status in statuses:
            return status
    return None


_UNUSUAL_SPACE = re.compile(r"\s\s|[^\S \n]|^\s|\s$")  # blanks in a row, at an end, or other than " " / "\n"
# No report clause is this long; cutting longer runs bounds the work per clause, so labelling
# is linear in the text's length whatever it holds.
CLAUSE_MAX_CHARS = 600


def normalize_space(text: str) -> str:
    """Each run of whitespace as one space (one newline when it holds one), none at either end.
    Several cue patterns
    start with ``\\s*``; on a long run of blanks each start position rescans the run, which made
    labelling quadratic (50,000 spaces took 40-60 s)."""
    text = text or ""
    if not _UNUSUAL_SPACE.search(text):
        return text
    # str.split() runs in C, in linear time (a regex callback per blank run cost more); blank
    # lines go, so the result has no two blanks in a row and a second call does nothing
    return "\n".join(" ".join(line.split()) for line in text.split("\n") if line and not line.isspace())


def lower_text(text: str) -> str:
    """``text`` lower-cased with its length kept (a few characters, such as U+0130, lower-case to
    two; they keep the first), so match offsets stay valid."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(ch.lower()[:1] for ch in text)


def _pieces(text: str, lang: str) -> Iterator[str]:
    for clause in _clauses(lower_text(normalize_space(text)), lang):
        for piece in (_zh_subclauses(clause) if lang == "zh" else [clause]):
            for at in range(0, len(piece), CLAUSE_MAX_CHARS):
                yield piece[at:at + CLAUSE_MAX_CHARS]


def _check_lang(lang: str) -> None:
    if lang not in ("en", "zh"):
        raise ValueError(f"unsupported language: {lang!r}")


def labelled_clauses(text: str, lang: str) -> list[tuple[str, tuple[tuple[str, int], ...]]]:
    """Every clause the labeller reads (lower-cased), with its (observation, status) mentions
    (empty when the clause states no observation); label_report aggregates these."""
    _check_lang(lang)
    return [(piece, _label_clause(piece, lang)) for piece in _pieces(text, lang)]


def read_clauses(text: str, lang: str) -> list[tuple[str, tuple[tuple[str, int, str | None, int | None], ...]]]:
    """As labelled_clauses, each mention with its side ("left" | "right" | "bilateral" | None) and
    severity grade (1 small/mild, 2 moderate, 3 large/severe, None): the clinical reward's view."""
    _check_lang(lang)
    return [(piece, _read_clause(piece, lang)) for piece in _pieces(text, lang)]


def label_report(text: str, lang: str | None = None) -> dict[str, int | None]:
    """Label one report; returns {observation: 1 | 0 | -1 | None} for every FINDINGS key."""
    text = text or ""
    lang = lang or detect_lang(text)
    _check_lang(lang)
    per_finding: dict[str, list[int]] = {f: [] for f in FINDINGS}
    for _, mentions in labelled_clauses(text, lang):
        for finding, status in mentions:
            if finding in per_finding:  # not EXTRA_FINDINGS
                per_finding[finding].append(status)
    labels = {f: aggregate(per_finding[f]) for f in FINDINGS if f != NO_FINDING}
    abnormal = any(v in (POSITIVE, UNCERTAIN) for f, v in labels.items() if f != "Support Devices")
    # An empty report states nothing, not a normal chest: No Finding stays absent.
    labels[NO_FINDING] = None if abnormal or not text.strip() else POSITIVE
    return {f: labels[f] for f in FINDINGS}


def to_binary(labels: Mapping[str, int | None], policy: str = "positive") -> dict[str, int]:
    """Binary labels under an uncertainty policy (UNCERTAINTY_POLICIES): positive -> 1 and
    negative/absent -> 0; uncertain -> 1 under "positive" (U-Ones) and "partial", 0 under
    "negative" (U-Zeros)."""
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"unknown uncertainty policy: {policy!r}")
    present = (POSITIVE,) if policy == "negative" else (POSITIVE, UNCERTAIN)
    return {f: 1 if labels.get(f) in present else 0 for f in FINDINGS}


def is_normal_report(text: str, lang: str | None = None) -> bool:
    """True when the report states an overall normal chest / no acute abnormality."""
    text = text or ""
    lang = lang or detect_lang(text)
    text = lower_text(normalize_space(text))
    return any(not _NOT_OVERALL.search(m.group()) for m in _NORMAL_REPORT[lang].finditer(text))


__all__ = [
    "EXTRA_FINDINGS", "UNCERTAINTY_ENV", "UNCERTAINTY_POLICIES", "uncertainty_policy", "lower_text", "normalize_space", "read_clauses", "FINDINGS", "POSITIVE", "NEGATIVE", "UNCERTAIN", "NO_FINDING", "aggregate", "detect_lang",
    "is_normal_report", "label_report", "labelled_clauses", "to_binary",
]
