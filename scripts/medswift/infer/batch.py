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
run goes on. ``--ablation`` adds blank and noise control images for each prompt, so
``scripts/evaluate.py`` can tell whether the model reads the image at all.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import engine as eng  # noqa: E402
from scripts import prompts, thinking  # noqa: E402
from scripts.imaging import ImageRejected, open_checked  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
CONTROLS = ("blank", "noise")
NOTICE = "Research use only, not for diagnosis."


@dataclass
class Item:
    key: str  # unique per output line: resume skips keys already written
    image: str  # path as given, or "<blank>" / "<noise>" for controls
    prompt: str
    reference: str | None = None
    record_id: str | None = None
    control: str | None = None
    extra: dict = field(default_factory=dict)


class UsageError(Exception):
    pass


# --------------------------------------------------------------------------- inputs
def items_from_dataset(path: Path, prompt_override: str | None) -> list[Item]:
    """Converter JSONL: the user turn is the prompt, the assistant turn the reference."""
    if not path.is_file():
        raise UsageError(f"dataset not found: {path}")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user = next(m["content"] for m in row["messages"] if m["role"] == "user")
            reference = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"), None)
            image = row["images"][0]
            image = image["path"] if isinstance(image, dict) else image
        except (ValueError, KeyError, IndexError, StopIteration, TypeError):
            raise UsageError(f"{path}:{n} is not a converter record (messages + images)") from None
        prompt = prompt_override or user.replace("<image>", "", 1).strip()
        rid = row.get("id")
        if rid is not None and not isinstance(rid, (str, int)):
            raise UsageError(f"{path}:{n}: 'id' must be a string or a number")
        rid = str(rid) if rid is not None else None
        if not isinstance(image, str) or not isinstance(user, str):
            raise UsageError(f"{path}:{n} is not a converter record (image path and user text must be strings)")
        items.append(Item(key=rid or canonical(image), image=image, prompt=prompt, reference=reference,
                          record_id=rid))
    if not items:
        raise UsageError(f"dataset is empty: {path}")
    return items


def canonical(path: str) -> str:
    """The resume key of an image file: its resolved absolute path, so a run with relative paths
    and a resume with absolute ones (or through a symlinked folder) agree on what is done."""
    return str(Path(path).expanduser().resolve())


def items_from_files(paths: list[str], prompt: str) -> list[Item]:
    return [Item(key=canonical(p), image=p, prompt=prompt) for p in paths]


def sample_folder(folder: Path, num_samples: int | None, seed: int) -> list[str]:
    if not folder.is_dir():
        raise UsageError(f"images folder not found: {folder}")
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if num_samples and num_samples < len(files):
        files = sorted(random.Random(seed).sample(files, num_samples))
    return files


def control_items(items: list[Item]) -> list[Item]:
    """One blank and one noise image per distinct prompt."""
    out = []
    for prompt in sorted({it.prompt for it in items if it.control is None}):
        for kind in CONTROLS:
            out.append(Item(key=f"<{kind}>::{prompt}", image=f"<{kind}>", prompt=prompt, control=kind))
    return out


def control_image(kind: str, seed: int):
    import numpy as np
    from PIL import Image

    size = (512, 512)
    if kind == "blank":
        return Image.new("RGB", size, (0, 0, 0))
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), mode="RGB")


