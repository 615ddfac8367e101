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
import functools
import json
import os
import threading

from medswift.core.cli import command_parser
from medswift.core.constants import LOOPBACK, MAX_NEW_TOKENS, NOTICE
from medswift.core.errors import UsageError, one_line, run_cli
from medswift.infer.request_guard import (
    BODY_TIMEOUT_S, CHARS_PER_TOKEN, CLIENT_GONE, MAX_BODY_MB, MAX_IMAGES, MAX_REQUEST_CHARS, REQUEST_NOTE,
    RequestGuard, RequestRefused, body_timed_out, body_too_large, engine_failure_reason, error_body,
    field_refusal, image_refusal, max_tokens_refusal, media_refusal, normalise_token_field, parse_body,
    read_api_key, sequence_refusal, size_refusal, unicode_refusal,
)


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


@functools.cache
def stop_when_client_gone_class():
    """A transformers stopping criterion that stops the rows of a batch whose client has gone
    (rows: requests x n, in order); built on first call, so torch is imported only when serving."""
    import torch
    from transformers import StoppingCriteria

    class StopWhenClientGone(StoppingCriteria):
        def __init__(self, flags):
            self.flags = flags

        def __call__(self, input_ids, scores, **kwargs):
            rows = input_ids.shape[0]
            per_request = max(rows // len(self.flags), 1)
            gone = [self.flags[min(r // per_request, len(self.flags) - 1)] for r in range(rows)]
            return torch.tensor([bool(flag is not None and flag.is_set()) for flag in gone],
                                dtype=torch.bool, device=input_ids.device)

    return StopWhenClientGone


def streams_one_by_one(results):
    """The requests of a failed batch, run one by one, as the stream ms-swift's worker reads: lists
    of one chunk per request of the batch (None: none now)."""
    for i, res in enumerate(results):
        empty = [None] * len(results)
        if isinstance(res, Exception):
            yield [*empty[:i], res, *empty[i + 1:]]
            continue
        for chunks in res:
            yield [*empty[:i], chunks[0], *empty[i + 1:]]


def cancellable_engine_class(logger):
    """ms-swift's TransformersEngine that stops generating for a client that has gone, and runs a failed
    batch's requests one by one (built on call: torch and ms-swift are imported only when serving)."""
    from swift.infer_engine import TransformersEngine

    StopWhenClientGone = stop_when_client_gone_class()

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
            return streams_one_by_one(results)

    return CancellableTransformersEngine


# --------------------------------------------------------------------------- responses (imports on call)
def error(status: int, message: str, code: str | None = None, param: str | None = None, headers=None):
    """OpenAI's error object as a response; the request's log note gets the message, never the client's text."""
    from fastapi.responses import JSONResponse

    note = REQUEST_NOTE.get()
    if note is not None:  # the model name a client sent is its own text: not echoed into the log
        note["error"] = "unknown model" if code == "model_not_found" else one_line(message, 200)
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)

def refused(exc: RequestRefused):
    return error(exc.status, exc.message, exc.code, exc.param)

async def read_body(raw_request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a body without Content-Length: chunked)."""
    chunks, size = [], 0
    async for chunk in raw_request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, body_too_large(limit), "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)

def half_sent_body_answer():
    """408 (and the connection closed) for a body that did not arrive by RequestGuard's deadline; else the
    client went away mid-body: 400, for the log line."""
    timeout = (REQUEST_NOTE.get() or {}).get("body_timeout")
    if timeout:
        return error(408, body_timed_out(timeout), "request_timeout", headers={"connection": "close"})
    return error(400, "the client disconnected before sending the whole body", "client_disconnected")


class ContentFreeEngineFailures:
    """Mixed into ms-swift's SwiftDeploy: ms-swift answers a failed request with its exception's text, which
    can quote the request (``new_str: [...]``); the failure is raised again with a reason that names its
    kind only (engine_failure_reason), which ms-swift then sends as its 400 and this server logs."""

    async def infer_async(self, *args, **kwargs):
        try:
            return await self.infer_engine.infer_async(*args, **kwargs)  # what SwiftInfer's __getattr__ calls
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure of this one request
            raise ValueError(engine_failure_reason(exc)) from None


def validated(adapter, body: dict):
    """``body`` as ms-swift's request type (a pydantic ``TypeAdapter``), or RequestRefused naming the first bad
    field."""
    from pydantic import ValidationError

    try:
        return adapter.validate_python(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise RequestRefused(400, f"{where + ': ' if where else ''}{first['msg']}", "invalid_value",
                             where) from None
    except (ValueError, TypeError, KeyError, AssertionError) as exc:  # ms-swift's checks quote the value
        raise RequestRefused(400, f"the request does not fit ms-swift's request type ({type(exc).__name__}); "
                                  "check its fields' types and names", "invalid_value") from None


async def validation_error(request, exc):
    first = (exc.errors() or [{}])[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
    return error(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}",
                 "invalid_value", where)


async def server_error(request, exc):  # a fault of this server: Starlette logs its traceback
    return error(500, f"internal error ({type(exc).__name__})", "server_error")


def errors_as_events(response):
    """A stream that fails (ms-swift decodes the image after the 200 is sent) ends with an error event
    the client can read, rather than a connection cut mid-chunk and a traceback in the log."""
    from fastapi.responses import StreamingResponse

    from swift.utils import get_logger

    if not isinstance(response, StreamingResponse):
        return response
    logger = get_logger()
    chunks = response.body_iterator

    async def guarded():
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as exc:  # noqa: BLE001 - any failure of the generation ends this one stream
            message = engine_failure_reason(exc)  # never the exception's text: it can quote the request
            logger.warning(f"[medswift] a streamed answer failed: {type(exc).__name__}: {message}")
            note = REQUEST_NOTE.get()
            if note is not None:
                note["error"] = "(in the stream) " + one_line(message, 200)
            yield f"data: {json.dumps(error_body(400, message))}\n\n"

    response.body_iterator = guarded()
    return response


async def checked_request(body: dict, deploy, adapter, allow_remote: bool, max_images: int):
    """A parsed request body checked in order (model, media, sequences, fields, size, images,
    max_tokens) and validated by ms-swift's model; raises RequestRefused at the first problem.
    ``deploy``: the running GuardedDeploy (its model list, text ceiling and arguments)."""
    models = deploy._get_model_list()
    if body.get("model") not in models:
        raise RequestRefused(404, f"The model {one_line(body.get('model'), 100)!r} does not exist; "
                                  f"this server serves {models}", "model_not_found", "model")
    token_field = normalise_token_field(body)
    refusal = (media_refusal(body, allow_remote)
               or sequence_refusal(body, can_stream_several=deploy.args.infer_backend != "transformers"))
    if refusal:
        raise RequestRefused(400, refusal)
    failed = (field_refusal(body, token_field) or unicode_refusal(body)
              or size_refusal(body, deploy.max_chars, max_images)
              or await asyncio.to_thread(image_refusal, body))
    if failed:
        raise failed
    request = validated(adapter, body)
    refusal = max_tokens_refusal(request, deploy.args.max_new_tokens, token_field)
    if refusal:
        raise RequestRefused(400, refusal, "max_tokens_too_large", token_field)
    return request


def build_deploy(args, api_key: str | None, allow_remote: bool, limits: dict | None = None):
    """ms-swift's SwiftDeploy with the guards above; ``args`` is a DeployArguments without api_key.
    ``limits``: max_body_bytes, max_chars (None: tied to the model's max length), max_images, log_content."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import TypeAdapter
    from starlette.requests import ClientDisconnect

    from swift.infer_engine.protocol import ChatCompletionRequest, CompletionRequest
    from swift.pipelines.infer.deploy import SwiftDeploy
    from swift.utils import get_logger

    logger = get_logger()
    limits = {"max_body_bytes": MAX_BODY_MB << 20, "max_chars": None, "max_images": MAX_IMAGES,
              "log_content": False, "body_timeout_s": BODY_TIMEOUT_S, **(limits or {})}
    logger.addFilter(ContentFilter(limits["log_content"]))
    args.verbose = limits["log_content"]  # ms-swift logs every request's prompt and answer when verbose
    CancellableTransformersEngine = cancellable_engine_class(logger)  # noqa: N806 - a class
    chat_adapter = TypeAdapter(ChatCompletionRequest)
    completion_adapter = TypeAdapter(CompletionRequest)

    class GuardedDeploy(ContentFreeEngineFailures, SwiftDeploy):
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
                                    log=logger.info, body_timeout_s=limits["body_timeout_s"])
            self.app.add_exception_handler(RequestValidationError, validation_error)
            self.app.add_exception_handler(Exception, server_error)

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
                request = await checked_request(body, self, adapter, allow_remote, limits["max_images"])
            except RequestRefused as exc:
                return None, refused(exc)
            except ClientDisconnect:  # a half-sent body: nobody is left to answer, or it came too slowly
                return None, half_sent_body_answer()
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
    p.add_argument("--body_timeout_s", type=float, default=BODY_TIMEOUT_S,
                   help=f"seconds a request's whole body may take to arrive; a slower one is answered 408 "
                        f"and its connection closed (default {BODY_TIMEOUT_S})")
    p.add_argument("--log_content", action="store_true",
                   help="debugging only: log every request's prompt and answer (patient text in the log)")
    return p


def main(argv: list[str] | None = None) -> int:
    ours, swift_argv = build_parser().parse_known_args(argv)
    return run_cli(serve, ours, swift_argv)


def deploy_arguments(ours, swift_argv: list[str]):
    """ms-swift's DeployArguments for our flags and the rest of the command line, and the API key;
    every mistake is a UsageError, raised before the model loads."""
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
    if not 0 < ours.body_timeout_s < float("inf"):
        raise UsageError(f"--body_timeout_s must be a positive number of seconds, got {ours.body_timeout_s}")
    if ours.max_request_chars < 0:
        raise UsageError(f"--max_request_chars must be 0 (automatic) or more, got {ours.max_request_chars}")

    from swift.arguments import DeployArguments
    from swift.utils import parse_args

    try:
        args, remaining = parse_args(DeployArguments, [*swift_argv, "--host", ours.host, "--port", str(ours.port)])
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(one_line(exc)) from None
    if remaining:
        raise UsageError(f"unknown arguments: {' '.join(remaining)}")
    if args.port != ours.port:  # ms-swift moves to the next free port without a word
        raise UsageError(f"cannot listen on {ours.host}:{ours.port} (port in use)")
    if args.max_new_tokens is None:
        args.max_new_tokens = MAX_NEW_TOKENS  # the launchers' default too
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens (the most a request may ask for) must be at least 1, "
                         f"got {args.max_new_tokens}")
    return args, api_key


def serve(ours, swift_argv: list[str]) -> int:
    args, api_key = deploy_arguments(ours, swift_argv)
    from swift.utils import get_logger

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
                  "max_images": ours.max_images, "log_content": ours.log_content,
                  "body_timeout_s": ours.body_timeout_s}
        build_deploy(args, api_key, ours.allow_remote_images, limits).main()
    return 0
