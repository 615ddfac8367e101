"""Prior-study lookup (--priors) against the converter's own cost per study, side by side.

Usage:
    python bench/bench_priors.py                        # 2,000 studies converted twice; lookup at MIMIC's size
    python bench/bench_priors.py --studies 20000 --lookup_images 377110

Two measurements:
1. The converter on a MIMIC-CXR-shaped set in the real layout (bench_convert.make_mimic: 1.65
   images per study, 3.5 studies per patient, gzipped CSVs; here with StudyDate/StudyTime that
   differ per study and two studies on one day now and then), once as today (no --priors) and once
   with --priors, each in a fresh process reporting wall and CPU seconds and its peak memory (VmHWM).
2. The lookup alone (medswift.data.pipeline.studies.link_priors) at MIMIC-CXR-JPG's full size: 377,110
   images in 227,835 studies, as the converter holds them after its image checks; CPU seconds and
   the memory it allocates (tracemalloc peak, in a second run), per study.
Goal: the lookup costs well under the converter's own time and memory per study (at most 10% of
each: [OK]/[MISSED]), so --priors scales as the converter does. The --priors conversion also checks
the images of studies without the chosen section (they may serve as priors); its ratio to today's
run is printed, not judged.
"""
from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_convert beside this file

import bench_convert  # noqa: E402
from medswift.core.cli import command_parser  # noqa: E402
from medswift.data.converters import reports as conv  # noqa: E402
from medswift.data.pipeline.records import Candidate  # noqa: E402
from medswift.data.pipeline.studies import link_priors  # noqa: E402

FULL_IMAGES, FULL_STUDIES = 377_110, 227_835  # MIMIC-CXR-JPG 2.0.0
GOAL_SHARE = 0.10  # the lookup's share of the converter's time and memory per study


def date_the_studies(root: Path) -> None:
    """Rewrite the metadata's StudyDate/StudyTime: each study of a patient a few days after the one
    before, every fifth on the same day as the one before (later that day)."""
    path = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    date_col, time_col, study_col = header.index("StudyDate"), header.index("StudyTime"), header.index("study_id")
    when: dict[str, tuple[str, str]] = {}
    day = 0
    for row in body:
        if row[study_col] not in when:
            same_day = len(when) % 5 == 4
            day += 0 if same_day else 3
            stamp = f"{2180 + day // 336:04d}{1 + day // 28 % 12:02d}{1 + day % 28:02d}"
            when[row[study_col]] = (stamp, "183000.5" if same_day else "91500.0")
        row[date_col], row[time_col] = when[row[study_col]]
    with gzip.open(path, "wt", newline="") as fh:
        csv.writer(fh).writerows([header, *body])


def child(root: str, out: str, workers: str, *extra: str) -> int:
    """In a fresh process: one conversion; prints wall/CPU seconds and peak memory."""
    import resource

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0, t0 = cpu(), time.perf_counter()
    rc = conv.main(["--input", root, "--output_dir", out, "--lang", "en", "--workers", workers, "--quiet", *extra])
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - cpu0
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    summary = json.loads((Path(out) / "summary.json").read_text()) if rc == 0 else {}
    print("RESULT " + json.dumps({"rc": rc, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_kb": peak_kb,
                                  "summary": summary}))
    return 0


