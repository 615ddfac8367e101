"""The report card at scale: 10,000 and 100,000 prediction rows, side by side.

Usage:
    python bench/bench_evaluate.py [--sizes 10000 100000] [--bootstrap 1000] [--workers 2]
    python bench/bench_evaluate.py --sizes 2000 20000 --bootstrap 200

Rows are built from the bundled OpenI reports (data/openi/openi-en.json): each reference is
a real report (cycling through the 6,423), each prediction is 2 to 5 real report sentences
drawn with a fixed seed, so report lengths, vocabulary and the findings labeller's work are
those of real reports. Each size is scored by ``medswift.eval.report_card.evaluate`` (every
metric, with --bootstrap resamples for the 95% intervals, METEOR on a seeded sample of
--meteor_sample rows) in a child process of its own, and the bench prints per size: seconds,
rows/s, CPU seconds of all its processes, where the time went (phases overlap: workers and
JVMs run beside the main process), and peak memory; then the ratios of time, CPU and memory
(10x the rows: a ratio of 10 or less is linear or better), and whether the largest size
met the target of 100,000 rows in under 10 minutes on 2 cores.

Peak memory is ``ru_maxrss`` read inside each size's child process when it is done:
"main" is that process alone (getrusage RUSAGE_SELF: rows, tokens, statistics, bootstrap);
"largest helper" is the largest single process it started and waited for (RUSAGE_CHILDREN:
a scorer worker, the PTB tokenizer JVM or the METEOR JVM; Linux keeps the largest, not a sum).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # measure this checkout's medswift, not an installed copy

from medswift.core.cli import command_parser  # noqa: E402
from medswift.core.errors import UsageError, run_cli  # noqa: E402

TARGET_ROWS, TARGET_SECONDS = 100_000, 600


def make_rows(n: int, path: Path, seed: int = 0) -> None:
    reports = [a["caption"] for a in json.loads((ROOT / "data" / "openi" / "openi-en.json").read_text())["annotations"]]
    sentences = [s for r in reports for s in re.split(r"(?<=[.!?])\s+", r) if s.strip()]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            prediction = " ".join(rng.sample(sentences, rng.randint(2, 5)))
            fh.write(json.dumps({"key": f"r{i}", "response": prediction, "reference": reports[i % len(reports)],
                                 "model": "bench: shuffled OpenI sentences", "adapter": None, "backend": "none",
                                 "generation": {"seed": seed}, "dataset": None}) + "\n")


def child(args) -> int:
    import resource

    from medswift.eval import report_card, text_metrics

    timings: dict = {}
    t0 = time.perf_counter()
    m = report_card.evaluate(Path(args.rows), Path(args.out), n_boot=args.bootstrap, seed=0,
                             meteor_sample=args.meteor_sample, workers=args.workers, timings=timings)
    seconds = time.perf_counter() - t0
    text_metrics.close_meteor_jar()  # reaped, so its JVM's CPU time counts below
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": seconds, "timings": timings, "n": m["n"], "meteor_n": m["meteor_sample_size"],
                      "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "self_maxrss_kb": me.ru_maxrss, "children_maxrss_kb": kids.ru_maxrss,
                      "bleu_4": m["text"]["ptb"]["bleu_4"], "ci95_bleu_4": m["ci95"]["text"]["ptb"]["bleu_4"]
                      if m["ci95"] else None}))
    return 0


def measure(n: int, workdir: Path, args) -> dict:
    rows = workdir / f"rows_{n}.jsonl"
    make_rows(n, rows)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--rows", str(rows), "--out",
           str(workdir / f"card_{n}"), "--bootstrap", str(args.bootstrap), "--meteor_sample", str(args.meteor_sample)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {n}-row child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000], help="rows per run, smallest first")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals")
    p.add_argument("--meteor_sample", type=int, default=5000, help="METEOR on a seeded sample of this many rows")
    p.add_argument("--workers", type=int, help="worker processes (default: the report card's, up to 2 cores)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return run_cli(child if args.child else bench, args)


def bench(args) -> int:
    if any(n < 1 for n in args.sizes) or args.bootstrap < 0 or args.meteor_sample < 0:
        raise UsageError("--sizes must be 1 or more, --bootstrap and --meteor_sample 0 or more")
    print(f"report card on shuffled OpenI sentences, --bootstrap {args.bootstrap}, --meteor_sample "
          f"{args.meteor_sample}, {len(os.sched_getaffinity(0))} CPU cores visible, load average "
          f"{os.getloadavg()[0]:.1f} (other work on the machine slows the wall times; CPU time is steadier)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        for n in args.sizes:
            r = results[n] = measure(n, Path(tmp), args)
            ci = r["ci95_bleu_4"]
            print(f"\n{n:>7} rows: {r['seconds']:.1f} s, {n / r['seconds']:.0f} rows/s, CPU {r['cpu_seconds']:.0f} s "
                  f"(all processes), peak memory {r['self_maxrss_kb'] / 1024:.0f} MB main process, "
                  f"{r['children_maxrss_kb'] / 1024:.0f} MB largest helper; METEOR on {r['meteor_n']['ptb']} records; "
                  f"BLEU-4 {r['bleu_4']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                  + f"; load average now {os.getloadavg()[0]:.1f}")
            for phase, s in sorted(r["timings"].items(), key=lambda kv: -kv[1]):
                print(f"         {s:7.1f} s  {phase}")
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        a, b = results[small], results[large]
        print(f"\n{large}/{small} rows = {large / small:.1f}x: time {b['seconds'] / a['seconds']:.2f}x, "
              f"CPU {b['cpu_seconds'] / a['cpu_seconds']:.2f}x, "
              f"peak memory: main process {b['self_maxrss_kb'] / a['self_maxrss_kb']:.2f}x, "
              f"largest helper {b['children_maxrss_kb'] / a['children_maxrss_kb']:.2f}x")
    largest = max(args.sizes)
    if largest >= TARGET_ROWS:
        seconds = results[largest]["seconds"]
        print(f"target {TARGET_ROWS} rows in under {TARGET_SECONDS // 60} min: {largest} rows took {seconds:.0f} s, "
              + ("met" if seconds < TARGET_SECONDS * largest / TARGET_ROWS else "NOT met"))
    print("Synthetic rows; for research only, not for diagnosis.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
