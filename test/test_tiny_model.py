"""The embedded default model: Qwen's special ids, deterministic weights, a no-op rebuild."""
from __future__ import annotations

import hashlib
import json

from conftest import PYTHON, ROOT, run

SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
               "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
               "<think>": 151667, "</think>": 151668}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_special_tokens_sit_at_qwen_ids(tiny_model):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    tok = processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_IDS} == SPECIAL_IDS
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    ids = tok("心脏大小正常，肺部清晰。Heart size normal.")["input_ids"]
    assert ids and max(ids) < 151643, "report text encodes with learned tokens only"
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl" and config["image_token_id"] == 151655


def test_build_is_deterministic_and_rerun_is_a_no_op(tiny_model, tmp_path):
    out = tmp_path / "tiny"
    run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py"), "--output_dir", str(out)], timeout=600)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(out / name) == sha(tiny_model / name), name
    again = run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py"), "--output_dir", str(out)])
    assert "already exists" in again.stdout
    assert not list(tmp_path.glob(".tiny.tmp-*")), "no temporary build folder left behind"
