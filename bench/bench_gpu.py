"""LoRA training throughput and batched inference for the full Qwen3-VL-8B shape, random weights.

Usage (on a CUDA machine, no download; the 8B architecture is built from
bench/configs/qwen3-vl-8b-instruct.config.json with random weights):
    python bench/bench_gpu.py --arch 8b --work_dir /tmp/bench8b
    python bench/bench_gpu.py --arch tiny --steps 2          # CPU smoke run of the same code

Side by side in one run, through the toolkit's own launcher (tools/swift/finetune_qwen3vl_lora.sh):
  * reference: micro-batch 1 x accumulation 16, gradient checkpointing, default attention;
  * tuned: micro-batch --micro_batch x accumulation 16/--micro_batch, sdpa (flash_attn when
    installed), padding-free batching when flash_attn is there, liger kernels when installed.
Both use the same synthetic X-ray set (bundled OpenI images upscaled to --image_px, real
reports) and the same global batch of 16. Printed: samples/s, tokens/s, peak GPU memory,
model FLOPs utilisation (6 x parameters x tokens/s over the GPU's dense bf16 peak: a
convention, LoRA skips the frozen weights' gradients), and batched vs one-by-one
inference images/s (bench/bench_batch_infer.py on the same model).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from medswift.core.cli import command_parser

ROOT = Path(__file__).resolve().parents[1]

ARCH_8B = ROOT / "bench" / "configs" / "qwen3-vl-8b-instruct.config.json"
TINY = ROOT / "weights" / "tiny-qwen3-vl"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja",
                   "generation_config.json")
# Dense bf16 peak (TFLOP/s) by device name fragment; MFU is n/a elsewhere.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}


def build_model_dir(arch: str, work: Path) -> Path:
    """A model folder: the tiny model as is, or the 8B shape with random bf16 weights + the tiny tokenizer."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tiny_model.py")], check=True)
    if arch == "tiny":
        return TINY
    out = work / "qwen3-vl-8b-random"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig.from_dict(json.loads(ARCH_8B.read_text()))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: 17 GB, not 35 GB in fp32 first
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    del model
    for name in TOKENIZER_FILES:  # same special-token ids as Qwen, vocabulary padded to 151,936
        if (TINY / name).exists():
            shutil.copy(TINY / name, out / name)
    return out


def make_dataset(work: Path, n: int, image_px: int) -> tuple[Path, int]:
    """n records of upscaled bundled X-rays with real reports; returns (jsonl, text tokens per sample)."""
    from PIL import Image

    reports = {a["image_id"]: a["caption"] for a in
               json.loads((ROOT / "data" / "openi" / "openi-en.json").read_text())["annotations"]}
    images = sorted((ROOT / "data" / "openi" / "images").glob("*.png"))
    img_dir = work / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        src = images[i % len(images)]
        dst = img_dir / f"{src.stem}_{image_px}.png"
        if not dst.exists():
            Image.open(src).convert("RGB").resize((image_px, image_px)).save(dst)
        lines.append(json.dumps({"messages": [
            {"role": "user", "content": "<image>Write a radiology report for this chest X-ray."},
            {"role": "assistant", "content": reports[src.stem]}], "images": [str(dst)]}))
    path = work / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY)
    text_tokens = sum(len(tok(json.loads(line)["messages"][1]["content"])["input_ids"]) for line in lines) // n + 30
    return path, text_tokens


def train_run(name: str, model: Path, data: Path, work: Path, steps: int, micro: int, extra: list[str],
              image_tokens: int, env_extra: dict | None = None) -> dict:
    out = work / f"run_{name}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "MODEL": str(model), "TRAIN_FILE": str(data), "VAL_FILE": "none", "OUTPUT_DIR": str(out),
           "MICRO_BATCH": str(micro), "GLOBAL_BATCH": "16", "LOGGING_STEPS": "1", "SAVE_STEPS": "100000",
           "IMAGE_MAX_TOKEN_NUM": str(image_tokens), **(env_extra or {})}
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps",
                           str(steps), "--save_strategy", "no", *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not list(out.glob("v*/logging.jsonl")):
        tail = proc.stderr.strip().splitlines()[-20:]
        print(f"[{name}] launcher failed (exit {proc.returncode}); last lines of its stderr:", *tail, sep="\n  ",
              file=sys.stderr)
        return {"name": name, "error": tail[-1] if tail else "failed"}
    logs = [json.loads(line) for line in next(out.glob("v*/logging.jsonl")).read_text().splitlines()]
    steps_logged = [r for r in logs if "loss" in r and "train_speed(s/it)" in r]
    # ms-swift's own figure: wall time per optimizer step so far, first step included
    speed = steps_logged[-1]["train_speed(s/it)"] if steps_logged else None
    memory = max((r.get("memory(GiB)", 0) or 0) for r in steps_logged) if steps_logged else None
    flags = [f"{k}={v}" for k, v in (env_extra or {}).items()] + extra
    return {"name": name, "seconds_per_step": speed, "peak_memory_gib": memory or None, "wall_s": wall,
            "flags": flags}


