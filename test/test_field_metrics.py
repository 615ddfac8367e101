"""The field's metrics (medswift/eval/field) on random weights of the published shapes, offline,
cross-checked against the reference packages run on the same weights (docs/metrics.md).

CheXbert is bert-base-uncased's real shape (110 M parameters, built by scripts/build_metric_weights.py):
this file's first test is the slowest of it on a loaded machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from build_metric_weights import main as build_weights  # scripts/ is on pytest's pythonpath
from helpers import PYTHON, ROOT, one_error_line, shuffled_rows, write_rows
from medswift.core.errors import UsageError
from medswift.eval import field

# Any connection but loopback is logged and refused: the scorers must never reach a network.
NO_NETWORK = '''
import os, socket
_connect = socket.socket.connect
def _guard(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(repr(address) + "\\n")
        raise OSError("network blocked by the test")
    return _connect(self, address)
socket.socket.connect = _guard
'''


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metrics")
    assert build_weights(["--output_dir", str(root), "--only", "chexbert,bertscore,radgraph"]) == 0
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, list[dict]]:
    rows = shuffled_rows("en", 40)  # 40 real OpenI references, predictions of real report sentences
    path = tmp_path_factory.mktemp("preds") / "predictions.jsonl"
    write_rows(path, rows)
    return path, rows


def offline_env(tmp: Path) -> dict:
    """An empty home, hub variables saying "online", an endpoint nobody answers, sockets guarded."""
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "site").mkdir(exist_ok=True)
    (tmp / "site" / "sitecustomize.py").write_text(NO_NETWORK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "MEDSWIFT_"))}
    env.update(HOME=str(tmp / "home"), XDG_CACHE_HOME=str(tmp / "home" / ".cache"), HF_HUB_OFFLINE="0",
               TRANSFORMERS_OFFLINE="0", HF_ENDPOINT="http://10.255.255.1", PYTHONPATH=str(tmp / "site"),
               NETWORK_LOG=str(tmp / "network.log"))
    return env


def evaluate(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), *args], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=3600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def f1chexbert_reference(weights_dir: Path, preds: list[str], refs: list[str], monkeypatch):
    """f1chexbert 0.0.2's own forward() on the same weights, patching only its two broken calls:
    BertTokenizer.encode_plus (gone in transformers 5; it returned [CLS] ids [SEP] for word pieces)
    and scikit-learn's _check_targets (five values in scikit-learn 1.9; forward() unpacks three).
    It reads bert-base-uncased by hub name: run from the weights folder, that name is the local folder.
    Returns (its classification reports, the [CLS] embeddings its model computed, refs then preds)."""
    import f1chexbert.f1chexbert as reference
    from transformers import BertTokenizer

    check_targets = reference._check_targets
    monkeypatch.setattr(reference, "_check_targets", lambda a, b: (lambda r: (r[0], r[2], r[3]))(check_targets(a, b)))
    monkeypatch.setattr(BertTokenizer, "encode_plus", lambda self, pieces: {
        "input_ids": [self.cls_token_id] + self.convert_tokens_to_ids(pieces) + [self.sep_token_id]}, raising=False)
    monkeypatch.setattr(reference, "CACHE_DIR", str(weights_dir))
    monkeypatch.chdir(weights_dir)
    scorer = reference.F1CheXbert(device="cpu")
    embeddings = []
    scorer.model.bert.register_forward_hook(lambda mod, inp, out: embeddings.append(out[0][:, 0, :].numpy()[0]))
    _, _, report_14, report_5 = scorer.forward(preds, refs)
    return report_14, report_5, np.array(embeddings)


def test_chexbert_figures_equal_f1chexbert_offline(weights_dir, pairs, tmp_path, monkeypatch):
    path, rows = pairs
    env = offline_env(tmp_path)
    out = tmp_path / "card"
    proc = evaluate(["--predictions", str(path), "--output_dir", str(out), "--bootstrap", "200",
                     "--clinical_metrics", "chexbert,radcliq", "--metrics_dir", str(weights_dir)], env)
    assert not (tmp_path / "network.log").exists()
    assert not any((tmp_path / "home").rglob("*.pth"))  # nothing fetched or cached into the home folder
    m = json.loads((out / "metrics.json").read_text())
    refs, preds = [r["reference"] for r in rows], [r["response"] for r in rows]
    report_14, report_5, embeddings = f1chexbert_reference(weights_dir, preds, refs, monkeypatch)
    expected = {"micro_f1_14": report_14["micro avg"]["f1-score"], "macro_f1_14": report_14["macro avg"]["f1-score"],
                "micro_f1_5": report_5["micro avg"]["f1-score"], "macro_f1_5": report_5["macro avg"]["f1-score"]}
    for name, value in expected.items():
        assert m["chexbert"][name] == pytest.approx(value, abs=1e-6), name
    assert 0 < m["chexbert"]["micro_f1_14"] < 1  # the random labeller's labels vary: a real comparison
    for name in expected:  # the intervals hold the value
        lo, hi = m["chexbert"]["ci95"][name]
        assert lo <= m["chexbert"][name] <= hi
    # SembScore: cosine of the [CLS] states f1chexbert's model computed one report at a time
    ref_emb, pred_emb = embeddings[:40], embeddings[40:]
    semb = (ref_emb * pred_emb).sum(1) / (np.linalg.norm(ref_emb, axis=1) * np.linalg.norm(pred_emb, axis=1))
    scored = [json.loads(line) for line in (out / "field_scores.jsonl").read_text().splitlines()]
    assert [r["key"] for r in scored] == [r["key"] for r in rows]
    assert np.allclose([r["semb"] for r in scored], semb, atol=1e-5)
    assert m["semb"]["mean"] == pytest.approx(float(semb.mean()), abs=1e-5)
    assert all(len(r["chexbert_reference"]) == 14 for r in scored)
    card = (out / "report.md").read_text()
    assert "## Field metrics" in card and "CheXbert micro-F1, 14 observations" in card
    assert "ReXrank-style line" in card and "For research only, not for diagnosis." in card
    assert f"CheXbert micro-F1 (14) {m['chexbert']['micro_f1_14']:.3f}" in proc.stdout
    assert m["field_metrics"]["weights"]["chexbert.pth"] == str(weights_dir / "chexbert.pth")
    # what the SFT-vs-RL comparison reads from a card
    assert field.headline(m) == {"CheXbert micro-F1 (14)": m["chexbert"]["micro_f1_14"],
                                 "CheXbert macro-F1 (14)": m["chexbert"]["macro_f1_14"],
                                 "CheXbert micro-F1 (5)": m["chexbert"]["micro_f1_5"],
                                 "CheXbert macro-F1 (5)": m["chexbert"]["macro_f1_5"], "SembScore": m["semb"]["mean"],
                                 "BERTScore": m["bertscore"]["mean"], "RadGraph F1": m["radgraph"]["mean"],
                                 "1/RadCliQ-v1": m["radcliq"]["inverse"]}
    # 1/RadCliQ-v1: RadEval's CompositeMetric.predict on the same four component values per report
    components = {c: np.array([r[c] for r in scored])
                  for c in ("radgraph_combined", "bertscore", "semb", "bleu2_rexrank")}
    inverse, per_report = radeval_radcliq(**components)
    assert np.allclose([r["radcliq_v1"] for r in scored], per_report, atol=1e-9)
    assert m["radcliq"]["inverse"] == pytest.approx(inverse, rel=1e-9)
    assert m["radcliq"]["radcliq_v1"] == pytest.approx(1 / inverse, rel=1e-9)
    lo, hi = m["radcliq"]["ci95"]
    assert lo <= m["radcliq"]["inverse"] <= hi
    assert f"| 1/RadCliQ-v1 (ReXrank, published coefficients) | {m['radcliq']['inverse']:.3f} [" in card
    assert f"1/RadCliQ-v1 {m['radcliq']['inverse']:.3f}" in card  # the ReXrank-style line


def test_a_metric_whose_package_is_missing_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(field.PACKAGES, "radgraph", (("no_such_radgraph_module", "radgraph==0.1.18"),))
    with pytest.raises(UsageError, match=r"^--clinical_metrics radgraph needs the radgraph package, not installed: "
                                         r"pip install radgraph==0.1.18 "):
        field.locate(["radgraph"], str(tmp_path))


def radeval_radcliq(radgraph_combined, bertscore, semb, bleu2_rexrank):
    """RadEval's RadCliQ-v1 (radeval/metrics/RadCliQv1/radcliq.py, CompositeMetric: its scikit-learn
    StandardScaler with the published mean_/scale_/var_, then [X_norm, 1] @ coefs, 1/mean) on given
    component values, written out here from its coefficients (RadEval itself needs transformers >= 5.x
    and Python >= 3.11 with spaCy and stanza; its RadCliQ only computes the components differently)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(with_mean=True, with_std=True)
    scaler.mean_ = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
    scaler.scale_ = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
    scaler.var_ = np.array([0.09170349, 0.05031470, 0.06448751, 0.08935745])
    scaler.n_samples_seen_, scaler.n_features_in_ = 160, 4
    coefs = np.array([-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12, 2.46655256e-10])
    x = scaler.transform(np.column_stack([radgraph_combined, bertscore, semb, bleu2_rexrank]))
    scores = np.hstack([x, np.ones((len(x), 1))]) @ coefs
    return 1 / scores.mean(), scores


