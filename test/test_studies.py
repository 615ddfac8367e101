"""Study-level samples end to end on the tiny model: the views of a study are one sample with
several images (converter), train together (launcher, MAX_LENGTH sized from the data), are
inferred together (batch inference) and scored as one row (report card)."""
from __future__ import annotations

import json

import pytest

from helpers import BUNDLED_IMAGES, PYTHON, REPORTS, ROOT, read_jsonl, run


ENV = {"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    out = tmp_path_factory.mktemp("studies")
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(REPORTS["en"]), "--images_dir",
         str(BUNDLED_IMAGES), "--output_dir", str(out), "--lang", "en", "--unit", "study", "--quiet"])
    rows = [r for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")]
    everything = out / "all.jsonl"
    everything.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, everything, rows


def test_views_of_a_study_are_one_sample(studies):
    out, _, rows = studies
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["unit"], summary["split"], summary["format"]) == ("study", "seeded", "openi")
    assert summary["images_per_record"] == {"1": 6, "2": 1} and summary["written"] == 7
    (two,) = [r for r in rows if len(r["images"]) == 2]
    assert two["id"] == "2" and [p.rsplit("/", 1)[-1] for p in two["images"]] == ["2_1.png", "2_2.png"]
    assert two["messages"][0]["content"].startswith("<image><image>") and "<image>" not in \
        two["messages"][0]["content"][len("<image><image>"):]
    # its prompt speaks of two views (OpenI does not say which), the single views' of one
    assert "these two chest radiographs" in two["messages"][0]["content"]
    assert all("these two" not in r["messages"][0]["content"] for r in rows if len(r["images"]) == 1)


def test_two_view_studies_train_infer_and_score(studies, tiny_model, tmp_path):
    _, everything, rows = studies
    run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps", "2"],
        env={**ENV, "MODEL": str(tiny_model), "TRAIN_FILE": str(everything), "VAL_FILE": "none",
             "OUTPUT_DIR": str(tmp_path / "run"), "GLOBAL_BATCH": "2", "MICRO_BATCH": "2", "SAVE_STEPS": "2"},
        timeout=900)
    (ckpt,) = sorted((tmp_path / "run").glob("v*/checkpoint-2"))
    args = json.loads((ckpt / "args.json").read_text())
    assert args["max_length"] >= 2048 and args["model_kwargs"] == {"IMAGE_MAX_TOKEN_NUM": 64}, "budget recorded"
    preds = tmp_path / "pred.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(everything), "--adapter_path", str(ckpt),
         "--output_file", str(preds), "--max_new_tokens", "8", "--image_max_token_num", "64", "--ablation",
         "--quiet"], env=ENV)
    out = read_jsonl(preds)
    studies_out = {r["id"]: r for r in out if r["control"] is None}
    assert set(studies_out) == {r["id"] for r in rows}
    assert len(studies_out["2"]["images"]) == 2 and studies_out["2"]["dataset"] == str(everything)
    controls = [r for r in out if r["control"]]
    assert {(r["prompt"], len(r["images"])) for r in controls if r["control"] == "blank"} == \
        {(r["prompt"], len(r["images"])) for r in studies_out.values()}, "a blank control per prompt and view count"
    card = tmp_path / "card"
    run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds), "--output_dir", str(card)])
    metrics = json.loads((card / "metrics.json").read_text())
    assert metrics["n"] == 7, "one row per study"
    assert metrics["ablation"]["compared_with_blank"] == 7
