"""CheXbert's speed: reports labelled per second, batched (the toolkit) vs one at a time (f1chexbert's way).

Usage:
    python bench/bench_field_metrics.py [--reports 128] [--batch_size 32] [--metrics_dir DIR]
    python bench/bench_field_metrics.py --reports 64
    python bench/bench_field_metrics.py --metric radgraph --reports 64 [--metrics_dir DIR]
    python bench/bench_field_metrics.py --metric ratescore --reports 64 [--metrics_dir DIR]
    python bench/bench_field_metrics.py --metric green --reports 16 [--max_new_tokens N] [--metrics_dir DIR]

Without --metrics_dir the bench builds random weights of CheXbert's published shape
(scripts/build_metric_weights.py: bert-base-uncased, 110 M parameters) into a temporary folder:
the speed is the architecture's, whatever the weights. Reports are the first --reports distinct
bundled OpenI reports (data/openi/openi-en.json), real lengths. Each way labels the same reports
with a fresh labeller (no cache between them), on the GPU when there is one; the bench prints
reports/s for each, their ratio, whether the batched rate meets the target of 20 reports/s on
2 CPU cores, and the chexbert_f1 reward's pairs/s (completions and references labelled in one pass).
With ``--metric radgraph``: RadGraph F1 (radgraph 0.1.18's F1RadGraph, which annotates one report per
forward pass) on --reports/2 pairs of distinct reports, in reports/s; without --metrics_dir on the random
stand-in (a 2-layer BERT of width 32, not RadGraph-XL's BERT-base encoder), so the figure is the
package's pipeline (span enumeration, pruning, relation scoring), a bound the real model stays under;
and the radgraph_f1 reward's pairs/s on the same pairs.
With ``--metric green``: GREEN (field/green.py: greedy generation in batches of 8) on --reports/2 pairs, in
pairs/s; without --metrics_dir on the random stand-in (a 2-layer Llama of width 64 and a small vocabulary, so
its prompts are about 1,200 tokens, not GREEN-RadLlama2-7b's 7 B parameters). --max_new_tokens caps the
answer (MEDSWIFT_GREEN_MAX_NEW_TOKENS); unset, GREEN's own limit: 2,048 tokens of prompt and answer.
With ``--metric ratescore``: RaTEScore (the ratescore package's compute_score, batch size 1 as published) on
--reports/2 pairs, in reports/s; without --metrics_dir on random weights of the published shapes (deberta-v3-base
for RaTE-NER-Deberta, mpnet-base for BioLORD-2023-C), so the figure is the real models' speed.
Research only, not diagnosis.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
TARGET = 20.0  # reports/s on 2 CPU cores (issue 27)


def reports(n: int) -> list[str]:
    annotations = json.loads((ROOT / "data" / "openi" / "openi-en.json").read_text(encoding="utf-8"))["annotations"]
    return list(dict.fromkeys(a["caption"] for a in annotations))[:n]


def rate(root: Path, texts: list[str], batch_size: int) -> float:
    from medswift.eval.field.chexbert import CheXbert

    labeller = CheXbert(root, batch_size=batch_size)
    start = time.perf_counter()
    if batch_size == 1:  # f1chexbert's get_label: one report per forward pass
        for text in texts:
            labeller.labels([text])
    else:
        labeller.labels(texts)
    return len(texts) / (time.perf_counter() - start)


def reward_rate(root: Path, texts: list[str]) -> float:
    from medswift.posttrain.field_rewards import ChexbertF1

    reward = ChexbertF1(str(root))
    half = len(texts) // 2
    start = time.perf_counter()
    reward(texts[:half], texts[half:2 * half])
    return half / (time.perf_counter() - start)


def radgraph_rate(root: Path, texts: list[str]) -> float:
    from medswift.eval import field
    from medswift.eval.field.radgraph import RadGraphF1

    scorer = RadGraphF1(field.locate(["radgraph"], str(root))["files"]["radgraph-xl"], root)
    half = len(texts) // 2
    start = time.perf_counter()
    scorer.f1(texts[:half], texts[half:2 * half])
    elapsed = time.perf_counter() - start
    scorer.close()
    return 2 * half / elapsed


def radgraph_reward_rate(root: Path, texts: list[str]) -> float:
    from medswift.posttrain.field_rewards import RadgraphF1

    reward = RadgraphF1(str(root))
    half = len(texts) // 2
    start = time.perf_counter()
    reward(texts[:half], texts[half:2 * half])
    elapsed = time.perf_counter() - start
    reward.model.close()
    return half / elapsed


@contextmanager
def weights_root(args, build):
    """(root, device): ``--metrics_dir`` when given, else a temporary folder that ``build(folder)`` fills with
    random weights of the published formats; the device the models will run on."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.metrics_dir) if args.metrics_dir else Path(tmp)
        if not args.metrics_dir:
            build(root)
        yield root, torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"


