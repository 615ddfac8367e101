"""Predict ChestX-ray14 / HAM10000 labels with a classification head or a generative adapter.

Usage:
    python scripts/predict_classification.py --labels data/cxr14_swift/labels.json \
        --dataset data/cxr14_swift/cls_test.jsonl --adapter_path results/cls/v0-.../checkpoint-300 \
        --output_file results/cls_test_pred.jsonl
    python scripts/predict_classification.py --labels data/ham10000_swift/labels.json \
        --dataset data/ham10000_swift/test.jsonl --adapter_path results/lora/v0-.../checkpoint-500 --mode generative

``--mode auto`` (default) uses the head when the adapter was trained with
``--task_type seq_cls`` (its args.json says so), else generates an answer and parses
the label names back out of it. Writes one JSONL row per image,
``{"id", "true", "pred", "scores", "response"}``, which
the classification report card (scripts/evaluate_classification.py) reads; an answer that names no label is written
with ``"pred": null`` and counted as wrong there, never dropped.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core import models
from medswift.core.constants import BACKENDS, DTYPES, MULTI_LABEL, NOTICE, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.core.images import ImageRejected
from medswift.core.labels import TASKS, load_labels, parse_answer
from medswift.infer.inputs import Item, items_from_dataset, load_images, request_messages
from medswift.infer.prediction_file import append_lines, prepare_output
from medswift.infer.prediction_rows import label_row


def true_labels(item: Item, labels: list[str], task) -> list[str]:
    """From a cls row's ``label`` (multi-hot or index) or a generative row's reference answer."""
    if "label" in item.row:
        lab = item.row["label"]
        try:
            return [labels[i] for i, v in enumerate(lab) if v] if isinstance(lab, list) else [labels[int(lab)]]
        except (IndexError, ValueError, TypeError):
            raise UsageError(f"record {item.record_id}: label {lab!r} does not fit the {len(labels)} labels") from None
    parsed = parse_answer(task, item.reference)
    if parsed is None:
        raise UsageError(f"record {item.record_id}: neither a label nor a parseable reference answer")
    return parsed


def choose_mode(mode: str, adapter: Path | None) -> str:
    if mode != "auto":
        return mode
    args = adapter / "args.json" if adapter else None
    if args and args.is_file() and json.loads(args.read_text()).get("task_type") == "seq_cls":
        return "head"
    return "generative"


def scores_from(logprobs: dict, n: int) -> list[float]:
    """The head's per-label probabilities, from ms-swift's top_logprobs (all labels requested)."""
    probs = [0.0] * n
    for item in logprobs["content"][0]["top_logprobs"]:
        probs[item["index"]] = round(math.exp(item["logprob"]), 6)
    return probs


def run(args) -> dict:
    if args.batch_size < 1:
        raise UsageError("--batch_size must be at least 1")
    meta = load_labels(Path(args.labels))
    if meta["task"] not in TASKS:
        raise UsageError(f"{args.labels}: unknown task {meta['task']!r}; expected one of {', '.join(TASKS)}")
    task, labels = TASKS[meta["task"]], meta["labels"]
    items = items_from_dataset(Path(args.dataset), None)
    truth = {it.key: true_labels(it, labels, task) for it in items}
    choice = models.resolve(args.model_path, args.adapter_path, args.backend, image_tokens=args.image_max_token_num)
    mode = choose_mode(args.mode, choice.adapter)
    out = Path(args.output_file)
    prepare_output(out, resume=False, overwrite=True)
    extra = {"task_type": "seq_cls", "num_labels": len(labels), "problem_type": meta["problem_type"]} \
        if mode == "head" else {}
    engine = models.load_engine(choice, max_batch_size=args.batch_size, dtype=args.dtype, **extra)
    config = models.request_config(args.max_new_tokens, 0.0)
    if mode == "head":
        config.logprobs, config.top_logprobs = True, len(labels)
    from swift.infer_engine import InferRequest
    from tqdm import tqdm

    skipped, written, unparseable = [], 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc=f"predicting ({mode})", unit="img", disable=args.quiet, file=sys.stderr)
    for i in range(0, len(items), args.batch_size):
        batch, requests = [], []
        for it in items[i:i + args.batch_size]:
            try:
                images, _ = load_images(it, seed=0)
            except ImageRejected as exc:
                skipped.append((it.record_id, exc.reason))
                continue
            batch.append(it)
            requests.append(InferRequest(messages=request_messages(it, None), images=images))
        results = engine.infer(requests, request_config=config, use_tqdm=False) if requests else []
        lines = []
        for it, res in zip(batch, results):
            response = res.choices[0].message.content
            if mode == "head":
                scores = scores_from(res.choices[0].logprobs, len(labels))
                pred = [labels[j] for j, p in enumerate(scores) if p >= 0.5] if meta["problem_type"] == MULTI_LABEL \
                    else [labels[max(range(len(labels)), key=scores.__getitem__)]]
                response = None
            else:
                scores, pred = None, parse_answer(task, response)
                unparseable += pred is None
            lines.append(label_row(it, truth[it.key], pred, scores, response))
        if lines:
            append_lines(out, lines)
            written += len(lines)
        bar.update(len(items[i:i + args.batch_size]))
    bar.close()
    return {"mode": mode, "written": written, "skipped": skipped, "unparseable": unparseable,
            "seconds": time.perf_counter() - start, "output_file": str(out)}


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    p.add_argument("--labels", required=True, help="labels.json written by the converter")
    p.add_argument("--dataset", required=True, help="cls_<split>.jsonl (head) or <split>.jsonl (generative)")
    p.add_argument("--model_path")
    p.add_argument("--adapter_path")
    p.add_argument("--mode", choices=("auto", "head", "generative"), default="auto")
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=64, help="generative mode: answer length")
    models.add_image_budget_arg(p)
    p.add_argument("--output_file", default=str(RESULTS / "cls_predictions.jsonl"))
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(report, build_parser().parse_args(argv))


def report(args) -> int:
    s = run(args)
    print(f"{s['written']} predictions ({s['mode']}), {s['unparseable']} unparseable answers, "
          f"{len(s['skipped'])} unreadable images, {s['seconds']:.1f} s -> {s['output_file']}")
    for rid, reason in s["skipped"]:
        print(f"  skipped {rid}: {reason}")
    print(NOTICE)
    return 0 if s["written"] else 1
