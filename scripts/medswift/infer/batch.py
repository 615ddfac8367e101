"""Batched, resumable report generation over many X-rays (PNG, JPEG, DICOM).

Usage:
    python scripts/batch_infer.py --dataset data/openi_swift/test.jsonl \
        --adapter_path results/lora/v0-.../checkpoint-573 --output_file results/test_predictions.jsonl
    python scripts/batch_infer.py --test_images a.png b.dcm --lang en
    python scripts/batch_infer.py --images_dir /data/xrays --num_samples 50 --seed 0 --resume
    NPROC_PER_NODE=8 python scripts/batch_infer.py --dataset data/openi_swift/test.jsonl --resume

Requests go to ms-swift's engine in batches of ``--batch_size`` (not one call per
image). Each finished batch is appended to ``--output_file`` as JSON lines in one
write, so a run killed at any moment loses at most the batch in flight; ``--resume``
skips what is already there. Unreadable inputs are listed with their reason and the
run goes on; an input the model itself refuses costs only itself (its batch is retried one
request at a time). ``--ablation`` adds blank and noise control images for each prompt, so
the report card (``scripts/evaluate.py``) can tell whether the model reads the image at all.

Data-parallel like ``swift infer``: NPROC_PER_NODE (and NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT on several nodes) relaunch the command under torchrun; each rank (a GPU on CUDA)
takes every N-th input and writes a part file beside --output_file, and rank 0 merges the parts
into it, in input order, when all are done. ``--resume`` finishes a killed run, parts included.

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
from medswift.core.errors import UsageError, describe, run_cli
from medswift.core.images import ImageRejected
from medswift.infer.inputs import (add_input_args, check_generation_args, collect_items, load_images,
                                   request_messages)
from medswift.infer import data_parallel
from medswift.infer.prediction_file import (append_lines, check_output, merge_parts, part_files, part_path, prepare_output,
                                   print_run_summary)
from medswift.infer.prediction_rows import report_row



def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    add_input_args(p)
    p.add_argument("--model_path", help="base model folder (default: from the adapter's args.json, "
                                        "else the embedded tiny model)")
    p.add_argument("--adapter_path", help="LoRA checkpoint folder (optional)")
    p.add_argument("--batch_size", type=int, default=16, help="requests per engine call (max_batch_size)")
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--tensor_parallel_size", type=int, default=1,
                   help="vLLM: GPUs per model copy (ms-swift's VllmEngine tensor_parallel_size); under torchrun "
                        "the processes form world / N copies, each taking a shard")
    models.add_image_budget_arg(p)
    p.add_argument("--output_file", default=str(RESULTS / "batch_infer" / "predictions.jsonl"))
    p.add_argument("--resume", action="store_true", help="skip inputs already in --output_file or its part files")
    p.add_argument("--overwrite", action="store_true", help="start --output_file afresh")
    p.add_argument("--mix_settings", action="store_true",
                   help="--resume even though --output_file was written with other generation settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def checked(args) -> tuple[list, models.ModelChoice]:
    """Every check that needs no model: the inputs in their one order, and what to load."""
    if args.batch_size < 1:
        raise UsageError("--batch_size must be at least 1")
    if args.tensor_parallel_size < 1:
        raise UsageError("--tensor_parallel_size must be at least 1")
    if args.tensor_parallel_size > 1 and args.backend != "vllm":
        raise UsageError("--tensor_parallel_size needs --backend vllm")
    check_generation_args(args)
    items = collect_items(args)
    choice = models.resolve(args.model_path, args.adapter_path, args.backend, image_tokens=args.image_max_token_num)
    if choice.backend == "vllm":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("backend vllm needs a CUDA GPU and none is visible; use the transformers backend")
    return items, choice


def run(args) -> dict | None:
    """One process alone, or one rank under torchrun; the summary on rank 0, None elsewhere."""
    items, choice = checked(args)
    world = data_parallel.join(args.tensor_parallel_size)
    out = Path(args.output_file)

    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                  "repetition_penalty": args.repetition_penalty, "image_max_token_num": choice.image_budget}

    def prepare() -> tuple[set[str], bool]:
        done = prepare_output(out, args.resume, args.overwrite, parts=True, shards=world.shards,
                              generation=generation, mix=args.mix_settings, wanted={it.key for it in items})
        # parts: several ranks, or a killed parallel run's parts to fold in (in input order)
        return done, world.distributed or bool(part_files(out))

    done, use_parts = world.first(prepare)  # rank 0 alone touches the files; all see the same done set
    pending = [it for it in items if it.key not in done]
    todo = pending[world.shard::world.shards]
    target = part_path(out, world.shard, world.shards) if use_parts else out
    mine = {"written": [], "skipped": [], "warnings": [], "load_seconds": 0.0, "seconds": 0.0}
    # vLLM under torchrun builds its process groups with every rank, so no rank may sit it out
    if todo or (choice.backend == "vllm" and world.distributed):
        t0 = time.perf_counter()
        engine = models.load_engine(choice, max_batch_size=args.batch_size, dtype=args.dtype,
                                    device_map=world.device_map(), tensor_parallel_size=args.tensor_parallel_size,
                                    distributed=world.distributed, **vllm_image_limit(choice.backend, items))
        config = models.request_config(args.max_new_tokens, args.temperature, args.top_p, args.repetition_penalty,
                                       seed=args.seed)
        t1 = time.perf_counter()
        written, mine["skipped"], mine["warnings"] = infer_all(
            engine, config, todo, args, choice, generation, target if world.writes else None,
            f"reports (rank 0 of {world.size})" if world.distributed else "reports", quiet=args.quiet or not world.main)
        mine.update(written=written, load_seconds=t1 - t0, seconds=time.perf_counter() - t1)
    ranks = [r for r in world.gather(mine if world.writes else None) or [] if r]
    world.close()
    if not world.main:
        return None
    keys = [k for r in ranks for k in r["written"]]
    if use_parts:
        merge_parts(out, {it.key: n for n, it in enumerate(items)}, expected=set(keys))
    return {"inputs": len(items), "already_done": len(items) - len(pending), "written": len(keys),
            "skipped": [s for r in ranks for s in r["skipped"]], "warnings": [w for r in ranks for w in r["warnings"]],
            "load_seconds": max(r["load_seconds"] for r in ranks), "seconds": max(r["seconds"] for r in ranks),
            "output_file": str(out), "ranks": world.size}


def vllm_image_limit(backend: str, items: list) -> dict:
    """vLLM takes a fixed number of images per prompt: raise it to the most images one input holds
    (a study's views plus its prior's view: 3 with the converter's --max_views 2 --priors), as
    ms-swift's VllmEngine(limit_mm_per_prompt=...) passes it to vLLM. Nothing for transformers."""
    most = max((len(it.images) for it in items), default=1)
    return {"limit_mm_per_prompt": {"image": most}} if backend == "vllm" and most > 1 else {}


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


def infer_all(engine, config, todo: list, args, choice, generation: dict, out: Path | None, desc: str = "reports",
              quiet: bool = False):
    """Reports for ``todo``, appended to ``out`` a batch per write (None: computed, not written:
    a tensor-parallel rank that is not its copy's first). Returns (keys written, skipped, warned)."""
    from swift.infer_engine import InferRequest
    from tqdm import tqdm

    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    written: list[str] = []
    model, adapter = str(choice.model.resolve()), str(choice.adapter.resolve()) if choice.adapter else None
    bar = tqdm(total=len(todo), desc=desc, unit="study", disable=quiet, file=sys.stderr)
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
                skipped.append((it.image, f"inference failed ({describe(resp, 160)})"))
                continue
            rows.append(report_row(it, resp.choices[0].message.content, model=model, adapter=adapter,
                                   backend=choice.backend, generation=generation, seconds=per_item,
                                   hide_reasoning=args.hide_reasoning, warnings=warnings,
                                   finish_reason=resp.choices[0].finish_reason))
        if rows and out is not None:
            append_lines(out, rows)
            written += [r["key"] for r in rows]
        bar.update(len(batch))
    bar.close()
    return written, skipped, warned


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        code = run_cli(report, args, argv)
    except data_parallel.Stopped:
        code = 2
    return data_parallel.finish_rank(code, completed=getattr(args, "summarised", False))


def report(args, argv: list[str]) -> int:
    plan = data_parallel.launch_plan()
    if plan:  # check here, once, then start the ranks
        checked(args)
        if plan.world % args.tensor_parallel_size:
            raise UsageError(f"NPROC_PER_NODE x NNODES = {plan.world} processes do not split into model copies of "
                             f"--tensor_parallel_size {args.tensor_parallel_size}")
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and plan.nproc > gpus:  # each rank takes the GPU of its LOCAL_RANK
            raise UsageError(f"NPROC_PER_NODE={plan.nproc} but only {gpus} GPU(s) are visible")
        check_output(Path(args.output_file), args.resume, args.overwrite, parts=True,
                     shards=plan.world // args.tensor_parallel_size)
        return data_parallel.relaunch(plan, __spec__.name, argv)  # every rank runs this module
    summary = run(args)
    if summary is None:
        return 0
    rate = summary["written"] / summary["seconds"] if summary["seconds"] > 0 and summary["written"] else 0.0
    ranks = f" on {summary['ranks']} ranks" if summary["ranks"] > 1 else ""
    args.summarised = True  # the run is complete: see data_parallel.finish_rank
    return print_run_summary(summary, f"; model load {summary['load_seconds']:.1f} s, inference "
                                      f"{summary['seconds']:.1f} s{ranks} ({rate:.2f} inputs/s)",
                             ("skipped", "warnings"))


if __name__ == "__main__":  # each torchrun rank: python -m medswift.infer.batch
    sys.exit(main())