def test_radcliq_v1_is_the_published_linear_model():
    from medswift.eval.field import radcliq

    rng = np.random.default_rng(7)
    parts = [rng.uniform(0, 1, 25) for _ in range(4)]
    inverse, scores = radeval_radcliq(*parts)
    assert np.allclose(radcliq.per_report(*parts), scores, atol=1e-12)
    assert radcliq.inverse_of_mean(radcliq.per_report(*parts).sum(), 25) == pytest.approx(inverse, rel=1e-12)
    # by hand: each component one standard deviation above the normaliser's mean scores the sum of the
    # coefficients, -0.377083683 - 0.370300100 - 0.252616218 + 4.3e-12, plus the intercept 2.5e-10
    one_sd = radcliq.per_report(*([m + s] for m, s in zip(radcliq.MEAN, radcliq.SCALE)))
    assert one_sd[0] == pytest.approx(-1.000000001 + 4.31504841e-12 + 2.46655256e-10, abs=1e-12)
    # a perfect report (all four 1): z = (1 - mean) / scale = 1.525883, 1.704911, 0.926212, 1.848667
    assert radcliq.per_report([1.0], [1.0], [1.0], [1.0])[0] == pytest.approx(-1.440690, abs=1e-6)
    assert field.parse("radcliq") == ["semb", "radgraph", "bertscore", "radcliq"]  # its components come with it


