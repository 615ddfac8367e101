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
- ``/infer/`` (ms-swift's batch rollout endpoint) and ``/v1/embeddings`` are not served: they
  bypass the checks above and this project has no use for them.

Errors, ms-swift's own included, are ms-swift's shape (``{"object": "error", "message": ...}``)
with OpenAI's ``error`` object added, so clients of either kind read them.

For research only, not for diagnosis.
"""
# No `from __future__ import annotations`: FastAPI reads the route handlers' annotations (Request) at runtime.
import argparse
import asyncio
import contextvars
import json
import os
import re
import secrets
import stat
import sys
import threading
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import LOOPBACK, NOTICE
from medswift.core.errors import UsageError

OPEN_PATHS = frozenset({"/health", "/health/", "/ping", "/v1/models"})  # ms-swift's own exemptions
MAX_SEQUENCES = 8  # ceiling on n, best_of and num_beams: each multiplies the tokens generated

# The client-gone flag (a threading.Event) of the HTTP request being handled; the generation thread reads it.
CLIENT_GONE: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("medswift_client_gone",
                                                                                     default=None)


# --------------------------------------------------------------------------- pure checks (no ms-swift import)
def error_body(status: int, message: str, code: str | None = None) -> dict:
    kind = "authentication_error" if status == 401 else "server_error" if status >= 500 else "invalid_request_error"
    return {"object": "error", "message": message, "error": {"message": message, "type": kind, "code": code}}


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


def max_tokens_refusal(request, ceiling: int) -> str | None:
    """Why request.max_tokens is refused, or None; an absent max_tokens becomes the ceiling."""
    asked = request.max_tokens
    if asked is None:
        request.max_tokens = ceiling
        return None
    if asked < 1:
        return f"max_tokens must be at least 1, got {asked}"
    if asked > ceiling:
        return (f"max_tokens={asked} is above this server's ceiling of {ceiling} (MAX_NEW_TOKENS); "
                f"ask for at most {ceiling}, or leave max_tokens out to get {ceiling}")
    return None


# --------------------------------------------------------------------------- ASGI middleware
class RequestGuard:
    """Pure ASGI middleware: the API key (401), and a client-gone flag for the request's generation.

    Once the request body is read, a watcher task waits on the server's ``receive`` for
    ``http.disconnect`` (uvicorn sends it when the connection drops, or once the response is
    complete) and sets the flag; the app's own later ``receive`` calls see the same disconnect.
    """

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key and scope["path"] not in OPEN_PATHS and not bearer_ok(scope["headers"], self.api_key):
            await send_json(send, 401, error_body(401, "API key error: missing or wrong key "
                                                       "(send it as 'Authorization: Bearer <key>')",
                                                  "invalid_api_key"), [(b"www-authenticate", b"Bearer")])
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
            elif not message.get("more_body", False):
                watcher = asyncio.create_task(watch())
            return message

        token = CLIENT_GONE.set(gone)
        try:
            await self.app(scope, guarded_receive, send)
        finally:
            CLIENT_GONE.reset(token)
            if watcher is not None:
                watcher.cancel()


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------- ms-swift app and engine
def build_deploy(args, api_key: str | None, allow_remote: bool):
    """ms-swift's SwiftDeploy with the guards above; ``args`` is a DeployArguments without api_key."""
    import torch
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import TypeAdapter, ValidationError
    from transformers import StoppingCriteria

    from swift.infer_engine import TransformersEngine
    from swift.infer_engine.protocol import ChatCompletionRequest, CompletionRequest
    from swift.pipelines.infer.deploy import SwiftDeploy
    from swift.utils import get_logger

    logger = get_logger()

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

    chat_adapter = TypeAdapter(ChatCompletionRequest)
    completion_adapter = TypeAdapter(CompletionRequest)

    def error(status: int, message: str, code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, message, code), status_code=status)

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
            self.app.add_middleware(RequestGuard, api_key=api_key)

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
                body = await raw_request.json()
            except (ValueError, UnicodeDecodeError):
                return None, error(400, "the request body is not valid JSON")
            if not isinstance(body, dict):
                return None, error(400, "the request body must be a JSON object")
            models = self._get_model_list()
            if body.get("model") not in models:
                return None, error(404, f"The model {str(body.get('model'))[:100]!r} does not exist; "
                                        f"this server serves {models}", "model_not_found")
            refusal = (media_refusal(body, allow_remote)
                       or sequence_refusal(body, can_stream_several=self.args.infer_backend != "transformers"))
            if refusal:
                return None, error(400, refusal)
            try:
                request = adapter.validate_python(body)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
            except (ValueError, TypeError, KeyError, AssertionError) as exc:
                return None, error(400, " ".join(str(exc).split())[:300])
            refusal = max_tokens_refusal(request, self.args.max_new_tokens)
            if refusal:
                return None, error(400, refusal, "max_tokens_too_large")
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
                      f"{' and http(s)' if ours.allow_remote_images else ' only'}")
    import tempfile

    # Belt and braces behind media_refusal: ms-swift refuses any local media path outside this empty folder.
    with tempfile.TemporaryDirectory(prefix="medswift-no-media-") as no_media:
        os.environ["SWIFT_MEDIA_ALLOWED_DIRS"] = no_media
        build_deploy(args, api_key, ours.allow_remote_images).main()
    return 0
