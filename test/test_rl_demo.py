"""tools/rl_demo.sh: the synthetic task it builds, and its plumbing at a tiny scale (every output
file and field is there and well formed; the verdict itself is the full run's, see docs/rl-demo.md)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import PYTHON, ROOT, read_jsonl, run

DEMO = ROOT / "tools" / "rl_demo.sh"


def build(out: Path, *args: str):
    return run([PYTHON, "-m", "medswift.data.converters.synthetic", "--output_dir", str(out), *args],
               env={"PYTHONPATH": str(ROOT / "scripts")}, check=False, timeout=300)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthetic_task_is_deterministic_balanced_and_holds_out_its_bases(tmp_path):
    from medswift.data.converters import synthetic

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert build(out, "--train", "12", "--test", "6", "--image_size", "64").returncode == 0
    images = {k: v for k, v in digest(a).items() if not k.endswith(".jsonl")}
    assert len(images) == 12 + 6 + 1 and images == {k: v for k, v in digest(b).items() if not k.endswith(".jsonl")}
    for split in ("train", "val", "test"):  # the records differ only in the folder their image paths name
        assert (a / f"{split}.jsonl").read_text() == (b / f"{split}.jsonl").read_text().replace(str(b), str(a))
    summary = json.loads((a / "summary.json").read_text())
    assert set(summary["train_bases"]).isdisjoint(summary["held_out_bases"]) and summary["chance"] == 0.5
    for split, n in (("train", 12), ("test", 6)):
        rows = read_jsonl(a / f"{split}.jsonl")
        answers = [r["messages"][-1]["content"] for r in rows]
        assert len(rows) == n and answers.count(synthetic.ANSWERS[True]) == n // 2
        assert set(answers) == set(synthetic.ANSWERS.values()) and all(Path(r["images"][0]).is_file() for r in rows)
        assert all(r["messages"][0]["content"].startswith("<image>") for r in rows)


def test_synthetic_held_out_bases_mix_views_and_0_draws_new_images_of_every_base(tmp_path):
    """Two held-out X-rays are one frontal and one lateral view of the bundled eight (the last two by
    name are both laterals); with 0, held-out images are new crops and opacities of all eight, none
    equal to a training image."""
    from medswift.data.converters import synthetic

    assert [p.name for p in synthetic.held_out(synthetic.base_images(synthetic.BASE_IMAGES), 2)] == [
        "2808_1.png", "348_2.png"]
    assert build(tmp_path / "t", "--train", "16", "--test", "8", "--image_size", "64", "--held_out_bases", "0").returncode == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["held_out_bases"] == [] and len(summary["train_bases"]) == 8
    shown = {split: {hashlib.sha256(Path(r["images"][0]).read_bytes()).hexdigest()
                     for r in read_jsonl(tmp_path / "t" / f"{split}.jsonl")} for split in ("train", "test")}
    assert len(shown["train"]) == 16 and len(shown["test"]) == 8 and shown["train"].isdisjoint(shown["test"])


def test_synthetic_answers_are_scored_by_the_clinical_reward():
    """The demo's reward (medswift_findings) tells the two answers apart: 1 for the right one."""
    from medswift.data.converters.synthetic import ANSWERS
    from medswift.posttrain import rewards

    yes, no = ANSWERS[True], ANSWERS[False]
    assert rewards.findings_reward_batch([yes, no, no, yes], [yes, no, yes, no]) == [1.0, 1.0, 0.0, 0.0]


def test_effusion_brightens_the_image():
    import numpy as np

    from medswift.data.converters import synthetic

    gray = np.full((200, 200), 0.2, dtype=np.float32)
    plain = synthetic.make_image(gray, np.random.default_rng(0), 64, False)
    marked = synthetic.make_image(gray, np.random.default_rng(0), 64, True)
    assert marked.mean() > plain.mean() + 10