# --------------------------------------------------------------------------- output file
def repair_and_read_done(path: Path) -> set[str]:
    """Keys already written; a half-written last line (a kill mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    done = set()
    good = 0
    for raw in keep.splitlines(keepends=True):
        try:
            done.add(json.loads(raw)["key"])
            good += len(raw)
        except (ValueError, KeyError):
            break  # anything after a broken line is suspect: drop it and redo those images
    if good != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def append_lines(path: Path, rows: list[dict]) -> None:
    """All rows of a batch in one write(): a kill leaves the whole batch or none of it."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(28, "short write (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def prepare_output(out: Path, resume: bool, overwrite: bool) -> set[str]:
    """Check the output file before the model loads; return the keys already done (--resume).

    Only a regular file is ever truncated or replaced: ``--overwrite --output_file /dev/full``
    must not unlink a device node.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of {out}: {exc.strerror or exc}") from None
    if out.exists() and not out.is_file():
        raise UsageError(f"{out} is not a regular file; give --output_file a path for a .jsonl file")
    if out.exists() and out.stat().st_size and not (resume or overwrite):
        raise UsageError(f"{out} already has results; use --resume to continue it or --overwrite to replace it")
    try:
        if overwrite and out.exists():
            out.unlink()
        done = repair_and_read_done(out) if resume else set()
        with open(out, "ab"):  # writable now, not after an hour of inference
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return done


# --------------------------------------------------------------------------- running
def add_input_args(p: argparse.ArgumentParser) -> None:
    """Inputs, prompt and generation flags; shared with scripts/serve_client.py."""
    src = p.add_argument_group("inputs (one of)")
    src.add_argument("--dataset", help="converter JSONL: prompts and reference reports come from it")
    src.add_argument("--test_images", nargs="+", help="image files (PNG, JPEG, DICOM...)")
    src.add_argument("--images_dir", help="folder of images; see --num_samples")
    p.add_argument("--num_samples", type=int, help="with --images_dir: a seeded random sample of this size")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--prompt", help="free-text prompt for every image")
    p.add_argument("--template", type=int, help="prompt template id 0-11 in --lang (default 0)")
    p.add_argument("--lang", choices=prompts.LANGUAGES, default="zh")
    p.add_argument("--system", help="optional system prompt")
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top_p", type=float)
    p.add_argument("--repetition_penalty", type=float)
    p.add_argument("--multi_frame", choices=("first", "refuse"), default="first",
                   help="multi-frame DICOM: take the first frame or refuse the file")
    p.add_argument("--hide_reasoning", action="store_true",
                   help="Thinking models: keep only the report in 'response' (the reasoning stays in 'reasoning')")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_input_args(p)
    p.add_argument("--model_path", help="base model folder (default: from the adapter's args.json, "
                                        "else the embedded tiny model)")
    p.add_argument("--adapter_path", help="LoRA checkpoint folder (optional)")
    p.add_argument("--batch_size", type=int, default=16, help="requests per engine call (max_batch_size)")
    p.add_argument("--backend", choices=eng.BACKENDS, default="transformers")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--image_max_token_num", type=int, help="image budget (default: env IMAGE_MAX_TOKEN_NUM or 1024)")
    p.add_argument("--ablation", action="store_true", help="also run blank and noise images with each prompt")
    p.add_argument("--output_file", default=str(ROOT / "results" / "batch_infer" / "predictions.jsonl"))
    p.add_argument("--resume", action="store_true", help="skip images already in --output_file")
    p.add_argument("--overwrite", action="store_true", help="start --output_file afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def collect_items(args) -> list[Item]:
    chosen = [name for name in ("dataset", "test_images", "images_dir") if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --dataset, --test_images, --images_dir")
    if args.prompt and args.template is not None:
        raise UsageError("give --prompt or --template, not both")
    if args.template is not None:
        prompt = prompts.template(args.lang, args.template)  # ValueError -> usage error below
    else:
        prompt = args.prompt
    if args.dataset:
        items = items_from_dataset(Path(args.dataset), prompt)
    else:
        files = args.test_images if args.test_images else sample_folder(Path(args.images_dir), args.num_samples,
                                                                          args.seed)
        items = items_from_files(files, prompt or prompts.template(args.lang, 0))
    keys = Counter(it.key for it in items)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise UsageError(f"the same input appears more than once: {dupes[0]}")
    if args.ablation:
        items += control_items(items)
    return items


def run(args) -> dict:
    for name, low in (("batch_size", 1), ("max_new_tokens", 1)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name} must be at least {low}")
    if not 0 <= args.temperature <= 2:
        raise UsageError("--temperature must be within 0..2")
    items = collect_items(args)
    choice = eng.resolve(args.model_path, args.adapter_path, args.backend)
    out = Path(args.output_file)
    done = prepare_output(out, args.resume, args.overwrite)
    todo = [it for it in items if it.key not in done]

    budget = eng.set_image_budget(args.image_max_token_num)
    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                  "repetition_penalty": args.repetition_penalty, "image_max_token_num": budget}
    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    written, load_seconds, infer_seconds = 0, 0.0, 0.0
    if todo:
        t0 = time.perf_counter()
        engine = eng.load_engine(choice, max_batch_size=args.batch_size, dtype=args.dtype)
        config = eng.request_config(args.max_new_tokens, args.temperature, args.top_p, args.repetition_penalty,
                                    seed=args.seed)
        t1 = time.perf_counter()
        written, skipped, warned = infer_all(engine, config, todo, args, choice, generation, out)
        load_seconds, infer_seconds = t1 - t0, time.perf_counter() - t1
    return {"inputs": len(items), "already_done": len(items) - len(todo), "written": written,
            "skipped": skipped, "warnings": warned, "load_seconds": load_seconds, "seconds": infer_seconds, "output_file": str(out)}


def load_image(it: Item, args):
    """(image, warnings) of one input; raises ImageRejected with a reason for anything unusable."""
    if it.control:
        return control_image(it.control, args.seed), []
    try:
        checked = open_checked(it.image, multi_frame=args.multi_frame)
    except ImageRejected:
        raise
    except Exception as exc:  # last line of defence: one odd file must not end a night's run
        raise ImageRejected("unreadable image", type(exc).__name__) from None
    return checked.image, list(checked.warnings)


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


def infer_all(engine, config, todo: list[Item], args, choice, generation: dict, out: Path):
    from swift.infer_engine import InferRequest
    from tqdm import tqdm

    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    written = 0
    bar = tqdm(total=len(todo), desc="reports", unit="img", disable=args.quiet, file=sys.stderr)
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start:start + args.batch_size]
        ready, requests = [], []
        for it in batch:
            try:
                image, warnings = load_image(it, args)
            except ImageRejected as exc:
                skipped.append((it.image, exc.reason))
                continue
            warned += [(it.image, w) for w in warnings]
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                [{"role": "user", "content": f"<image>{it.prompt}"}]
            ready.append(it)
            requests.append(InferRequest(messages=messages, images=[image]))
        t0 = time.perf_counter()
        responses = infer_isolating(engine, requests, config) if requests else []
        per_image = (time.perf_counter() - t0) / max(len(requests), 1)
        rows = []
        for it, resp in zip(ready, responses):
            if isinstance(resp, Exception):
                skipped.append((it.image, f"inference failed ({failure_detail(resp)})"))
                continue
            text = resp.choices[0].message.content
            reasoning, report = thinking.split(text)
            rows.append({
                "key": it.key, "id": it.record_id, "image": it.image, "control": it.control,
                "prompt": it.prompt, "response": report if args.hide_reasoning else text,
                "reasoning": reasoning,
                "reference": it.reference, "model": str(choice.model.resolve()),
                "adapter": str(choice.adapter.resolve()) if choice.adapter else None, "backend": choice.backend,
                "generation": generation, "seconds": round(per_image, 4),
            })
        if rows:
            append_lines(out, rows)
            written += len(rows)
        bar.update(len(batch))
    bar.close()
    return written, skipped, warned


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (UsageError, eng.EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reasons = Counter(reason.split(" (")[0] for _, reason in summary["skipped"])
    rate = summary["written"] / summary["seconds"] if summary["seconds"] > 0 and summary["written"] else 0.0
    print(f"inputs {summary['inputs']} = written {summary['written']} + already done {summary['already_done']} "
          f"+ skipped {len(summary['skipped'])}"
          + (f" ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))})" if reasons else "")
          + f"; model load {summary['load_seconds']:.1f} s, inference {summary['seconds']:.1f} s "
          f"({rate:.2f} images/s)")
    for image, reason in summary["skipped"]:
        print(f"  skipped {image}: {reason}")
    for image, warning in summary["warnings"]:
        print(f"  warning {image}: {warning}")
    print(f"results: {summary['output_file']}")
    print(NOTICE)
    return 0 if summary["written"] or summary["already_done"] else 1


if __name__ == "__main__":
    sys.exit(main())
