"""Grounding converter throughput on a VinDr-CXR-shaped train.csv.

Usage:
    python bench/bench_grounding.py                      # VinDr-CXR's size: 67,914 rows on 15,000 images
    python bench/bench_grounding.py --images 300         # a quick try

Generates ``train.csv`` with VinDr-CXR's columns (image_id, class_name, class_id, rad_id, x_min, y_min,
x_max, y_max) and its proportions: three radiologists per image, about 4.5 rows per image (67,914 /
15,000), about 70% of images "No finding" by every reader, boxes of the 14 findings from readers who
mostly agree (so the majority fusion has work to do). The stand-in images are PNGs of four sizes
(2000x2500, 2500x2000, 2400x2400 and 1800x2200 pixels would cost ~30 GB of DICOMs; these are 1/8 of
that, 250x312 to 300x300, with the boxes scaled alike) hard-linked from four files, so the numbers
measure the converter (CSV, checks, fusion, writing) and header-cheap PNG decoding, not DICOM decoding.
The conversion runs in a fresh process that reports its peak memory (VmHWM). Prints rows/s,
images/s and peak memory. For research only, not for diagnosis.
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # this checkout's medswift, not an installed copy

from medswift.core.cli import command_parser  # noqa: E402
from medswift.core.constants import ROOT  # noqa: E402

FINDINGS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
            "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
            "Pneumothorax", "Pulmonary fibrosis"]
SIZES = [(250, 312), (312, 250), (300, 300), (225, 275)]  # VinDr's typical sizes / 8


def make_set(folder: Path, n_images: int, n_rows: int, seed: int = 0) -> Path:
    """train.csv with exactly ``n_rows`` rows on ``n_images`` images, and the stand-in images."""
    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    images = folder / "train"
    images.mkdir(parents=True)
    bases = []
    for k, (w, h) in enumerate(SIZES):
        path = folder / f"base{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (h, w), dtype=np.uint8)).save(path)
        bases.append(path)
    rows = []
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(n_images)]
    normal = []  # images every reader called normal: where extra "No finding" rows go
    for i, image_id in enumerate(ids):
        k = i % len(SIZES)
        os.link(bases[k], images / f"{image_id}.png")
        readers = [f"R{rng.randint(1, 17)}" for _ in range(3)]
        if rng.random() < 0.7:
            rows += [[image_id, "No finding", "14", r, "", "", "", ""] for r in readers]
            normal.append(image_id)
            continue
        w, h = SIZES[k]
        for _ in range(rng.randint(1, 4)):  # findings on this image, each boxed by 1-3 readers
            label = rng.choice(FINDINGS)
            x1, y1 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
            bw, bh = rng.uniform(10, w * 0.3), rng.uniform(10, h * 0.3)
            for r in readers[:rng.randint(1, 3)]:
                jitter = [rng.uniform(-3, 3) for _ in range(4)]
                rows.append([image_id, label, str(FINDINGS.index(label)), r, f"{max(0, x1 + jitter[0]):.2f}",
                             f"{max(0, y1 + jitter[1]):.2f}", f"{min(w, x1 + bw + jitter[2]):.2f}",
                             f"{min(h, y1 + bh + jitter[3]):.2f}"])
    # VinDr's own row count: pad with "No finding" rows of normal images, or trim the last rows
    while len(rows) < n_rows:
        rows.append([rng.choice(normal or ids), "No finding", "14", f"R{rng.randint(1, 17)}", "", "", "", ""])
    rows = rows[:n_rows]
    path = folder / "train.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"])
        writer.writerows(rows)
    return path


def convert(csv_path: Path, images: Path, out: Path, workers: int) -> dict:
    """Convert in a fresh process; its wall time and peak memory (VmHWM, read at its exit)."""
    code = ("import sys, resource; from medswift.data.converters.grounding import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', open('/proc/self/status').read().split('VmHWM:')[1].split()[0]); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "--csv", str(csv_path), "--images_dir", str(images), "--output_dir", str(out),
           "--workers", str(workers), "--quiet"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{ROOT}{os.pathsep}"
                                       f"{os.environ.get('PYTHONPATH', '')}",
           "MEDSWIFT_STATE_DIR": str(out.parent)}  # the launchers' "last conversion" hint must not name this set
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: the conversion failed:\n{proc.stderr[-2000:]}")
    peak_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")))
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("read ", "boxes:"))]
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "lines": lines}


def main(argv: list[str] | None = None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--images", type=int, default=15000, help="images (VinDr-CXR's training set: 15,000)")
    p.add_argument("--rows", type=int, help="CSV rows (default: 67,914 scaled to --images, VinDr's 4.53 per image)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work_dir", help="where to build the set (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    rows = args.rows or round(67914 * args.images / 15000)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_grounding_",
                                                                            dir="/dev/shm" if os.path.isdir(
                                                                                "/dev/shm") else None))
    try:
        t0 = time.perf_counter()
        csv_path = make_set(work / "vindr", args.images, rows)
        print(f"built a VinDr-CXR-shaped train.csv: {rows:,} rows on {args.images:,} images "
              f"({time.perf_counter() - t0:.1f} s)")
        r = convert(csv_path, work / "vindr" / "train", work / "out", args.workers)
        for line in r["lines"]:
            print(f"  {line}")
        print(f"converted in {r['seconds']:.1f} s: {rows / r['seconds']:,.0f} rows/s, "
              f"{args.images / r['seconds']:,.0f} images/s, peak memory {r['peak_mb']:.0f} MB "
              f"(--workers {args.workers}, the converter process)")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print("For research only, not for diagnosis.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