def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--arch", choices=("8b", "tiny"), default="8b")
    p.add_argument("--work_dir", default=str(ROOT / "results" / "bench_gpu"))
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per configuration (global batch 16)")
    p.add_argument("--micro_batch", type=int, default=8, help="tuned configuration's micro-batch")
    p.add_argument("--image_px", type=int, default=1024, help="square image side: 1024 px ~ 1,024 image tokens")
    p.add_argument("--infer_images", type=int, default=32)
    p.add_argument("--configs", default="reference,tuned,qlora",
                   help="comma-separated subset of reference, tuned, qlora (qlora needs CUDA and bitsandbytes; "
                        "it is the reference configuration on a 4-bit base, QUANT_BITS=4)")
    p.add_argument("--skip_infer", action="store_true", help="training table only")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    model = build_model_dir(args.arch, work)
    data, text_tokens = make_dataset(work, 16 * args.steps, args.image_px)
    image_tokens = (args.image_px // 32) ** 2
    tokens_per_sample = image_tokens + text_tokens

    tuned = ["--attn_impl", "flash_attn" if importlib.util.find_spec("flash_attn") else "sdpa"]
    if importlib.util.find_spec("flash_attn"):
        tuned += ["--padding_free", "true"]
    if importlib.util.find_spec("liger_kernel"):
        tuned += ["--use_liger_kernel", "true"]
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(wanted) - {"reference", "tuned", "qlora"})
    if unknown:
        p.error(f"unknown --configs entries: {', '.join(unknown)}")
    if "qlora" in wanted and not (cuda and importlib.util.find_spec("bitsandbytes")):
        print("qlora: skipped (needs a CUDA GPU and bitsandbytes)", file=sys.stderr)
        wanted.remove("qlora")
    plans = {"reference": (1, [], None), "tuned": (args.micro_batch, tuned, None),
             "qlora": (1, [], {"QUANT_BITS": "4"})}
    runs = [train_run(name, model, data, work, args.steps, plans[name][0], plans[name][1], image_tokens,
                      plans[name][2]) for name in wanted]

    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        from transformers import Qwen3VLForConditionalGeneration

        n_params = sum(p.numel() for p in Qwen3VLForConditionalGeneration(cfg).parameters())
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    print(f"device: {device}; model: {args.arch} ({n_params / 1e9:.2f} B parameters, random weights); "
          f"~{tokens_per_sample} tokens/sample ({image_tokens} image); global batch 16")
    print("| configuration | s/step | samples/s | tokens/s | peak memory GiB | MFU | flags |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} |||||")
            continue
        sps = 16 / r["seconds_per_step"]
        tps = sps * tokens_per_sample
        mfu = f"{6 * n_params * tps / (peak * 1e12):.1%}" if peak and cuda else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] else "n/a"
        print(f"| {r['name']} | {r['seconds_per_step']:.2f} | {sps:.2f} | {tps:,.0f} | {mem} | {mfu} | "
              f"{' '.join(r['flags']) or 'defaults'} |")
    ok = {r["name"]: r for r in runs if "error" not in r}
    if "reference" in ok and "tuned" in ok:
        print(f"training speed-up tuned / reference: "
              f"{ok['reference']['seconds_per_step'] / ok['tuned']['seconds_per_step']:.2f}x")
    if "reference" in ok and "qlora" in ok and ok["reference"]["peak_memory_gib"] and ok["qlora"]["peak_memory_gib"]:
        print(f"peak memory qlora / reference: "
              f"{ok['qlora']['peak_memory_gib'] / ok['reference']['peak_memory_gib']:.2f}x; "
              f"speed qlora / reference: {ok['reference']['seconds_per_step'] / ok['qlora']['seconds_per_step']:.2f}x")
    sys.stdout.flush()
    if args.skip_infer:
        return 0
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_batch_infer.py"), "--model_path", str(model),
                    "--images", str(args.infer_images), "--image_max_token_num", str(image_tokens)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
