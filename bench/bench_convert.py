"""Converter throughput on an OpenI-sized set: 6,423 records, ~6,400 real-size PNGs.

Usage:
    python bench/bench_convert.py [--records 6423] [--workers 2]

The images are hard links to the eight bundled X-rays (512 px PNGs), so the set
costs no disk yet every file is opened and fully decoded as in a real run. Prints
records/s for one decoding process and for --workers processes, side by side in
one run, and their ratio; the target is the whole set well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from medswift.core.constants import ROOT
from medswift.data import reports as conv

BUNDLED = ROOT / "data" / "openi" / "images"


def make_set(folder: Path, n_records: int) -> Path:
    sources = sorted(BUNDLED.glob("*.png"))
    images = folder / "images"
    images.mkdir()
    anns, study = [], 0
    while len(anns) < n_records:
        study += 1
        for view in range(1, 2 + study % 2):  # one or two views, as in OpenI
            rid = f"{study}_{view}"
            src = sources[len(anns) % len(sources)]
            try:
                os.link(src, images / f"{rid}.png")
            except OSError:  # another file system: copy instead
                shutil.copyfile(src, images / f"{rid}.png")
            anns.append({"image_id": rid, "caption": f"Heart size normal. Lungs clear. Study {study}."})
            if len(anns) == n_records:
                break
    reports = folder / "reports.json"
    reports.write_text(json.dumps({"annotations": anns}))
    return reports


def timed_run(reports: Path, images: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    rc = conv.main(["--input", str(reports), "--images_dir", str(images), "--output_dir", str(out),
                    "--lang", "en", "--workers", str(workers), "--quiet"])
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"converter failed with exit code {rc}")
    return elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=6423)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        tmp = Path(tmp)
        reports = make_set(tmp, args.records)
        serial = timed_run(reports, tmp / "images", tmp / "out1", 1)
        parallel = timed_run(reports, tmp / "images", tmp / f"out{args.workers}", args.workers)
    n = args.records
    print(f"records: {n} (real-size PNGs, each fully decoded and checked)")
    print(f"1 process:  {serial:6.1f} s  {n / serial:7.0f} records/s")
    print(f"{args.workers} processes: {parallel:6.1f} s  {n / parallel:7.0f} records/s")
    print(f"ratio {args.workers} processes / 1 process: {serial / parallel:.2f}x")
    verdict = "OK" if parallel < 60 else "SLOW"
    print(f"target: full set well under 60 s -> {parallel:.1f} s [{verdict}]")
    return 0 if parallel < 60 else 1


if __name__ == "__main__":
    sys.exit(main())