def test_a_folder_without_chexbert_is_one_line_naming_it(pairs, tmp_path):
    path, _ = pairs
    empty = tmp_path / "weights"
    empty.mkdir()
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"),
                     "--clinical_metrics", "chexbert", "--metrics_dir", str(empty)], offline_env(tmp_path), check=False)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "chexbert.pth" in line and "huggingface.co/StanfordAIMI/RRG_scorers" in line and "licence" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "card").exists()  # stopped before scoring
    env = offline_env(tmp_path) | {"MEDSWIFT_METRICS_DIR": str(empty)}  # the variable instead of the flag
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"),
                     "--clinical_metrics", "bertscore"], env, check=False)
    assert proc.returncode == 2 and "distilroberta-base" in one_error_line(proc.stderr)


def test_a_checkpoint_that_does_not_fit_is_refused_not_half_loaded(weights_dir, tmp_path):
    import torch

    from medswift.eval.field.chexbert import CheXbert

    saved = torch.load(weights_dir / "chexbert.pth", weights_only=True)
    del saved["model_state_dict"]["module.linear_heads.13.weight"]  # f1chexbert's strict=False would hide it
    torch.save(saved, tmp_path / "chexbert.pth")
    (tmp_path / "bert-base-uncased").symlink_to(weights_dir / "bert-base-uncased")
    with pytest.raises(UsageError, match=r"lacks weights \(1: linear_heads.13.weight\)"):
        CheXbert(tmp_path)


def test_metric_names_are_checked_before_any_work():
    assert field.parse("semb, chexbert") == ["chexbert", "semb"]
    assert field.parse(None) == []
    with pytest.raises(UsageError, match="unknown metric 'bleu'"):
        field.parse("chexbert,bleu")
    assert field.parse("green,radgraph,ratescore") == ["radgraph", "ratescore", "green"]
    assert field.parse("ratescore,radgraph") == ["radgraph", "ratescore"]


def test_bertscore_is_rexranks_configuration_of_the_package(weights_dir):
    """Rescaled with bert-score's shipped distilroberta-base baseline at layer 5, IDF off; the
    transformers-5 fixes (max length, empty sentence) give bert-score's own numbers."""
    from bert_score import BERTScorer

    from medswift.eval.field.bertscore import LAYER, BertScore, baseline_file

    folder = weights_dir / "distilroberta-base"
    refs = ["Heart size is normal.  Lungs are clear.", "Mild cardiomegaly. No effusion.", "No pneumothorax."]
    preds = ["The heart is normal in size. Lungs clear.", "Mild cardiomegaly. No effusion.", ""]
    scorer = BertScore(folder, device="cpu")
    got = scorer.f1(refs, preds)
    baseline = np.loadtxt(baseline_file(), delimiter=",", skiprows=1)
    b = baseline[baseline[:, 0] == LAYER][0, 3]  # column F
    reference = BERTScorer(model_type=str(folder), num_layers=LAYER, idf=False, device="cpu")
    reference._tokenizer.model_max_length = 512  # unset in the folder, as in distilroberta-base's own
    _, _, raw = reference.score(preds[:2], [" ".join(r.split()) for r in refs[:2]])
    assert np.allclose(got[:2], (raw.numpy() - b) / (1 - b), atol=1e-6)
    assert got[1] == pytest.approx(1.0, abs=1e-6)  # identical reports
    assert got[2] == pytest.approx(-b / (1 - b), abs=1e-6)  # an empty report: raw 0, rescaled


def test_chexbert_f1_reward_labels_once_and_scores_pairs(weights_dir):
    from sklearn.metrics import f1_score

    from medswift.posttrain.field_rewards import ChexbertF1

    reward = ChexbertF1(str(weights_dir), device="cpu")
    rows = shuffled_rows("en", 8, seed=3)
    completions, refs = [r["response"] for r in rows], [r["reference"] for r in rows]
    values = reward(completions + refs[:2], refs + refs[:2])
    labels = reward.labeller.labels(completions + refs)
    expected = [f1_score(labels[8 + i], labels[i], zero_division=1.0) for i in range(8)]
    assert values[:8] == pytest.approx(expected)
    assert values[8:] == [1.0, 1.0] and all(0 <= v <= 1 for v in values)


