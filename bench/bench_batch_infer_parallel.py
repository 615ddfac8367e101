"""Data-parallel batch inference: 1 process against NPROC_PER_NODE processes, side by side.

Usage:
    python bench/bench_batch_infer_parallel.py [--images 64] [--nproc 2] [--max_new_tokens 64]
    python bench/bench_batch_infer_parallel.py --model_path /models/Qwen3-VL-8B-Instruct --images 512 --nproc 8

Runs scripts/batch_infer.py twice on the same images (copies of the bundled X-rays under distinct
names), model and greedy settings: once as one process, once with NPROC_PER_NODE=--nproc, which
relaunches it under torchrun, one shard per rank. Prints images/s end to end (model loading
included) and for inference alone (the slowest rank's), the ratios, and whether both runs wrote
the same keys and texts. On a 2-core CPU the ratio says little: the ranks share the cores that
one process already used (torchrun gives each rank one thread). On CUDA each rank takes its own
GPU, which is what the ratio is for.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import ROOT

SCRIPT = ROOT / "scripts" / "batch_infer.py"
LAUNCH_VARS = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def images(folder: Path, n: int) -> Path:
    bundled = sorted((ROOT / "data" / "openi" / "images").glob("*.png"))
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copyfile(bundled[i % len(bundled)], folder / f"{i:05d}_{bundled[i % len(bundled)].name}")
    return folder


def timed_run(cmd: list[str], nproc: int) -> tuple[float, float, str]:
    """(wall seconds, inference seconds from the run's summary, its stdout)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    if nproc > 1:
        env["NPROC_PER_NODE"] = str(nproc)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {nproc} process(es) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    found = re.search(r"inference ([\d.]+) s", proc.stdout)
    return wall, float(found.group(1)) if found else float("nan"), proc.stdout


def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--model_path")
    p.add_argument("--adapter_path")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--nproc", type=int, default=2, help="processes of the parallel run (NPROC_PER_NODE)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--image_max_token_num", type=int, default=256)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_dp_") as tmp:
        folder = images(Path(tmp) / "images", args.images)
        common = [sys.executable, str(SCRIPT), "--images_dir", str(folder), "--lang", "en", "--quiet",
                  "--batch_size", str(args.batch_size), "--max_new_tokens", str(args.max_new_tokens),
                  "--image_max_token_num", str(args.image_max_token_num)]
        common += ["--model_path", args.model_path] if args.model_path else []
        common += ["--adapter_path", args.adapter_path] if args.adapter_path else []
        results, outputs = {}, {}
        for nproc in (1, args.nproc):
            out = Path(tmp) / f"pred_{nproc}.jsonl"
            results[nproc] = timed_run(common + ["--output_file", str(out)], nproc)
            outputs[nproc] = [(r["key"], r["response"]) for r in map(json.loads, out.read_text().splitlines())]

    n = args.images
    print(f"{n} images, greedy, max_new_tokens {args.max_new_tokens}, batch_size {args.batch_size}, "
          f"image budget {args.image_max_token_num} tokens; {os.cpu_count()} CPU cores visible")
    for nproc, (wall, infer, _) in results.items():
        label = "1 process" if nproc == 1 else f"{nproc} processes (torchrun)"
        print(f"{label:24s} end to end {wall:6.1f} s {n / wall:7.2f} images/s   "
              f"inference {infer:6.1f} s {n / infer:7.2f} images/s")
    (w1, i1, _), (wn, i_n, _) = results[1], results[args.nproc]
    print(f"ratio {args.nproc} / 1: end to end {w1 / wn:.2f}x, inference {i1 / i_n:.2f}x")
    print(f"same keys and texts in both runs: {'yes' if outputs[1] == outputs[args.nproc] else 'NO'}")
    print("On a 2-core CPU this ratio says little: the ranks share the cores one process already used. "
          "On CUDA each rank takes its own GPU (LOCAL_RANK).")
    return 0 if outputs[1] == outputs[args.nproc] else 1


if __name__ == "__main__":
    sys.exit(main())
