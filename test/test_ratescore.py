"""RaTEScore (medswift/eval/field/ratescore.py) on random weights of the published formats, offline,
cross-checked against the ``ratescore`` package's own ``RaTEScore.compute_score`` on the same weights and
real OpenI report pairs (docs/metrics.md). Tiny models: a 2-layer DeBERTa-v2 tagger with RaTE-NER's labels
and a 2-layer MPNet encoder (scripts/build_metric_weights.py --only ratescore)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from build_metric_weights import RATE_LABELS
from build_metric_weights import main as build_weights
from helpers import one_error_line, openi, shuffled_rows, write_rows
from medswift.core.errors import UsageError
from medswift.eval import field
from test_field_metrics import evaluate, offline_env

# sha256 of json.dumps of the sentence lists RaTEScore's sentence_split keeps for OpenI reports 0-299 and the
# 26 (below) where PyRuSH 1.0.8's raw sentences differ from medspacy's, computed with the real pipeline the
# package imports: medspacy 1.3.1 (load(medspacy_enable=["medspacy_pyrush", "medspacy_context"])), PyRuSH
# 1.0.13, spaCy 3.8.18, installed apart from the project (medspacy does not install with numpy 2).
MEDSPACY_SENTENCES = "6080c35b0f0958dbd54d486e35a356b16e099222ea05c5ca48f8f699019f9496"
RAW_DIFFERENCES = (2344, 2384, 2385, 2828, 2829, 3125, 3126, 3200, 3201, 3873, 3874, 4267, 4268, 4636, 4637, 4794,
                   4795, 4967, 4968, 5309, 5310, 5333, 5542, 5543, 5693, 5694)


@pytest.fixture(scope="module")
def rate_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rate")
    assert build_weights(["--output_dir", str(root), "--only", "ratescore"]) == 0
    return root


@pytest.fixture(scope="module")
def reference(rate_dir):
    """The package's own scorer class on the same folders, its defaults (batch size 1, long matrix), CPU."""
    from medswift.eval.field.ratescore import package

    return package().RaTEScore(bert_model=str(rate_dir / "RaTE-NER-Deberta"),
                               eval_model=str(rate_dir / "BioLORD-2023-C"), use_gpu=False)


def test_ratescore_equals_the_package_per_pair_offline(rate_dir, reference, tmp_path):
    rows = shuffled_rows("en", 20, seed=5)  # real OpenI references, predictions of real report sentences
    rows += [{"key": "empty", "response": "", "reference": rows[0]["reference"]},
             {"key": "short", "response": "ok", "reference": rows[1]["reference"]},
             {"key": "same", "response": rows[2]["reference"], "reference": rows[2]["reference"]}]
    path = write_rows(tmp_path / "predictions.jsonl", rows)
    out = tmp_path / "card"
    proc = evaluate(["--predictions", str(path), "--output_dir", str(out), "--bootstrap", "200",
                     "--clinical_metrics", "ratescore", "--metrics_dir", str(rate_dir)], offline_env(tmp_path))
    assert not (tmp_path / "network.log").exists()
    scored = {r["key"]: r["ratescore"] for r in map(json.loads, (out / "field_scores.jsonl").read_text().splitlines())}
    # the package, one pair per call
    expected = [reference.compute_score([r["response"]], [r["reference"]])[0] for r in rows[:20] + rows[22:]]
    got = [scored[r["key"]] for r in rows[:20] + rows[22:]]
    assert np.allclose(got, expected, atol=1e-6, rtol=0)
    assert np.std(got[:20]) > 1e-3  # the random models' scores vary between pairs: a real comparison
    assert got[-1] == pytest.approx(1.0, abs=1e-6)  # a report against itself
    # the package drops a report without a sentence: alone it fails (an empty batch), among others it
    # shifts the later pairs (two scores for three pairs here); here it scores as a report without entities
    with pytest.raises(IndexError):
        reference.compute_score([""], [rows[0]["reference"]])
    assert len(reference.compute_score(["ok", *[r["response"] for r in rows[3:5]]],
                                       [r["reference"] for r in rows[2:5]])) == 2
    assert scored["empty"] == scored["short"] == 0.5
    m = json.loads((out / "metrics.json").read_text())
    values = [scored[r["key"]] for r in rows]
    assert m["ratescore"]["name"] == field.TITLES["ratescore"]
    assert m["ratescore"]["mean"] == pytest.approx(float(np.mean(values)), abs=1e-12)
    lo, hi = m["ratescore"]["ci95"]
    assert lo <= m["ratescore"]["mean"] <= hi and lo < hi
    assert m["field_metrics"]["packages"]["ratescore"] == "0.6.0"
    assert field.headline(m) == {"RaTEScore": m["ratescore"]["mean"]}
    card = (out / "report.md").read_text()
    assert f"| {field.TITLES['ratescore']} | {m['ratescore']['mean']:.3f} [" in card
    assert f"RaTEScore {m['ratescore']['mean']:.3f}" in card  # the ReXrank-style line
    assert "heart" not in proc.stderr.lower()  # no report text in the log


