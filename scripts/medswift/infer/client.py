"""Send X-rays (PNG, JPEG, DICOM) to a running `swift deploy` server and collect its reports.

Usage:
    bash tools/swift/deploy_qwen3vl.sh &                       # serves on http://127.0.0.1:8000
    python scripts/serve_client.py --test_images a.png         # one image: the answer streams to stdout
    python scripts/serve_client.py --dataset data/openi_swift/test.jsonl --concurrency 4 \
        --output_file results/serve/predictions.jsonl
    python scripts/evaluate.py --predictions results/serve/predictions.jsonl --output_dir results/eval_serve
    MEDSWIFT_API_KEY=... python scripts/serve_client.py --url http://gpu-node:8000 --images_dir /data/xrays

Each image is opened here with ``medswift.core.images.open_checked`` (DICOM included), and
only its pixels leave the machine, re-encoded as a PNG data URL: no file name, no DICOM
tag. Requests go to ``<url>/v1/chat/completions`` with at most ``--concurrency`` in
flight; ``--stream`` (the default for a single image) reads the answer as server-sent
events and prints it as it comes. Rows are appended to ``--output_file`` in the format
of ``scripts/batch_infer.py`` (``backend: "server"``), so ``scripts/evaluate.py`` reads
them unchanged and ``--resume`` skips what is there. Unreadable images are listed with
their reason and not sent; a failed request is one line, listed at the end.

The server (``scripts/serve.py``, started by ``tools/swift/deploy_qwen3vl.sh``) answers a wrong
or missing API key with HTTP 401, and a ``--max_new_tokens`` above its ``MAX_NEW_TOKENS``
ceiling with HTTP 400 (code ``max_tokens_too_large``); either would refuse every request, so
this client stops sending after the first. A request without an image gets HTTP 200 (a
text-only answer): this client never sends one.

For research only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

from medswift.core.cli import command_parser
from medswift.core.constants import LOOPBACK, NOTICE, RESULTS
from medswift.core.errors import UsageError, describe, run_cli
from medswift.core.images import ImageRejected
from medswift.infer.inputs import Item, add_input_args, check_generation_args, collect_items, load_images
from medswift.infer.prediction_file import append_lines, prepare_output, print_run_summary
from medswift.infer.prediction_rows import report_row

DEFAULT_URL = "http://127.0.0.1:8000"


class RequestFailed(Exception):
    """One request that got no answer; the message is one line. ``status``/``code``: the HTTP
    status and the error code of the server's answer, when there was one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


# Refusals that would repeat for every request: stop sending after the first (what, as said in the summary).
REFUSED_FOR_ALL = {401: "the API key", "max_tokens_too_large": "--max_new_tokens (above its ceiling)"}


# --------------------------------------------------------------------------- payload
def image_data_urls(item: Item, multi_frame: str, seed: int) -> tuple[list[str], list[str]]:
    """The checked, normalised pixels of each view as PNG data URLs, and the images' warnings
    (raises ImageRejected)."""
    images, warnings = load_images(item, seed, multi_frame)
    urls = []
    for image in images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")  # a fresh PNG carries no DICOM or EXIF metadata
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return urls, warnings


def chat_payload(model: str, item: Item, data_urls: list[str], args, stream: bool) -> dict:
    system = args.system or item.system
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}
                                                 for url in data_urls] + [{"type": "text", "text": item.prompt}]})
    body = {"model": model, "messages": messages, "max_tokens": args.max_new_tokens,
            "temperature": args.temperature, "seed": args.seed, "stream": stream}
    if args.top_p is not None:
        body["top_p"] = args.top_p
    if args.repetition_penalty is not None:
        body["repetition_penalty"] = args.repetition_penalty
    return body


# --------------------------------------------------------------------------- HTTP
def make_session(url: str, api_key: str | None):
    import requests

    session = requests.Session()
    # A proxy from the environment must not swallow a local server.
    session.trust_env = (urlsplit(url).hostname or "") not in LOOPBACK
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session


