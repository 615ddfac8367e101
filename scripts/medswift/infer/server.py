"""Serve a model (LoRA adapter or base/merged) with ms-swift's deploy app, in this one process, guarded.

Usage (tools/swift/deploy_qwen3vl.sh builds this command; DRY_RUN=1 prints it):
    API_KEY=... python scripts/serve.py --api_key_env API_KEY --adapters results/lora/v0-.../checkpoint-573 \
        --host 0.0.0.0 --port 8000 --max_new_tokens 512
    python scripts/serve.py --api_key_file /run/secrets/medswift_key --model weights/xray-merged

Every other flag goes to ms-swift's ``DeployArguments`` unchanged (``--infer_backend``,
``--max_batch_size``, ``--served_model_name``, ``--log_interval``...). What this file adds to
``swift deploy``'s FastAPI app (ms-swift 4.6), and why:

- The API key comes from a file (``--api_key_file``) or an environment variable
  (``--api_key_env NAME``), never from argv, and is never handed to ms-swift: ``DeployArguments``
  would log it (ms-swift logs its arguments) and ``swift deploy --api_key`` shows it in ``ps``.
  The key is checked here instead, and a wrong or missing key is answered 401 (OpenAI clients
  raise ``AuthenticationError``), not ms-swift's 400. ``/health``, ``/ping`` and ``/v1/models``
  stay open, as in ms-swift.
- ``--max_new_tokens`` is a ceiling: a request asking for more is refused with 400 naming the
  ceiling (code ``max_tokens_too_large``), as OpenAI and vLLM refuse a max_tokens beyond what a
  model allows; one that asks for nothing gets the ceiling. Refusing rather than clamping means
  no report is cut shorter than its client asked without the client being told.
  ``n``/``best_of``/``num_beams`` above ``MAX_SEQUENCES`` are refused (each multiplies the work).
- A generation whose client has disconnected stops at its next token (transformers backend): the
  ASGI middleware sees ``http.disconnect`` and sets a flag that a ``StoppingCriteria`` checks for
  that request's rows of the batch; the other requests of the batch go on.
- Media (``image_url``...) must be ``data:`` URLs. A file path, ``file://`` or any other string is
  refused with one fixed 400 answer, whether or not the file exists (ms-swift would read the file,
  or answer 422 for a missing one: a file-existence oracle). http(s) URLs are fetched (by
  ms-swift's SSRF-checked fetcher) only with ``--allow_remote_images``.
- A request naming a model this server does not serve gets 404 ``model_not_found``, as OpenAI's.
- Ceilings refused at the door, before anything is tokenised or decoded: a body over
  ``--max_body_mb`` (32) is 413 (a declared Content-Length is refused unread); text over
  ``--max_request_chars`` (100,000, and at most 4 characters per token of the model's max length)
  and more than ``--max_images`` (8) images per request are 400.
- Every request is checked and its images decoded (Pillow, medswift.core.images) before it joins
  a batch, so a broken image is refused with its own message; if the engine still fails a batch
  (ms-swift fails all its requests), each request is retried alone and only the bad one fails.
- ``max_completion_tokens`` (OpenAI's current name) is ``max_tokens``, ceiling included.
- One error shape for every refusal: OpenAI's ``{"error": {"message", "type", "param", "code"}}``
  (plus ms-swift's ``object``/``message``), 400 for a client's mistake (bad or nested JSON,
  NaN/Infinity, a non-integer max_tokens, empty messages...), never a traceback in the log for one.
- The log holds one line per request (id, status, bytes in and out, seconds, the refusal's reason),
  never prompt, report or image content; ``--log_content`` (LOG_CONTENT=1) re-enables ms-swift's
  request logging for debugging, with a warning.
- ``/infer/`` (ms-swift's batch rollout endpoint) and ``/v1/embeddings`` are not served: they
  bypass the checks above and this project has no use for them.

Errors, ms-swift's own included, are OpenAI's shape with ms-swift's (``{"object": "error",
"message": ...}``) fields kept, so clients of either kind read them.

For research only, not for diagnosis.
"""
# No `from __future__ import annotations`: FastAPI reads the route handlers' annotations (Request) at runtime.
import argparse
import asyncio
import contextvars
import base64
import binascii
import json
import math
import os
import re
import secrets
import stat
import sys
import threading
import time
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import LOOPBACK, NOTICE
from medswift.core.errors import Rejected, UsageError

