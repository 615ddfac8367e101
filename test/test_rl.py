"""Post-training after SFT on the tiny model, CPU only: one real GRPO run and one real DPO run
(module fixtures shared by the assertions), their checkpoints loaded by batch inference like an
SFT one, and the launchers' dry runs and one-line errors (ms-swift never reached)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, read_jsonl, run, swift_commands, unknown_flags

SWIFT_DIR = ROOT / "tools" / "swift"
CPU = {"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": ""}
REWARDS = "medswift_findings medswift_repetition"


def launch(name: str, env: dict, *args: str, check: bool = True, timeout: int = 900):
    return run(["bash", str(SWIFT_DIR / name), *args], env={**CPU, **env}, check=check, timeout=timeout)


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# --------------------------------------------------------------------------- GRPO, for real
@pytest.fixture(scope="module")
def grpo(trained_adapter, converted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpo")
    launch("grpo_qwen3vl_lora.sh", {"ADAPTER": str(trained_adapter), "DATA_DIR": str(converted),
                                    "RL_OUTPUT_DIR": str(out), "NUM_GENERATIONS": "4", "GLOBAL_BATCH": "4",
                                    "MICRO_BATCH": "4", "MAX_COMPLETION_LENGTH": "24", "REWARD_FUNCS": REWARDS,
                                    "REWARD_WEIGHTS": "1 0.2", "SAVE_STEPS": "2", "NUM_WORKERS": "1",
                                    # GRPO on the embedded default's SFT adapter can explode (docs/post-training-
                                    # recipe.md section 1); this fixture checks the plumbing, so it goes on
                                    "ALLOW_NONFINITE": "1"},
           "--max_steps", "2")
    (ckpt,) = sorted(out.glob("v*/checkpoint-*"))
    return ckpt


def test_grpo_writes_a_checkpoint_that_continues_the_sft_adapter(grpo, trained_adapter):
    assert (grpo / "adapter_model.safetensors").stat().st_size > 0 and grpo.name == "checkpoint-2"
    args = json.loads((grpo / "args.json").read_text())
    assert args["rlhf_type"] == "grpo" and args["adapters"] == [str(trained_adapter)] == args["ref_adapters"]
    assert args["model_kwargs"] == {"IMAGE_MAX_TOKEN_NUM": 64}, "the SFT checkpoint's image budget is carried"
    assert json.loads((grpo / "adapter_config.json").read_text())["r"] == 64, "the SFT adapter itself goes on"
    view = read_jsonl(Path(args["dataset"][0]))
    assert all(r["solution"].strip() and all(m["role"] != "assistant" for m in r["messages"]) for r in view)


def test_grpo_logs_rewards_and_completions_and_draws_them_beside_sft(grpo):
    run_dir = grpo.parent
    steps = [r for r in read_jsonl(run_dir / "logging.jsonl") if "reward" in r]
    assert [r["global_step/max_steps"] for r in steps] == ["1/2", "2/2"]
    for r in steps:
        assert 0 <= r["rewards/MedSwiftFindings/mean"] <= 1 and r["reward_std"] >= 0
    completions = read_jsonl(run_dir / "completions.jsonl")
    assert completions and len(completions[0]["completion"]) == 4, "one group of NUM_GENERATIONS per step"
    assert [c["step"][0] for c in completions] == ["1", "2"], "one block per step (the last one not twice)"
    assert "MedSwiftFindings" in completions[0] and "advantages" in completions[0]
    assert (run_dir / "images" / "rl_curves.png").stat().st_size > 10_000
    card = (grpo / "README.md").read_text()
    assert "## Post-training (RL stage)" in card and "GRPO" in card and "not for diagnosis" in card
    assert "| rewards (weight) | medswift_findings (1.0), medswift_repetition (0.2) |" in card
    assert "| generations per prompt | 4 |" in card and "| beta (KL weight) | 0.04 |" in card
    assert "| optimizer steps to this checkpoint | 2 |" in card and "format `openi`" in card
    assert "| LoRA rank / alpha | 64 / 128" in card, "the adapter's own shape, not args.json's 8 / 32"
    clipped = [r["completions/clipped_ratio"] for r in steps]
    assert f"rollouts cut at max completion length: {sum(clipped) / 2:.0%} on average over 2 steps" in card
    assert f"KL to the reference at step 1: {steps[0]['kl']:.4g}" in card
    assert ("**Training health:**" in card) == (run_dir / "training_health.json").exists()


def test_batch_infer_loads_the_grpo_checkpoint_like_an_sft_one(grpo, converted, tmp_path):
    out = tmp_path / "rl.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(converted / "val.jsonl"),
         "--adapter_path", str(grpo), "--max_new_tokens", "12", "--output_file", str(out), "--quiet"],
        env={"CUDA_VISIBLE_DEVICES": ""})
    rows = read_jsonl(out)
    assert len(rows) == len(read_jsonl(converted / "val.jsonl")) and all(r["response"] for r in rows)
    assert rows[0]["adapter"] == str(grpo.resolve()) and rows[0]["generation"]["image_max_token_num"] == 64


# --------------------------------------------------------------------------- DPO, for real
@pytest.fixture(scope="module")
def dpo(trained_adapter, converted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dpo")
    # The tiny model's samples are random text that every clinical reward scores ~0, so the best
    # sample rarely beats the worst: the reference report is the chosen one here.
    launch("dpo_qwen3vl_lora.sh", {"ADAPTER": str(trained_adapter), "DATA_DIR": str(converted),
                                   "RL_OUTPUT_DIR": str(out), "NUM_SAMPLES": "2", "CHOSEN": "reference",
                                   "MAX_COMPLETION_LENGTH": "160", "REWARD_FUNCS": REWARDS, "GLOBAL_BATCH": "2",
                                   "MICRO_BATCH": "1", "RPO_ALPHA": "0.1", "SAVE_STEPS": "2", "NUM_WORKERS": "1",
                                   "ALLOW_NONFINITE": "1"},
           "--max_steps", "2")
    (ckpt,) = sorted(out.glob("v*/checkpoint-*"))
    return ckpt


def test_dpo_builds_pairs_then_trains(dpo, trained_adapter, converted):
    args = json.loads((dpo / "args.json").read_text())
    assert args["rlhf_type"] == "dpo" and args["ref_adapters"] == [str(trained_adapter)] and args["rpo_alpha"] == 0.1
    pairs_file = Path(args["dataset"][0])
    pairs = read_jsonl(pairs_file)
    references = {r["id"]: r["messages"][-1]["content"] for r in read_jsonl(converted / "train.jsonl")}
    summary = json.loads(pairs_file.with_suffix(".summary.json").read_text())
    assert summary["studies"] == len(references) and summary["samples"] == 2 * len(references)
    assert summary["pairs"] + summary["ties_dropped"] + summary["studies_without_a_whole_sample"] == len(references)
    assert summary["pairs"] == len(pairs) >= 1
    samples = read_jsonl(pairs_file.parent / "samples.jsonl")
    finish = {r["response"]: r["finish_reason"] for r in samples}
    assert summary["cut_samples_dropped"] == sum(r["finish_reason"] == "length" for r in samples)
    assert all(finish[p["rejected_response"]] == "stop" for p in pairs), "no pair holds a sample cut at the limit"
    for p in pairs:
        assert p["messages"][-1] == {"role": "assistant", "content": references[p["id"]]}
        assert p["rejected_response"] != references[p["id"]] and p["chosen_reward"] > p["rejected_reward"]
        assert p["images"] and all(Path(i).is_file() for i in p["images"])
    assert {r["generation"]["temperature"] for r in samples} == {1.0}
    assert [r for r in read_jsonl(dpo.parent / "logging.jsonl") if "loss" in r][-1]["global_step/max_steps"] == "2/2"
    assert (dpo / "adapter_model.safetensors").stat().st_size > 0
    card = (dpo / "README.md").read_text()
    assert "DPO" in card and f"{len(pairs)} from {len(references)} studies" in card and "format `openi`" in card
    assert (dpo.parent / "images" / "rl_curves.png").is_file()


# --------------------------------------------------------------------------- dry runs and one-line errors
@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> dict:
    """A stub base model, a stub LoRA checkpoint of it (config + safetensors header), converted data
    with references, and data without."""
    import struct

    root = tmp_path_factory.mktemp("rl_stubs")
    model, other, ckpt = root / "Qwen3-VL-stub", root / "Qwen3-VL-other", root / "sft" / "v0-1" / "checkpoint-9"
    for folder, hidden in ((model, 64), (other, 4096)):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_vl", "text_config": {"hidden_size": hidden}}))
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (ckpt / "args.json").write_text(json.dumps({"model": str(model), "model_kwargs": {"IMAGE_MAX_TOKEN_NUM": 256}}))
    header = json.dumps({"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight":
                         {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, 2048]}}).encode()
    (ckpt / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(2048))
    data, bare = root / "data", root / "bare"
    data.mkdir(), bare.mkdir()
    record = {"messages": [{"role": "user", "content": "<image>Report."}, {"role": "assistant", "content": "No effusion."}],
              "images": ["/x/1.png"], "id": "1"}
    # 20 studies: a default GRPO step (16 completions = 4 prompts x 4) has full groups of prompts
    (data / "train.jsonl").write_text("".join(json.dumps({**record, "id": str(k)}) + "\n" for k in range(20)))
    (bare / "train.jsonl").write_text("".join(json.dumps({**record, "id": str(k), "messages": record["messages"][:1]})
                                              + "\n" for k in range(20)))
    return {"model": model, "other": other, "ckpt": ckpt, "data": data, "bare": bare, "root": root}


def dry(name: str, env: dict) -> tuple[dict, list[str], str]:
    proc = launch(name, {"DRY_RUN": "1", "SWIFT_BIN": "/nonexistent/swift", **env})
    lines = proc.stdout.strip().splitlines()
    words = shlex.split(lines[-1])
    assigns = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        assigns[key] = value
    return assigns, words, proc.stdout


def test_grpo_dry_run_cpu_and_gpu_node(stubs, tmp_path):
    env = {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]), "RL_OUTPUT_DIR": str(tmp_path)}
    assigns, argv, _ = dry("grpo_qwen3vl_lora.sh", {**env, "TARGET": "cpu"})
    assert argv[1:4] == ["rlhf", "--rlhf_type", "grpo"]
    assert flag(argv, "--adapters") == flag(argv, "--ref_adapters") == str(stubs["ckpt"])
    assert flag(argv, "--model") == str(stubs["model"]) and assigns["IMAGE_MAX_TOKEN_NUM"] == "256"
    assert (flag(argv, "--num_generations"), flag(argv, "--beta"), flag(argv, "--temperature")) == ("4", "0.04", "1.0")
    assert (flag(argv, "--use_vllm"), flag(argv, "--truncation_strategy"), flag(argv, "--torch_dtype")) == \
        ("false", "delete", "float32")
    assert flag(argv, "--dataset").startswith(str(tmp_path / "data" / "train_grpo-")) and not (tmp_path / "data").exists()
    # an 8-GPU node with vLLM: colocated rollouts, bf16, torchrun's 8 processes
    assigns, argv, _ = dry("grpo_qwen3vl_lora.sh", {**env, "TARGET": "gpu", "USE_VLLM": "true", "NPROC_PER_NODE": "8",
                                                    "GLOBAL_BATCH": "64", "NUM_GENERATIONS": "8"})
    assert (flag(argv, "--use_vllm"), flag(argv, "--vllm_mode"), flag(argv, "--torch_dtype")) == \
        ("true", "colocate", "bfloat16")
    assert assigns["NPROC_PER_NODE"] == "8" and flag(argv, "--gradient_accumulation_steps") == "2"


def test_dpo_dry_run_prints_the_pair_building_then_dpo(stubs, tmp_path):
    _, argv, out = dry("dpo_qwen3vl_lora.sh", {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]),
                                               "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "cpu", "NUM_SAMPLES": "6"})
    lines = out.strip().splitlines()
    assert len(lines) == 4 and "sample_input" in lines[0] and "--num_samples 6" in lines[0]
    assert "batch_infer.py" in lines[1] and "--temperature 1.0" in lines[1] and "--image_max_token_num 256" in lines[1]
    assert "medswift.posttrain.datasets pairs" in lines[2] and "--chosen best" in lines[2]
    assert flag(argv, "--rlhf_type") == "dpo" and flag(argv, "--beta") == "0.1"
    assert flag(argv, "--dataset") == str(tmp_path / "pairs" / "v0-1-checkpoint-9-n6-t1.0" / "pairs.jsonl")
    assert not tmp_path.joinpath("pairs").exists(), "a dry run writes nothing"


@pytest.mark.parametrize("name, env, message", [
    ("grpo_qwen3vl_lora.sh", {"NUM_GENERATIONS": "3"}, "NUM_GENERATIONS=3 does not divide the generation batch"),
    ("grpo_qwen3vl_lora.sh", {"MODEL": "{other}"}, "is not a LoRA checkpoint of"),
    ("grpo_qwen3vl_lora.sh", {"ADAPTER": "{model}"}, "not a LoRA checkpoint (no adapter_config.json)"),
    ("grpo_qwen3vl_lora.sh", {"DATA_DIR": "{bare}"}, "carry no reference report"),
    ("grpo_qwen3vl_lora.sh", {"REWARD_FUNCS": "medswift_findings clinical_magic"}, "'clinical_magic' is not registered"),
    ("grpo_qwen3vl_lora.sh", {"USE_VLLM": "true"}, "vLLM rollouts need a CUDA GPU"),
    ("grpo_qwen3vl_lora.sh", {"TEMPERATURE": "0"}, "must be above 0"),
    ("dpo_qwen3vl_lora.sh", {"PAIRS_FILE": "{data}/train.jsonl"}, "not a preference pair"),
    ("dpo_qwen3vl_lora.sh", {"CHOSEN": "longest"}, "CHOSEN must be best or reference"),
    *[("grpo_qwen3vl_lora.sh", {"REWARD_WEIGHTS": w, **dry}, f"REWARD_WEIGHTS must be finite numbers of 0 or more, got '{w}'")
      for w in ("nan", "inf", "1e400", "-1") for dry in ({}, {"DRY_RUN": "1"})],
    ("grpo_qwen3vl_lora.sh", {"REWARD_WEIGHTS": "0"}, "REWARD_WEIGHTS are all 0"),
    ("grpo_qwen3vl_lora.sh", {"MEDSWIFT_REWARD_UNCERTAIN": "bogus"}, "MEDSWIFT_REWARD_UNCERTAIN='bogus'"),
    ("grpo_qwen3vl_lora.sh", {"MEDSWIFT_REWARD_UNCERTAIN": "bogus", "DRY_RUN": "1"}, "must be one of partial"),
    ("grpo_qwen3vl_lora.sh", {"MEDSWIFT_REWARD_LENGTH_BAND": "0.5,inf"}, "expected finite ratios 0 < lo < hi"),
    ("grpo_qwen3vl_lora.sh", {"MEDSWIFT_REWARD_LENGTH_BAND": "2,1", "DRY_RUN": "1"}, "MEDSWIFT_REWARD_LENGTH_BAND='2,1'"),
    ("grpo_qwen3vl_lora.sh", {"REWARD_FUNCS": "clinical_magic", "DRY_RUN": "1"}, "'clinical_magic' is not registered"),
    ("dpo_qwen3vl_lora.sh", {"REWARD_WEIGHTS": "nan", "DRY_RUN": "1"}, "REWARD_WEIGHTS must be finite numbers"),
    ("dpo_qwen3vl_lora.sh", {"PAIRS_FILE": "{root}/pairs/images_as_a_string.jsonl"},
     "line 1: not a preference pair (images must be a list of file paths, got str)"),
    ("dpo_qwen3vl_lora.sh", {"PAIRS_FILE": "{root}/pairs/chosen_equal_to_rejected.jsonl", "DRY_RUN": "1"},
     "line 1: not a preference pair (the chosen and rejected answers are the same text"),
])
def test_mistakes_stop_in_one_line_before_any_model_loads(stubs, pair_files, name, env, message):
    env = {k: v.format(**stubs) for k, v in env.items()}
    base = {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]), "RL_OUTPUT_DIR": str(stubs["root"] / "out"),
            "SWIFT_BIN": "/nonexistent/swift"}
    proc = launch(name, {**base, **env}, check=False, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --------------------------------------------------------------------------- the comparison card
def cards(tmp_path: Path, references: list[str], sft: list[str], rl: list[str], keys: list[str] | None = None,
          prompts: list[str] | None = None) -> tuple[Path, Path]:
    """Two report cards (scripts/evaluate.py on hand-written predictions of the same records)."""
    from medswift.eval import report_card

    keys = keys or [f"s{k}" for k in range(len(references))]
    prompts = prompts or ["Report."] * len(references)
    folders = []
    for name, responses in (("sft", sft), ("rl", rl)):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"key": key, "id": key, "prompt": prompt, "images": ["x.png"], "response": resp, "reference": ref}
                for key, prompt, resp, ref in zip(keys, prompts, responses, references)]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        report_card.evaluate(folder / "predictions.jsonl", folder, n_boot=200)
        folders.append(folder)
    return folders[0], folders[1]


def compare_cli(sft_dir: Path, rl_dir: Path, out: Path, *extra: str, check: bool = True):
    return run([PYTHON, str(ROOT / "scripts" / "compare_checkpoints.py"), "--sft", str(sft_dir), "--rl", str(rl_dir),
                "--output_dir", str(out), "--bootstrap", "200", "--permutations", "2000", *extra], check=check)


EFFUSION, NO_EFFUSION = "There is pleural effusion.", "There is no pleural effusion."


def test_comparison_card_says_rl_helped_when_its_findings_match(tmp_path):
    from medswift.eval.findings import label_report

    notes = json.loads((ROOT / "data" / "openi" / "openi-en.json").read_text())["annotations"]
    abnormal = [n["caption"] for n in notes[:800]
                if any(v == 1 for k, v in label_report(n["caption"], "en").items() if k != "No Finding")]
    findings = list(dict.fromkeys(abnormal))[:24]  # reports that state a finding, as the labeller reads them
    assert len(findings) == 24
    normal = "The heart size is normal. The lungs are clear. No acute cardiopulmonary abnormality."
    sft_dir, rl_dir = cards(tmp_path, findings, [normal] * 24, findings)
    out = tmp_path / "compare"
    proc = compare_cli(sft_dir, rl_dir, out)
    assert proc.stdout.startswith("verdict: helped") and "not for diagnosis" in proc.stdout
    result = json.loads((out / "comparison.json").read_text())
    diff = result["paired"]["f1.diff_micro"]
    assert diff["value"] > 0.5 and diff["ci95"][0] > 0 and diff["p"] < 0.01
    assert result["records_paired"] == 24 and result["studies_paired"] == 24
    assert result["reward"]["delta"] > 0 and result["reward"]["ci95"][0] > 0 and result["reward"]["p"] < 0.01
    assert result["paired"]["reward.rl"]["value"] > result["paired"]["reward.sft"]["value"]
    card = (out / "comparison.md").read_text()
    assert card.startswith("# Did post-training help? **helped**") and "| finding F1 micro (paired) |" in card
    assert "| mean reward (1*medswift_findings) |" in card and (out / "comparison.png").stat().st_size > 10_000


def test_comparison_gives_no_verdict_below_the_minimum_of_studies(tmp_path):
    """Two views of each of 12 studies: 24 records are 12 studies, below the floor of 20."""
    keys = [f"{100 + k // 2}_{k % 2 + 1}" for k in range(24)]  # 100_1, 100_2, 101_1, ...: the converters' ids
    refs = [EFFUSION if k // 2 % 2 == 0 else NO_EFFUSION for k in range(24)]
    sft_dir, rl_dir = cards(tmp_path, refs, [NO_EFFUSION] * 24, refs, keys=keys)
    proc = compare_cli(sft_dir, rl_dir, tmp_path / "c")
    assert proc.stdout.startswith("verdict: too few studies (12 shared studies (24 records); a verdict needs at least 20")
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert result["verdict"] == "too few studies" and result["bootstrap"]["unit"] == "study"
    assert compare_cli(sft_dir, rl_dir, tmp_path / "d", "--min_studies", "10").stdout.startswith("verdict: helped")


def test_bootstrap_resamples_studies_not_views():
    """Views of one study move together: the interval of a study-level difference is wider than
    the one that treats the views as independent records."""
    import numpy as np

    from medswift.posttrain import compare

    rng = np.random.default_rng(1)
    per_study = rng.normal(0.1, 1.0, size=30)
    values = np.repeat(per_study, 4)  # four identical views per study
    rows = [{"key": f"{s}_{v}", "id": f"{s}_{v}"} for s in range(30) for v in range(1, 5)]
    block = {"reward": compare._mean_block(np.zeros(120), values)}
    by_study = compare.paired_estimates(block, *compare.study_index(rows), 2000, 0, 0)["reward.diff"]["ci95"]
    by_view = compare.paired_estimates(block, np.arange(120), 120, 2000, 0, 0)["reward.diff"]["ci95"]
    assert compare.study_index(rows)[1] == 30
    assert (by_study[1] - by_study[0]) > 1.6 * (by_view[1] - by_view[0])


def test_paired_randomisation_test_separates_a_real_difference_from_none():
    import numpy as np

    from medswift.eval import bootstrap

    a = np.zeros((40, 1))
    same, _ = bootstrap.swapped_sums(a, a, 500, 0)
    assert bootstrap.randomisation_p(0.0, same[:, 0] - (0 - same[:, 0])) == 1.0
    b = np.ones((40, 1))
    pa, pb = bootstrap.swapped_sums(a, b, 2000, 0)
    assert bootstrap.randomisation_p(40.0, pb[:, 0] - pa[:, 0]) < 0.001
    assert bootstrap.randomisation_p(float("nan"), pb[:, 0]) is None


def test_image_dependence_needs_answers_that_follow_the_image(tmp_path):
    """A model that answers every image alike does not read it; one whose answers follow the
    images (its references) does, by the permutation test."""
    refs = [EFFUSION, NO_EFFUSION] * 15
    sft_dir, rl_dir = cards(tmp_path, refs, [NO_EFFUSION] * 30, refs)
    compare_cli(sft_dir, rl_dir, tmp_path / "c")
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert result["verdict"] == "helped" and result["reads_image"] is True
    assert result["image_dependence"]["sft"]["value"] is False and result["image_dependence"]["rl"]["p"] < 0.01


def test_comparison_reads_a_card_written_by_evaluate_output_dir(tmp_path):
    refs = [EFFUSION, NO_EFFUSION] * 10
    sft_dir, rl_dir = cards(tmp_path, refs, [NO_EFFUSION] * 20, refs)
    for folder in (sft_dir, rl_dir):  # evaluate.py --predictions elsewhere --output_dir card/
        elsewhere = tmp_path / f"{folder.name}_predictions.jsonl"
        (folder / "predictions.jsonl").rename(elsewhere)
        run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(elsewhere), "--output_dir",
             str(folder), "--bootstrap", "0"])
        assert not (folder / "predictions.jsonl").exists()
    assert compare_cli(sft_dir, rl_dir, tmp_path / "c").stdout.startswith("verdict: helped")


@pytest.mark.parametrize("metrics, message", [
    ("[1, 2]", "is not a report card: a list where scripts/evaluate.py writes an object"),
    ("{\"n\": ", "is not JSON"),
])
def test_malformed_report_card_is_one_line(tmp_path, metrics, message):
    refs = [EFFUSION, NO_EFFUSION] * 10
    sft_dir, rl_dir = cards(tmp_path, refs, refs, refs)
    (rl_dir / "metrics.json").write_text(metrics)
    proc = compare_cli(sft_dir, rl_dir, tmp_path / "c", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_all_nan_metrics_read_n_a_with_a_note_not_nan(tmp_path):
    refs = [EFFUSION, NO_EFFUSION] * 10
    sft_dir, rl_dir = cards(tmp_path, refs, refs, refs)
    nan = json.loads((rl_dir / "metrics.json").read_text())
    for group in ("text", "findings", "normal_share"):
        nan[group] = _all_nan(nan[group])
    (rl_dir / "metrics.json").write_text(json.dumps(nan))  # json writes NaN, as a NaN-producing scorer would
    proc = compare_cli(sft_dir, rl_dir, tmp_path / "c")
    assert not re.search(r"(?<![\w/])nan(?!\w)", proc.stdout, re.I) and "RL n/a" in proc.stdout
    assert "note: the RL card's metrics.json holds no finite headline number" in proc.stdout
    assert proc.stdout.startswith("verdict: no clear change")  # the re-scored predictions are identical


def _all_nan(value):
    if isinstance(value, dict):
        return {k: _all_nan(v) for k, v in value.items()}
    return float("nan") if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def test_two_box_cards_are_compared_on_box_metrics(tmp_path):
    ref = '[{"bbox_2d": [100, 100, 400, 400], "label": "nodule"}]'
    near = '[{"bbox_2d": [110, 105, 400, 410], "label": "nodule"}]'
    far = '[{"bbox_2d": [600, 600, 900, 900], "label": "nodule"}]'
    folders = []
    for name, answer in (("sft", far), ("rl", near)):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"key": f"img{k}", "prompt": "Find the nodule.", "images": [f"img{k}.png"], "response": answer,
                 "reference": ref} for k in range(24)]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "metrics.json").write_text(json.dumps({"task": "grounding", "n": 24, "map50": 0.0 if name == "sft" else 1.0}))
        folders.append(folder)
    proc = compare_cli(*folders, tmp_path / "c")
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert result["task"] == "boxes" and result["primary"] == "iou.diff" and result["reward_funcs"] == ["medswift_boxes"]
    assert result["paired"]["iou.diff"]["value"] > 0.8 and "f1.diff_micro" not in result["paired"]
    assert proc.stdout.startswith("verdict: helped (the paired difference in the mean IoU")
    assert "mean IoU (paired)" in proc.stdout and "finding F1" not in proc.stdout


def test_comparison_verdict_flags_gaming_and_harm():
    from medswift.posttrain import compare

    def result(reward, f1, length=(20, 20), normal=((0.2, 0.2), (0.2, 0.2)), reads=(True, True)):
        entry = lambda v, ci: {"value": v, "ci95": ci}  # noqa: E731
        card = lambda n, r: {"normal_share": {"predictions": n[0], "references": n[1]}, "reads_the_image": r}  # noqa: E731
        return {"reference_length": 20, "paired": {"reward.diff": entry(*reward), "f1.diff_micro": entry(*f1), "length.sft": entry(length[0], None),
                           "length.rl": entry(length[1], None)},
                "cards": {"sft": card(normal[0], reads[0]), "rl": card(normal[1], reads[1])}}

    up, flat, down = (0.2, [0.1, 0.3]), (0.0, [-0.1, 0.1]), (-0.2, [-0.3, -0.1])
    assert compare.verdict(result(up, flat))[0] == "gamed the reward"
    assert compare.verdict(result(up, up, normal=((0.2, 0.2), (0.9, 0.2))))[0] == "gamed the reward"
    assert compare.verdict(result(up, up, reads=(True, False)))[0] == "gamed the reward"
    assert compare.verdict(result(flat, flat, length=(18, 50)))[0] == "gamed the reward"
    assert compare.verdict(result(up, up, length=(5, 18)))[0] == "helped", "nearer the references' length is fine"
    assert compare.verdict(result(up, up))[0] == "helped"
    assert compare.verdict(result(flat, down))[0] == "hurt" and compare.verdict(result(down, flat))[0] == "hurt"
    assert compare.verdict(result(flat, flat))[0] == "no clear change"
    # seen in a demo run: F1 rose while the reward fell (answers decayed to junk read as "no finding")
    fell, why = compare.verdict(result(down, up))
    assert fell == "hurt" and "reward fell" in why[0] and "although" in why[0]
    significant_but_not = result(up, up)
    significant_but_not["paired"]["f1.diff_micro"]["p"] = 0.2  # the interval clears 0, the randomisation test does not
    assert compare.verdict(significant_but_not)[0] == "gamed the reward"
    assert compare.verdict({**result(up, up), "studies_paired": 5, "min_studies": 20})[0] == "too few studies"


def test_comparison_of_cards_from_different_splits_is_one_line(tmp_path):
    a, b = cards(tmp_path, ["Small left pleural effusion.", "Cardiomegaly."], ["x", "y"], ["x", "y"])
    rows = [json.loads(line) for line in (b / "predictions.jsonl").read_text().splitlines()]
    rows[0]["reference"] = "Normal chest."
    (b / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run([PYTHON, str(ROOT / "scripts" / "compare_checkpoints.py"), "--sft", str(a), "--rl", str(b),
                "--output_dir", str(tmp_path / "c")], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == \
        ["error: record s0 has different references in the two cards: not the same split"]


def test_compare_checkpoints_help_has_defaults_and_examples():
    proc = run([PYTHON, str(ROOT / "scripts" / "compare_checkpoints.py"), "--help"], timeout=60)
    assert "default:" in proc.stdout and "examples:" in proc.stdout and "scripts/compare_checkpoints.py" in proc.stdout
    assert "not for diagnosis" in proc.stdout


IMAGE = str(BUNDLED_IMAGES / "2_1.png")
GOOD_PAIR = {"messages": [{"role": "user", "content": "<image>Describe the chest X-ray."},
                          {"role": "assistant", "content": "Small left pleural effusion."}],
             "images": [IMAGE], "rejected_response": "The lungs are clear.", "id": "s1"}


def hostile_pairs(missing_image: str) -> dict[str, tuple[dict, str]]:
    """14 pair records ms-swift would fail on after loading the model, and the reason each is refused."""
    def chosen(content) -> dict:
        return {**GOOD_PAIR, "messages": [GOOD_PAIR["messages"][0], {"role": "assistant", "content": content}]}

    user = GOOD_PAIR["messages"][0]
    return {
        "assistant_null": (chosen(None), "messages[1].content must be text, got NoneType"),
        "assistant_dict": (chosen({"text": "x"}), "messages[1].content must be text, got dict"),
        "missing_image": ({**GOOD_PAIR, "images": [missing_image]}, "images[0] is not a file"),
        "three_tags_one_image": ({**GOOD_PAIR, "messages": [{**user, "content": "<image>" * 3 + "Describe."},
                                                            GOOD_PAIR["messages"][1]]}, "3 <image> tags for 1 images"),
        "a_thousand_images": ({**GOOD_PAIR, "images": [IMAGE] * 1000}, "1000 images; at most 8 per pair"),
        "unknown_role": ({**GOOD_PAIR, "messages": [{"role": "doctor", "content": "x"}, *GOOD_PAIR["messages"]]},
                         "messages[0] must have a role of system, user, assistant"),
        "chosen_equal_to_rejected": ({**GOOD_PAIR, "rejected_response": " Small left pleural effusion. "},
                                     "the chosen and rejected answers are the same text"),
        "images_as_a_string": ({**GOOD_PAIR, "images": IMAGE}, "images must be a list of file paths, got str"),
        "empty_rejected": ({**GOOD_PAIR, "rejected_response": "  "}, "rejected_response must be non-empty text"),
        "rejected_as_a_list": ({**GOOD_PAIR, "rejected_response": ["x"]}, "rejected_response must be non-empty text"),
        "ends_with_the_user": ({**GOOD_PAIR, "messages": [user]}, "the last message must be the chosen answer"),
        "no_user_turn": ({**GOOD_PAIR, "messages": [GOOD_PAIR["messages"][1]]}, "no user message"),
        "image_a_folder": ({**GOOD_PAIR, "images": [str(BUNDLED_IMAGES)]}, "images[0] is not a file"),
        "a_list_not_a_record": ([GOOD_PAIR], "not a JSON object"),
    }


@pytest.fixture(scope="module")
def pair_files(stubs) -> dict[str, tuple[Path, str]]:
    folder = stubs["root"] / "pairs"
    folder.mkdir(exist_ok=True)
    files = {}
    for name, (record, reason) in hostile_pairs(str(folder / "absent.png")).items():
        files[name] = (folder / f"{name}.jsonl", reason)
        files[name][0].write_text(json.dumps(GOOD_PAIR) + "\n" + json.dumps(record) + "\n")  # the bad one: line 2
        if name in ("images_as_a_string", "chosen_equal_to_rejected"):  # line 1, for the launcher test above
            files[name][0].write_text(json.dumps(record) + "\n")
    return files


@pytest.mark.parametrize("name", sorted(hostile_pairs("x")))
def test_each_hostile_pairs_file_stops_in_one_line_naming_the_record(pair_files, name):
    from medswift.core.errors import UsageError
    from medswift.posttrain import datasets as rl

    path, reason = pair_files[name]
    line = 1 if name in ("images_as_a_string", "chosen_equal_to_rejected") else 2
    with pytest.raises(UsageError) as caught:
        rl.check_pairs(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line {line}: not a preference pair (") and reason in message, message
    assert "\n" not in message and "pleural" not in message  # the kind of problem, never the text


def test_a_good_pairs_file_passes_the_check(tmp_path):
    from medswift.posttrain import datasets as rl

    path = tmp_path / "pairs.jsonl"
    untagged = {**GOOD_PAIR, "messages": [{"role": "system", "content": "You are a radiologist."},
                                          {"role": "user", "content": "Describe."}, GOOD_PAIR["messages"][1]]}
    path.write_text(json.dumps(GOOD_PAIR) + "\n" + json.dumps(untagged) + "\n")
    assert rl.check_pairs(path) == 2


def test_chosen_best_never_pairs_an_empty_sample(tmp_path):
    """An empty (or blank) sample is dropped and counted: DPO learns nothing from preferring text to nothing."""
    from medswift.posttrain import datasets as rl

    effusion = "Small left pleural effusion. The heart size is normal. No pneumothorax."
    normal = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
    rows = [{"id": f"a#{k}", "prompt": "Report.", "images": ["a.png"], "reference": effusion, "response": response}
            for k, response in enumerate([effusion, "", normal, "   "])]
    rows += [{"id": f"b#{k}", "prompt": "Report.", "images": ["b.png"], "reference": normal, "response": response}
             for k, response in enumerate([normal, ""])]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    orms = rl.check_rewards(["medswift_findings"], [], ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py")
    for chosen in ("best", "reference"):
        pairs, counts = rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, chosen)
        assert all(p["rejected"].strip() for p in pairs), pairs
        assert counts["empty_samples_dropped"] == 3
    pairs, counts = rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, "best")
    assert [(p["study"], p["rejected"]) for p in pairs] == [("a", normal)] and counts["single_sample_dropped"] == 1


def test_pairs_rank_samples_with_the_reward_and_drop_ties(tmp_path):
    """The pair builder on hand-written samples, scored by the real plugin through ms-swift's registry."""
    from medswift.posttrain import datasets as rl

    effusion = "Small left pleural effusion. The heart size is normal. No pneumothorax."
    normal = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
    rows = [{"id": "a#0", "prompt": "Report.", "images": ["a.png"], "reference": effusion, "response": effusion},
            {"id": "a#1", "prompt": "Report.", "images": ["a.png"], "reference": effusion, "response": normal},
            {"id": "b#0", "prompt": "Report.", "images": ["b.png"], "reference": normal, "response": "lorem ipsum"},
            {"id": "b#1", "prompt": "Report.", "images": ["b.png"], "reference": normal, "response": "lorem ipsum"},
            {"key": "<blank>", "control": "blank", "response": "x", "id": None}]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    orms = rl.check_rewards(["medswift_findings"], [], ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py")
    pairs, counts = rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, "best")
    assert counts["studies"] == 2 and counts["ties_dropped"] == 1 and len(pairs) == 1
    (record,) = rl.dpo_records(pairs)
    assert record["messages"][-1]["content"] == effusion and record["rejected_response"] == normal
    assert record["chosen_reward"] > record["rejected_reward"] and record["id"] == "a"
    pairs, counts = rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, "reference")
    assert counts["ties_dropped"] == 0 and {p["study"]: p["rejected"] for p in pairs} == {"a": normal, "b": "lorem ipsum"}, \
        "the reference beats each study's worst sample, ties among the samples or not"