def error_text(resp) -> str:
    try:
        body = resp.json()
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        msg = body.get("message") or error.get("message") or body.get("detail") or body
    except (ValueError, AttributeError):
        msg = resp.text
    msg = " ".join(str(msg).split())
    return f"HTTP {resp.status_code}: {msg[:300]}"


def error_code(resp) -> str | None:
    """OpenAI's ``error.code`` of an error answer, if any."""
    try:
        error = resp.json().get("error")
        return error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        return None


def served_models(session, url: str, timeout: float) -> list[str]:
    import requests

    try:
        resp = session.get(f"{url}/v1/models", timeout=timeout)
    except requests.RequestException as exc:
        raise UsageError(f"no server at {url} ({type(exc).__name__}); start one: bash tools/swift/deploy_qwen3vl.sh")
    if resp.status_code != 200:
        raise UsageError(f"{url}/v1/models: {error_text(resp)}")
    try:
        return [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{url}/v1/models did not answer like an OpenAI-style server") from None


def ask(session, url: str, body: dict, timeout: float, on_token=None) -> str:
    """POST one chat request; return the answer text or raise RequestFailed."""
    import requests

    try:
        resp = session.post(f"{url}/v1/chat/completions", json=body, timeout=timeout, stream=body["stream"])
    except requests.RequestException as exc:
        raise RequestFailed(describe(exc)) from None
    with resp:
        if resp.status_code != 200:
            raise RequestFailed(error_text(resp), resp.status_code, error_code(resp))
        if not body["stream"]:
            try:
                data = resp.json()
            except ValueError:
                raise RequestFailed("HTTP 200 but the body is not JSON") from None
            if data.get("object") == "error" or not data.get("choices"):
                raise RequestFailed(f"HTTP 200 with an error: {data.get('message', data)}")
            return data["choices"][0]["message"]["content"] or ""
        # Server-sent events. ms-swift opens the stream before it decodes the image, so a failure
        # there is a 200 whose stream ends without [DONE]: that is a failure, not an empty answer.
        resp.encoding = "utf-8"
        parts: list[str] = []
        done = False
        try:
            for line in resp.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if chunk.get("object") == "error":
                    raise RequestFailed(f"error in stream: {chunk.get('message', chunk)}")
                for choice in chunk.get("choices") or []:
                    token = (choice.get("delta") or {}).get("content") or ""
                    if token:
                        parts.append(token)
                        if on_token:
                            on_token(token)
        except (requests.RequestException, ValueError) as exc:
            raise RequestFailed(f"stream broken: {type(exc).__name__}") from None
        if not done:
            raise RequestFailed("stream ended without [DONE] (the server failed mid-answer; see its log)")
        return "".join(parts)


# --------------------------------------------------------------------------- running
def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    add_input_args(p)
    p.add_argument("--url", default=DEFAULT_URL, help=f"server root (default {DEFAULT_URL})")
    p.add_argument("--model", help="served model name (default: the first one the server lists)")
    p.add_argument("--api_key", help="API key of the server (default: env MEDSWIFT_API_KEY)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    p.add_argument("--stream", action="store_true",
                   help="stream answers and print them as they come (default for a single image)")
    p.add_argument("--output_file", default=str(RESULTS / "serve" / "predictions.jsonl"))
    p.add_argument("--resume", action="store_true", help="skip images already in --output_file")
    p.add_argument("--overwrite", action="store_true", help="start --output_file afresh")
    p.add_argument("--mix_settings", action="store_true",
                   help="--resume even though --output_file was written with other generation settings")
    return p


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(min(rank, len(ordered))) - 1]


