"""The clinical reward's speed: (completion, reference) pairs scored per second, 1 and 2 processes.

Usage:
    python bench/bench_rewards.py [--pairs 20000] [--workers 2] [--seed 0]
    python bench/bench_rewards.py --pairs 2000

Pairs are built from the bundled OpenI reports (data/openi/openi-en.json and openi-zh.json, the
same 6,423 studies in English and Chinese): the reference is a real report and the completion is
a perturbation of it, one of: the report itself, one sentence dropped, one sentence's negation
flipped, sentences shuffled with a sentence of another study added, another study's report, or
the report cut off half way. Half the pairs are English, half Chinese.

The findings labeller caches its labels per clause and the reward caches each analysed
reference, so the bench measures three ways, side by side:
  uncached  every cache emptied before each pair: each pair labels its reference and
            completion from scratch (the worst case);
  cold      caches emptied once, then one pass (what the first epoch of training sees:
            reports repeat their sentences, and a GRPO group shares its reference);
  warm      the same pairs again with the caches full.
Each in one process (ms-swift scores rewards in each training process) and in --workers
processes sharing the pairs (total pairs/s). It prints pairs/s for each and whether the
uncached rate meets the target of 2,000 pairs/s on 2 cores.

Then adversarial completions, uncached, one process: runs of blanks (the 50,000 spaces of issue 24,
tabs and spaces, newlines), one endless clause of findings, a long run of one character, long
mixed-script noise and report sentences padded with junk words. It prints their pairs/s and the
slowest single pair (target: under 0.5 s). Research only, not diagnosis.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # measure this checkout's medswift, not an installed copy

from medswift.core.cli import command_parser  # noqa: E402
from medswift.core.errors import run_cli  # noqa: E402
from medswift.posttrain import rewards  # noqa: E402

TARGET = 2000
SENTENCE = {"en": re.compile(r"(?<=[.!?])\s+"), "zh": re.compile(r"(?<=[。！？；])")}
NEGATION = {"en": re.compile(r"\b(?:no|not|without)\s+", re.IGNORECASE), "zh": re.compile(r"没有|未见|无")}
ADD_NEGATION = {"en": "No evidence that ", "zh": "没有"}


def load_reports(lang: str) -> list[str]:
    data = json.loads((ROOT / "data" / "openi" / f"openi-{lang}.json").read_text(encoding="utf-8"))
    return [a["caption"] for a in data["annotations"]]


KINDS = ("the report itself", "a sentence dropped", "a negation flipped", "shuffled + another study's sentence",
         "another study's report", "cut off half way")


def perturb(report: str, other: str, lang: str, rng: random.Random, kind: int) -> str:
    sentences = [s for s in SENTENCE[lang].split(report) if s.strip()]
    joiner = " " if lang == "en" else ""
    if kind == 0 or len(sentences) < 2:
        return report
    if kind == 1:
        sentences.pop(rng.randrange(len(sentences)))
    elif kind == 2:
        i = rng.randrange(len(sentences))
        flipped = NEGATION[lang].sub("", sentences[i], count=1)
        sentences[i] = flipped if flipped != sentences[i] else ADD_NEGATION[lang] + sentences[i]
    elif kind == 3:
        sentences.append(rng.choice([s for s in SENTENCE[lang].split(other) if s.strip()] or [other]))
        rng.shuffle(sentences)
    elif kind == 4:
        return other
    else:
        return report[: len(report) // 2]
    return joiner.join(sentences)


def make_pairs(n: int, seed: int, kinds: list[int] | None = None) -> list[tuple[str, str]]:
    """``n`` (completion, reference) pairs; ``kinds``, when given, receives each pair's perturbation."""
    rng = random.Random(seed)
    pairs, made = [], []
    for lang in ("en", "zh"):
        reports = load_reports(lang)
        for _ in range(n // 2):
            ref, kind = rng.choice(reports), rng.randrange(len(KINDS))
            pairs.append((perturb(ref, rng.choice(reports), lang, rng, kind), ref))
            made.append(kind)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    if kinds is not None:
        kinds[:] = [made[i] for i in order]
    return [pairs[i] for i in order]


ADVERSARIAL = {
    "50,000 spaces": lambda r: "The heart is enlarged. Small left pleural effusion" + " " * 50000 + "and no pneumothorax.",
    "tabs and spaces": lambda r: "No effusion" + " \t" * 25000 + "no pneumothorax.",
    "newlines": lambda r: "Cardiomegaly." + "\n \n" * 10000 + "No pneumothorax.",
    "one endless clause": lambda r: "no effusion and the left effusion, right pneumothorax " * 800,
    "one character": lambda r: "a" * 50000,
    "Chinese run": lambda r: "左侧少量胸腔积液，" * 2000,
    "mixed noise": lambda r: "".join(chr(0x20 + (i * 7919) % 0x4e00) for i in range(20000)),
    "junk words": lambda r: " banana ".join(r.split(". ")),
}


def adversarial(n: int, seed: int) -> tuple[float, float, float, str]:
    """(pairs/s by wall clock, per CPU second, slowest pair in CPU seconds, its kind) for ``n``
    adversarial pairs, caches emptied before each pair."""
    rng = random.Random(seed)
    refs = load_reports("en")
    kinds = list(ADVERSARIAL)
    wall, cpu, slowest, slow_kind = 0.0, 0.0, 0.0, ""
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ref = rng.choice(refs)
        completion = ADVERSARIAL[kind](ref)
        rewards.clear_caches()
        start, cpu_start = time.perf_counter(), time.process_time()
        rewards.findings_reward(completion, ref)
        took = time.process_time() - cpu_start
        wall += time.perf_counter() - start
        cpu += took
        if took > slowest:
            slowest, slow_kind = took, kind
    return n / wall, n / max(cpu, 1e-9), slowest, slow_kind


def score(pairs: list[tuple[str, str]], mode: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to score ``pairs`` in this process in ``mode`` (uncached | cold | warm)."""
    rewards.clear_caches()
    if mode == "warm":
        rewards.findings_reward_batch([c for c, _ in pairs], [r for _, r in pairs])
    policy = rewards.uncertain_policy()
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "uncached":
        for completion, reference in pairs:
            rewards.clear_caches()
            rewards.findings_reward(completion, reference, policy)
    else:
        rewards.findings_reward_batch([c for c, _ in pairs], [r for _, r in pairs], policy)
    return time.perf_counter() - start, time.process_time() - cpu


def _worker(job: tuple[list[tuple[str, str]], str]) -> tuple[float, float]:
    return score(*job)


def parallel(pairs: list[tuple[str, str]], mode: str, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all) for ``workers`` processes scoring their shares at the
    same time (each process's caches are its own, as in ms-swift's training processes)."""
    shares = [pairs[i::workers] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        times = pool.map(_worker, [(share, mode) for share in shares])
    return max(w for w, _ in times), sum(c for _, c in times)


def main(argv=None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--pairs", type=int, default=20000, help="pairs to score, half English, half Chinese")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adversarial", type=int, default=200, help="adversarial pairs to score (0: none)")
    args = parser.parse_args(argv)
    if args.pairs < 2 or args.workers < 1:
        parser.error("--pairs must be at least 2 and --workers at least 1")
    kinds: list[int] = []
    pairs = make_pairs(args.pairs, args.seed, kinds)
    values = rewards.findings_reward_batch([c for c, _ in pairs], [r for _, r in pairs])
    print(f"{len(pairs)} pairs (OpenI en+zh, perturbed); {sum(v is None for v in values)} references without an "
          f"observation; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("mean findings reward by completion: " + "; ".join(
        f"{name} {sum(got) / len(got):.3f}" for k, name in enumerate(KINDS)
        if (got := [v for v, kind in zip(values, kinds) if kind == k and v is not None])))
    print("pairs/s by wall clock, and per CPU second (the steadier figure when other jobs share the cores)")
    results = {}
    for mode in ("uncached", "cold", "warm"):
        wall, cpu = score(pairs, mode)
        pwall, pcpu = parallel(pairs, mode, args.workers)
        n = len(pairs)
        results[mode] = (n / wall, n / pwall, n / pcpu)
        print(f"{mode:9s} 1 process: {n / wall:7.0f} pairs/s ({n / cpu:7.0f} per CPU s)   "
              f"{args.workers} processes: {n / pwall:7.0f} pairs/s ({n / pcpu:7.0f} per CPU s, "
              f"{n / pcpu * 2:7.0f} on 2 idle cores)", flush=True)
    _, wall_rate, cpu_rate = results["uncached"]
    for label, rate in ((f"{args.workers} processes by wall clock", wall_rate),
                        ("2 idle cores (2 x per-CPU-second rate)", cpu_rate * 2)):
        print(f"target {TARGET} pairs/s on 2 cores, uncached, {label}: {rate:.0f} "
              f"({'meets' if rate >= TARGET else 'misses'})")
    if args.adversarial:
        rate, cpu_rate, slowest, kind = adversarial(args.adversarial, args.seed)
        print(f"adversarial: {args.adversarial} pairs ({', '.join(ADVERSARIAL)}), uncached, 1 process: "
              f"{rate:.0f} pairs/s ({cpu_rate:.0f} per CPU s); slowest pair {slowest:.3f} CPU s ({kind}; "
              f"target under 0.5 s: {'meets' if slowest < 0.5 else 'misses'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
