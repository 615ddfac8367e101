"""Classification evaluation: metric values against hand-computed cases, unparseable answers,
threshold tuning, AUROC, files written, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import PYTHON, ROOT, run
from medswift.core.constants import MULTI_LABEL, SINGLE_LABEL
from medswift.eval import classification as ec

PNG = b"\x89PNG\r\n\x1a\n"


def write(tmp_path, name, rows=None, spec=None):
    path = tmp_path / name
    path.write_text(json.dumps(spec) if spec is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(i, true, pred, scores=None, response=None):
    return {"id": f"img{i}", "true": true, "pred": pred, "scores": scores, "response": response}


MULTI = {"task": "toy", "problem_type": MULTI_LABEL, "labels": ["A", "B", "C"]}
SINGLE = {"task": "toy", "problem_type": SINGLE_LABEL, "labels": ["x", "y", "z"]}
# 3 classes, 4 images; img3's answer could not be parsed (pred null -> predicts nothing).
MULTI_ROWS = [row(1, ["A", "B"], ["A"]), row(2, ["B"], ["B", "C"]),
              row(3, ["C"], None, response="I think it is cardiomegaly?"), row(4, ["A"], ["A"])]


def test_multi_label_values_by_hand(tmp_path):
    out = tmp_path / "out"
    m = ec.evaluate(write(tmp_path, "l.json", spec=MULTI), write(tmp_path, "p.jsonl", MULTI_ROWS), out)
    res = m["results"][m["primary"]]
    # y_true rows: 110 010 001 100; y_pred rows: 100 011 000 100
    # A: true 1001, pred 1001 -> TP2 FP0 FN0 TN2; P=R=F1=1
    # B: true 1100, pred 0100 -> TP1 FP0 FN1 TN2; P 1, R 1/2, F1 2/3
    # C: true 0010, pred 0100 -> TP0 FP1 FN1 TN2; P=R=F1=0 (the unparseable img3 is C's FN)
    a, b, c = (res["per_class"][k] for k in "ABC")
    assert (a["tp"], a["fp"], a["fn"], a["tn"], a["f1"], a["support"]) == (2, 0, 0, 2, 1.0, 2)
    assert (b["tp"], b["fp"], b["fn"], b["tn"], b["precision"], b["recall"]) == (1, 0, 1, 2, 1.0, 0.5)
    assert b["f1"] == pytest.approx(2 / 3)
    assert (c["tp"], c["fp"], c["fn"], c["tn"], c["f1"]) == (0, 1, 1, 2, 0.0)
    # micro: TP 3, FP 1, FN 2 -> P 3/4, R 3/5, F1 2*(.75*.6)/1.35 = 2/3
    assert res["micro"]["precision"] == pytest.approx(3 / 4) and res["micro"]["recall"] == pytest.approx(3 / 5)
    assert res["micro"]["f1"] == pytest.approx(2 / 3)
    # macro F1 (1 + 2/3 + 0)/3 = 5/9; weighted by support 2,2,1: (2*1 + 2*2/3 + 0)/5 = 2/3
    assert res["macro"]["f1"] == pytest.approx(5 / 9) and res["weighted"]["f1"] == pytest.approx(2 / 3)
    assert res["exact_match"] == pytest.approx(1 / 4)  # only img4 has every label right
    assert m["auroc"] is None and m["thresholds"] is None and "parsed" in m["decision"]
    # the unparseable answer is counted (above) and listed with its raw response
    assert m["unparseable"] == [{"id": "img3", "reason": "unparseable (pred is null)",
                                 "response": "I think it is cardiomegaly?"}]
    report = (out / "report.md").read_text()
    assert "| img3 | unparseable (pred is null) | I think it is cardiomegaly? |" in report
    assert json.loads((out / "metrics.json").read_text())["results"]["parsed answers"]["micro"]["f1"] == \
        pytest.approx(2 / 3)


def test_single_label_accuracy_balanced_and_confusion(tmp_path):
    rows = [row(1, ["x"], ["x"]), row(2, ["x"], ["x"]), row(3, ["x"], ["y"]), row(4, ["y"], ["y"]),
            row(5, ["z"], None, response="mel or nv"), row(6, ["z"], ["z"]), row(7, ["z"], ["x", "z"])]
    m = ec.evaluate(write(tmp_path, "l.json", spec=SINGLE), write(tmp_path, "p.jsonl", rows), tmp_path / "o")
    res = m["results"]["parsed answers"]
    # right: img1, img2, img4, img6 -> accuracy 4/7 (null and two-class answers are wrong)
    assert res["accuracy"] == pytest.approx(4 / 7)
    # recall x 2/3, y 1/1, z 1/3 -> balanced accuracy (2/3 + 1 + 1/3)/3 = 2/3
    assert res["balanced_accuracy"] == pytest.approx(2 / 3)
    # rows true x, y, z; columns predicted x, y, z, (no answer)
    assert res["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2]]
    y = res["per_class"]["y"]  # TP img4, FP img3 -> P 1/2, R 1, F1 2/3
    assert (y["tp"], y["fp"], y["fn"], y["tn"], y["f1"]) == (1, 1, 0, 5, pytest.approx(2 / 3))
    assert res["per_class"]["z"]["fn"] == 2 and res["per_class"]["x"]["fp"] == 0, "no answer: FN only"
    assert [u["id"] for u in m["unparseable"]] == ["img5", "img7"]
    assert "not one class" in m["unparseable"][1]["reason"]


def test_single_label_scores_use_argmax(tmp_path):
    rows = [row(1, ["x"], ["y"], [0.7, 0.2, 0.1]), row(2, ["y"], ["y"], [0.1, 0.6, 0.3]),
            row(3, ["z"], ["z"], [0.5, 0.1, 0.4])]
    m = ec.evaluate(write(tmp_path, "l.json", spec=SINGLE), write(tmp_path, "p.jsonl", rows), tmp_path / "o")
    res = m["results"]["argmax"]
    assert res["accuracy"] == pytest.approx(2 / 3)  # argmax x, y, x: img3 wrong; `pred` ignored
    assert res["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    # one-vs-rest AUROC for y: positive 0.6 above negatives 0.2, 0.1 -> 1.0
    assert m["auroc"]["per_class"]["y"] == 1.0 and (tmp_path / "o" / "roc.png").read_bytes()[:8] == PNG


def test_auroc_by_hand():
    y = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]])
    s = np.array([[0.9, 0.9, 0.5], [0.8, 0.8, 0.5], [0.2, 0.2, 0.5], [0.1, 0.1, 0.5]])
    # A: positives 0.9, 0.8 above negatives 0.2, 0.1 -> 1.0
    # B: positives 0.8, 0.1 vs negatives 0.9, 0.2: pairs (0.8>0.9 no, 0.8>0.2 yes, 0.1 no, 0.1 no) -> 1/4
    # C: no negatives -> n/a, out of the macro
    a = ec.auroc(y, s, ["A", "B", "C"])
    assert a["per_class"] == {"A": 1.0, "B": 0.25, "C": None}
    assert a["macro"] == pytest.approx((1 + 0.25) / 2) and a["macro_over"] == 2
    assert ec.auroc(y[:, :1], 1 - s[:, :1], ["A"])["per_class"]["A"] == 0.0  # reversed scores


def test_threshold_tuned_on_validation_then_applied_to_test(tmp_path):
    spec = write(tmp_path, "l.json", spec={"task": "toy", "problem_type": MULTI_LABEL, "labels": ["A", "B"]})
    # A's scores run low: positives 0.30-0.40, negatives 0.10-0.20 -> at 0.5 nothing is positive (F1 0);
    # B is fine at 0.5 except one negative at 0.6 -> F1 at 0.5 = 2/3 (P 1/2, R 1); 0.9 separates.
    val = [row(1, ["A"], [], [0.30, 0.1]), row(2, ["A"], [], [0.35, 0.1]), row(3, ["A", "B"], [], [0.40, 0.9]),
           row(4, [], [], [0.10, 0.6]), row(5, [], [], [0.20, 0.2])]
    test = [row(1, ["A"], [], [0.32, 0.2]), row(2, ["A", "B"], [], [0.45, 0.95]), row(3, [], [], [0.05, 0.7])]
    m = ec.evaluate(spec, write(tmp_path, "t.jsonl", test), tmp_path / "o", write(tmp_path, "v.jsonl", val))
    th = m["thresholds"]["per_class"]
    assert th["A"]["threshold"] == pytest.approx(0.30) and th["B"]["threshold"] == pytest.approx(0.9)
    assert th["A"]["val_f1_at_0.5"] == 0.0 and th["A"]["val_f1_tuned"] == 1.0
    assert th["B"]["val_f1_at_0.5"] == pytest.approx(2 / 3) and th["B"]["val_f1_tuned"] == 1.0
    # test at 0.5: A predicts nothing (F1 0); B img2 TP, img3 FP (F1 2/3). Tuned: both perfect.
    default, tuned = m["results"]["threshold 0.5"], m["results"]["tuned thresholds"]
    assert default["per_class"]["A"]["f1"] == 0.0 and default["per_class"]["B"]["f1"] == pytest.approx(2 / 3)
    assert tuned["per_class"]["A"]["f1"] == 1.0 and tuned["per_class"]["B"]["f1"] == 1.0
    assert m["primary"] == "tuned thresholds" and m["auroc"]["macro"] == 1.0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "tuned on" in report and "| A | 0.3000 |" in report and "## Results: threshold 0.5" in report


def test_no_validation_uses_half_and_says_so(tmp_path):
    rows = [row(1, ["A"], ["A"], [0.6, 0.4, 0.1]), row(2, ["B"], ["B"], [0.2, 0.5, 0.1])]
    m = ec.evaluate(write(tmp_path, "l.json", spec=MULTI), write(tmp_path, "p.jsonl", rows), tmp_path / "o")
    assert list(m["results"]) == ["threshold 0.5"]
    assert {v["threshold"] for v in m["thresholds"]["per_class"].values()} == {0.5}
    assert m["results"]["threshold 0.5"]["per_class"]["B"]["tp"] == 1, "score 0.5 counts as positive (>=)"
    assert "default threshold 0.5 (not tuned)" in (tmp_path / "o" / "report.md").read_text()


def test_cli_writes_files_and_pngs(tmp_path):
    rows = [dict(r, scores=s) for r, s in zip(MULTI_ROWS, [[.9, .7, .1], [.2, .8, .6], [.1, .2, .3], [.8, .3, .2]])]
    out = tmp_path / "eval_cls"
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate_classification.py"),
                "--labels", str(write(tmp_path, "labels.json", spec=MULTI)),
                "--predictions", str(write(tmp_path, "p.jsonl", rows)), "--output_dir", str(out)])
    assert proc.stdout.strip().splitlines()[-1] == ec.NOTICE
    assert "micro F1" in proc.stdout and "1 unparseable" in proc.stdout
    for name in ("confusion.png", "roc.png", "per_class_f1.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["notice"] == ec.NOTICE and m["n"] == 4
    report = (out / "report.md").read_text()
    assert report.count(ec.NOTICE) == 2 and "![ROC](roc.png)" in report and "img3" in report


@pytest.mark.parametrize("case, expected", [
    ("missing", "predictions file not found"),
    ("unknown", "unknown label 'Pneumonia'"),
    ("no_labels", "labels file not found"),
    ("bad_scores", "'scores' must be 3 probabilities"),
])
def test_one_line_errors(tmp_path, capsys, case, expected):
    labels = write(tmp_path, "l.json", spec=MULTI)
    pred = write(tmp_path, "p.jsonl", {"unknown": [row(1, ["A"], ["Pneumonia"])],
                                       "bad_scores": [row(1, ["A"], ["A"], [0.5, 0.5])]}.get(case, MULTI_ROWS))
    argv = ["--labels", str(labels if case != "no_labels" else tmp_path / "nope.json"),
            "--predictions", str(pred if case != "missing" else tmp_path / "nope.jsonl"),
            "--output_dir", str(tmp_path / "o")]
    assert ec.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