class _Sender:
    """Sends one item's request (from a worker thread), writes its row as soon as it comes, and
    stops sending after a refusal that every request would get (REFUSED_FOR_ALL)."""

    def __init__(self, session, url: str, model: str, args, out: Path, summary: dict, stream: bool, live: bool,
                 generation: dict):
        self.session, self.url, self.model, self.args, self.out = session, url, model, args, out
        self.summary, self.stream, self.live, self.generation = summary, stream, live, generation
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.refused_for_all: list[str] = []

    def one(self, it: Item):
        args = self.args
        if self.stop.is_set():
            return "cancelled", it, None
        try:
            data_urls, warnings = image_data_urls(it, args.multi_frame, args.seed)
        except ImageRejected as exc:
            return "skipped", it, exc.reason
        body = chat_payload(self.model, it, data_urls, args, self.stream)

        def echo(token):
            sys.stdout.write(token)
            sys.stdout.flush()

        if self.live:
            print(f"--- {it.image}", flush=True)
        t0 = time.perf_counter()
        try:
            text = ask(self.session, self.url, body, args.timeout, on_token=echo if self.live else None)
        except RequestFailed as exc:
            what = REFUSED_FOR_ALL.get(exc.status) or REFUSED_FOR_ALL.get(exc.code)
            if what:
                self.refused_for_all.append(what)
                self.stop.set()
            return "failed", it, str(exc)
        seconds = time.perf_counter() - t0
        if self.live:
            print(flush=True)
        row = report_row(it, text, model=self.model, adapter=None, backend="server", generation=self.generation,
                         seconds=seconds, hide_reasoning=args.hide_reasoning, warnings=warnings)
        with self.lock:
            append_lines(self.out, [row])
            self.summary["warnings"] += [(it.image, w) for w in warnings]
        return "written", it, seconds


def _checked_url(args) -> str:
    check_generation_args(args)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    url = args.url.rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise UsageError(f"--url must look like http://host:port, got {args.url!r}")
    return url


def run(args) -> dict:
    url = _checked_url(args)
    items = collect_items(args)
    out = Path(args.output_file)
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                "repetition_penalty": args.repetition_penalty, "image_max_token_num": None}  # the server's
    done = prepare_output(out, args.resume, args.overwrite, generation=settings, mix=args.mix_settings,
                          wanted={it.key for it in items})
    todo = [it for it in items if it.key not in done]

    api_key = args.api_key or os.environ.get("MEDSWIFT_API_KEY") or None
    session = make_session(url, api_key)
    summary = {"inputs": len(items), "already_done": len(items) - len(todo), "written": 0, "skipped": [],
               "failed": [], "warnings": [], "latencies": [], "seconds": 0.0, "output_file": str(out)}
    if not todo:
        return summary
    models = served_models(session, url, min(args.timeout, 30.0))
    if args.model and args.model not in models:
        raise UsageError(f"the server serves {models}, not {args.model!r}")
    stream = args.stream or len(todo) == 1
    live = stream and (len(todo) == 1 or args.concurrency == 1)  # tokens of one answer at a time
    sender = _Sender(session, url, args.model or models[0], args, out, summary, stream, live,
                     {**settings, "url": url, "stream": stream})
    t_start = time.perf_counter()
    cancelled = 0
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = [pool.submit(sender.one, it) for it in todo]
        for fut in as_completed(futures):
            status, it, info = fut.result()
            if status == "written":
                summary["written"] += 1
                summary["latencies"].append(info)
            elif status == "skipped":
                summary["skipped"].append((it.image, info))
            elif status == "failed":
                summary["failed"].append((it.image, info))
            else:
                cancelled += 1
    if cancelled:
        summary["failed"].append((f"{cancelled} more", f"not sent after the server refused {sender.refused_for_all[0]}"))
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(NOTICE, file=sys.stderr)
    return run_cli(report, args)


def report(args) -> int:
    summary = run(args)
    lat = summary["latencies"]
    timing = (f"; {summary['seconds']:.1f} s wall, latency p50 {percentile(lat, 50):.2f} s, "
              f"p95 {percentile(lat, 95):.2f} s" if lat else "")
    return print_run_summary(summary, f" + failed {len(summary['failed'])}{timing}",
                             ("skipped", "failed", "warnings"))