def test_chexbert_f1_follows_the_plugins_input_contract(weights_dir, monkeypatch, caplog):
    """The plugin's one rule for every reward (test_rewards.py checks the others, which need no weights):
    non-text scores 0 and is counted, chat messages and content parts are text, lengths must match."""
    from swift.utils import import_external_file

    monkeypatch.setenv("MEDSWIFT_METRICS_DIR", str(weights_dir))
    import_external_file(str(ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py"))
    from swift.rewards import orms

    reward = orms["chexbert_f1"]()
    ref = shuffled_rows("en", 1, seed=3)[0]["reference"]
    as_chat = [{"role": "user", "content": "Describe."}, {"role": "assistant", "content": ref}]
    with caplog.at_level("WARNING", logger="medswift.rewards"):
        values = reward([5, b"x", {"a": 1}, ref, as_chat, [{"type": "text", "text": ref}]], solution=[ref] * 6)
    assert values == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], values
    assert "3 completions (3 so far)" in caplog.text and "heart" not in caplog.text.lower()
    with pytest.raises(ValueError, match=r"^chexbert_f1: 2 completions but 1 solutions; [^\n]+$"):
        reward([ref, ref], solution=[ref])


@pytest.fixture(scope="module")
def radgraph_dir(weights_dir) -> Path:
    """radgraph-xl/ (random DyGIE over a 2-layer BERT, the package's own model) and its encoder's folder."""
    return weights_dir


def radgraph_reference(radgraph_dir: Path, refs: list[str], preds: list[str], tmp_path: Path):
    """radgraph 0.1.18's own F1RadGraph on the same weights, called as its README says, from a
    model_cache_dir holding radgraph-xl/; only what transformers 5 broke is bridged (compatible()),
    and config.json names the encoder's local folder instead of its hub id."""
    from radgraph import F1RadGraph

    from medswift.eval.field.radgraph import compatible

    compatible()
    model = tmp_path / "cache" / "radgraph-xl"
    model.mkdir(parents=True)
    config = json.loads((radgraph_dir / "radgraph-xl" / "config.json").read_text())
    config["dataset_reader"]["token_indexers"]["bert"]["model_name"] = str(radgraph_dir / "BiomedVLP-CXR-BERT-general")
    config["model"]["embedder"]["token_embedders"]["bert"]["model_name"] = str(radgraph_dir / "BiomedVLP-CXR-BERT-general")
    (model / "config.json").write_text(json.dumps(config))
    for name in ("weights.th", "vocabulary"):
        (model / name).symlink_to(radgraph_dir / "radgraph-xl" / name)
    scorer = F1RadGraph(reward_level="partial", model_type="radgraph-xl", model_cache_dir=str(tmp_path / "cache"), cuda=-1)
    mean, per_pair, _, _ = scorer(refs=refs, hyps=preds)
    return mean, np.array(per_pair), radeval_radgraph_column(scorer.radgraph, refs, preds)


def radeval_radgraph_column(annotator, refs: list[str], preds: list[str]) -> np.ndarray:
    """RadCliQ-v1's radgraph column as RadEval's CompositeMetric._compute_sub_metrics computes it
    (radeval/metrics/RadCliQv1/radcliq.py): the package's RadGraph annotator on each side, then the
    mean of entity F1 and relation F1 over (tokens, label) and (source, target, relation) sets."""
    def f1(test, retrieved):
        tp = len(test & retrieved)
        p = tp / len(retrieved) if retrieved else 0.0
        r = tp / len(test) if test else 0.0
        return 2 * p * r / (p + r) if p + r else 0.0

    def entities(out):
        return {(tuple(e["tokens"]), e["label"]) for e in out.get("entities", {}).values()}

    def relations(out):
        ents = out.get("entities", {})
        return {((tuple(e["tokens"]), e["label"]), (tuple(ents[t]["tokens"]), ents[t]["label"]), kind)
                for e in ents.values() for kind, t in e.get("relations", []) if t in ents}

    gt, pred = annotator(refs), annotator(preds)
    return np.array([(f1(entities(gt.get(str(i), {})), entities(pred.get(str(i), {})))
                      + f1(relations(gt.get(str(i), {})), relations(pred.get(str(i), {})))) / 2
                     for i in range(len(refs))])


def test_radgraph_f1_equals_the_packages_f1radgraph_offline(radgraph_dir, pairs, tmp_path):
    path, rows = pairs
    out = tmp_path / "card"
    proc = evaluate(["--predictions", str(path), "--output_dir", str(out), "--bootstrap", "200",
                     "--clinical_metrics", "radgraph", "--metrics_dir", str(radgraph_dir)], offline_env(tmp_path))
    assert not (tmp_path / "network.log").exists()
    m = json.loads((out / "metrics.json").read_text())
    refs, preds = [r["reference"] for r in rows], [r["response"] for r in rows]
    mean, per_pair, combined = radgraph_reference(radgraph_dir, refs, preds, tmp_path)
    scored = [json.loads(line) for line in (out / "field_scores.jsonl").read_text().splitlines()]
    assert np.allclose([r["radgraph"] for r in scored], per_pair, atol=1e-6)
    # RadCliQ-v1's radgraph column: RadEval's entity/relation F1 mean on the same model's annotations
    assert np.allclose([r["radgraph_combined"] for r in scored], combined, atol=1e-6)
    assert len(set(np.round(combined, 6))) > 5
    assert m["radgraph"]["mean"] == pytest.approx(mean, abs=1e-6)
    assert 0 < m["radgraph"]["mean"] < 1 and len(set(np.round(per_pair, 6))) > 5  # the random model's graphs vary
    lo, hi = m["radgraph"]["ci95"]
    assert lo <= m["radgraph"]["mean"] <= hi
    assert m["field_metrics"]["weights"]["radgraph-xl"] == str(radgraph_dir / "radgraph-xl")
    assert "RadGraph F1 (radgraph 0.1.18 F1RadGraph, RadGraph-XL, partial level)" in (out / "report.md").read_text()
    assert f"RadGraph F1 {m['radgraph']['mean']:.3f}" in proc.stdout
    assert field.headline(m)["RadGraph F1"] == m["radgraph"]["mean"]


def test_radgraph_reads_the_published_archive_and_names_what_is_missing(radgraph_dir, tmp_path):
    """radgraph-xl.tar.gz as published (config.json, vocabulary/, weights.th at its top) scores the
    same as its unpacked folder; a folder without it, or without the encoder, is one line."""
    import tarfile

    from medswift.eval.field.radgraph import RadGraphF1

    packed = tmp_path / "packed"
    packed.mkdir()
    with tarfile.open(packed / "radgraph-xl.tar.gz", "w:gz") as tar:
        for name in ("config.json", "vocabulary", "weights.th"):
            tar.add(radgraph_dir / "radgraph-xl" / name, arcname=name)
    (packed / "BiomedVLP-CXR-BERT-general").symlink_to(radgraph_dir / "BiomedVLP-CXR-BERT-general")
    rows = shuffled_rows("en", 6, seed=5)
    refs, preds = [r["reference"] for r in rows], [r["response"] for r in rows]
    located = field.locate(["radgraph"], str(packed))
    assert located["files"]["radgraph-xl"] == packed / "radgraph-xl.tar.gz"
    assert located["files"]["BiomedVLP-CXR-BERT-general"] == packed / "BiomedVLP-CXR-BERT-general"
    from_archive = RadGraphF1(located["files"]["radgraph-xl"], packed, device="cpu")
    from_folder = RadGraphF1(radgraph_dir / "radgraph-xl", radgraph_dir, device="cpu")
    assert np.array_equal(from_archive.f1(refs, preds), from_folder.f1(refs, preds))
    assert from_folder.f1(["", refs[0]], [preds[0], ""]).tolist() == [0.0, 0.0]  # F1RadGraph's empty-side rule
    from_archive.close()
    from_folder.close()
    (packed / "BiomedVLP-CXR-BERT-general").unlink()
    with pytest.raises(UsageError, match=r"^BiomedVLP-CXR-BERT-general not found in .*microsoft/BiomedVLP-CXR-BERT-"
                                         r"general, licence: MIT"):
        field.locate(["radgraph"], str(packed))
    empty = tmp_path / "empty"
    empty.mkdir()
    path = tmp_path / "p.jsonl"
    write_rows(path, rows)
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"), "--clinical_metrics",
                     "radgraph", "--metrics_dir", str(empty)], offline_env(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith("error: radgraph-xl not found in ") and "StanfordAIMI/RRG_scorers (file radgraph-xl.tar.gz)" in line
    assert "licence: Stanford AIMI research-use terms (RadGraph-XL)" in line


def test_box_answers_are_not_scored_as_reports(weights_dir, tmp_path):
    boxes = json.dumps([{"bbox_2d": [100, 120, 400, 380], "label": "Cardiomegaly"}])
    path = tmp_path / "grounding.jsonl"
    write_rows(path, [{"key": f"g{i}", "response": boxes, "reference": boxes} for i in range(3)])
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"), "--clinical_metrics",
                     "chexbert", "--metrics_dir", str(weights_dir)], offline_env(tmp_path), check=False)
    assert proc.returncode == 2 and "box answers" in one_error_line(proc.stderr)


