"""Report cards that can be set beside a paper: provenance, 95% bootstrap intervals, the
r2gen protocol, the image-ablation key, and the bench's command line.

Kept fast (the suite has a time budget): Chinese rows need no Java (METEOR's JVM alone costs
about 11 s of CPU to load), and commands run in this process through their ``main``. The
English r2gen card and the METEOR intervals are checked in test_evaluate.py, beside the other
English cards, where the METEOR JVM is already running."""
from __future__ import annotations

import datetime
import hashlib
import json
import random
import re
from importlib import metadata

import numpy as np
import pytest

from helpers import PYTHON, ROOT, openi, run, shuffled_rows, write_rows
from medswift.core.cli import usage_examples
from medswift.eval import bootstrap, provenance, r2gen_cleaning, scorer_workers, text_metrics
from medswift.eval import charts, report_card

TEXT = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")


def without_date(m: dict) -> dict:
    return {**m, "provenance": {k: v for k, v in m["provenance"].items() if k != "evaluated_at"}}


# --------------------------------------------------------------------------- BLEU from statistics
def test_bleu_from_statistics_is_pycocoevalcaps_corpus_bleu():
    """Per-record statistics summed, then the corpus formula: equal to pycocoevalcap's Bleu(4)
    on the full set and on a resample with repeats (every record a new id), with empty and
    very short hypotheses (no 3- or 4-grams), both sides of the brevity penalty, several
    references and a 'closest'-length tie (5 tokens against references of 4 and 6)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    rng = random.Random(3)
    refs = [" ".join(r.lower().replace(".", " .").replace(",", " ,").split()) for r in openi("en")[:120]]
    words = " ".join(refs).split()
    gts, res = {}, {}
    for i, ref in enumerate(refs):
        k = rng.choice([0, 1, 2, 3, 8, 30, 70])
        res[i] = [" ".join(rng.sample(words, k))]
        gts[i] = [ref] if i % 3 else [ref, " ".join(ref.split()[: max(1, len(ref.split()) // 2)])]
    gts[len(refs)], res[len(refs)] = ["a b c d", "a b c d e f"], ["a b c x y"]  # the tie: 4 wins over 6
    scorer = BleuScorer(n=4)
    for i in gts:
        scorer += (res[i][0], gts[i])
    stats = bootstrap.bleu_stats(scorer.ctest)
    assert stats[-1, 9] == 4
    expected, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert bootstrap.bleu_from_stats(stats.sum(0))[0] == pytest.approx(expected, rel=1e-12, abs=0)
    assert 0 < expected[3] < expected[0] < 1

    drawn = [rng.randrange(len(gts)) for _ in range(len(gts))]
    again, _ = Bleu(4).compute_score({j: gts[i] for j, i in enumerate(drawn)}, {j: res[i] for j, i in enumerate(drawn)},
                                     verbose=0)
    assert bootstrap.bleu_from_stats(stats[drawn].sum(0))[0] == pytest.approx(again, rel=1e-12, abs=0)
    assert again != pytest.approx(expected, rel=1e-6)

    # the workers' path: counted in chunks, scored by pycocoevalcap's own compute_score
    pairs = [(res[i][0], gts[i][0]) for i in range(len(refs))]
    comps = [c for k in range(0, len(pairs), 37) for c in text_metrics._bleu_comps(pairs[k:k + 37])]
    single, _ = Bleu(4).compute_score({i: [g] for i, (_, g) in enumerate(pairs)}, {i: [h] for i, (h, _) in enumerate(pairs)},
                                      verbose=0)
    assert text_metrics.corpus_bleu(comps)[0] == single


def test_resampling_draws_records_with_replacement_seeded():
    n = 50
    sums = bootstrap.resample_sums(np.eye(n), 64, seed=5)  # row b: how often each record was drawn
    assert sums.shape == (64, n) and (sums.sum(1) == n).all() and (sums >= 0).all()
    assert (sums == np.round(sums)).all() and (sums == 0).any(1).all(), "with replacement: some records left out"
    assert (bootstrap.resample_sums(np.eye(n), 64, seed=5) == sums).all()
    assert not (bootstrap.resample_sums(np.eye(n), 64, seed=6) == sums).all()
    micro, macro = bootstrap.f1_from_counts(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))
    assert micro[0] == pytest.approx(2 / 3) and macro[0] == pytest.approx(2 / 3), "undefined finding left out"


# --------------------------------------------------------------------------- intervals
def test_intervals_contain_the_value_and_shrink_when_rows_repeat(tmp_path):
    """Chinese rows (no Java needed): every headline number lies inside its interval, and the
    same rows four times over (new ids) give intervals about half as wide (1/sqrt(4))."""
    rows = shuffled_rows("zh", 40, seed=1)
    once = write_rows(tmp_path / "once.jsonl", rows)
    four = write_rows(tmp_path / "four.jsonl", [dict(r, key=f"{r['key']}-{k}") for k in range(4) for r in rows])
    a = report_card.evaluate(once, tmp_path / "a", n_boot=400, seed=1)
    b = report_card.evaluate(four, tmp_path / "b", n_boot=400, seed=1)
    assert a["text"]["char"]["bleu_1"] == pytest.approx(b["text"]["char"]["bleu_1"]), "repeats leave the values alone"

    def checks(m):
        for scheme in ("char", "jieba"):
            for name in TEXT:
                yield f"{scheme} {name}", m["text"][scheme][name], m["ci95"]["text"][scheme][name]
        for name in ("micro_f1", "macro_f1"):
            yield name, m["findings"][name], m["ci95"]["findings"][name]

    for (label, value, (lo, hi)), (_, value4, (lo4, hi4)) in zip(checks(a), checks(b)):
        assert lo <= value <= hi and lo4 <= value4 <= hi4, label
        assert hi - lo > 0 and (hi4 - lo4) < 0.75 * (hi - lo), label
    card = (tmp_path / "a" / "report.md").read_text()
    lo, hi = a["ci95"]["text"]["char"]["bleu_4"]
    assert f"| bleu_4 | {a['text']['char']['bleu_4']:.3f} [{lo:.3f}, {hi:.3f}] |" in card
    assert "400 resamples" in card and "document frequencies held fixed" in card
    again = report_card.evaluate(once, tmp_path / "c", n_boot=400, seed=1)
    assert again["ci95"] == a["ci95"], "seeded: the same intervals every time"


def test_parallel_workers_give_the_same_card(tmp_path, monkeypatch):
    monkeypatch.setattr(scorer_workers, "PARALLEL_MIN_ROWS", 1)
    rows = write_rows(tmp_path / "p.jsonl", shuffled_rows("zh", 30, seed=2))
    serial = report_card.evaluate(rows, tmp_path / "s", n_boot=50, workers=1)
    pooled = report_card.evaluate(rows, tmp_path / "w", n_boot=50, workers=2)
    assert without_date(pooled) == without_date(serial)


def test_bootstrap_zero_turns_intervals_off(tmp_path, capsys):
    rows = write_rows(tmp_path / "p.jsonl", shuffled_rows("zh", 12))
    assert report_card.main(["--predictions", str(rows), "--output_dir", str(tmp_path / "o"), "--bootstrap", "0"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["ci95"] is None and m["bootstrap"]["resamples"] == 0
    card = (tmp_path / "o" / "report.md").read_text()
    assert "No confidence intervals (--bootstrap 0)." in card and "[" not in card.split("| bleu_1 |")[1].split("\n")[0]
    out = capsys.readouterr().out
    assert "[" not in out.splitlines()[0] and out.rstrip().endswith("For research only, not for diagnosis.")
    for flag, value in (("--bootstrap", "-1"), ("--meteor_sample", "-5"), ("--workers", "0")):
        code = report_card.main(["--predictions", str(rows), "--output_dir", str(tmp_path / "bad"), flag, value])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: {flag} must be ") and err.rstrip().endswith(f"got {value}")
    assert not (tmp_path / "bad").exists(), "refused before any work"
    assert report_card.main(["--predictions", str(rows), "--output_dir", str(rows)]) == 2
    assert capsys.readouterr().err == f"error: --output_dir {rows} is a file, not a folder\n"


def test_usage_block_has_runnable_examples_with_the_new_flags():
    examples = usage_examples(report_card.__doc__).splitlines()
    assert all(e.startswith("python scripts/evaluate.py --predictions ") for e in examples)
    assert any("--protocol r2gen" in e and "--bootstrap 1000" in e for e in examples)
    args = report_card.build_parser().parse_args(examples[1].split()[2:])
    assert (args.protocol, args.dataset_style, args.bootstrap, args.seed) == ("r2gen", "iu_xray", 1000, 0)


# --------------------------------------------------------------------------- provenance
def test_provenance_names_the_file_the_model_and_what_scored_it(tmp_path):
    data = tmp_path / "converted"
    data.mkdir()
    dataset = data / "test.jsonl"
    dataset.write_text("{}\n")
    (data / "summary.json").write_text(json.dumps(
        {"format": "mimic-cxr-jpg", "split": "test", "unit": "study", "section": "findings", "read": 1200,
         "written": 1150, "records_per_split": {"train": 1000, "val": 50, "test": 100}, "task": "report",
         "unrelated": "not shown"}))
    gen = {"max_new_tokens": 256, "temperature": 0.0}
    common = dict(model="Qwen/Qwen3-VL-8B-Instruct", adapter="results/lora/ckpt-9", backend="vllm", generation=gen)
    rows = shuffled_rows("zh", 6, dataset=str(dataset), **common)
    control = {"key": "<blank>::p", "control": "blank", "prompt": None, "images": ["<blank>"], "response": "无异常。"}
    preds = write_rows(tmp_path / "p.jsonl", rows + [control])
    with preds.open("a") as fh:
        fh.write("{broken\n")
    m = report_card.evaluate(preds, tmp_path / "o", n_boot=0)
    prov = m["provenance"]
    assert prov["predictions_file"] == str(preds) and prov["predictions_bytes"] == preds.stat().st_size
    assert prov["predictions_sha256"] == hashlib.sha256(preds.read_bytes()).hexdigest()
    assert prov["model"] == "Qwen/Qwen3-VL-8B-Instruct" and prov["generation"] == gen and prov["backend"] == "vllm"
    assert prov["summary"] == {"format": "mimic-cxr-jpg", "task": "report", "split": "test", "unit": "study",
                               "section": "findings", "read": 1200, "written": 1150,
                               "records_per_split": {"train": 1000, "val": 50, "test": 100}}
    version = re.search(r"__version__ = \"(.+)\"", (ROOT / "version.py").read_text()).group(1)
    assert prov["toolkit"] == {"name": "MedSwift-VL", "version": version}
    assert prov["packages"] == {name: metadata.version(name) for name in ("pycocoevalcap", "numpy", "scikit-learn",
                                                                          "jieba")}
    assert prov["java"] is None, "Chinese only: no jar ran"
    when = datetime.datetime.fromisoformat(prov["evaluated_at"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - when) < datetime.timedelta(minutes=10)
    assert (prov["rows_scored"], prov["controls"], prov["problems"]) == (6, 1, 1)
    assert prov["protocol"].startswith("default") and m["protocol"] == {"name": "default"}
    card = (tmp_path / "o" / "report.md").read_text()
    for line in (f"| predictions file | {preds} |",
                 f"| predictions sha256 | {prov['predictions_sha256']} ({preds.stat().st_size} bytes) |",
                 "| model | Qwen/Qwen3-VL-8B-Instruct |", "| adapter | results/lora/ckpt-9 |",
                 '| generation | {"max_new_tokens": 256, "temperature": 0.0} |', f"| dataset file | {dataset} |",
                 "| dataset format | mimic-cxr-jpg |", "| dataset unit | study |", "| dataset section | findings |",
                 "| dataset read | 1200 |", '| dataset records_per_split | {"test": 100, "train": 1000, "val": 50} |',
                 "| rows scored / control rows / lines not scored | 6 / 1 / 1 |", f"| toolkit | MedSwift-VL {version} |",
                 f"| metric packages | pycocoevalcap {metadata.version('pycocoevalcap')}, numpy {np.__version__}, ",
                 f"| evaluated at (UTC) | {prov['evaluated_at']} |", "| protocol | default (PTB tokens for English"):
        assert line in card, line

    def card_of(rows):  # provenance alone, for the variants (a whole card costs charts each time)
        return "\n".join(provenance.markdown({**provenance.collect(rows, []), **provenance.scoring(preds, 0, False),
                                              "protocol": "default"}))

    # an older summary without the new keys, rows that disagree, then no dataset file at all
    (data / "summary.json").write_text(json.dumps({"task": "report", "read": 10}))
    rows[0]["model"], rows[1]["generation"] = "other-model", {"max_new_tokens": 8}
    prov = provenance.collect(rows, [])
    assert prov["model"] == "mixed" and prov["generation"] == "mixed" and prov["adapter"] == "results/lora/ckpt-9"
    card = card_of(rows)
    assert "| model | mixed |" in card and "| dataset read | 10 |" in card
    assert "| dataset format | n/a |" in card and "| dataset unit | n/a |" in card and "| dataset section | n/a |" in card

    gone = [dict(r, dataset=str(tmp_path / "gone" / "test.jsonl")) for r in rows]
    prov = provenance.collect(gone + [dict(rows[0], key="x", dataset=None)], [])
    assert prov["dataset"] == "mixed" and prov["summary"] is None and "1 rows name none" in prov["dataset_note"]
    card = card_of(gone)
    assert "dataset file not found here; no summary.json beside the dataset file" in card
    assert "| dataset format | n/a |" in card and "| dataset records_per_split | n/a |" in card
    (data / "summary.json").write_text("[1, 2")
    assert "summary.json could not be read (JSONDecodeError)" in provenance.collect(rows, [])["dataset_note"]


# --------------------------------------------------------------------------- r2gen
# The expected strings follow R2Gen's cleaning rules (cuhksz-nlp/R2Gen, modules/tokenizers.py,
# clean_report_iu_xray / clean_report_mimic_cxr), derived by hand from them step by step.
R2GEN_IU = {
    # ".." -> ".", "1. " dropped, ". 2. " -> ". ", split at ". ", last period dropped
    "The heart is normal.. 1. No effusion. 2. Lungs clear.": "the heart is normal . no effusion . lungs clear .",
    # quotes, slash and apostrophe removed; ; _ ( ) , : removed by the character class; hyphen kept;
    # " 3. " became a sentence break
    'Heart size "normal"/stable; no pleural_effusion (left), it\'s T-spine: 3. XXXX.':
        "heart size normalstable no pleuraleffusion left its t-spine . xxxx .",
    # IU-Xray keeps newlines (no sentence break at ".\n"); the ':'..'[' range drops < > @ [ and
    # also { } % & !; digits stay; removed characters leave double spaces
    'No acute disease.\nHeart "normal" size 10/12 <5mm> @ [left] {x} 50% & more!':
        "no acute disease\nheart normal size 1012 5mm  left x 50  more .",
    "Item 11. Normal.": "item 1normal .",  # "1. " is removed anywhere, also inside "11. "
    "A.. B... C.... D......... E": "a . b . c . d . e .",  # three '..' passes leave "d.." -> "d."
    "": " .",
}
R2GEN_MIMIC = {
    # newlines to spaces, "__" -> "_", double spaces collapsed, then the IU-Xray steps
    "FINDINGS:\n\nThe lungs are clear..  There is no  pneumothorax.\n1. Stable __ tube. 2. No edema.":
        "findings the lungs are clear . there is no pneumothorax . stable  tube . no edema .",
    "Compared to ___, the ___ is unchanged.": "compared to  the  is unchanged .",
    'No acute disease.\nHeart "normal" size 10/12 <5mm> @ [left] {x} 50% & more!':
        "no acute disease . heart normal size 1012 5mm  left x 50  more .",
}


def test_r2gen_cleaning_pins():
    for raw, cleaned in R2GEN_IU.items():
        assert r2gen_cleaning.clean_iu_xray(raw) == cleaned, raw
    for raw, cleaned in R2GEN_MIMIC.items():
        assert r2gen_cleaning.clean_mimic_cxr(raw) == cleaned, raw
    assert r2gen_cleaning.tokens("A b c. D e.", "iu_xray", 4) == ["a", "b", "c", "."]
    assert r2gen_cleaning.style_from_format("mimic-cxr-jpg")[0] == "mimic_cxr"
    assert r2gen_cleaning.style_from_format("r2gen-iu")[0] == "iu_xray" and r2gen_cleaning.style_from_format(None)[0] == "iu_xray"


def test_r2gen_refuses_chinese_in_one_line(tmp_path, capsys):
    rows = write_rows(tmp_path / "p.jsonl", shuffled_rows("zh", 3))
    code = report_card.main(["--predictions", str(rows), "--output_dir", str(tmp_path / "o"), "--protocol", "r2gen"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err == ("error: --protocol r2gen is defined for English reports only; 3 of the scored "
                   "references are Chinese (use --protocol default)\n")
    code = report_card.main(["--predictions", str(rows), "--output_dir", str(tmp_path / "o"), "--dataset_style",
                             "mimic_cxr"])
    assert code == 2 and capsys.readouterr().err == ("error: --dataset_style and --reference_max_tokens apply to "
                                                     "--protocol r2gen only\n")


# --------------------------------------------------------------------------- image ablation
def test_ablation_compares_each_study_with_the_control_of_its_number_of_views():
    """batch_infer.py --ablation writes one blank control per prompt and number of views. A
    two-view study compared with the one-view blank (the old key, prompt only) was judged on
    the wrong control: here the model copies its blank answer for one view only."""
    one = [{"key": f"a{i}", "prompt": "p", "images": [f"a{i}.png"], "response": "No acute disease."} for i in range(3)]
    two = [{"key": f"b{i}", "prompt": "p", "images": [f"b{i}f.png", f"b{i}l.png"], "response": f"Report {i}."}
           for i in range(3)]
    legacy = [{"key": "c", "prompt": "p", "image": "c.png", "response": "No acute disease."}]  # no images list: 1 view
    controls = [{"control": "blank", "prompt": "p", "images": ["<blank>"], "response": "No acute disease."},
                {"control": "blank", "prompt": "p", "images": ["<blank>", "<blank>"], "response": "Blank pair."},
                {"control": "noise", "prompt": "p", "images": ["<noise>"], "response": "Noise."}]
    abl = report_card.ablation(one + two + legacy, controls)
    assert abl["compared_with_blank"] == 7 and abl["identical_to_blank_share"] == pytest.approx(4 / 7)
    assert abl["compared_with_noise"] == 4, "no two-view noise control: those studies are not compared"
    assert report_card.ablation(two, controls)["identical_to_blank_share"] == 0.0
    assert report_card.ablation(two, controls[:1])["compared_with_blank"] == 0, "never the one-view control"
    assert [report_card.views(r) for r in (one[0], two[0], legacy[0], {"images": []})] == [1, 2, 1, 1]


# --------------------------------------------------------------------------- the bench's command line
def test_bench_answers_help_and_refuses_bad_sizes_in_one_line():
    proc = run([PYTHON, str(ROOT / "bench" / "bench_evaluate.py"), "--help"], timeout=60)
    text = " ".join(proc.stdout.split())  # argparse wraps lines at the terminal width
    assert "examples: python bench/bench_evaluate.py" in text and "(default: [10000, 100000])" in text
    assert "not for diagnosis" in text
    bad = run([PYTHON, str(ROOT / "bench" / "bench_evaluate.py"), "--sizes", "0"], check=False, timeout=60)
    assert bad.returncode == 2 and bad.stderr == ("error: --sizes must be 1 or more, --bootstrap and --meteor_sample "
                                                  "0 or more\n")


def test_charts_show_cider_on_its_own_scale_and_what_each_finding_bar_rests_on():
    fig = charts.text_figure({"chars": {"bleu_1": 0.41, "bleu_4": 0.12, "rouge_l": 0.33, "cider": 3.2}})
    scores, cider = fig.axes
    assert scores.get_ylim() == (0, 1.05) and [t.get_text() for t in scores.get_xticklabels()] == [
        "bleu_1", "bleu_4", "rouge_l"]
    assert cider.get_ylim()[1] >= 3.2 and [t.get_text() for t in cider.get_xticklabels()] == ["cider"]
    per = {"Effusion": {"f1": 1.0, "support": 1, "predicted": 1},
           "Cardiomegaly": {"f1": 0.5, "support": 12, "predicted": 4},
           "Hernia": {"f1": None, "support": 0, "predicted": 0}}
    labels = {t.get_text() for t in charts.findings_figure(per).axes[0].texts}
    assert labels == {"1.00  (1 ref, 1 pred)", "0.50  (12 ref, 4 pred)"}
