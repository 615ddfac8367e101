"""The guards in front of ms-swift's deploy app (medswift.infer.server says what they refuse and why):
pure checks of a request body (no ms-swift import), the API key, and the ASGI middleware that
checks the key and the body's size, notes a client that has gone, and logs one line per request.

For research only, not for diagnosis.
"""
import asyncio
import base64
import binascii
import contextvars
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

from medswift.core.errors import Rejected, UsageError, one_line

OPEN_PATHS = frozenset({"/health", "/health/", "/ping", "/v1/models"})  # ms-swift's own exemptions
MAX_SEQUENCES = 8  # ceiling on n, best_of and num_beams: each multiplies the tokens generated
MAX_BODY_MB = 32  # a request body above this is refused (413): a chest X-ray PNG in base64 is a few MB
MAX_REQUEST_CHARS = 100_000  # text per request (also at most CHARS_PER_TOKEN x the model's max length)
CHARS_PER_TOKEN = 4
MAX_IMAGES = 8  # images (media) per request
MAX_JSON_DEPTH = 32  # a chat request is ~6 levels deep; deeper nesting only costs recursion
BODY_TIMEOUT_S = 60  # the whole body must arrive within this many seconds of the request's start (408 after)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's "\\ud800" escapes: not characters, tokenizers fail on them
# ms-swift's messages that hold only numbers, never request text: passed to the client as they are.
CONTENT_FREE_ENGINE_MESSAGES = (
    re.compile(r"Current length of row\(\d+\) is larger than the max_length\(\d+\)\."),
)
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
        if message["role"] == "system" and isinstance(content, list) and any(
                part.get("type") != "text" for part in content):  # ms-swift asserts, quoting the whole content
            return RequestRefused(400, f"messages[{i}].content: a system message holds text only; put images "
                                       "in a user message", "invalid_value", f"messages[{i}].content")
        if not isinstance(content, (str, list)) and not (content is None and message.get("tool_calls")):
            return RequestRefused(400, f"messages[{i}].content must be a string or a list of parts",
                                  "invalid_value", f"messages[{i}].content")
    return None


def unicode_refusal(body: dict) -> RequestRefused | None:
    """A lone UTF-16 surrogate (JSON ``"\\ud800"``) is valid JSON but no character: the tokenizer fails on it
    with a message quoting the text around it. Refused naming the message (or "the request"), never the text
    nor a key the client chose."""
    messages = body.get("messages")
    places = [(f"messages[{i}]", message) for i, message in enumerate(messages)] if isinstance(messages, list) else []
    places.append(("the request", {key: value for key, value in body.items() if key != "messages"}))
    for where, value in places:
        stack = [value]
        while stack:  # every string, keys included, without recursion
            value = stack.pop()
            if isinstance(value, str) and LONE_SURROGATE.search(value):
                return RequestRefused(400, f"{where}: the text holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                                           "which is not a character; send valid Unicode", "invalid_text",
                                      where if where.startswith("messages") else None)
            if isinstance(value, dict):
                stack.extend(value.keys())
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
    return None


def engine_failure_reason(exc: BaseException) -> str:
    """What a client and the log are told when ms-swift's template, tokenizer or model fails a request: its
    exception text can quote the request (an ``assert`` printing ``new_str: [...]`` with the text and the
    image's base64), so only messages known to hold numbers alone are kept; the rest name the kind."""
    message = one_line(exc)
    if any(pattern.fullmatch(message) for pattern in CONTENT_FREE_ENGINE_MESSAGES):
        return message
    return (f"the model could not process this request ({type(exc).__name__}); check each message's "
            "role and content parts (images in user messages, text elsewhere)")


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

    for where, _, value in media_items(body):  # a part whose type is not a string has no value: refused
        if not acceptable(value):
            return refusal.format(where=where)
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

    def __init__(self, app, api_key: str | None, max_body_bytes: int = MAX_BODY_MB << 20, log=None,
                 body_timeout_s: float = BODY_TIMEOUT_S):
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes
        self.log = log
        self.body_timeout_s = body_timeout_s

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
        # uvicorn has no body read timeout: a client that sends headers and half a body would hold the
        # connection (and its request slot) for ever. The whole body must arrive by this deadline.
        body_deadline = time.monotonic() + self.body_timeout_s

        async def body_message():
            try:
                return await asyncio.wait_for(receive(), max(body_deadline - time.monotonic(), 0.0))
            except TimeoutError:
                note["body_timeout"] = self.body_timeout_s  # the handler answers 408 and closes
                return {"type": "http.disconnect"}

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
            message = await body_message()
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


def body_timed_out(seconds: float) -> str:
    return (f"the request body did not arrive within {seconds:g} s (BODY_TIMEOUT_S); send the whole body "
            "at once")


def body_too_large(limit: int) -> str:
    return f"the request body is larger than this server's ceiling of {limit >> 20} MB (MAX_BODY_MB)"


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