def measure(root: Path, out: Path, workers: int, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(root), str(out), str(workers), *extra],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if lines else {"rc": proc.returncode}
    if result["rc"] != 0:
        raise SystemExit(f"conversion failed ({result['rc']}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return result


def synthetic_studies(n_images: int) -> tuple[list[Candidate], dict[str, list[str]]]:
    """Studies as the converter holds them after its checks: 1.65 images and a report per study,
    3.5 studies per patient, one frontal view first."""
    records, images, made = [], {}, 0
    j = 0
    while made < n_images:
        views = min(1 + (j % 20 < 12) + (j % 20 == 19), n_images - made)
        rid = f"s{50_000_000 + j}"
        fields = {"study_day": 700_000 + j * 3 - (3 if j % 5 == 4 else 0), "study_time": 33_300.0 + (j % 5 == 4),
                  "findings": "Lungs are clear.", "impression": "No acute process.",
                  "view_positions": ["PA", "LATERAL", "AP"][:views]}
        records.append(Candidate(rid, [f"{rid}/{v}.jpg" for v in range(views)], group=f"p{j * 2 // 7}", fields=fields))
        images[rid] = [f"/data/files/p10/{rid}/{v}.jpg" for v in range(views)]
        made += views
        j += 1
    return records, images


def bench_lookup(n_images: int) -> dict:
    """The lookup's CPU seconds (a run of its own: tracemalloc slows Python down) and its allocation peak."""
    records, images = synthetic_studies(n_images)
    t0 = time.process_time()
    prior_of, _ = link_priors(records, images, [], lambda rec: "train")
    seconds = time.process_time() - t0
    del prior_of
    tracemalloc.start()
    prior_of, _ = link_priors(records, images, [], lambda rec: "train")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"studies": len(records), "images": n_images, "seconds": seconds, "peak_bytes": peak,
            "with_prior": sum(1 for p in prior_of.values() if p)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(*argv[1:])
    p = command_parser(__doc__)
    p.add_argument("--studies", type=int, default=2000, help="studies of the converted MIMIC-CXR-shaped set")
    p.add_argument("--lookup_images", type=int, default=FULL_IMAGES, help="images of the lookup-only measurement")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_priors_") as tmp:
        root = Path(tmp) / "mimic"
        root.mkdir()
        n_images, _ = bench_convert.make_mimic(root, args.studies)
        date_the_studies(root)
        today = measure(root, Path(tmp) / "today", args.workers)
        priors = measure(root, Path(tmp) / "priors", args.workers, "--priors")
    lookup = bench_lookup(args.lookup_images)
    written = today["summary"]["written"]
    per_study = {"today": (today["cpu_seconds"] / args.studies, today["peak_kb"] * 1024 / args.studies),
                 "priors": (priors["cpu_seconds"] / args.studies, priors["peak_kb"] * 1024 / args.studies),
                 "lookup": (lookup["seconds"] / lookup["studies"], lookup["peak_bytes"] / lookup["studies"])}
    print(f"MIMIC-CXR-shaped set: {args.studies} studies, {n_images} images, --workers {args.workers}; "
          f"written today {written}, with --priors {priors['summary']['written']} "
          f"({priors['summary']['priors']['with_prior']} with a prior)")
    print(f"{'run':<32} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'CPU ms/study':>13} {'KB/study':>9}")
    for name, r in (("converter today", today), ("converter --priors", priors)):
        key = "today" if r is today else "priors"
        print(f"{name:<32} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['peak_kb'] / 1024:8.0f} "
              f"{per_study[key][0] * 1000:13.3f} {per_study[key][1] / 1024:9.2f}")
    print(f"{'lookup alone, ' + format(lookup['studies'], ',') + ' studies':<32} {lookup['seconds']:8.2f} "
          f"{'':>8} {lookup['peak_bytes'] / 2**20:8.0f} {per_study['lookup'][0] * 1000:13.4f} "
          f"{per_study['lookup'][1] / 1024:9.2f}")
    time_share = per_study["lookup"][0] / per_study["today"][0]
    memory_share = per_study["lookup"][1] / per_study["today"][1]
    ok = time_share <= GOAL_SHARE and memory_share <= GOAL_SHARE
    print(f"lookup per study / converter per study: time {time_share:.3f}x, memory {memory_share:.3f}x "
          f"[{'OK' if ok else 'MISSED'}: at most {GOAL_SHARE:.2f}x each]")
    print(f"--priors conversion / today's: CPU {priors['cpu_seconds'] / today['cpu_seconds']:.2f}x, "
          f"peak memory {priors['peak_kb'] / today['peak_kb']:.2f}x (it also checks the images of studies kept "
          "only as priors)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
