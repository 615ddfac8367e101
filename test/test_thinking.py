"""The Thinking variant: <think> reasoning in the training data, a real training run on it, and
reasoning split from the report in inference output and evaluation."""
from __future__ import annotations

import json

from helpers import BUNDLED_IMAGES, PYTHON, REPORTS, ROOT, run
from medswift.data.converters import reports as conv
from medswift.core import thinking
from medswift.eval import report_card as evaluate


def test_split_and_join():
    assert thinking.join(None, "No effusion.") == "No effusion."
    text = thinking.join("Costophrenic angles are sharp.", "No effusion.")
    assert text == "<think>\nCostophrenic angles are sharp.\n</think>\n\nNo effusion."
    assert thinking.split(text) == ("Costophrenic angles are sharp.", "No effusion.")
    assert thinking.split("No effusion.") == (None, "No effusion.")
    assert thinking.split("<think>still looking at the") == ("still looking at the", ""), "cut short: no report"
    assert evaluate.answer_text(text) == "No effusion."


def test_convert_train_and_infer_with_reasoning(tiny_model, tmp_path):
    anns = json.loads(REPORTS["en"].read_text())["annotations"]
    ids = {p.stem for p in BUNDLED_IMAGES.glob("*.png")}
    rows = [{"image_id": a["image_id"], "caption": a["caption"],
             **({"reasoning": "Frontal view. Heart borders and both costophrenic angles inspected."}
                if a["image_id"].endswith("_1") else {})}
            for a in anns if a["image_id"] in ids]
    src = tmp_path / "think.json"
    src.write_text(json.dumps({"annotations": rows}))
    out = tmp_path / "data"
    assert conv.main(["--input", str(src), "--images_dir", str(BUNDLED_IMAGES), "--output_dir", str(out),
                      "--lang", "en", "--quiet", "--val_ratio", "0", "--test_ratio", "0"]) == 0
    samples = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    by_id = {s["id"]: s["messages"][-1]["content"] for s in samples}
    caption = {a["image_id"]: a["caption"] for a in rows}
    for rid, answer in by_id.items():
        if rid.endswith("_1"):
            assert answer.startswith("<think>\nFrontal view.") and answer.endswith("</think>\n\n" + caption[rid])
        else:
            assert answer == caption[rid], "records without reasoning are unchanged"
    # the tiny tokenizer holds <think> and </think> at Qwen's ids, so ms-swift trains on this as is
    result = tmp_path / "run"
    run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps", "2"],
        env={"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "256", "MODEL": str(tiny_model),
             "TRAIN_FILE": str(out / "train.jsonl"), "VAL_FILE": "none", "OUTPUT_DIR": str(result),
             "GLOBAL_BATCH": "4", "MICRO_BATCH": "4"})
    (ckpt,) = sorted(result.glob("v*/checkpoint-*"))
    preds = tmp_path / "pred.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(out / "train.jsonl"), "--adapter_path",
         str(ckpt), "--max_new_tokens", "8", "--image_max_token_num", "256", "--hide_reasoning", "--quiet",
         "--output_file", str(preds)], env={"CUDA_VISIBLE_DEVICES": ""})
    for row in map(json.loads, preds.read_text().splitlines()):
        assert "reasoning" in row and "<think>" not in row["response"] and "</think>" not in row["response"]