def test_the_tagger_is_rate_ners_label_set(rate_dir, reference):
    assert sorted(reference.idx2label.values()) == sorted(RATE_LABELS)
    assert {t for (_, t) in reference.affinity_matrix} == {"ABNORMALITY", "NON-ABNORMALITY", "DISEASE",
                                                             "NON-DISEASE", "ANATOMY", "WEIGHT"}


def test_sentences_are_medspacys():
    from medswift.eval.field.ratescore import package

    reports = openi("en")
    kept = [package().utils.sentence_split([reports[i]])[0] for i in (*range(300), *RAW_DIFFERENCES)]
    assert hashlib.sha256(json.dumps(kept).encode()).hexdigest() == MEDSPACY_SENTENCES


def test_a_folder_without_biolord_is_one_line_naming_it(rate_dir, tmp_path):
    partial = tmp_path / "weights"
    partial.mkdir()
    (partial / "RaTE-NER-Deberta").symlink_to(rate_dir / "RaTE-NER-Deberta")
    path = write_rows(tmp_path / "predictions.jsonl", shuffled_rows("en", 3))
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"), "--clinical_metrics",
                     "ratescore", "--metrics_dir", str(partial)], offline_env(tmp_path), check=False)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "BioLORD-2023-C not found" in line and "huggingface.co/FremyCompany/BioLORD-2023-C" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "card").exists()  # stopped before scoring
    (partial / "RaTE-NER-Deberta").unlink()
    with pytest.raises(UsageError, match=r"^RaTE-NER-Deberta not found in .*huggingface.co/Angelakeke/RaTE-NER-Deberta"):
        field.locate(["ratescore"], str(partial))


def test_a_missing_sentence_splitter_is_one_line(monkeypatch, tmp_path):
    entries = dict(field.PACKAGES["ratescore"])
    entries["no_such_pyrush_module"] = "PyRuSH==1.0.8"
    monkeypatch.setitem(field.PACKAGES, "ratescore", tuple(entries.items()))
    with pytest.raises(UsageError, match=r"^--clinical_metrics ratescore needs the PyRuSH package, not installed: "
                                         r"pip install PyRuSH==1.0.8 "):
        field.locate(["ratescore"], str(tmp_path))


def test_a_foreign_or_empty_model_folder_is_one_line(rate_dir, tmp_path):
    import shutil

    from medswift.eval.field.ratescore import RaTE

    ner = tmp_path / "RaTE-NER-Deberta"
    shutil.copytree(rate_dir / "RaTE-NER-Deberta", ner)
    config = json.loads((ner / "config.json").read_text())
    config["id2label"] = {str(i): label for i, label in enumerate(("B-PER", "I-PER", *RATE_LABELS[2:]))}
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    (ner / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r"labels B-PER, I-PER are not RaTE-NER's \(B-/I- of ABNORMALITY, ANATOMY"):
        RaTE(ner, rate_dir / "BioLORD-2023-C", device="cpu")
    (ner / "model.safetensors").unlink()
    with pytest.raises(UsageError, match=r"do not load as RaTEScore's models \(OSError: "):
        RaTE(ner, rate_dir / "BioLORD-2023-C", device="cpu")
