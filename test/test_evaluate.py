"""Evaluation: metric values against hand-computed cases, the ablation verdict, and the
whole chain tiny model -> batch inference -> report card on the bundled X-rays."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from helpers import PYTHON, ROOT, openi, run, shuffled_rows, write_rows
from medswift.eval import findings, r2gen_cleaning, text_metrics
from medswift.eval import report_card as evaluate

BP = math.exp(1 - 6 / 3)  # brevity penalty of a 3-token hypothesis against a 6-token reference
ROUGE_HALF = (1 + 1.2 ** 2) * 1.0 * 0.5 / (0.5 + 1.2 ** 2 * 1.0)  # P=1, R=1/2, beta=1.2 (pycocoevalcap)


def test_tokenisation():
    assert text_metrics.tokenize_zh_chars("心脏大小正常，肺部清晰。CT 12.5mm") == "心 脏 大 小 正 常 肺 部 清 晰 ct 12.5 mm"
    words = text_metrics.tokenize_zh_jieba("心脏大小正常，肺部清晰。").split()
    assert "，" not in words and "。" not in words and "".join(words) == "心脏大小正常肺部清晰"
    assert text_metrics.tokenize_all({"a": "   "}, "char") == {"a": text_metrics.EMPTY}
    assert text_metrics.detect_lang(["心脏正常", "肺部清晰", "ok"]) == "zh"
    assert text_metrics.detect_lang(["Heart normal.", "肺部清晰", "ok"]) == "en"


def test_english_values_by_hand():
    r = text_metrics.score({"a": "The cat sat on the mat."}, {"a": "the cat sat"}, "en", "ptb")["corpus"]
    # BLEU-1: all 3 unigrams match (precision 1) times the brevity penalty e^(1-6/3)
    assert r["bleu_1"] == pytest.approx(BP, abs=1e-6)
    assert r["bleu_2"] == pytest.approx(BP, abs=1e-6)  # 2/2 bigrams match
    # ROUGE-L: LCS 3, precision 3/3, recall 3/6
    assert r["rouge_l"] == pytest.approx(ROUGE_HALF, abs=1e-6)
    assert 0 < r["meteor"] < 1
    same = text_metrics.score({"a": "no acute disease", "b": "small left effusion"},
                              {"a": "No acute disease.", "b": "small left effusion"}, "en", "ptb")["corpus"]
    assert same["bleu_1"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)


def test_chinese_is_not_scored_zero():
    r = text_metrics.score({"a": "心脏大小正常"}, {"a": "心脏大小"}, "zh", "char")
    # 4 of 4 characters match; brevity penalty e^(1-6/4); LCS 4: P=1, R=2/3
    assert r["corpus"]["bleu_1"] == pytest.approx(math.exp(1 - 6 / 4), abs=1e-6)
    p, rec = 1.0, 4 / 6
    assert r["corpus"]["rouge_l"] == pytest.approx((1 + 1.44) * p * rec / (rec + 1.44 * p), abs=1e-6)
    assert "meteor" not in r["corpus"], "METEOR is English-only"
    empty = text_metrics.score({"a": "心脏大小正常"}, {"a": ""}, "zh", "char")["corpus"]
    assert empty["bleu_1"] == pytest.approx(0, abs=1e-9) and empty["rouge_l"] == 0


def test_finding_f1_by_hand(tmp_path):
    """Through the report card itself (predictions file in, metrics out)."""
    refs = ["Mild cardiomegaly. No pneumothorax.", "Small left pleural effusion.", "Heart size normal. Lungs clear."]
    preds = ["Cardiomegaly.", "No pleural effusion.", "Possible cardiomegaly."]
    # Cardiomegaly: refs [1,0,0], preds [1,0,1(uncertain)] -> P 1/2, R 1/1, F1 2/3
    # Pleural Effusion: refs [0,1,0], preds [0,0,0] -> R 0, F1 0
    # No Finding: refs [0,0,1], preds [0,1,0] -> F1 0
    rows = [{"key": f"k{i}", "id": f"k{i}", "prompt": "Report.", "reference": ref, "response": pred}
            for i, (ref, pred) in enumerate(zip(refs, preds))]
    s = evaluate.evaluate(write_rows(tmp_path / "p.jsonl", rows), tmp_path / "o", "en", n_boot=0,
                          meteor_sample=3)["findings"]
    cm = s["per_finding"]["Cardiomegaly"]
    assert (cm["precision"], cm["recall"], cm["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert s["per_finding"]["Pleural Effusion"]["f1"] == 0.0 and s["per_finding"]["Pleural Effusion"]["support"] == 1
    assert s["per_finding"]["Pneumothorax"]["f1"] is None, "absent on both sides: n/a, not 0"
    # micro: TP 1 (cardiomegaly), FP 1 (cardio) + 1 (no finding), FN 1 (effusion) + 1 (no finding) -> 2/(2+2+2)
    assert s["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3) and s["macro_over"] == 3
    assert s["name"] == "finding F1 (rule-based)"


def test_ablation_flags_a_model_that_ignores_the_image():
    rows = [{"response": "No acute disease.", "prompt": "p"} for _ in range(4)]
    controls = [{"control": "blank", "prompt": "p", "response": "No acute disease."},
                {"control": "noise", "prompt": "p", "response": "Noise."}]
    blind = evaluate.ablation(rows, controls)
    assert blind["identical_to_blank_share"] == 1.0 and blind["identical_to_noise_share"] == 0.0
    assert not blind["reads_the_image"] and "WARNING" in evaluate.verdict(blind)
    varied = [{"response": f"Report {i}", "prompt": "p"} for i in range(4)]
    ok = evaluate.ablation(varied, controls)
    assert ok["reads_the_image"] and ok["distinct_share"] == 1.0 and ok["identical_to_blank_share"] == 0.0
    no_controls = evaluate.ablation(varied, [])
    assert no_controls["identical_to_blank_share"] is None and "--ablation" in evaluate.verdict(no_controls)


def test_thinking_output_is_scored_after_think():
    assert evaluate.answer_text("<think>look at the apex</think>\nNo pneumothorax.") == "No pneumothorax."


def test_whole_chain_on_the_bundled_xrays(tiny_model, converted, tmp_path):
    dataset = tmp_path / "all.jsonl"
    dataset.write_text("".join((converted / f"{s}.jsonl").read_text() for s in ("train", "val", "test")))
    preds = tmp_path / "pred.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(dataset), "--output_file", str(preds),
         "--ablation", "--max_new_tokens", "12", "--image_max_token_num", "256", "--quiet"],
        env={"CUDA_VISIBLE_DEVICES": ""})
    with open(preds, "a") as fh:  # a line without reference is listed, not silently used
        fh.write(json.dumps({"key": "x", "response": "hello", "reference": None}) + "\n")
    out = tmp_path / "eval"
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds), "--output_dir", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 8 and m["lang"] == "en" and set(m["text"]) == {"ptb"}
    assert set(m["text"]["ptb"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "meteor"}
    assert list(m["findings"]["per_finding"]) == list(findings.FINDINGS)
    assert m["normal_share"]["references"] > 0.5, "most bundled reports say no acute abnormality"
    # every real-image prediction is set beside the blank-image one, and the card's verdict
    # follows the counts (the warning at a glance when the model ignores the image)
    ablation = m["ablation"]
    assert ablation["compared_with_blank"] == 8
    report = (out / "report.md").read_text()
    warned = "WARNING: the model does not appear to read the image" in report
    assert warned == (not ablation["reads_the_image"]), (ablation, report.splitlines()[:6])
    assert "not for diagnosis" in report and "finding F1 (rule-based)" in report and "CheXbert" in report
    assert "line 25: no reference report" in report
    for png in ("findings_f1.png", "text_metrics.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("WARNING" in proc.stdout) == warned and "not for diagnosis" in proc.stdout


def test_evaluate_errors_are_one_line(tmp_path):
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"response": "x"}) + "\n")
    for args, message in ((["--predictions", str(tmp_path / "missing.jsonl")], "not found"),
                          (["--predictions", str(empty)], "no prediction with a reference")):
        proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), *args, "--output_dir", str(tmp_path / "o")],
                   check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr


# --------------------------------------------------------------------------- hostile prediction files
def test_odd_lines_are_listed_problems_not_tracebacks(tmp_path):
    good = {"key": "a", "response": "No pneumothorax.", "reference": "No pneumothorax. Heart normal."}
    preds = write_rows(tmp_path / "p.jsonl", [
        good, "5", "null", "[1, 2]", "{broken",
        {"key": "b", "response": 42, "reference": "Normal chest."},
        {"key": "c", "response": "Effusion.", "reference": {"findings": "Effusion."}},
        {"key": "d", "response": ["x"], "reference": "Normal."},
        {"key": {"nested": 1}, "response": "x", "reference": "Normal."},
        {"key": "a", "response": "Again.", "reference": "No pneumothorax."},
        {"id": 7, "response": "Small effusion.", "reference": "Small left effusion."},
    ])
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds),
                "--output_dir", str(tmp_path / "o")])
    assert "Traceback" not in proc.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["n"] == 2, "rows a and 7 are scored"
    assert m["problems"] == ["line 2: not a JSON object (int)", "line 3: not a JSON object (NoneType)",
                             "line 4: not a JSON object (list)", "line 5: not JSON",
                             "line 6: response is not text (int)", "line 7: reference is not text (dict)",
                             "line 8: response is not text (list)", "line 9: key/id is not a string (dict)",
                             "line 10: a repeats an earlier row; the first was scored"]
    assert "9 lines not scored" in proc.stdout


def test_mixed_languages_are_labelled_and_scored_per_record(tmp_path):
    """One language for the whole file labelled English reports with the Chinese rules and
    dropped their findings; each record now uses its own language."""
    en = [("Small left pleural effusion.", "Left pleural effusion."), ("Cardiomegaly.", "Mild cardiomegaly."),
          ("Right pneumothorax.", "Small right pneumothorax."), ("Edema.", "Pulmonary edema."),
          ("Consolidation in the left lower lobe.", "Left lower lobe consolidation."),
          ("Rib fracture.", "Right rib fracture.")]
    zh = [("心脏增大。", "心脏增大。"), ("左侧胸腔积液。", "左侧少量胸腔积液。"), ("未见异常。", "心肺未见异常。"),
          ("右侧气胸。", "右侧气胸。")]
    rows = [{"key": f"en{i}", "response": p, "reference": r} for i, (p, r) in enumerate(en)]
    rows += [{"key": f"zh{i}", "response": p, "reference": r} for i, (p, r) in enumerate(zh)]
    preds = write_rows(tmp_path / "mixed.jsonl", rows)
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds),
                "--output_dir", str(tmp_path / "o")])
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["lang"] == "mixed" and m["records_per_lang"] == {"zh": 4, "en": 6}
    assert set(m["text"]) == {"char", "jieba", "ptb"} and m["text_n"] == {"char": 4, "jieba": 4, "ptb": 6}
    per = m["findings"]["per_finding"]
    for name in ("Pleural Effusion", "Cardiomegaly", "Pneumothorax", "Edema", "Consolidation", "Fracture"):
        assert per[name]["support"] >= 1 and per[name]["f1"] == 1.0, name  # the English positives are all found
    assert per["Pleural Effusion"]["support"] == 2 and per["Pneumothorax"]["support"] == 2
    assert "6 reports (en, ptb tokens)" in proc.stdout and "4 reports (zh, char tokens)" in proc.stdout
    assert "ptb (n=6)" in (tmp_path / "o" / "report.md").read_text()


# --------------------------------------------------------------------------- r2gen and METEOR intervals (English)
# Here, not in test_report_card_ci.py: these need the METEOR JVM, which the English cards above
# have already started (one per process, shared).
def test_r2gen_protocol_scores_cleaned_text_as_r2gen_does(tmp_path):
    """No PTB tokenizer: pycocoevalcap straight on the cleaned strings, references cut to 99
    tokens for MIMIC-CXR (style taken from the summary's format), METEOR on a seeded sample
    equal to pycocoevalcap's own Meteor on those records."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    data = tmp_path / "mimic"
    data.mkdir()
    (data / "summary.json").write_text(json.dumps({"format": "mimic-cxr", "split": "test"}))
    rows = shuffled_rows("en", 10, seed=4, dataset=str(data / "test.jsonl"))
    rows[0]["reference"] = " ".join(openi("en")[:3])  # about 150 tokens: the cut matters
    rows[1]["response"] = "1. Heart size normal.. 2. No pleural_effusion; no pneumothorax."
    preds = write_rows(tmp_path / "p.jsonl", rows)
    m = evaluate.evaluate(preds, tmp_path / "o", protocol="r2gen", n_boot=200, meteor_sample=4)
    assert m["protocol"]["dataset_style"] == "mimic_cxr" and "format 'mimic-cxr'" in m["protocol"]["style_source"]
    assert m["protocol"]["reference_max_tokens"] == 99 and set(m["text"]) == {"r2gen"}
    assert m["provenance"]["protocol"] == "r2gen (mimic_cxr cleaning, references cut to 99 tokens)"
    assert m["provenance"]["java"].startswith(("openjdk", "java")), "English: the jar's runtime is recorded"

    ids = sorted(r["key"] for r in rows)
    by = {r["key"]: r for r in rows}
    gts = {i: [" ".join(r2gen_cleaning.clean_mimic_cxr(by[i]["reference"]).split()[:99])] for i in ids}
    res = {i: [" ".join(r2gen_cleaning.clean_mimic_cxr(by[i]["response"]).split())] for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [m["text"]["r2gen"][f"bleu_{k}"] for k in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    assert m["text"]["r2gen"]["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-12)
    uncut = {i: [" ".join(r2gen_cleaning.clean_mimic_cxr(by[i]["reference"]).split())] for i in ids}
    assert Bleu(4).compute_score(uncut, res, verbose=0)[0][0] != pytest.approx(bleu[0], rel=1e-6)

    assert m["meteor_sample_size"] == {"r2gen": 4} and m["meteor_sample_limit"] == 4 and m["meteor_sampled"]
    sample = [ids[k] for k in np.sort(np.random.default_rng(0).choice(10, 4, replace=False))]  # the documented draw
    library = text_metrics.meteor_jar()._meteor  # pycocoevalcap's own Meteor object, on the same JVM
    expected, _ = library.compute_score({i: gts[i] for i in sample}, {i: res[i] for i in sample})
    assert m["text"]["r2gen"]["meteor"] == pytest.approx(expected, rel=1e-12)
    for name, value in m["text"]["r2gen"].items():
        lo, hi = m["ci95"]["text"]["r2gen"][name]
        assert lo <= value <= hi, name
    card = (tmp_path / "o" / "report.md").read_text()
    assert "Protocol: **r2gen** (mimic_cxr" in card and "This reproduces the protocol, not R2Gen's numbers" in card
    assert ("METEOR scored on a seeded sample (r2gen: 4 of 10 records; --meteor_sample 4, seed 0); the other metrics "
            "on every record.") in card
    assert "| protocol | r2gen (mimic_cxr cleaning, references cut to 99 tokens) |" in card


def test_meteor_resamples_are_the_jars_own_corpus_scores():
    """A resample's summed statistics, scored by one EVAL, equal the jar scoring the drawn
    records themselves, including records matched whole in one chunk (the jar does not add
    their chunk) and an empty hypothesis."""
    refs = [" ".join(r.lower().replace(".", " .").split()) for r in openi("en")[:40]]
    hyps = refs[:5] + ["<empty>"] + [refs[(i * 3) % 40] for i in range(6, 40)]
    jar = text_metrics.meteor_jar()
    lines = jar.stats(list(zip(hyps, refs)))
    per_record, corpus = jar.evaluate(lines)
    library = jar._meteor.compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert (corpus, per_record) == (library[0], list(library[1])), "pipelined requests: the library's answers"
    stats = text_metrics.meteor_additive(lines)
    assert (stats[:5, 20] == 0).all() and (stats[6:, 20] > 0).any()
    assert jar.corpus_scores(stats.sum(0)[None]) == [corpus]
    rng = random.Random(7)
    for _ in range(3):
        drawn = [rng.randrange(40) for _ in range(40)]
        assert jar.corpus_scores(stats[drawn].sum(0)[None]) == [jar.evaluate([lines[i] for i in drawn])[1]]


def test_hostile_lines_and_very_long_responses(tmp_path):
    """Issue 16: rows holding a raw U+2028/U+2029/U+0085 (valid JSON, written by other tools) were cut in
    two (3 of 4 rows lost); a 100,000-deep line was a RecursionError traceback; a huge response ran
    METEOR's jar for minutes and died. Now: every row scored, the deep line listed, the response cut."""
    rows = [{"key": f"r{k}", "response": f"Lungs clear{sep}no effusion.", "reference": f"Lungs clear{sep}normal."}
            for k, sep in enumerate(("\u2028", "\u2029", "\u0085", " "))]
    rows.append({"key": "long", "response": "Normal heart size. " * 100_000, "reference": "Normal heart size."})
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
                      + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds), "--output_dir",
                str(tmp_path / "o"), "--bootstrap", "0"], timeout=300)
    assert "Traceback" not in proc.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["n"] == 5 and m["problems"] == ["line 6: nested too deeply"], m["problems"]
    assert m["cut_for_scoring"] == {"limit_chars": evaluate.MAX_SCORED_CHARS,
                                    "rows": {"long": ["response of 1,900,000 characters"]}}
    assert "1 rows scored on their first 20,000 characters" in proc.stdout