OPEN_PATHS = frozenset({"/health", "/health/", "/ping", "/v1/models"})  # ms-swift's own exemptions
MAX_SEQUENCES = 8  # ceiling on n, best_of and num_beams: each multiplies the tokens generated
MAX_BODY_MB = 32  # a request body above this is refused (413): a chest X-ray PNG in base64 is a few MB
MAX_REQUEST_CHARS = 100_000  # text per request (also at most CHARS_PER_TOKEN x the model's max length)
CHARS_PER_TOKEN = 4
MAX_IMAGES = 8  # images (media) per request
MAX_JSON_DEPTH = 32  # a chat request is ~6 levels deep; deeper nesting only costs recursion
INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "best_of", "num_beams", "top_k", "seed",
                  "top_logprobs", "prompt_logprobs")
# Sampling values: finite numbers within these bounds (OpenAI's, where it has one).
NUMBER_BOUNDS = {"temperature": (0.0, 100.0), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0),
                 "repetition_penalty": (0.0, 100.0), "presence_penalty": (-2.0, 2.0),
                 "frequency_penalty": (-2.0, 2.0), "length_penalty": (-100.0, 100.0)}

# The client-gone flag (a threading.Event) of the HTTP request being handled; the generation thread reads it.
CLIENT_GONE: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("medswift_client_gone",
                                                                                     default=None)
# What the request's one log line says about a refusal (set by the handler, read by RequestGuard).
REQUEST_NOTE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("medswift_request_note", default=None)


