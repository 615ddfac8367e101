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
scripts/evaluate_classification.py reads; an answer that names no label is written
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import engine as eng  # noqa: E402
from scripts.batch_infer import append_lines  # noqa: E402
from scripts.classification import MULTI, TASKS, load_labels, parse_answer  # noqa: E402
from scripts.imaging import ImageRejected, open_checked  # noqa: E402


class UsageError(Exception):
    pass


def true_labels(row: dict, labels: list[str], task) -> list[str]:
    """From a cls row's ``label`` (multi-hot or index) or a generative row's answer."""
    if "label" in row:
        lab = row["label"]
        return [labels[i] for i, v in enumerate(lab) if v] if isinstance(lab, list) else [labels[int(lab)]]
    answer = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"), None)
    parsed = parse_answer(task, answer)
    if parsed is None:
        raise UsageError(f"record {row.get('id')}: neither a label nor a parseable reference answer")
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
    if not Path(args.labels).is_file():
        raise UsageError(f"labels file not found: {args.labels} (the converter writes labels.json)")
    meta = load_labels(Path(args.labels))
    task, labels = TASKS[meta["task"]], meta["labels"]
    dataset = Path(args.dataset)
    if not dataset.is_file():
        raise UsageError(f"dataset not found: {dataset}")
    rows = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise UsageError(f"dataset is empty: {dataset}")
    choice = eng.resolve(args.model_path, args.adapter_path, args.backend)
    mode = choose_mode(args.mode, choice.adapter)
    eng.set_image_budget(args.image_max_token_num)
    extra = {"task_type": "seq_cls", "num_labels": len(labels), "problem_type": meta["problem_type"]} \
        if mode == "head" else {}
    engine = eng.load_engine(choice, max_batch_size=args.batch_size, dtype=args.dtype, **extra)
    config = eng.request_config(args.max_new_tokens, 0.0)
    if mode == "head":
        config.logprobs, config.top_logprobs = True, len(labels)
    from swift.infer_engine import InferRequest
    from tqdm import tqdm

    out = Path(args.output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    skipped, written, unparseable = [], 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(rows), desc=f"predicting ({mode})", unit="img", disable=args.quiet, file=sys.stderr)
    for i in range(0, len(rows), args.batch_size):
        batch, requests = [], []
        for row in rows[i:i + args.batch_size]:
            try:
                image = open_checked(row["images"][0]).image
            except ImageRejected as exc:
                skipped.append((row.get("id"), exc.reason))
                continue
            user = [m for m in row["messages"] if m["role"] != "assistant"]
            batch.append(row)
            requests.append(InferRequest(messages=user, images=[image]))
        results = engine.infer(requests, request_config=config, use_tqdm=False) if requests else []
        lines = []
        for row, res in zip(batch, results):
            response = res.choices[0].message.content
            if mode == "head":
                scores = scores_from(res.choices[0].logprobs, len(labels))
                pred = [labels[j] for j, p in enumerate(scores) if p >= 0.5] if meta["problem_type"] == MULTI \
                    else [labels[max(range(len(labels)), key=scores.__getitem__)]]
                response = None
            else:
                scores, pred = None, parse_answer(task, response)
                unparseable += pred is None
            lines.append({"id": row.get("id"), "true": true_labels(row, labels, task), "pred": pred,
                          "scores": scores, "response": response})
        if lines:
            append_lines(out, lines)
            written += len(lines)
        bar.update(len(rows[i:i + args.batch_size]))
    bar.close()
    return {"mode": mode, "written": written, "skipped": skipped, "unparseable": unparseable,
            "seconds": time.perf_counter() - start, "output_file": str(out)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", required=True, help="labels.json written by the converter")
    p.add_argument("--dataset", required=True, help="cls_<split>.jsonl (head) or <split>.jsonl (generative)")
    p.add_argument("--model_path")
    p.add_argument("--adapter_path")
    p.add_argument("--mode", choices=("auto", "head", "generative"), default="auto")
    p.add_argument("--backend", choices=eng.BACKENDS, default="transformers")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=64, help="generative mode: answer length")
    p.add_argument("--image_max_token_num", type=int)
    p.add_argument("--output_file", default=str(ROOT / "results" / "cls_predictions.jsonl"))
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UsageError("--batch_size must be at least 1")
        s = run(args)
    except (UsageError, eng.EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{s['written']} predictions ({s['mode']}), {s['unparseable']} unparseable answers, "
          f"{len(s['skipped'])} unreadable images, {s['seconds']:.1f} s -> {s['output_file']}")
    for rid, reason in s["skipped"]:
        print(f"  skipped {rid}: {reason}")
    print("For research only, not for diagnosis.")
    return 0 if s["written"] else 1


if __name__ == "__main__":
    sys.exit(main())