def stand_ins(only: str):
    """A ``build`` for weights_root: scripts/build_metric_weights.py --only ``only``."""
    def build(root: Path) -> None:
        from build_metric_weights import main as build_weights

        build_weights(["--output_dir", str(root), "--only", only])
    return build


def bench_radgraph(args, texts: list[str]) -> int:
    import torch

    with weights_root(args, stand_ins("radgraph")) as (root, device):
        value = radgraph_rate(root, texts)
        pairs = radgraph_reward_rate(root, texts)
    weights = args.metrics_dir or "random stand-in, 2-layer BERT of width 32"
    print(f"RadGraph F1 on {len(texts) // 2} pairs of OpenI reports ({device}, torch threads "
          f"{torch.get_num_threads()}; {weights}): {value:.1f} reports/s; radgraph_f1 reward {pairs:.1f} pairs/s")
    return 0


def bench_green(args, texts: list[str]) -> int:
    import torch

    from medswift.eval import field
    from medswift.eval.field.green import Green

    with weights_root(args, stand_ins("green")) as (root, device):
        judge = Green(field.locate(["green"], str(root))["files"]["GREEN-RadLlama2-7b"],
                      max_new_tokens=args.max_new_tokens)
        half = len(texts) // 2
        start = time.perf_counter()
        judge.scores(texts[:half], texts[half:2 * half])
        elapsed = time.perf_counter() - start
    weights = args.metrics_dir or "random stand-in, 2-layer Llama of width 64"
    cap = f"answers capped at {args.max_new_tokens} new tokens" if args.max_new_tokens else "GREEN's max_length 2048"
    print(f"GREEN on {half} pairs of OpenI reports ({device}, torch threads {torch.get_num_threads()}; {weights}; "
          f"{cap}): {half / elapsed:.2f} pairs/s ({elapsed:.0f} s)")
    return 0


def bench_ratescore(args, texts: list[str]) -> int:
    import torch

    from medswift.eval.field.ratescore import RaTE

    def published_shapes(root: Path) -> None:
        from build_metric_weights import BASE, write_ratescore

        write_ratescore(root, 0, shape=BASE)

    with weights_root(args, published_shapes) as (root, device):
        scorer = RaTE(root / "RaTE-NER-Deberta", root / "BioLORD-2023-C")
        half = len(texts) // 2
        start = time.perf_counter()
        scorer.scores(texts[:half], texts[half:2 * half])
        value = 2 * half / (time.perf_counter() - start)
    weights = args.metrics_dir or "random weights of deberta-v3-base's and mpnet-base's shapes"
    print(f"RaTEScore on {half} pairs of OpenI reports ({device}, torch threads {torch.get_num_threads()}; "
          f"{weights}): {value:.1f} reports/s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from medswift.core.cli import command_parser

    p = command_parser(__doc__)
    p.add_argument("--reports", type=int, default=128, help="distinct bundled reports to label")
    p.add_argument("--batch_size", type=int, default=32, help="reports per batched forward pass")
    p.add_argument("--metrics_dir", help="real weights (default: random weights of the published shape)")
    p.add_argument("--metric", choices=("chexbert", "radgraph", "ratescore", "green"), default="chexbert")
    p.add_argument("--max_new_tokens", type=int, help="green: cap on the judge's answer (default: GREEN's own limit)")
    args = p.parse_args(argv)
    import torch

    texts = reports(args.reports)
    if args.metric == "radgraph":
        return bench_radgraph(args, texts)
    if args.metric == "ratescore":
        return bench_ratescore(args, texts)
    if args.metric == "green":
        return bench_green(args, texts)
    with weights_root(args, stand_ins("chexbert")) as (root, device):
        single = rate(root, texts, 1)
        batched = rate(root, texts, args.batch_size)
        pairs = reward_rate(root, texts)
    print(f"CheXbert on {len(texts)} OpenI reports ({device}, torch threads {torch.get_num_threads()}):")
    print(f"  one at a time (f1chexbert's way): {single:8.1f} reports/s")
    print(f"  batched, --batch_size {args.batch_size}:      {batched:8.1f} reports/s  ({batched / single:.1f}x)")
    print(f"  chexbert_f1 reward:               {pairs:8.1f} pairs/s (each pair: two reports)")
    print(f"target {TARGET:.0f} reports/s batched: {'met' if batched >= TARGET else 'NOT met'} on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