def test_the_comparison_sets_the_cards_field_metrics_side_by_side():
    """compare.py's table: each card's field metrics (with its own intervals) and RL - SFT, when a card has them."""
    from medswift.posttrain import compare

    chexbert = {"micro_f1_14": 0.5, "macro_f1_14": 0.25, "micro_f1_5": 0.4, "macro_f1_5": 0.2,
                "ci95": {"micro_f1_14": [0.4, 0.6]}}
    sft = {"chexbert": chexbert, "radgraph": {"mean": 0.2, "ci95": [0.1, 0.3]}, "green": {"mean": 0.5, "ci95": [0.4, 0.6]},
           "ratescore": {"mean": 0.5, "ci95": [0.45, 0.55]}}
    rl = {"chexbert": {**chexbert, "micro_f1_14": 0.625, "ci95": None},
          "radcliq": {"inverse": 0.9, "ci95": [0.8, 1.0], "radcliq_v1": 1 / 0.9}}
    rows = {row[0]: row[1:] for row in compare.field_rows(compare._headline(sft), compare._headline(rl))}
    assert rows["CheXbert micro-F1 (14) (card)"] == ("0.500 [0.400, 0.600]", "0.625", "+0.125")
    assert rows["CheXbert macro-F1 (5) (card)"] == ("0.200", "0.200", "+0.000")
    assert rows["RadGraph F1 (card)"] == ("0.200 [0.100, 0.300]", "n/a", "n/a")
    assert rows["1/RadCliQ-v1 (card)"] == ("n/a", "0.900 [0.800, 1.000]", "n/a")
    assert rows["RaTEScore (card)"] == ("0.500 [0.450, 0.550]", "n/a", "n/a")
    rl["green"] = {"mean": 0.625, "ci95": [0.5, 0.75], "max_new_tokens": None}
    rows = {row[0]: row[1:] for row in compare.field_rows(compare._headline(sft), compare._headline(rl))}
    assert rows["GREEN (card)"] == ("0.500 [0.400, 0.600]", "0.625 [0.500, 0.750]", "+0.125")
    assert len(rows) == 8
    plain = compare._headline({"text": {}})
    assert plain["field"] == {} and compare.field_rows(plain, plain) == []
    assert compare._headline({"chexbert": {"micro_f1_14": 0.5}})["field"] == {}  # a foreign card: no row, no traceback


