"""Batched, resumable report generation over many X-rays (PNG, JPEG, DICOM).

Usage:
    python scripts/batch_infer.py --dataset data/openi_swift/test.jsonl \
        --adapter_path results/lora/v0-.../checkpoint-573 --output_file results/test_predictions.jsonl
    python scripts/batch_infer.py --test_images a.png b.dcm --lang en
    python scripts/batch_infer.py --images_dir /data/xrays --num_samples 50 --seed 0 --resume

Requests go to ms-swift's engine in batches of ``--batch_size`` (not one call per
image). Each finished batch is appended to ``--output_file`` as JSON lines in one
write, so a run killed at any moment loses at most the batch in flight; ``--resume``
skips what is already there. Unreadable inputs are listed with their reason and the
run goes on; an input the model itself refuses costs only itself (its batch is retried one
request at a time). ``--ablation`` adds blank and noise control images for each prompt, so
the report card (``scripts/evaluate.py``) can tell whether the model reads the image at all.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core import models
from medswift.core.constants import BACKENDS, DTYPES, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.core.images import ImageRejected
from medswift.infer.inputs import (add_input_args, check_generation_args, collect_items, load_images,
                                   request_messages)
from medswift.infer.output import append_lines, prepare_output, print_run_summary
from medswift.infer.rows import report_row


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    add_input_args(p)
    p.add_argument("--model_path", help="base model folder (default: from the adapter's args.json, "
                                        "else the embedded tiny model)")
    p.add_argument("--adapter_path", help="LoRA checkpoint folder (optional)")
    p.add_argument("--batch_size", type=int, default=16, help="requests per engine call (max_batch_size)")
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--image_max_token_num", type=int,
                   help="image budget in tokens (default: env IMAGE_MAX_TOKEN_NUM, else the adapter's "
                        "training budget, else 1024)")
    p.add_argument("--output_file", default=str(RESULTS / "batch_infer" / "predictions.jsonl"))
    p.add_argument("--resume", action="store_true", help="skip images already in --output_file")
    p.add_argument("--overwrite", action="store_true", help="start --output_file afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> dict:
    if args.batch_size < 1:
        raise UsageError("--batch_size must be at least 1")
    check_generation_args(args)
    items = collect_items(args)
    choice = models.resolve(args.model_path, args.adapter_path, args.backend)
    out = Path(args.output_file)
    done = prepare_output(out, args.resume, args.overwrite)
    todo = [it for it in items if it.key not in done]

    budget = models.set_image_budget(args.image_max_token_num, choice)
    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                  "repetition_penalty": args.repetition_penalty, "image_max_token_num": budget}
    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    written, load_seconds, infer_seconds = 0, 0.0, 0.0
    if todo:
        t0 = time.perf_counter()
        engine = models.load_engine(choice, max_batch_size=args.batch_size, dtype=args.dtype)
        config = models.request_config(args.max_new_tokens, args.temperature, args.top_p, args.repetition_penalty,
                                       seed=args.seed)
        t1 = time.perf_counter()
        written, skipped, warned = infer_all(engine, config, todo, args, choice, generation, out)
        load_seconds, infer_seconds = t1 - t0, time.perf_counter() - t1
    return {"inputs": len(items), "already_done": len(items) - len(todo), "written": written,
            "skipped": skipped, "warnings": warned, "load_seconds": load_seconds, "seconds": infer_seconds,
            "output_file": str(out)}


def infer_isolating(engine, requests: list, config) -> list:
    """``engine.infer`` on a batch; if the batch fails, each request alone, so one request the
    model cannot take (say an image whose aspect ratio the processor refuses) costs only itself.
    Returns a response or the exception it raised, per request, in order."""
    try:
        return list(engine.infer(requests, request_config=config, use_tqdm=False))
    except Exception as exc:  # noqa: BLE001 - which request broke the batch is found below
        if len(requests) == 1:
            return [exc]
    out = []
    for request in requests:
        try:
            out.append(engine.infer([request], request_config=config, use_tqdm=False)[0])
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def failure_detail(exc: Exception) -> str:
    """One line; ms-swift and the processors put the cause in the message."""
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def infer_all(engine, config, todo: list, args, choice, generation: dict, out: Path):
    from swift.infer_engine import InferRequest
    from tqdm import tqdm

    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    written = 0
    model, adapter = str(choice.model.resolve()), str(choice.adapter.resolve()) if choice.adapter else None
    bar = tqdm(total=len(todo), desc="reports", unit="study", disable=args.quiet, file=sys.stderr)
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start:start + args.batch_size]
        ready, requests = [], []
        for it in batch:
            try:
                images, warnings = load_images(it, args.seed, args.multi_frame)
            except ImageRejected as exc:
                skipped.append((it.image, exc.reason))
                continue
            warned += [(it.image, w) for w in warnings]
            ready.append((it, warnings))
            requests.append(InferRequest(messages=request_messages(it, args.system), images=images))
        t0 = time.perf_counter()
        responses = infer_isolating(engine, requests, config) if requests else []
        per_item = (time.perf_counter() - t0) / max(len(requests), 1)
        rows = []
        for (it, warnings), resp in zip(ready, responses):
            if isinstance(resp, Exception):
                skipped.append((it.image, f"inference failed ({failure_detail(resp)})"))
                continue
            rows.append(report_row(it, resp.choices[0].message.content, model=model, adapter=adapter,
                                   backend=choice.backend, generation=generation, seconds=per_item,
                                   hide_reasoning=args.hide_reasoning, warnings=warnings))
        if rows:
            append_lines(out, rows)
            written += len(rows)
        bar.update(len(batch))
    bar.close()
    return written, skipped, warned


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(report, args)


def report(args) -> int:
    summary = run(args)
    rate = summary["written"] / summary["seconds"] if summary["seconds"] > 0 and summary["written"] else 0.0
    return print_run_summary(summary, f"; model load {summary['load_seconds']:.1f} s, inference "
                                      f"{summary['seconds']:.1f} s ({rate:.2f} inputs/s)", ("skipped", "warnings"))