def test_model_card_command_adds_the_post_training_stage(tmp_path):
    """The launchers' model-card command (medswift.posttrain.card) writes the card that
    medswift.eval.model_card composes, with the GRPO section and curves added by posttrain; an SFT
    checkpoint's card has no such section."""
    run_dir = tmp_path / "v0-1"
    rows = [{"global_step/max_steps": f"{s}/2", "reward": 0.1 * s, "reward_std": 0.05, "loss": 1.0 / s,
             "rewards/medswift_findings/mean": 0.1 * s, "kl": 0.01 * s} for s in (1, 2)]
    for kind in ("grpo", None):
        ckpt = (run_dir if kind else tmp_path / "sft") / "checkpoint-2"
        ckpt.mkdir(parents=True)
        args = {"model": "weights/tiny-qwen3-vl", "output_dir": str(ckpt.parent), "dataset": ["train.jsonl"]}
        if kind:
            args |= {"rlhf_type": kind, "beta": 0.04, "reward_funcs": ["medswift_findings"], "adapters": ["sft/ckpt"]}
        (ckpt / "args.json").write_text(json.dumps(args))
    (run_dir / "logging.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run([PYTHON, "-m", "medswift.posttrain.card", "--run", str(run_dir)], cwd=ROOT / "scripts")
    card = (run_dir / "checkpoint-2" / "README.md").read_text()
    assert "model card:" in proc.stdout and "## Post-training (RL stage)" in card and "GRPO" in card
    assert "not for diagnosis" in card.lower() and (run_dir / "images" / "rl_curves.png").is_file()
    run([PYTHON, "-m", "medswift.posttrain.card", str(tmp_path / "sft" / "checkpoint-2")], cwd=ROOT / "scripts")
    assert "Post-training" not in (tmp_path / "sft" / "checkpoint-2" / "README.md").read_text()


def test_pairs_drop_samples_cut_by_the_length_limit_and_empty_ones(tmp_path):
    """A sample the engine cut at max_new_tokens (finish_reason "length") or an empty one is never
    a side of a pair: a full reference against a cut sample would teach finishing, not the reward."""
    from medswift.posttrain import datasets as rl

    effusion = "Small left pleural effusion. The heart size is normal. No pneumothorax."
    normal = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
    base = {"prompt": "Report.", "images": ["a.png"], "reference": effusion}
    rows = [{**base, "id": "a#0", "response": effusion, "finish_reason": "stop"},
            {**base, "id": "a#1", "response": normal, "finish_reason": "stop"},
            {**base, "id": "a#2", "response": "The heart size is", "finish_reason": "length"},
            {**base, "id": "a#3", "response": "  ", "finish_reason": "stop"},
            {**base, "id": "b#0", "response": "The lungs are", "finish_reason": "length", "reference": normal},
            {**base, "id": "b#1", "response": "", "finish_reason": "stop", "reference": normal}]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    orms = rl.check_rewards(["medswift_findings"], [], ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py")
    pairs, counts = rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, "reference")
    assert {p["study"]: p["rejected"] for p in pairs} == {"a": normal}, "the cut and the empty samples are never rejected"
    assert (counts["cut_samples_dropped"], counts["empty_samples_dropped"]) == (2, 2)
    assert counts["studies"] == 2 and counts["studies_without_a_whole_sample"] == 1 and counts["samples"] == 6
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    with pytest.raises(rl.UsageError, match="every sample is empty or cut by the length limit.*MAX_COMPLETION_LENGTH"):
        rl.build_pairs(samples, ["medswift_findings"], [1.0], orms, "reference")


# --------------------------------------------------------------------------- the GPU recipe, checked
@pytest.fixture(scope="module")
def two_view_data(tmp_path_factory) -> Path:
    """Converter JSONL of 12 two-view studies: what an 8-GPU dry run reads its vLLM limits from."""
    root = tmp_path_factory.mktemp("two_view")
    rows = [{"messages": [{"role": "user", "content": "<image><image>Write the findings of this chest X-ray study."},
                          {"role": "assistant", "content": "No acute cardiopulmonary abnormality. " * (k + 1)}],
             "images": [f"/x/{k}_pa.png", f"/x/{k}_lat.png"], "id": str(k)} for k in range(12)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def gpu_node(stubs, out: Path, data: Path, **env) -> dict:
    return {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(data), "RL_OUTPUT_DIR": str(out), "TARGET": "gpu",
            "USE_VLLM": "true", "NPROC_PER_NODE": "8", "GLOBAL_BATCH": "32", "NUM_GENERATIONS": "8", **env}


def test_8_gpu_dry_run_sizes_vllm_from_the_data(stubs, two_view_data, tmp_path):
    """vLLM's context is the longest prompt plus a full completion, its image limit the most views of
    a record; without them vLLM sizes its cache for the model's whole context and refuses two views."""
    from medswift.posttrain import datasets as rl

    plan = rl.rollout_plan(two_view_data / "train.jsonl", 256, 256, 4)
    assert plan["max_images"] == 2 and plan["records"] == 12
    assert plan["max_model_len"] == 1024 and plan["longest_prompt"] > 2 * 256, plan
    assigns, argv, _ = dry("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data))
    assert assigns["NPROC_PER_NODE"] == "8" and (flag(argv, "--vllm_mode"), flag(argv, "--sleep_level")) == ("colocate", "1")
    assert flag(argv, "--vllm_max_model_len") == "1024"
    assert json.loads(flag(argv, "--vllm_limit_mm_per_prompt")) == {"image": 2}
    # a large model: ZeRO-3, offload during rollouts, weights synced in parts (ms-swift's 72B example)
    _, argv, _ = dry("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data, DEEPSPEED="zero3", VLLM_TP="4",
                                                      OFFLOAD_MODEL="true", OFFLOAD_OPTIMIZER="true",
                                                      MOVE_MODEL_BATCHES="40", MAX_COMPLETION_LENGTH="1024"))
    assert (flag(argv, "--deepspeed"), flag(argv, "--vllm_tensor_parallel_size")) == ("zero3", "4")
    assert (flag(argv, "--offload_model"), flag(argv, "--offload_optimizer"), flag(argv, "--move_model_batches")) == \
        ("true", "true", "40")
    assert flag(argv, "--vllm_max_model_len") == "1792", "sized for the longer completions too"


def test_dry_run_states_what_it_assumes_when_adapter_or_data_are_elsewhere(stubs, tmp_path):
    env = gpu_node(stubs, tmp_path, tmp_path / "not_here", ADAPTER="/cluster/sft/checkpoint-573",
                   MODEL="/models/Qwen3-VL-8B-Instruct", MODEL_TYPE="qwen3_vl")
    proc = launch("grpo_qwen3vl_lora.sh", {"DRY_RUN": "1", "SWIFT_BIN": "/nonexistent/swift", **env})
    assert "the adapter is not on this machine" in proc.stderr and "using the default 1024" in proc.stderr
    assert "vLLM sized for 1 image(s) of 1024 tokens" in proc.stderr and "VLLM_MAX_MODEL_LEN" in proc.stderr
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert flag(argv, "--vllm_max_model_len") == "1792" and flag(argv, "--model") == "/models/Qwen3-VL-8B-Instruct"


def test_several_nodes_train_against_a_rollout_server(stubs, two_view_data, tmp_path):
    """VLLM_MODE=server: the dry run prints the rollout node's `swift rollout` first, then the trainer's
    `swift rlhf --vllm_mode server`; ROLLOUT_SERVER=1 is the rollout node's own command."""
    env = gpu_node(stubs, tmp_path, two_view_data, VLLM_MODE="server", VLLM_SERVER_HOST="10.0.0.9", NNODES="2",
                   NODE_RANK="0", MASTER_ADDR="10.0.0.1", GLOBAL_BATCH="64")
    _, argv, out = dry("grpo_qwen3vl_lora.sh", env)
    rollout, rlhf = swift_commands(out)
    assert rollout[0] == "rollout" and flag(rollout, "--vllm_max_model_len") == "1024" and flag(rollout, "--port") == "8000"
    assert json.loads(flag(rollout, "--vllm_limit_mm_per_prompt")) == {"image": 2}
    assert (flag(argv, "--vllm_mode"), flag(argv, "--vllm_server_host"), flag(argv, "--vllm_server_port")) == \
        ("server", "10.0.0.9", "8000")
    assigns, argv, _ = dry("grpo_qwen3vl_lora.sh", {**env, "ROLLOUT_SERVER": "1", "VLLM_DP": "2"})
    assert argv[1] == "rollout" and flag(argv, "--vllm_data_parallel_size") == "2"
    assert "NPROC_PER_NODE" not in assigns and "NNODES" not in assigns, "swift rollout is one process, not torchrun"
    proc = launch("grpo_qwen3vl_lora.sh", {**env, "DRY_RUN": "1", "VLLM_SERVER_HOST": ""}, check=False)
    assert proc.returncode == 2 and "VLLM_MODE=server: set VLLM_SERVER_HOST" in proc.stderr


def test_every_flag_the_post_training_dry_runs_print_is_an_ms_swift_argument(stubs, two_view_data, tmp_path):
    """Each `swift` command the GRPO and DPO launchers print, in every mode, uses only names of
    ms-swift's own argument dataclasses (RLHFArguments, RolloutArguments): an unknown flag aborts
    ms-swift at start-up, on the GPU machine, after the queue."""
    cpu = {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(two_view_data), "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "cpu"}
    server = {"VLLM_MODE": "server", "VLLM_SERVER_HOST": "10.0.0.9"}
    modes = [("grpo_qwen3vl_lora.sh", cpu),
             ("grpo_qwen3vl_lora.sh", {**cpu, "REWARD_FUNCS": "medswift_findings medswift_format",
                                       "REWARD_WEIGHTS": "1 0.5", "LOSS_TYPE": "fipo", "ALLOW_NONFINITE": "1"}),
             ("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data)),
             ("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data, DEEPSPEED="zero3_offload",
                                               OFFLOAD_MODEL="true", OFFLOAD_OPTIMIZER="true", MOVE_MODEL_BATCHES="40")),
             ("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data, **server)),
             ("grpo_qwen3vl_lora.sh", gpu_node(stubs, tmp_path, two_view_data, ROLLOUT_SERVER="1", **server)),
             ("dpo_qwen3vl_lora.sh", {**cpu, "RPO_ALPHA": "0.1"}),
             ("dpo_qwen3vl_lora.sh", {**cpu, "TARGET": "gpu", "NPROC_PER_NODE": "8", "DEEPSPEED": "zero3"})]
    printed = 0
    for name, env in modes:
        _, _, out = dry(name, env)
        printed += len(swift_commands(out))
        assert unknown_flags(out) == [], (name, env)
    assert printed == len(modes) + 1, "the server mode prints two swift commands"
    # the check itself fails on a flag ms-swift does not have (as the old --merge_lora_output)
    assert unknown_flags("/x/swift rlhf --rlhf_type grpo --vllm_max_len 4") == ["swift rlhf --vllm_max_len"]


def test_dpo_sampling_names_its_processes_and_no_empty_weights(stubs, tmp_path):
    _, _, out = dry("dpo_qwen3vl_lora.sh", {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]),
                                            "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "gpu", "NPROC_PER_NODE": "8",
                                            "GLOBAL_BATCH": "16"})
    lines = out.strip().splitlines()
    assert lines[1].startswith("IMAGE_MAX_TOKEN_NUM=256 NPROC_PER_NODE=8 ") and "batch_infer.py" in lines[1]
    assert "--reward_weights" not in lines[2], "no empty --reward_weights ''"
    _, _, out = dry("dpo_qwen3vl_lora.sh", {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]),
                                            "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "cpu",
                                            "REWARD_FUNCS": "medswift_findings medswift_format", "REWARD_WEIGHTS": "1 0.5"})
    assert flag(shlex.split(out.strip().splitlines()[2]), "--reward_weights") == "1 0.5"