class RequestRefused(Rejected):
    """A request refused with ``status`` (4xx) before it reaches the engine; ``param``: the field at fault."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(code or "invalid_request", message)
        self.status, self.message, self.code, self.param = status, message, code, param


# --------------------------------------------------------------------------- pure checks (no ms-swift import)
def one_line(text, limit: int = 300) -> str:
    """An error text for a client and the log: one line, bounded, without memory addresses
    (``<_io.BytesIO object at 0x7f...>`` tells a client about this process's memory)."""
    text = re.sub(r"\s+(object\s+)?at\s+0x[0-9a-fA-F]+", "", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    kind = ("authentication_error" if status == 401 else "server_error" if status >= 500
            else "request_too_large" if status == 413 else "invalid_request_error")
    message = one_line(message)
    return {"object": "error", "message": message,
            "error": {"message": message, "type": kind, "param": param, "code": code}}


def _refuse_constant(name: str):
    raise RequestRefused(400, f"the request body holds {name}, which JSON does not allow; send a finite number",
                         "invalid_json")


def parse_body(data: bytes) -> dict:
    """The request body as a JSON object, or RequestRefused (400) for anything else."""
    try:
        body = json.loads(data, parse_constant=_refuse_constant)
    except RequestRefused:
        raise
    except RecursionError:
        raise RequestRefused(400, f"the request body is nested too deeply (limit {MAX_JSON_DEPTH} levels)",
                             "invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestRefused(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "the request body must be a JSON object", "invalid_json")
    depth, level = 0, [body]
    while level:  # breadth-first, no recursion: pydantic and ms-swift recurse through what passes here
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise RequestRefused(400, f"the request body is nested too deeply (limit {MAX_JSON_DEPTH} levels)",
                                 "invalid_json")
        level = [child for value in level for child in (value.values() if isinstance(value, dict) else value)
                 if isinstance(child, (dict, list))]
    return body


def normalise_token_field(body: dict) -> str:
    """``max_completion_tokens`` is OpenAI's current name for ``max_tokens``: it becomes ``max_tokens``
    (so the ceiling applies to it). Returns the name the client used, for messages."""
    if body.get("max_completion_tokens") is None:
        body.pop("max_completion_tokens", None)
        return "max_tokens"
    newer = body.pop("max_completion_tokens")
    if body.get("max_tokens") is not None and body["max_tokens"] != newer:
        raise RequestRefused(400, "max_tokens and max_completion_tokens differ; send one of them",
                             "invalid_value", "max_completion_tokens")
    body["max_tokens"] = newer
    return "max_completion_tokens"


def field_refusal(body: dict, token_field: str = "max_tokens") -> RequestRefused | None:
    """Integers that must be integers, sampling values that must be finite and in range, messages that
    must be there: each a 400 naming the field, before pydantic (422, echoing the input) or ms-swift
    (IndexError, NaN in the sampler) sees them."""
    for name in INTEGER_FIELDS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            shown = token_field if name == "max_tokens" else name
            return RequestRefused(400, f"{shown} must be an integer", "invalid_type", shown)
    for name, (low, high) in NUMBER_BOUNDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return RequestRefused(400, f"{name} must be a finite number", "invalid_type", name)
        if not low <= value <= high:
            return RequestRefused(400, f"{name} must be between {low:g} and {high:g}, got {value:g}",
                                  "invalid_value", name)
    if "prompt" in body:  # /v1/completions
        return None if isinstance(body["prompt"], str) else RequestRefused(400, "prompt must be a string",
                                                                             "invalid_type", "prompt")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return RequestRefused(400, "messages must be a non-empty list", "invalid_value", "messages")
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return RequestRefused(400, f"messages[{i}] must be an object with a role", "invalid_value",
                                  f"messages[{i}]")
        if isinstance(content, list) and (not content or not all(isinstance(part, dict) for part in content)):
            return RequestRefused(400, f"messages[{i}].content must be a string or a non-empty list of parts",
                                  "invalid_value", f"messages[{i}].content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") == "text" and not isinstance(part.get("text"), str):
                return RequestRefused(400, f"messages[{i}].content[{j}].text must be a string", "invalid_type",
                                      f"messages[{i}].content[{j}].text")
        if not isinstance(content, (str, list)) and not (content is None and message.get("tool_calls")):
            return RequestRefused(400, f"messages[{i}].content must be a string or a list of parts",
                                  "invalid_value", f"messages[{i}].content")
    return None


def media_items(body: dict) -> list[tuple[str, str, object]]:
    """``(where, kind, value)`` of every media item of the request, as ms-swift reads them: each
    content part that is not text (``item[item["type"]]``) and the ``images``/``audios``/``videos`` fields."""
    found = []
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, item in enumerate(content if isinstance(content, list) else []):
            if not isinstance(item, dict) or item.get("type") == "text":
                continue
            kind = item.get("type")
            where = f"messages[{i}].content[{j}].{kind[:40] if isinstance(kind, str) else 'type'}"
            found.append((where, kind if isinstance(kind, str) else "", item.get(kind) if isinstance(kind, str)
                          else None))
    for key in ("images", "audios", "videos"):
        values = body.get(key)
        values = [values] if isinstance(values, (str, dict)) else values
        for k, value in enumerate(values if isinstance(values, list) else []):
            found.append((f"{key}[{k}]", key[:-1], value))
    return found


def text_chars(body: dict) -> int:
    """Characters of every string in the request except its media values (what the tokenizer will read)."""
    media = {id(value) for _, _, value in media_items(body)}
    total, stack = 0, [body]
    while stack:
        value = stack.pop()
        if id(value) in media:
            continue
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def size_refusal(body: dict, max_chars: int, max_images: int) -> RequestRefused | None:
    images = len(media_items(body))
    if images > max_images:
        return RequestRefused(400, f"{images} images in one request; this server takes at most {max_images} "
                                   "(MAX_IMAGES)", "too_many_images", "messages")
    chars = text_chars(body)
    if chars > max_chars:
        return RequestRefused(400, f"the request holds {chars:,} characters of text; this server takes at most "
                                   f"{max_chars:,} (MAX_REQUEST_CHARS, tied to the model's max length)",
                              "context_length_exceeded", "messages")
    return None


def image_refusal(body: dict) -> RequestRefused | None:
    """Decode every data: URL image of the request (Pillow, with medswift's pixel ceiling) before it joins
    a batch; the first that is not a usable image is refused with its location and reason, not its bytes."""
    from medswift.core.images import ImageRejected, decode_image_bytes

    for where, kind, value in media_items(body):
        if isinstance(value, dict):
            value = value.get("url")
        if kind not in ("image_url", "image") or not isinstance(value, str):
            continue
        head, sep, payload = value.strip().partition(",")
        if not head[:5].lower() == "data:":
            continue  # an http(s) URL (only with --allow_remote_images): ms-swift's fetcher checks it
        if not sep or not head.lower().endswith(";base64"):
            return RequestRefused(400, f"{where}: a data: URL must be base64 (data:image/png;base64,...)",
                                  "invalid_image", where)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return RequestRefused(400, f"{where}: the data: URL is not valid base64", "invalid_image", where)
        try:
            decode_image_bytes(data, where)
        except ImageRejected as exc:
            detail = exc.detail.removeprefix(where).lstrip(": ")  # the detail starts with the name given
            return RequestRefused(400, f"{where}: {exc.reason}" + (f" ({one_line(detail, 160)})" if detail else ""),
                                  "invalid_image", where)
    return None


def read_api_key(key_file: str | None, key_env: str | None) -> str | None:
    """The key from a file or an environment variable (removed from the environment once read)."""
    if key_file and key_env:
        raise UsageError("give --api_key_file or --api_key_env, not both")
    if key_file:
        path = Path(key_file)
        try:
            lines = path.read_text(encoding="utf-8").strip().splitlines()
            key = lines[0].strip() if lines else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the API key file {key_file} ({type(exc).__name__})") from None
        if not key:
            raise UsageError(f"the API key file {key_file} is empty")
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            print(f"[medswift] warning: {key_file} is readable by other users; chmod 600 it", file=sys.stderr)
        return key
    if key_env:
        key = os.environ.pop(key_env, "").strip()  # not inherited by anything this process starts
        if not key:
            raise UsageError(f"--api_key_env {key_env}: the environment variable {key_env} is empty or unset")
        return key
    return None


def bearer_ok(headers: list[tuple[bytes, bytes]], key: bytes) -> bool:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), key)
    return False


def media_refusal(body: dict, allow_remote: bool) -> str | None:
    """Why the request's media are refused (one fixed text per location, never echoing the value), or None."""
    allowed = "a data: URL (data:image/png;base64,...)" + (" or an http(s) URL" if allow_remote else "")
    refusal = ("{where} must be " + allowed + "; file paths and file:// are refused"
               + ("" if allow_remote else ", and http(s) URLs unless the server allows them (ALLOW_REMOTE_IMAGES=1)"))

    def acceptable(value) -> bool:
        if isinstance(value, dict):  # {"url": ...}: the form OpenAI uses
            value = value.get("url")
        if not isinstance(value, str):
            return False
        value = value.strip()
        return value[:5].lower() == "data:" or (allow_remote and re.match(r"https?://", value, re.I) is not None)

    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, item in enumerate(content if isinstance(content, list) else []):
            # ms-swift takes every part that is not text as media: item[item["type"]]
            if not isinstance(item, dict) or item.get("type") == "text":
                continue
            kind = item.get("type")
            if not isinstance(kind, str) or not acceptable(item.get(kind)):
                where = f"messages[{i}].content[{j}].{kind[:40] if isinstance(kind, str) else 'type'}"
                return refusal.format(where=where)
    for key in ("images", "audios", "videos"):
        values = body.get(key)
        values = [values] if isinstance(values, (str, dict)) else values
        for k, value in enumerate(values if isinstance(values, list) else []):
            if not acceptable(value):
                return refusal.format(where=f"{key}[{k}]")
    return None


def sequence_refusal(body: dict, can_stream_several: bool) -> str | None:
    """Why the sequences asked for are refused, or None."""
    for name in ("n", "best_of", "num_beams"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SEQUENCES:
            return f"{name}={value} is above this server's ceiling of {MAX_SEQUENCES}"
    n = body.get("n")
    if body.get("stream") is True and isinstance(n, int) and n > 1 and not can_stream_several:
        # ms-swift 4.6's TransformersEngine fails such a stream with an IndexError after the 200
        return "n > 1 cannot be streamed with INFER_BACKEND=transformers; send stream=false, or n=1"
    return None


def max_tokens_refusal(request, ceiling: int, name: str = "max_tokens") -> str | None:
    """Why request.max_tokens (sent as ``name``) is refused, or None; an absent one becomes the ceiling."""
    asked = request.max_tokens
    if asked is None:
        request.max_tokens = ceiling
        return None
    if asked < 1:
        return f"{name} must be at least 1, got {asked}"
    if asked > ceiling:
        return (f"{name}={asked} is above this server's ceiling of {ceiling} (MAX_NEW_TOKENS); "
                f"ask for at most {ceiling}, or leave {name} out to get {ceiling}")
    return None


# --------------------------------------------------------------------------- ASGI middleware
class RequestGuard:
    """Pure ASGI middleware: the API key (401), a declared body above the ceiling (413, unread), a
    client-gone flag for the request's generation, and the request's one log line.

    Once the request body is read, a watcher task waits on the server's ``receive`` for
    ``http.disconnect`` (uvicorn sends it when the connection drops, or once the response is
    complete) and sets the flag; the app's own later ``receive`` calls see the same disconnect.
    The log line holds the request's id (also sent as ``x-request-id``), path, status, bytes in
    and out, seconds and a refusal's reason: never the body (prompts, reports, images).
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int = MAX_BODY_MB << 20, log=None):
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(4)
        note = {"status": None, "out": 0, "in": 0}
        t0 = time.perf_counter()

        async def counted_send(message):
            if message["type"] == "http.response.start":
                note["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                note["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._guarded(scope, receive, counted_send, note)
        finally:
            if self.log is not None and scope["path"] not in OPEN_PATHS:
                refused = f"; refused: {note['error']}" if note.get("error") else ""
                self.log(f"[medswift] request {request_id} {scope['method']} {scope['path']} -> "
                         f"{note['status'] or 'no answer'}, {note['in']} B in, {note['out']} B out, "
                         f"{time.perf_counter() - t0:.2f} s{refused}")

    async def _guarded(self, scope, receive, send, note):
        if self.api_key and scope["path"] not in OPEN_PATHS and not bearer_ok(scope["headers"], self.api_key):
            note["error"] = "missing or wrong API key"
            await send_json(send, 401, error_body(401, "API key error: missing or wrong key "
                                                       "(send it as 'Authorization: Bearer <key>')",
                                                  "invalid_api_key"), [(b"www-authenticate", b"Bearer")])
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            note["error"] = f"body of {int(declared):,} bytes declared"
            await send_json(send, 413, error_body(413, body_too_large(self.max_body_bytes), "request_too_large"),
                            [(b"connection", b"close")])
            return
        gone = threading.Event()
        disconnected = asyncio.Event()
        watcher: asyncio.Task | None = None

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            disconnected.set()

        async def guarded_receive():
            nonlocal watcher
            if watcher is not None:  # the body is read; the watcher owns the server's receive now
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                disconnected.set()
            else:
                note["in"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    watcher = asyncio.create_task(watch())
            return message

        token = CLIENT_GONE.set(gone)
        note_token = REQUEST_NOTE.set(note)
        try:
            await self.app(scope, guarded_receive, send)
        finally:
            CLIENT_GONE.reset(token)
            REQUEST_NOTE.reset(note_token)
            if watcher is not None:
                watcher.cancel()


def body_too_large(limit: int) -> str:
    return f"the request body is larger than this server's ceiling of {limit >> 20} MB (MAX_BODY_MB)"


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------- ms-swift app and engine
class ContentFilter:
    """A logging filter for ms-swift's logger: drops the traceback ms-swift logs for every request the
    engine refuses (a client's mistake; the request's log line says why) and, unless content logging is
    on, any record holding a request's content (ms-swift's ``{'response': ..., 'infer_request': ...}``)."""

    def __init__(self, log_content: bool):
        self.log_content = log_content

    def filter(self, record) -> bool:
        if record.funcName == "create_chat_completion" and str(record.msg).startswith("Traceback"):
            return False
        if isinstance(record.msg, dict) and "infer_request" in record.msg:
            return self.log_content
        return True


def build_deploy(args, api_key: str | None, allow_remote: bool, limits: dict | None = None):
    """ms-swift's SwiftDeploy with the guards above; ``args`` is a DeployArguments without api_key.
    ``limits``: max_body_bytes, max_chars (None: tied to the model's max length), max_images, log_content."""
    import torch
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import TypeAdapter, ValidationError
    from starlette.requests import ClientDisconnect
    from transformers import StoppingCriteria

    from swift.infer_engine import TransformersEngine
    from swift.infer_engine.protocol import ChatCompletionRequest, CompletionRequest
    from swift.pipelines.infer.deploy import SwiftDeploy
    from swift.utils import get_logger

    logger = get_logger()
    limits = {"max_body_bytes": MAX_BODY_MB << 20, "max_chars": None, "max_images": MAX_IMAGES,
              "log_content": False, **(limits or {})}
    logger.addFilter(ContentFilter(limits["log_content"]))
    args.verbose = limits["log_content"]  # ms-swift logs every request's prompt and answer when verbose

    class StopWhenClientGone(StoppingCriteria):
        """Stops the rows of a batch whose client has gone (rows: requests x n, in order)."""

        def __init__(self, flags):
            self.flags = flags

        def __call__(self, input_ids, scores, **kwargs):
            rows = input_ids.shape[0]
            per_request = max(rows // len(self.flags), 1)
            gone = [self.flags[min(r // per_request, len(self.flags) - 1)] for r in range(rows)]
            return torch.tensor([bool(flag is not None and flag.is_set()) for flag in gone],
                                dtype=torch.bool, device=input_ids.device)

    class CancellableTransformersEngine(TransformersEngine):
        """ms-swift's engine; a request whose client has gone stops generating.

        ms-swift batches queued requests in one worker thread, one ``generate`` at a time:
        ``_fetch_infer_requests`` picks the batch, then ``template.prepare_generate_kwargs`` builds
        its stopping criteria, where the client-gone criterion for that batch is added.
        """

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._flags_by_request: dict[int, threading.Event] = {}
            self._batch_flags: list | None = None
            original = self.template.prepare_generate_kwargs

            def prepare_generate_kwargs(generate_kwargs, *, model=None):
                generate_kwargs = original(generate_kwargs, model=model)
                flags = self._batch_flags
                if flags and any(flag is not None for flag in flags):
                    generate_kwargs["stopping_criteria"].append(StopWhenClientGone(flags))
                return generate_kwargs

            self.template.prepare_generate_kwargs = prepare_generate_kwargs

        async def infer_async(self, infer_request, request_config=None, **kwargs):
            flag = CLIENT_GONE.get()
            if flag is not None:
                self._flags_by_request[id(infer_request)] = flag  # popped when the batch is formed
            return await super().infer_async(infer_request, request_config, **kwargs)

        def _fetch_infer_requests(self):
            item = super()._fetch_infer_requests()
            if item is not None:
                self._batch_flags = [self._flags_by_request.pop(id(r), None) for r in item[0]["infer_requests"]]
            return item

        def _infer(self, infer_requests, request_config, **kwargs):
            """ms-swift fails every request of a batch when one fails (its encoding, or generation):
            then each is run alone, as batch inference does, so only the bad one gets the error."""
            try:
                return super()._infer(infer_requests, request_config, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure of a batch of several is retried per request
                if len(infer_requests) == 1:
                    raise
                logger.warning(f"[medswift] a batch of {len(infer_requests)} failed ({type(exc).__name__}); "
                               "running its requests one by one")
            flags = self._batch_flags or [None] * len(infer_requests)
            results = []
            for request, flag in zip(infer_requests, flags):
                self._batch_flags = [flag]
                try:
                    results.append(super()._infer([request], request_config, **kwargs))
                except Exception as exc:  # noqa: BLE001 - this request's own error, for its client alone
                    results.append(exc)
            if not request_config.stream:
                return [res if isinstance(res, Exception) else res[0] for res in results]
            return self._streams_one_by_one(results)

        @staticmethod
        def _streams_one_by_one(results):
            """The worker reads a stream as lists of one chunk per request of the batch (None: none now)."""
            for i, res in enumerate(results):
                empty = [None] * len(results)
                if isinstance(res, Exception):
                    yield [*empty[:i], res, *empty[i + 1:]]
                    continue
                for chunks in res:
                    yield [*empty[:i], chunks[0], *empty[i + 1:]]

    chat_adapter = TypeAdapter(ChatCompletionRequest)
    completion_adapter = TypeAdapter(CompletionRequest)

    def error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
        note = REQUEST_NOTE.get()
        if note is not None:  # the model name a client sent is its own text: not echoed into the log
            note["error"] = "unknown model" if code == "model_not_found" else one_line(message, 200)
        return JSONResponse(error_body(status, message, code, param), status_code=status)

    def refused(exc: RequestRefused) -> JSONResponse:
        return error(exc.status, exc.message, exc.code, exc.param)

    async def read_body(raw_request: Request, limit: int) -> bytes:
        """The body, read no further than ``limit`` bytes (a body without Content-Length: chunked)."""
        chunks, size = [], 0
        async for chunk in raw_request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRefused(413, body_too_large(limit), "request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def errors_as_events(response):
        """A stream that fails (ms-swift decodes the image after the 200 is sent) ends with an error event
        the client can read, rather than a connection cut mid-chunk and a traceback in the log."""
        if not isinstance(response, StreamingResponse):
            return response
        chunks = response.body_iterator

        async def guarded():
            try:
                async for chunk in chunks:
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - any failure of the generation ends this one stream
                message = " ".join(str(exc).split())[:300] or type(exc).__name__
                logger.warning(f"[medswift] a streamed answer failed: {type(exc).__name__}: {message}")
                note = REQUEST_NOTE.get()
                if note is not None:
                    note["error"] = "(in the stream) " + one_line(message, 200)
                yield f"data: {json.dumps(error_body(400, message))}\n\n"

        response.body_iterator = guarded()
        return response

    class GuardedDeploy(SwiftDeploy):
        def __init__(self, deploy_args):
            super().__init__(deploy_args)
            if deploy_args.infer_backend == "transformers":
                self.infer_engine = CancellableTransformersEngine(self.infer_engine.model, template=self.template,
                                                                  max_batch_size=deploy_args.max_batch_size)
                self.infer_engine.strict = True
            max_length = getattr(self.template, "max_length", None)
            tied = CHARS_PER_TOKEN * max_length if max_length else MAX_REQUEST_CHARS
            self.max_chars = limits["max_chars"] or min(MAX_REQUEST_CHARS, tied)
            logger.info(f"[medswift] text ceiling: {self.max_chars:,} characters per request "
                        f"(model max length {max_length})")
            self.app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=limits["max_body_bytes"],
                                    log=logger.info)
            self.app.add_exception_handler(RequestValidationError, self.validation_error)
            self.app.add_exception_handler(Exception, self.server_error)

        @staticmethod
        async def validation_error(request, exc):
            first = (exc.errors() or [{}])[0]
            where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
            return error(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}",
                         "invalid_value", where)

        @staticmethod
        async def server_error(request, exc):  # a fault of this server: Starlette logs its traceback
            return error(500, f"internal error ({type(exc).__name__})", "server_error")

        def _register_app(self):
            self.app.get("/health")(self.health)
            self.app.get("/health/")(self.health)
            self.app.get("/ping")(self.ping)
            self.app.post("/ping")(self.ping)
            self.app.get("/v1/models")(self.get_available_models)
            self.app.post("/v1/chat/completions")(self.guarded_chat_completion)
            self.app.post("/v1/completions")(self.guarded_completion)

        def _install_auth_middleware(self):
            pass  # RequestGuard does it, with 401

        @staticmethod
        def create_error_response(status_code, message: str) -> JSONResponse:
            return error(int(status_code), message)  # ms-swift's own errors get OpenAI's `error` object too

        async def _checked(self, raw_request: Request, adapter: TypeAdapter):
            """The validated request, or the error response to send."""
            try:
                body = parse_body(await read_body(raw_request, limits["max_body_bytes"]))
                models = self._get_model_list()
                if body.get("model") not in models:
                    raise RequestRefused(404, f"The model {one_line(body.get('model'), 100)!r} does not exist; "
                                              f"this server serves {models}", "model_not_found", "model")
                token_field = normalise_token_field(body)
                refusal = (media_refusal(body, allow_remote)
                           or sequence_refusal(body, can_stream_several=self.args.infer_backend != "transformers"))
                if refusal:
                    raise RequestRefused(400, refusal)
                failed = (field_refusal(body, token_field)
                          or size_refusal(body, self.max_chars, limits["max_images"])
                          or await asyncio.to_thread(image_refusal, body))
                if failed:
                    raise failed
                try:
                    request = adapter.validate_python(body)
                except ValidationError as exc:
                    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
                    where = ".".join(str(part) for part in first["loc"]) or None
                    raise RequestRefused(400, f"{where + ': ' if where else ''}{first['msg']}", "invalid_value",
                                         where) from None
                except (ValueError, TypeError, KeyError, AssertionError) as exc:
                    raise RequestRefused(400, one_line(exc)) from None
                refusal = max_tokens_refusal(request, self.args.max_new_tokens, token_field)
                if refusal:
                    raise RequestRefused(400, refusal, "max_tokens_too_large", token_field)
            except RequestRefused as exc:
                return None, refused(exc)
            except ClientDisconnect:  # a half-sent body: nobody is left to answer
                return None, error(400, "the client disconnected before sending the whole body",
                                   "client_disconnected")
            return request, None

        async def guarded_chat_completion(self, raw_request: Request):
            request, refused = await self._checked(raw_request, chat_adapter)
            return refused or errors_as_events(await self.create_chat_completion(request, raw_request))

        async def guarded_completion(self, raw_request: Request):
            request, refused = await self._checked(raw_request, completion_adapter)
            return refused or errors_as_events(await self.create_completion(request, raw_request))

    return GuardedDeploy(args)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: ms-swift's flags pass through whole, and --api_key must not pass for --api_key_file.
    p = command_parser(__doc__, allow_abbrev=False)
    p.epilog = "Other flags go to ms-swift's DeployArguments (swift deploy --help).\n" + p.epilog
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api_key_file", help="file whose first line is the API key")
    p.add_argument("--api_key_env", metavar="NAME", help="environment variable that holds the API key")
    p.add_argument("--allow_remote_images", action="store_true",
                   help="also accept http(s) image URLs (fetched by this server; off by default)")
    p.add_argument("--max_body_mb", type=int, default=MAX_BODY_MB,
                   help=f"largest request body in MB; larger is refused with 413 (default {MAX_BODY_MB})")
    p.add_argument("--max_request_chars", type=int, default=0,
                   help=f"most characters of text per request (default 0: {MAX_REQUEST_CHARS:,}, and at most "
                        f"{CHARS_PER_TOKEN} per token of the model's max length)")
    p.add_argument("--max_images", type=int, default=MAX_IMAGES,
                   help=f"most images per request (default {MAX_IMAGES})")
    p.add_argument("--log_content", action="store_true",
                   help="debugging only: log every request's prompt and answer (patient text in the log)")
    return p


def main(argv: list[str] | None = None) -> int:
    ours, swift_argv = build_parser().parse_known_args(argv)
    try:
        if any(a == "--api_key" or a.startswith("--api_key=") for a in swift_argv):
            raise UsageError("--api_key would put the key in the process list; use --api_key_file or --api_key_env")
        api_key = read_api_key(ours.api_key_file, ours.api_key_env)
        if ours.host not in LOOPBACK and not api_key:
            raise UsageError(f"--host {ours.host} is reachable from other machines: give an API key "
                             "(--api_key_file or --api_key_env) first")
        if not 1 <= ours.port <= 65535:
            raise UsageError(f"--port must be 1-65535, got {ours.port}")
        for name in ("max_body_mb", "max_images"):
            if getattr(ours, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(ours, name)}")
        if ours.max_request_chars < 0:
            raise UsageError(f"--max_request_chars must be 0 (automatic) or more, got {ours.max_request_chars}")

        from swift.arguments import DeployArguments
        from swift.utils import get_logger, parse_args

        try:
            args, remaining = parse_args(DeployArguments, [*swift_argv, "--host", ours.host, "--port", str(ours.port)])
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(" ".join(str(exc).split())[:300]) from None
        if remaining:
            raise UsageError(f"unknown arguments: {' '.join(remaining)}")
        if args.port != ours.port:  # ms-swift moves to the next free port without a word
            raise UsageError(f"cannot listen on {ours.host}:{ours.port} (port in use)")
        if args.max_new_tokens is None:
            args.max_new_tokens = 512  # what tools/swift/common.sh defaults MAX_NEW_TOKENS to
        if args.max_new_tokens < 1:
            raise UsageError(f"--max_new_tokens (the most a request may ask for) must be at least 1, "
                             f"got {args.max_new_tokens}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    key_source = ("none (loopback only)" if not api_key
                  else "from " + (ours.api_key_file if ours.api_key_file else f"${ours.api_key_env}"))
    get_logger().info(f"[medswift] {NOTICE} API key: {key_source}; max_tokens ceiling {args.max_new_tokens} "
                      f"(larger requests are refused); image URLs: data:"
                      f"{' and http(s)' if ours.allow_remote_images else ' only'}; ceilings: body {ours.max_body_mb} MB, "
                      f"{ours.max_images} images per request")
    if ours.log_content:
        get_logger().warning("[medswift] --log_content: every request's prompt and answer goes to this log. "
                             "Patient text in a log: use it for debugging on test data only.")
    import tempfile

    # Belt and braces behind media_refusal: ms-swift refuses any local media path outside this empty folder.
    with tempfile.TemporaryDirectory(prefix="medswift-no-media-") as no_media:
        os.environ["SWIFT_MEDIA_ALLOWED_DIRS"] = no_media
        limits = {"max_body_bytes": ours.max_body_mb << 20, "max_chars": ours.max_request_chars or None,
                  "max_images": ours.max_images, "log_content": ours.log_content}
        build_deploy(args, api_key, ours.allow_remote_images, limits).main()
    return 0
