"""Converter throughput: an OpenI-sized set, then MIMIC-CXR-shaped sets at two sizes.

Usage:
    python bench/bench_convert.py [--records 6423] [--workers 2] [--mimic_studies 400,2000]
    python bench/bench_convert.py --records 0 --mimic_studies 20000,100000   # the numbers in docs/benchmarks.md

OpenI: 6,423 records whose images are hard links to the eight bundled X-rays (512 px PNGs), so
the set costs no disk yet every file is opened and fully decoded as in a real run. Prints
records/s for one decoding process and for --workers processes, side by side, and their ratio;
the target is the whole set well under a minute on 2 cores.

MIMIC-CXR: a generated tree in the real layout (files/pXX/p<subject>/s<study>/<dicom_id>.jpg,
s<study>.txt reports with FINDINGS and IMPRESSION, gzipped split and metadata CSVs with the real
column names), 1.65 images per study and 3.5 studies per patient as in MIMIC-CXR (377,110 images,
227,835 studies). The images are hard links to 16 tiny JPEGs cut from the bundled X-rays, so the
numbers measure the converter, not JPEG decoding. Each size is converted in a fresh process that
reports its own peak memory (VmHWM: ru_maxrss of a forked child is its parent's peak), and the
smaller size is converted a second time into the same output folder to time a re-run that takes
its image checks from the cache. Goals: images per CPU-second (converter plus its decoding
processes) within 20% between the sizes, i.e. linear time; peak memory growing no faster than the
images (the converter holds one small record per image, so memory is linear too; the full set's
peak is projected from the two sizes); and a re-run that decodes nothing.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # this checkout's medswift, not an installed copy

from medswift.core.cli import command_parser  # noqa: E402
from medswift.core.constants import ROOT  # noqa: E402
from medswift.data.converters import reports as conv  # noqa: E402

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
            link_or_copy(src, images / f"{rid}.png")
            anns.append({"image_id": rid, "caption": f"Heart size normal. Lungs clear. Study {study}."})
            if len(anns) == n_records:
                break
    reports = folder / "reports.json"
    reports.write_text(json.dumps({"annotations": anns}))
    return reports


def link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system, or too many links to one file: copy instead
        shutil.copyfile(src, dest)


def timed_run(reports: Path, images: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    rc = conv.main(["--input", str(reports), "--images_dir", str(images), "--output_dir", str(out),
                    "--lang", "en", "--workers", str(workers), "--quiet"])
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"converter failed with exit code {rc}")
    return elapsed


# --------------------------------------------------------------------------- MIMIC-CXR shape
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
FULL_MIMIC_IMAGES = 377_110  # MIMIC-CXR-JPG 2.0.0, 227,835 studies
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough and fever  // eval for pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax is seen.  Heart size is {heart}.  Mediastinal contours are
 unremarkable.  Study {study}.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""
IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  ___F with chest pain.
 
 COMPARISON:  None.
 
 IMPRESSION: 
 
 Portable AP view of the chest.  No pneumothorax.  Study {study}.
"""