@pytest.mark.parametrize("args, message", [
    (("--train", "1"), "error: --train must be 2 or more"),
    (("--held_out_bases", "8"), "error: --held_out_bases must be 0..7"),
    (("--bases_dir", "/nonexistent"), "error: base image folder not found"),
])
def test_synthetic_bad_arguments_are_one_line(tmp_path, args, message):
    proc = build(tmp_path / "t", *args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(message)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_bad_knob_is_one_line_before_any_work(tmp_path):
    proc = run(["bash", str(DEMO)], env={"RL_DEMO_DIR": str(tmp_path / "d"), "GRPO_STEPS": "ten"}, check=False,
               timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: GRPO_STEPS must be a positive integer, got 'ten'"
    assert not (tmp_path / "d").exists()
    proc = run(["bash", str(DEMO)], env={"RL_DEMO_DIR": str(tmp_path / "d"), "GRPO_WARMUP": "1.5"}, check=False, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: GRPO_WARMUP must be a share of the GRPO steps from 0 to below 1, got '1.5'")
    assert not (tmp_path / "d").exists()


def test_demo_never_empties_a_folder_that_is_not_an_earlier_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run(["bash", str(DEMO)], env={"RL_DEMO_DIR": str(tmp_path)}, check=False, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: RL_DEMO_DIR={tmp_path} holds files that are not an earlier demo run: name an empty or new folder"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_help_is_its_header():
    proc = run(["bash", str(DEMO), "--help"], timeout=60)
    assert "RL_DEMO_DIR" in proc.stdout and "GRPO_STEPS" in proc.stdout and "not for diagnosis" in proc.stdout


def test_demo_at_a_tiny_scale_writes_every_output(tmp_path):
    demo = tmp_path / "demo"
    proc = run(["bash", str(DEMO)], env={
        "RL_DEMO_DIR": str(demo), "DEMO_TRAIN": "8", "DEMO_TEST": "6", "DEMO_IMAGE_SIZE": "64", "SFT_STEPS": "2",
        "GRPO_STEPS": "2", "GRPO_PROMPTS": "2", "NUM_GENERATIONS": "2", "MIN_STUDIES": "2", "CUDA_VISIBLE_DEVICES": ""},
        timeout=3600)
    assert "RL demo:" in proc.stdout and "not for diagnosis" in proc.stdout
    for name in ("data/train.jsonl", "data/test.jsonl", "data/summary.json", "eval_sft/metrics.json",
                 "eval_rl/metrics.json", "eval_sft/predictions.jsonl", "compare/comparison.md",
                 "compare/comparison.json", "compare/comparison.png", "compare/rl_demo.png"):
        assert (demo / name).is_file() and (demo / name).stat().st_size > 0, name
    s = json.loads((demo / "compare" / "compare.json").read_text())
    assert s["verdict"] in ("helped", "hurt", "gamed the reward", "no clear change", "too few studies")
    reward = s["reward"]
    for side in ("sft", "rl", "delta"):
        assert isinstance(reward[side], float) and -1 <= reward[side] <= 1
    assert len(reward["ci95"]) == 2 and reward["ci95"][0] <= reward["delta"] <= reward["ci95"][1]
    assert s["reads_image"] in (True, False, None) and "rl" in s["image_dependence"]
    assert s["studies"] == 6 and s["accuracy"]["chance"] == 0.5
    for side in ("sft", "rl"):
        acc = s["accuracy"][side]
        assert acc["n"] == 6 and 0 <= acc["accuracy"] <= 1 and abs(sum(acc["answer_shares"].values())
                                                                    + acc["other_answers_share"] - 1) < 1e-9
    assert [c["step"] for c in s["grpo_curve"]] == [1, 2] and all(0 <= c["reward"] <= 1 for c in s["grpo_curve"])
    assert Path(s["checkpoints"]["sft"]).name == "checkpoint-2" and Path(s["checkpoints"]["rl"]).name == "checkpoint-2"
    assert set(s["timings_s"]) == {"data", "sft", "grpo", "eval_sft", "eval_rl", "compare"}
    assert s["wall_s"] == sum(s["timings_s"].values()) and s["cpu_s"] > 0
    assert s["recipe"]["grpo_steps"] == "2" and s["recipe"]["beta"] == "0.04" and "not for diagnosis" in s["notice"]
    for side in ("sft", "rl"):  # the held-out reward's own interval, drawn as the chart's error bar
        lo, hi = s["reward_ci95"][side]
        assert lo <= reward[side] <= hi
