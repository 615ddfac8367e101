"""Post-training after SFT on the tiny model, CPU only: one real GRPO run and one real DPO run
(module fixtures shared by the assertions), their checkpoints loaded by batch inference like an
SFT one, and the launchers' dry runs and one-line errors (ms-swift never reached)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from helpers import PYTHON, ROOT, read_jsonl, run

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
                                    "REWARD_WEIGHTS": "1 0.2", "SAVE_STEPS": "2", "NUM_WORKERS": "1"},
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
    assert "MedSwiftFindings" in completions[0] and "advantages" in completions[0]
    assert (run_dir / "images" / "rl_curves.png").stat().st_size > 10_000
    card = (grpo / "README.md").read_text()
    assert "## Post-training (RL stage)" in card and "GRPO" in card and "not for diagnosis" in card
    assert "| rewards (weight) | medswift_findings (1.0), medswift_repetition (0.2) |" in card
    assert "| generations per prompt | 4 |" in card and "| beta (KL weight) | 0.04 |" in card
    assert "| optimizer steps to this checkpoint | 2 |" in card and "format `openi`" in card


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
                                   "MAX_COMPLETION_LENGTH": "24", "REWARD_FUNCS": REWARDS, "GLOBAL_BATCH": "2",
                                   "MICRO_BATCH": "1", "RPO_ALPHA": "0.1", "SAVE_STEPS": "2", "NUM_WORKERS": "1"},
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
    assert summary["pairs"] + summary["ties_dropped"] == len(references) and summary["pairs"] == len(pairs) >= 1
    for p in pairs:
        assert p["messages"][-1] == {"role": "assistant", "content": references[p["id"]]}
        assert p["rejected_response"] != references[p["id"]] and p["chosen_reward"] > p["rejected_reward"]
        assert p["images"] and all(Path(i).is_file() for i in p["images"])
    samples = read_jsonl(pairs_file.parent / "samples.jsonl")
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
    (data / "train.jsonl").write_text(json.dumps(record) + "\n")
    (bare / "train.jsonl").write_text(json.dumps({**record, "messages": record["messages"][:1]}) + "\n")
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
    assert "medswift.data.rl pairs" in lines[2] and "--chosen best" in lines[2]
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
])
def test_mistakes_stop_in_one_line_before_any_model_loads(stubs, name, env, message):
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

    from medswift.eval import compare

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
    from medswift.eval import compare

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


def test_pairs_rank_samples_with_the_reward_and_drop_ties(tmp_path):
    """The pair builder on hand-written samples, scored by the real plugin through ms-swift's registry."""
    from medswift.data import rl

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