def tiny_jpegs(folder: Path, count: int = 16) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    sources = sorted(BUNDLED.glob("*.png"))
    out = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as img:
            small = img.convert("L").rotate(90 * (i // len(sources))).resize((16, 16))
        path = folder / f"tiny{i}.jpg"
        small.save(path, format="JPEG", quality=90)
        out.append(path)
    return out


def make_mimic(root: Path, n_studies: int, max_views: int = 2) -> tuple[int, int]:
    """A MIMIC-CXR-JPG folder with ``n_studies`` studies (reports beside the images, as when
    mimic-cxr-reports.zip is unpacked into it); returns the number of images, and how many of
    them a conversion checks (the views, up to ``max_views``, of the studies with FINDINGS)."""
    jpegs = tiny_jpegs(root / "sources")
    files = root / "files"
    split_rows, meta_rows = [], []
    made_dirs: set[str] = set()
    n_images = n_checked = 0
    for j in range(n_studies):
        patient = j * 2 // 7  # 3.5 studies per patient
        subject = str(10_000_000 + patient * 7919 % 9_999_991)  # spread over p10..p19 like MIMIC
        study = str(50_000_000 + j * 104_729 % 9_999_991)
        split = "test" if patient % 100 < 2 else "validate" if patient % 100 == 2 else "train"
        folder = files / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        if str(folder.parent) not in made_dirs:
            folder.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(str(folder.parent))
        folder.mkdir()
        text = IMPRESSION_ONLY if j % 6 == 0 else REPORT
        heart = "normal" if j % 2 else "mildly enlarged"
        (folder.parent / f"s{study}.txt").write_text(text.format(study=study, heart=heart))
        n_views = 1 + (j % 20 < 12) + (j % 20 == 19)  # 1.65 images per study
        n_checked += 0 if j % 6 == 0 else min(n_views, max_views)
        for v, position in enumerate(("PA", "LATERAL", "AP")[:n_views] if j % 4 else ("AP", "LL", "PA")[:n_views]):
            digest = hashlib.sha1(f"{j}/{v}".encode()).hexdigest()
            dicom = "-".join(digest[k:k + 8] for k in range(0, 40, 8))
            link_or_copy(jpegs[n_images % len(jpegs)], folder / f"{dicom}.jpg")
            n_images += 1
            split_rows.append([dicom, study, subject, split])
            meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", position, "3056", "2544", "21800506",
                              "213014.531", "CHEST (PA AND LAT)", "postero-anterior" if position == "PA" else "lateral",
                              "Erect"])
    for name, header, rows in (("mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, split_rows),
                               ("mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows)):
        with gzip.open(root / name, "wt", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    return n_images, n_checked


def child_convert(root: str, out: str, workers: str) -> int:
    """Run in a fresh process: convert, then print wall and CPU seconds (this process and its
    decoding processes), this process's own peak memory and the summary."""
    import resource

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu_start, start = cpu(), time.perf_counter()
    rc = conv.main(["--input", root, "--output_dir", out, "--lang", "en", "--workers", workers, "--quiet"])
    seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    summary = json.loads((Path(out) / "summary.json").read_text()) if rc == 0 else {}
    print("RESULT " + json.dumps({"rc": rc, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_kb": peak_kb,
                                  "summary": summary}))
    return 0


def measure(root: Path, out: Path, workers: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(root), str(out), str(workers)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"converter child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if result["rc"] != 0:
        raise SystemExit(f"converter failed with exit code {result['rc']}:\n{proc.stdout[-2000:]}")
    return result


def bench_mimic(sizes: list[int], workers: int, tmp: Path) -> bool:
    rows, rerun = [], None
    for n in sizes:
        root = tmp / f"mimic{n}"
        root.mkdir()
        began = time.perf_counter()
        images, checked = make_mimic(root, n)
        made = time.perf_counter() - began
        first = measure(root, tmp / f"mimic{n}_out", workers)
        if n == sizes[0]:
            rerun = measure(root, tmp / f"mimic{n}_out", workers)
        s = first["summary"]
        if s["input_records"] != images or s["read"] != s["written"] + s["skipped"]:
            raise SystemExit(f"counts do not add up at {n} studies: {s['input_records']} images read of {images}, "
                             f"read {s['read']} != written {s['written']} + skipped {s['skipped']}")
        rows.append((n, images, s, first, made, checked))
        shutil.rmtree(root)
        shutil.rmtree(tmp / f"mimic{n}_out")

    print(f"\nMIMIC-CXR-shaped sets (16x16 JPEGs, gzipped CSVs, --unit study --section findings), "
          f"--workers {workers}, each size in a fresh process:")
    print(f"{'studies':>9} {'images':>8} {'records':>8} {'seconds':>8} {'records/s':>10} {'images/s':>9} "
          f"{'CPU s':>7} {'images/CPU-s':>12} {'peak MB':>8} {'KB/image':>9}")
    for n, images, s, r, *_ in rows:  # records: the study samples written (--unit study)
        print(f"{n:9d} {images:8d} {s['written']:8d} {r['seconds']:8.1f} {s['written'] / r['seconds']:10.0f} "
              f"{images / r['seconds']:9.0f} {r['cpu_seconds']:7.1f} {images / r['cpu_seconds']:12.0f} "
              f"{r['peak_kb'] / 1024:8.0f} {r['peak_kb'] / images:9.2f}")
    ok = True
    if len(rows) == 2:
        (n1, i1, _, r1, *_), (n2, i2, _, r2, *_) = rows
        # Per core: images per CPU-second of the converter and its decoding processes, which other
        # work on a shared machine disturbs far less than images per wall-clock second.
        per_core = (i2 / r2["cpu_seconds"]) / (i1 / r1["cpu_seconds"])
        wall = (i2 / r2["seconds"]) / (i1 / r1["seconds"])
        records = (rows[1][2]["written"] / r2["seconds"]) / (rows[0][2]["written"] / r1["seconds"])
        memory = r2["peak_kb"] / r1["peak_kb"]
        per_image = (r2["peak_kb"] / i2) / (r1["peak_kb"] / i1)
        marginal_kb = (r2["peak_kb"] - r1["peak_kb"]) / (i2 - i1)  # what one more image costs
        full_mb = (r2["peak_kb"] + marginal_kb * (FULL_MIMIC_IMAGES - i2)) / 1024
        print(f"ratio {n2}/{n1}: {n2 / n1:.2f}x the studies, {i2 / i1:.2f}x the images")
        print(f"  throughput per core {per_core:.2f}x [{'OK' if abs(per_core - 1) <= 0.2 else 'MISSED'}: "
              f"within 20%] (per wall second: images {wall:.2f}x, records {records:.2f}x)")
        print(f"  peak memory {memory:.2f}x; per image {per_image:.2f}x [{'OK' if per_image <= 1.0 else 'MISSED'}: "
              f"grows no faster than the images]; {marginal_kb:.2f} KB per extra image, so about "
              f"{full_mb:,.0f} MB for the full MIMIC-CXR-JPG ({FULL_MIMIC_IMAGES:,} images)")
    r = rerun
    cached = r["summary"]["checks_from_cache"]
    first_seconds, checked = rows[0][3]["seconds"], rows[0][5]
    print(f"re-run at {sizes[0]} studies into the same folder: {r['seconds']:.1f} s vs {first_seconds:.1f} s "
          f"the first time ({r['seconds'] / first_seconds:.2f}x); image checks taken from the cache: "
          f"{cached} of {checked}")
    if r["summary"]["content_sha256"] != rows[0][2]["content_sha256"]:
        print("error: the re-run wrote different samples", file=sys.stderr)
        ok = False
    if cached != checked:
        print(f"error: the re-run took {cached} image checks from the cache, expected {checked}", file=sys.stderr)
        ok = False
    return ok


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # internal: one measured conversion in a fresh process (see measure)
        return child_convert(*argv[1:4])
    p = command_parser(__doc__)
    p.add_argument("--records", type=int, default=6423, help="records of the OpenI-sized set (0: leave it out)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes of the converter")
    p.add_argument("--tmp_dir", default="/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
                   else None, help="where the generated sets go: /dev/shm (memory) when it is writable, so the "
                                   "numbers measure the converter rather than the disk")
    p.add_argument("--mimic_studies", default="400,2000",
                   help="MIMIC-CXR-shaped sizes in studies, comma-separated (docs/benchmarks.md's: 20000,100000; "
                        "empty: leave it out)")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.mimic_studies.split(",") if n.strip()]
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_convert_", dir=args.tmp_dir) as tmp:
        tmp = Path(tmp)
        if args.records:
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
            ok = parallel < 60
        if sizes:
            ok = bench_mimic(sizes, args.workers, tmp) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