def test_radgraph_f1_reward_equals_f1radgraph_and_follows_the_plugin_contract(radgraph_dir, tmp_path, monkeypatch):
    """Per pair what F1RadGraph (partial) gives on the same pairs, each distinct text annotated once;
    through the plugin, chat messages are text and lengths must match."""
    from swift.utils import import_external_file

    from medswift.posttrain.field_rewards import RadgraphF1

    reward = RadgraphF1(str(radgraph_dir), device="cpu")
    rows = shuffled_rows("en", 6, seed=3)
    completions, refs = [r["response"] for r in rows] + [rows[0]["reference"], ""], [r["reference"] for r in rows]
    refs += [rows[0]["reference"], rows[1]["reference"]]
    values = reward(completions, refs)
    _, expected, _ = radgraph_reference(radgraph_dir, refs, completions, tmp_path)
    assert values == pytest.approx(expected.tolist(), abs=1e-12)
    assert values[-1] == 0.0 and all(0 <= v <= 1 for v in values) and len(set(values[:6])) > 2
    has_entities = bool(reward.model.scorer.radgraph([rows[0]["reference"]])["0"]["entities"])
    assert values[-2] == (1.0 if has_entities else 0.0)  # a report against itself
    monkeypatch.setenv("MEDSWIFT_METRICS_DIR", str(radgraph_dir))
    import_external_file(str(ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py"))
    from swift.rewards import orms

    plugin = orms["radgraph_f1"]()
    ref = rows[0]["reference"]
    as_chat = [{"role": "user", "content": "Describe."}, {"role": "assistant", "content": ref}]
    assert plugin([ref, as_chat, 5], solution=[ref] * 3) == [values[-2], values[-2], 0.0]
    with pytest.raises(ValueError, match=r"^radgraph_f1: 2 completions but 1 solutions; [^\n]+$"):
        plugin([ref, ref], solution=[ref])


# ---------------------------------------------------------------------------------------------- GREEN
RADEVAL = Path(sys.prefix) / "reference" / "radeval"  # tools/setup.sh: pip install --no-deps --target it


@pytest.fixture(scope="module")
def green_reference():
    """RadEval 2.2.1's GREEN code (radeval/metrics/green_score/utils.py and green.py), loaded from its files
    without the radeval package's __init__ (which imports every metric, spaCy and stanza among them, and
    asks nltk to download); its files sit outside site-packages because its requirements are not installed.
    green.py sets multiprocessing's start method on import: the one before is put back."""
    import importlib.util
    import multiprocessing

    folder = RADEVAL / "radeval" / "metrics" / "green_score"
    assert (folder / "green.py").is_file(), f"RadEval 2.2.1's files are not in {RADEVAL}: bash tools/setup.sh"
    before = multiprocessing.get_start_method(allow_none=True)
    modules = {}
    for name in ("utils", "green"):  # utils first: green.py imports it by its full name
        spec = importlib.util.spec_from_file_location(f"radeval.metrics.green_score.{name}", folder / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = modules[name]
        spec.loader.exec_module(modules[name])
    multiprocessing.set_start_method(before, force=True)
    assert "radeval" not in sys.modules  # the package itself was never imported
    yield modules
    for name in modules:
        sys.modules.pop(f"radeval.metrics.green_score.{name}", None)


SIGNIFICANT = "[Clinically Significant Errors]:\n"
MATCHED = "[Matched Findings]:\n"
# Judge answers in GREEN's format (as clean_responses leaves them: from after "[Explanation]:"), with the
# GREEN each should score, worked out by hand.
GREEN_ANSWERS = [
    ("\nThe candidate misses the effusion.\n\n" + SIGNIFICANT
     + "(a) False report of a finding in the candidate: 0.\n(b) Missing a finding present in the reference: 1. "
       "Left pleural effusion\n(c) Misidentification of a finding's anatomic location/position: 0.\n"
       "(d) Misassessment of the severity of a finding: 0.\n(e) Mentioning a comparison that isn't in the "
       "reference: 0.\n(f) Omitting a comparison detailing a change from a prior study: 0.\n\n"
       "[Clinically Insignificant Errors]:\n(a) False report of a finding in the candidate: 2. x; y\n\n"
     + MATCHED + "3. Normal heart size; clear lungs; no pneumothorax\n", 0.75),
    ("\nThey agree.\n\n" + SIGNIFICANT + "No clinically significant errors.\n\n"
     "[Clinically Insignificant Errors]:\nNo clinically insignificant errors.\n\n" + MATCHED + "2. Heart; lungs\n", 1.0),
    ("\nNothing matches.\n\n" + SIGNIFICANT + "(a) False report of a finding in the candidate: 2. a; b\n\n"
     + MATCHED + "0. \n", 0.0),
    ("\n" + SIGNIFICANT + "(a) False report of a finding in the candidate: 1. a\n\n" + MATCHED
     + "No matched findings.\n", 0.0),
    ("\nOnly matched findings written.\n\n" + MATCHED + "4. a; b; c; d\n", 1.0),  # no error section: 0 errors
    ("\n" + SIGNIFICANT + "(1) False report: 1. a\n(3) Location: 2. b; c\n\n" + MATCHED + "2. a; b\n", 0.4),
    ("\n" + SIGNIFICANT + "(c) Misidentification of a finding's anatomic location/position: 1. a\n"
     "(a) False report of a finding in the candidate: 1. b\n(c) Misidentification: 3. again\n\n" + MATCHED
     + "5. a\n", 5 / 9),  # sorted lines, the last (c) wins: 1 + 3 errors
    ("\n" + SIGNIFICANT + "No errors, but:\n(a) False report of a finding in the candidate: 1. x\n\n" + MATCHED
     + "2. a; b\n", 1.0),  # a section that begins with "No" counts nothing, whatever follows
    ("\n" + MATCHED + "None of these:\n3. a; b; c\n", 0.0),  # "None" begins with "No" too: 0 matched
    ("the judge wrote something else entirely", 0.0),  # unparseable: no matched findings, 0
    ("", 0.0),
    (SIGNIFICANT + "(b) Missing a finding present in the reference: 1. a\n" + MATCHED + "3. a; b; c", 0.75),
]


def test_green_parser_and_score_equal_greens_own(green_reference, pairs):
    """parse_counts, green_of, counts_of, clean_response and make_prompt give what RadEval's GREEN code
    gives on the same answers (and the GREEN values worked out by hand)."""
    from medswift.eval.field import green

    reference = green_reference["green"].GREEN(model_name=None, cpu=True)  # no model: its parser only
    assert tuple(reference.sub_categories) == green.SUB_CATEGORIES and tuple(reference.categories) == green.CATEGORIES
    for answer, expected in GREEN_ANSWERS:
        assert green.green_of(answer) == pytest.approx(expected, abs=1e-12), answer
        assert green.green_of(answer) == pytest.approx(reference.compute_green(answer), abs=1e-12), answer
        counts = green.counts_of(answer)
        assert [counts[k] for k in (*green.COUNT_KEYS, "green_matched_findings")] == reference.compute_error_count(answer)
        for category in green.CATEGORIES:
            assert green.parse_counts(answer, category) == reference.parse_error_counts(answer, category)
    utils = green_reference["utils"]
    prompt_head = utils.make_prompt("r", "c").split("<Explanation>")[0]
    for raw in ("<|user|>\n" + prompt_head + "</s><|assistant|>\n</s><|assistant|>" + GREEN_ANSWERS[0][0],
                "<|assistant|>[Explanation]:\n    <Explanation>\n x [Explanation]: y</s>", "no marker <unk>here",
                "<|user|>\nq</s><|assistant|>\n</s><|assistant|>\n[Explanation]:\nfine\n\n" + MATCHED + "1. a"):
        assert green.clean_response(raw) == utils.clean_responses(raw)
    _, rows = pairs
    long = " ".join(["word"] * 350) + "\n\n  tail   words"
    for ref, cand in [(r["reference"], r["response"]) for r in rows[:10]] + [(long, "a  b\tc"), ("", "")]:
        assert green.make_prompt(ref, cand) == utils.make_prompt(ref, cand)
    assert green.make_prompt(long, "x").count("word") == 300  # its first 300 words ("tail words" cut)


@pytest.fixture(scope="module")
def green_dir(tmp_path_factory) -> Path:
    """GREEN-RadLlama2-7b/: a random 2-layer LlamaForCausalLM of width 64 and a Llama 2-kind tokenizer."""
    root = tmp_path_factory.mktemp("green")
    assert build_weights(["--output_dir", str(root), "--only", "green"]) == 0
    return root


GREEN_NEW_TOKENS = 12  # the test's cap on the judge's answer (MEDSWIFT_GREEN_MAX_NEW_TOKENS)


def green_by_radeval(green_reference, folder: Path, refs: list[str], preds: list[str]):
    """RadEval's GREEN(...)(refs, hyps) on the same weights, on the CPU. Its limit is max_length, prompt and
    answer together: set to the batch's padded prompt length plus the test's cap, it generates as many new
    tokens as the toolkit does with MEDSWIFT_GREEN_MAX_NEW_TOKENS (one batch: under 8 pairs)."""
    module = green_reference["green"]
    judge = module.GREEN(model_name=str(folder), cpu=True)
    chats = [judge.tokenizer.apply_chat_template([{"from": "human", "value": green_reference["utils"].make_prompt(r, p)},
                                                  {"from": "gpt", "value": ""}], tokenize=False, add_generation_prompt=True)
             for r, p in zip(refs, preds)]
    judge.max_length = judge.tokenizer(chats, padding=True, return_tensors="pt")["input_ids"].shape[1] + GREEN_NEW_TOKENS
    mean, _, scores, table = judge(refs, preds)
    return mean, scores, table, judge.completions


def test_green_end_to_end_equals_radevals_green_on_the_same_weights(green_dir, green_reference, pairs, tmp_path):
    """evaluate.py --clinical_metrics green offline: the judge's answers, GREEN and the counts per report are
    RadEval's on the same random weights and five real report pairs (greedy, so deterministic)."""
    _, rows = pairs
    rows = rows[:5]
    path = write_rows(tmp_path / "p.jsonl", rows)
    out = tmp_path / "card"
    env = offline_env(tmp_path) | {"MEDSWIFT_GREEN_MAX_NEW_TOKENS": str(GREEN_NEW_TOKENS)}
    proc = evaluate(["--predictions", str(path), "--output_dir", str(out), "--bootstrap", "200",
                     "--clinical_metrics", "green", "--metrics_dir", str(green_dir)], env)
    assert not (tmp_path / "network.log").exists()
    refs, preds = [r["reference"] for r in rows], [r["response"] for r in rows]
    mean, scores, table, answers = green_by_radeval(green_reference, green_dir / "GREEN-RadLlama2-7b", refs, preds)
    scored = [json.loads(line) for line in (out / "field_scores.jsonl").read_text().splitlines()]
    assert [r["key"] for r in scored] == [r["key"] for r in rows]
    from medswift.eval.field.green import COUNT_KEYS, Green

    judge = Green(green_dir / "GREEN-RadLlama2-7b", device="cpu", max_new_tokens=GREEN_NEW_TOKENS)
    assert judge.responses(refs, preds) == answers  # the judge's answers themselves (kept out of the files)
    assert len(set(answers)) > 1 and all(a.strip() for a in answers)  # the random judge's answers differ per pair
    assert not any(isinstance(v, str) for r in scored for k, v in r.items() if k != "key")  # no text in the rows
    assert [r["green"] for r in scored] == pytest.approx(scores, abs=1e-12)
    columns = [c for c in table.columns if c.startswith("(")] + ["Matched Findings"]
    for key, column in zip((*COUNT_KEYS, "green_matched_findings"), columns):
        assert [r[key] for r in scored] == table[column].tolist(), key
    m = json.loads((out / "metrics.json").read_text())
    assert m["green"]["mean"] == pytest.approx(mean, abs=1e-12)
    lo, hi = m["green"]["ci95"]
    assert lo <= m["green"]["mean"] <= hi
    assert m["green"]["max_new_tokens"] == GREEN_NEW_TOKENS and m["green"]["device"] == "cpu"
    assert m["field_metrics"]["weights"]["GREEN-RadLlama2-7b"] == str(green_dir / "GREEN-RadLlama2-7b")
    assert field.headline(m) == {"GREEN": m["green"]["mean"]}
    card = (out / "report.md").read_text()
    assert f"| {field.TITLES['green']} | {m['green']['mean']:.3f} [" in card
    assert f"capped at {GREEN_NEW_TOKENS} new tokens" in card and f"GREEN {m['green']['mean']:.3f}" in card
    assert f"GREEN {m['green']['mean']:.3f}" in proc.stdout
    assert "GREEN: 5/5 pairs judged" in proc.stderr  # progress, counts only: no report text in the log
    assert not any(text in proc.stderr + proc.stdout for text in refs + preds + answers if len(text) > 20)


def test_a_folder_without_green_is_one_line_naming_it(green_dir, pairs, tmp_path, monkeypatch):
    path, _ = pairs
    empty = tmp_path / "weights"
    empty.mkdir()
    proc = evaluate(["--predictions", str(path), "--output_dir", str(tmp_path / "card"),
                     "--clinical_metrics", "green", "--metrics_dir", str(empty)], offline_env(tmp_path), check=False)
    assert proc.returncode == 2 and not (tmp_path / "card").exists()
    line = one_error_line(proc.stderr)
    assert line.startswith("error: GREEN-RadLlama2-7b not found in ") and "huggingface.co/StanfordAIMI/GREEN-RadLlama2-7b" in line
    assert "licence: as on its model card (a Llama 2 derivative: Llama 2 Community Licence)" in line
    half = empty / "GREEN-RadLlama2-7b"
    half.mkdir()
    (half / "config.json").symlink_to(green_dir / "GREEN-RadLlama2-7b" / "config.json")
    with pytest.raises(UsageError, match=r"^GREEN-RadLlama2-7b/tokenizer_config.json not found in "):
        field.locate(["green"], str(empty))
    (half / "tokenizer_config.json").symlink_to(green_dir / "GREEN-RadLlama2-7b" / "tokenizer_config.json")
    from medswift.eval.field.green import Green

    located = field.locate(["green"], str(empty))  # the files it checks are there; the weights are not
    with pytest.raises(UsageError, match=r"^GREEN-RadLlama2-7b in \S+ does not load: .*model.safetensors[^\n]*$"):
        Green(located["files"]["GREEN-RadLlama2-7b"], device="cpu")
    monkeypatch.setenv("MEDSWIFT_GREEN_MAX_NEW_TOKENS", "ten")
    with pytest.raises(UsageError, match=r"^MEDSWIFT_GREEN_MAX_NEW_TOKENS='ten': expected a positive whole number"):
        field.locate(["green"], str(green_dir))