def test_loss_types_are_the_installed_ms_swifts(stubs, tmp_path):
    """LOSS_TYPE accepts what ms-swift's trainers handle (4.6: fipo, cispo, sapo, real ...), read from
    its source, and refuses the rest in one line that lists them."""
    from medswift.posttrain import datasets as rl

    grpo = rl.loss_types("grpo")
    assert {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "fipo"} <= set(grpo)
    assert {"sigmoid", "ipo", "hinge"} <= set(rl.loss_types("dpo"))
    env = {"ADAPTER": str(stubs["ckpt"]), "DATA_DIR": str(stubs["data"]), "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "cpu"}
    _, argv, _ = dry("grpo_qwen3vl_lora.sh", {**env, "LOSS_TYPE": "fipo"})
    assert flag(argv, "--loss_type") == "fipo"
    proc = launch("grpo_qwen3vl_lora.sh", {**env, "SWIFT_BIN": "/nonexistent/swift", "LOSS_TYPE": "ppo"}, check=False)
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and "LOSS_TYPE must be one of" in line and "fipo" in line and "'ppo'" in line
    proc = launch("dpo_qwen3vl_lora.sh", {**env, "SWIFT_BIN": "/nonexistent/swift", "LOSS_TYPE": "grpo"}, check=False)
    assert proc.returncode == 2 and "sigmoid" in proc.stderr and "for DPO" in proc.stderr


# --------------------------------------------------------------------------- the embedded default's recipe
@pytest.fixture(scope="module")
def tiny_stub_adapter(stubs, tiny_model) -> Path:
    """A LoRA checkpoint header of the embedded default (hidden 64), image budget 64: what the quickstart leaves."""
    ckpt = stubs["root"] / "tiny_sft" / "v0-2" / "checkpoint-40"
    ckpt.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (ckpt / name).write_bytes((stubs["ckpt"] / name).read_bytes())
    (ckpt / "args.json").write_text(json.dumps({"model": str(tiny_model), "model_kwargs": {"IMAGE_MAX_TOKEN_NUM": 64}}))
    return ckpt


def test_embedded_default_gets_a_recipe_that_trains_on_the_bundled_split(tiny_stub_adapter, converted, tmp_path):
    """On the embedded default the GRPO and DPO launchers say they use the tiny model's recipe: several
    prompts a step, steps on the 5-record bundled split, reports long enough to finish; a knob the user
    set is kept; real weights keep the launcher's defaults (test_grpo_dry_run_cpu_and_gpu_node)."""
    env = {"ADAPTER": str(tiny_stub_adapter), "DATA_DIR": str(converted), "RL_OUTPUT_DIR": str(tmp_path), "TARGET": "cpu"}
    assigns, argv, _ = dry("grpo_qwen3vl_lora.sh", env)
    proc = launch("grpo_qwen3vl_lora.sh", {"DRY_RUN": "1", "SWIFT_BIN": "/nonexistent/swift", **env})
    assert "embedded default: GRPO learning recipe for the tiny model" in proc.stderr
    assert "GRPO: 2 prompt(s) x 4 reports per step, reports up to 160 tokens" in proc.stderr
    records = len(read_jsonl(converted / "train.jsonl"))
    per_step = int(flag(argv, "--per_device_train_batch_size")) * int(flag(argv, "--gradient_accumulation_steps"))
    prompts = per_step // int(flag(argv, "--num_generations"))
    assert 2 <= prompts <= records and records // prompts * float(flag(argv, "--num_train_epochs")) >= 5
    assert int(flag(argv, "--max_completion_length")) >= 128, "the SFT quickstart answers in up to 128 tokens"
    _, argv, _ = dry("grpo_qwen3vl_lora.sh", {**env, "LEARNING_RATE": "7e-5"})
    assert flag(argv, "--learning_rate") == "7e-5", "the user's knob wins over the recipe"
    proc = launch("dpo_qwen3vl_lora.sh", {"DRY_RUN": "1", "SWIFT_BIN": "/nonexistent/swift", **env})
    assert "embedded default: DPO learning recipe" in proc.stderr and "--chosen reference" in proc.stdout
    assert "--max_new_tokens 160" in proc.stdout


def test_a_run_that_would_train_0_steps_stops_in_one_line(tiny_stub_adapter, converted, tmp_path):
    env = {"ADAPTER": str(tiny_stub_adapter), "DATA_DIR": str(converted), "RL_OUTPUT_DIR": str(tmp_path),
           "TARGET": "cpu", "SWIFT_BIN": "/nonexistent/swift", "GLOBAL_BATCH": "32", "NUM_GENERATIONS": "4"}
    proc = launch("grpo_qwen3vl_lora.sh", env, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and proc.stdout == "", proc.stderr
    assert "GRPO would train 0 steps: each step samples 8 distinct prompts" in errors[0] and "5 record(s)" in errors[0]
    assert not list(tmp_path.glob("v*")), "stopped before ms-swift"


# --------------------------------------------------------------------------- training health
def hf_trainer_with_health(tmp_path: Path, poison_from: int, allow: bool, monkeypatch):
    """A real transformers Trainer (a linear model, 12 steps) with the medswift_health callback built
    the way ms-swift builds a --callbacks entry: ``callbacks_map[name](args, trainer)``. From step
    ``poison_from`` on the inputs are scaled by inf, so the loss and gradient norm are not finite."""
    import importlib.util

    import torch
    from transformers import Trainer

    from swift.trainers import TrainingArguments  # ms-swift's: importing swift patches Trainer's callbacks to need it

    monkeypatch.setenv("MEDSWIFT_ALLOW_NONFINITE", "1" if allow else "0")
    spec = importlib.util.spec_from_file_location("medswift_health_plugin",
                                                  ROOT / "scripts" / "swift_plugins" / "medswift_health.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    from swift.callbacks import callbacks_map

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.calls = torch.nn.Linear(4, 1), 0

        def forward(self, x, labels):
            self.calls += 1  # the training forward of step N is call N (no evaluation runs)
            if self.calls >= poison_from:
                x = x * float("inf")
            return {"loss": ((self.layer(x).squeeze(-1) - labels) ** 2).mean()}

    rows = [{"x": torch.full((4,), 0.1 * (k + 1)), "labels": torch.tensor(1.0)} for k in range(12)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, max_steps=12, logging_steps=1,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                             gradient_checkpointing=False, gradient_accumulation_steps=1)
    trainer = Trainer(model=Linear(), args=args, train_dataset=rows)
    trainer.add_callback(callbacks_map["medswift_health"](args, trainer))
    assert callbacks_map["medswift_health"] is plugin.MedSwiftHealth
    trainer.train()
    return trainer


def test_a_non_finite_loss_stops_training_and_says_where(tmp_path, monkeypatch, capsys):
    from medswift.posttrain import training_health

    trainer = hf_trainer_with_health(tmp_path, poison_from=4, allow=False, monkeypatch=monkeypatch)
    assert trainer.state.global_step == 4, "stopped at the first non-finite step"
    report = json.loads((tmp_path / "training_health.json").read_text())
    # transformers replaces a non-finite loss in the log by the running mean (logging_nan_inf_filter):
    # the gradient norm is what shows it
    # inputs scaled by inf give a gradient norm of nan or inf, by the order of the kernel's sums
    assert report["first_step"] == 4 and report["stopped"] and report["values"] in ({"grad_norm": "nan"},
                                                                                      {"grad_norm": "inf"})
    assert re.search(r"training health: non-finite or exploded grad_norm=(nan|inf) at step 4", capsys.readouterr().err)
    line = training_health.verdict(tmp_path)
    assert line.startswith("training stopped at step 4") and "ALLOW_NONFINITE=1" in line
    assert training_health.main([str(tmp_path)]) == 2


def test_allow_nonfinite_flags_and_goes_on(tmp_path, monkeypatch):
    from medswift.posttrain import training_health

    trainer = hf_trainer_with_health(tmp_path, poison_from=4, allow=True, monkeypatch=monkeypatch)
    assert trainer.state.global_step == 12
    report = json.loads((tmp_path / "training_health.json").read_text())
    assert not report["stopped"] and report["non_finite_steps"] == 9 and report["last_step"] == 12
    assert "training continued" in training_health.verdict(tmp_path)
    healthy = tmp_path / "healthy"
    hf_trainer_with_health(healthy, poison_from=99, allow=False, monkeypatch=monkeypatch)
    assert not (healthy / "training_health.json").exists() and training_health.verdict(healthy) is None


def test_exploded_values_count_as_broken():
    from medswift.posttrain.training_health import non_finite

    assert non_finite({"loss": 9.154e12, "grad_norm": 3.7e11, "reward": 0.5}) == {"loss": "9.15e+12", "grad_norm": "3.7e+11"}
    assert non_finite({"loss": "nan", "kl": float("-inf"), "grad_norm": 2.9}) == {"loss": "nan", "kl": "-inf"}
    assert non_finite({"loss": 0.06, "grad_norm": 2.9, "reward": 0.6, "kl": 0.05}) == {}
