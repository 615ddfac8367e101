"""Real ms-swift runs on the tiny model, CPU only: learning, several processes, two nodes,
inference, merge. (The one-GPU launcher with a validation split runs as the README's own
command in test_readme.py.) Each asserts on what the run wrote, not on its exit code alone."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, free_port, read_jsonl, run


SWIFT_DIR = ROOT / "tools" / "swift"
# Small image budget and CPU only: every test here finishes in well under a minute.
BASE_ENV = {"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64"}


def launch(name: str, env: dict, *args: str, timeout: int = 600):
    return run(["bash", str(SWIFT_DIR / name), *args], env={**BASE_ENV, **env}, timeout=timeout)


@pytest.fixture(scope="module")
def trained(trained_adapter) -> Path:
    return trained_adapter


def checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("v*/checkpoint-*"))


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]


def test_it_learns(trained):
    assert (trained / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((trained / "adapter_config.json").read_text())["r"] == 64
    steps = [r for r in read_log(trained.parent) if "token_acc" in r and "loss" in r]
    first, last = steps[0], steps[-1]
    assert first["global_step/max_steps"] == "1/40" and last["global_step/max_steps"] == "40/40"
    print(f"token accuracy {first['token_acc']:.2f} -> {last['token_acc']:.2f}, loss {first['loss']:.3f} -> {last['loss']:.3f}")
    # The default already writes report language (its build-time pass), so it starts near half the
    # tokens right; 40 steps fit these eight reports far above that.
    assert last["token_acc"] > first["token_acc"] + 0.2 and last["token_acc"] > 0.7
    assert last["loss"] < first["loss"]
    assert (trained.parent / "images" / "train_loss.png").is_file(), "ms-swift draws the training curves"
    card = (trained / "README.md").read_text()
    assert "More Information Needed" not in card, "our model card, not PEFT's template"
    assert "For research only, not for diagnosis." in card and "tiny-qwen3-vl" in card
    assert "| LoRA rank / alpha | 64 / 128" in card and "IMAGE_MAX_TOKEN_NUM=64 swift infer" in card


def test_multi_gpu_launcher_two_processes_on_cpu(tiny_model, converted, tmp_path):
    launch("finetune_qwen3vl_lora_mp.sh", {"MODEL": str(tiny_model), "DATA_DIR": str(converted),
                                           "OUTPUT_DIR": str(tmp_path), "NPROC_PER_NODE": "2",
                                           "MASTER_PORT": str(free_port()), "VAL_FILE": "none"},
           "--max_steps", "2")
    (ckpt,) = checkpoints(tmp_path)
    args = json.loads((ckpt / "args.json").read_text())
    assert args["global_world_size"] == 2 and args["gradient_accumulation_steps"] == 8


def test_two_nodes_on_loopback(tiny_model, converted, tmp_path):
    env = {**BASE_ENV, "MODEL": str(tiny_model), "DATA_DIR": str(converted), "OUTPUT_DIR": str(tmp_path),
           "VAL_FILE": "none", "NNODES": "2", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen(["bash", str(SWIFT_DIR / "finetune_qwen3vl_lora_mp.sh"), "--max_steps", "2"],
                              env={**os.environ, **env, "NODE_RANK": str(rank)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    (ckpt,) = checkpoints(tmp_path)  # one checkpoint, written by the global rank 0
    args = json.loads((ckpt / "args.json").read_text())
    assert args["global_world_size"] == 2 and args["gradient_accumulation_steps"] == 8


@pytest.fixture(scope="module")
def adapter_predictions(trained, converted) -> Path:
    result = trained / "infer_val.jsonl"
    launch("infer_qwen3vl_lora.sh", {"ADAPTER": str(trained), "DATA_DIR": str(converted),
                                     "RESULT_FILE": str(result), "MAX_NEW_TOKENS": "24"})
    return result


def test_inference_writes_one_result_per_record(adapter_predictions, converted):
    records = read_jsonl(converted / "val.jsonl")
    results = read_jsonl(adapter_predictions)
    assert len(results) == len(records) >= 1
    for rec, res in zip(records, results):
        assert res["images"][0]["path"] == rec["images"][0]
        assert res["labels"] == rec["messages"][-1]["content"]
        assert res["response"].strip(), "the trained adapter writes words, not blanks"


def test_merged_model_matches_base_plus_adapter(tiny_model, trained, adapter_predictions, converted, tmp_path):
    merged = tmp_path / "merged"
    launch("merge_qwen3vl_lora.sh", {"ADAPTER": str(trained), "MERGED_DIR": str(merged)})
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    card = (merged / "README.md").read_text()
    assert "merged model" in card and f"merged from the adapter `{trained}`" in card and "not for diagnosis" in card
    result = tmp_path / "merged_val.jsonl"
    launch("infer_qwen3vl_lora.sh", {"NO_ADAPTER": "1", "MODEL": str(merged), "DATA_DIR": str(converted),
                                     "RESULT_FILE": str(result), "MAX_NEW_TOKENS": "24"})
    merged_out = [r["response"] for r in read_jsonl(result)]
    adapter_out = [r["response"] for r in read_jsonl(adapter_predictions)]
    assert merged_out == adapter_out
    # and the adapter matters: the base model alone answers differently
    base = tmp_path / "base_val.jsonl"
    launch("infer_qwen3vl_lora.sh", {"NO_ADAPTER": "1", "MODEL": str(tiny_model), "DATA_DIR": str(converted),
                                     "RESULT_FILE": str(base), "MAX_NEW_TOKENS": "24"})
    assert [r["response"] for r in read_jsonl(base)] != adapter_out
