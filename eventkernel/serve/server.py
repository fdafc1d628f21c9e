"""``eventkernel serve``: an OpenAI-compatible HTTP server on the engine loop.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health`` (503 while the model loads: the server listens first and loads in the
background) and ``GET /metrics`` (prometheus). Streaming is server-sent events ending in
``data: [DONE]``. Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``. :func:`create_app` builds the app from a :class:`ServerConfig`;
:func:`main` runs it under uvicorn (also ``python -m eventkernel.serve.server``).
"""
# NOTE: no `from __future__ import annotations`: FastAPI reads the handlers' annotations,
# and the handlers live inside create_app next to the (lazy) imports they name. fastapi,
# uvicorn and prometheus_client are imported lazily so that the command line, which builds
# this command's parser for every command, stays light and works without the serve extra.

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from eventkernel.build import BuildOptions, BuildPlan, build, plan_build
from eventkernel.engine.engine import Engine, check_request
from eventkernel.engine.sampling import SamplingParams
from eventkernel.models.default import DEFAULT_MODEL as DEFAULT_MODEL_NAME

logger = logging.getLogger("eventkernel.serve")

_DESCRIPTION = "An OpenAI-compatible HTTP server on the engine loop (/v1/completions, " \
    "/v1/chat/completions, /v1/models, /health, /metrics)."
_SEED_RANGE = 2**64
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                404: "not_found_error", 405: "invalid_request_error",
                429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What ``eventkernel serve`` runs: the model, its limits, and the server's settings.

    ``max_queue``: requests that may wait beyond the ``max_seqs`` running (then 429);
    ``drain_timeout``: seconds in-flight requests get to finish on shutdown (then they are
    aborted); ``api_key``: when set, /v1 routes need ``Authorization: Bearer <key>``.
    """

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    api_key: str | None = None
    max_queue: int = 256
    max_tokens_per_step: int = 64
    max_seqs: int = 8
    max_context: int | None = None
    served_model_name: str | None = None
    drain_timeout: float = 10.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65536), got {self.port}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key is empty: give a key or leave --api-key out")

    def build_options(self) -> BuildOptions:
        return BuildOptions(backend=self.backend, max_tokens_per_step=self.max_tokens_per_step,
                            max_seqs=self.max_seqs, max_context=self.max_context)


class ApiError(Exception):
    """An error the client gets as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class ServerState:
    """One server's state: the plan, the loading status, the engine front and metrics."""

    def __init__(self, config: ServerConfig, plan: BuildPlan | None = None,
                 on_fatal: Callable[[], None] | None = None) -> None:
        from eventkernel.serve.async_engine import ServerMetrics
        self.config = config
        self.plan = plan                         # planned on the loading thread when None
        self.metrics = ServerMetrics()
        self.created = int(time.time())
        self.tokenizer: Any = None
        self.engine: Any = None                  # AsyncEngine once loaded
        self.load_error: str | None = None
        self.bad_model = False                   # the load failed in planning: bad input
        self.stopping = False
        self._on_fatal = on_fatal
        self._started = time.perf_counter()

    @property
    def model_name(self) -> str:
        if self.config.served_model_name:
            return self.config.served_model_name
        if self.plan is not None:
            return self.plan.source.name
        return self.config.model or DEFAULT_MODEL_NAME

    @property
    def limits(self) -> Any:
        return self.plan.limits

    # -- loading ------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the model on a thread; the event loop keeps answering (503) meanwhile."""
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._load, args=(loop,), name="eventkernel-load",
                         daemon=True).start()

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        from eventkernel.serve.llm import load_source_tokenizer

        def report(callback: Callable[..., None], *args: Any) -> None:
            with contextlib.suppress(RuntimeError):     # the loop closed: shutting down
                loop.call_soon_threadsafe(callback, *args)

        # NOTE: resolving the model is part of the load (the built-in GGUF's metadata takes
        # seconds): the server answers 503 meanwhile; a bad model name ends it with code 2.
        try:
            plan = self.plan or plan_build(self.config.model, self.config.build_options())
        except Exception as err:  # noqa: BLE001 - the user's model or limits: one line
            report(self._failed, " ".join(str(err).split()), True)
            return
        try:
            tokenizer = load_source_tokenizer(plan.source)
            engine = Engine(build(plan).backend, tokenizer)
        except Exception as err:  # noqa: BLE001 - reported, then the server stops
            logger.exception("loading %s failed", plan.source.describe())
            report(self._failed, f"{type(err).__name__}: {err}", False)
            return
        report(self._ready, plan, tokenizer, engine)

    def _ready(self, plan: BuildPlan, tokenizer: Any, engine: Engine) -> None:
        from eventkernel.serve.async_engine import AsyncEngine
        if self.stopping:
            return
        self.plan = plan
        if plan.source.random_weights:
            logger.warning("%s: its text is noise", plan.source.describe())
        self.tokenizer = tokenizer
        self.engine = AsyncEngine(engine, self.config.max_queue, self.metrics)
        self.engine.start()
        logger.info("%s ready in %.1f s on the %s backend (max context %d, %d sequences)",
                    self.plan.source.describe(), time.perf_counter() - self._started,
                    self.plan.backend, self.limits.max_context, self.limits.max_seqs)

    def _failed(self, message: str, bad_model: bool) -> None:
        self.load_error, self.bad_model = message, bad_model
        if self._on_fatal is not None:
            self._on_fatal()

    async def shutdown(self) -> None:
        self.stopping = True
        if self.engine is not None:
            await self.engine.shutdown()

    # -- checks -------------------------------------------------------------------------------

    def check_ready(self) -> None:
        if self.stopping:
            raise ApiError(503, "the server is shutting down")
        if self.load_error is not None:
            raise ApiError(500, f"the model failed to load: {self.load_error}")
        if self.engine is None:
            raise ApiError(503, f"the model is loading ({self.model_name}): retry in a few "
                                f"seconds (GET /health answers 200 once it is ready)",
                           code="model_loading")

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise ApiError(404, f"the model {model!r} does not exist here: this server "
                                f"serves {self.model_name!r} (GET /v1/models)",
                           param="model", code="model_not_found")

    def check_key(self, authorization: str | None) -> None:
        key = self.config.api_key
        if key is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                    key.encode()):
            what = "no API key was given" if not authorization else "the API key is wrong"
            raise ApiError(401, f"{what}: send the header 'Authorization: Bearer <key>' "
                                f"with the server's --api-key", code="invalid_api_key")


# -- turning a request into engine jobs ---------------------------------------------------------

def sampling_params(body: Any, max_tokens: int) -> SamplingParams:
    """The request's SamplingParams; a bad value is a 400 that names the parameter."""
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature,
                              top_p=body.top_p, top_k=body.top_k, seed=body.seed,
                              stop=body.stop_strings, ignore_eos=body.ignore_eos)
    except ValueError as err:
        name = str(err).split(" ", 1)[0]
        raise ApiError(400, str(err), param=name if name in type(body).model_fields else None)
    except TypeError as err:
        raise ApiError(400, str(err)) from None


def make_jobs(state: ServerState, body: Any, prompts: list[list[int]],
              max_tokens: int | None, what: str) -> list[tuple[list[int], SamplingParams]]:
    """(ids, params) per choice, ``n`` per prompt, every one checked before any is queued.

    ``max_tokens`` None: what is left of the context after the prompt (chat's default).
    """
    if not 1 <= body.n <= state.limits.max_seqs + state.config.max_queue:
        raise ApiError(400, f"n must be in [1, {state.limits.max_seqs + state.config.max_queue}]"
                            f" (max_seqs + max_queue), got {body.n}", param="n")
    if len(prompts) * body.n > state.limits.max_seqs + state.config.max_queue:
        raise ApiError(400, f"{len(prompts)} prompts x n={body.n} is more choices than the "
                            f"server holds ({state.limits.max_seqs + state.config.max_queue})",
                       param="n")
    context = state.limits.max_context
    jobs = []
    for i, ids in enumerate(prompts):
        label = what if len(prompts) == 1 else f"{what} {i}"
        if len(ids) >= context:
            raise ApiError(400, f"{label} has {len(ids)} tokens: the model's context is "
                                f"{context} tokens (prompt + max_tokens); shorten it",
                           param=what, code="context_length_exceeded")
        params = sampling_params(body, context - len(ids) if max_tokens is None else max_tokens)
        try:
            check_request(ids, params, state.limits, state.plan.config.vocab_size)
        except (ValueError, TypeError) as err:
            code = "context_length_exceeded" if "context" in str(err) else None
            raise ApiError(400, f"{label}: {err}" if label not in str(err) else str(err),
                           param=what, code=code) from None
        for j in range(body.n):
            # NOTE: choice j of a seeded request uses seed + j, so the n choices differ and
            # each is reproducible.
            seed = None if params.seed is None else (params.seed + j) % _SEED_RANGE
            jobs.append((ids, dataclasses.replace(params, seed=seed)))
    return jobs


def _reject_unsupported(body: Any) -> None:
    problem = body.unsupported()
    if problem is not None:
        raise ApiError(400, problem[1], param=problem[0])


# -- responses ----------------------------------------------------------------------------------

async def collect(group: Any) -> dict[int, Any]:
    """Wait for every member of ``group``: {index: (its finishing Token, tokens it
    sampled)}; raises ApiError for a member that failed."""
    from eventkernel.serve.async_engine import Failure
    finals: dict[int, Any] = {}
    counts = dict.fromkeys(range(group.size), 0)
    while len(finals) < group.size:
        event = await group.events.get()
        if isinstance(event, Failure):
            raise ApiError(event.status, event.message)
        counts[event.index] += 1
        if event.finished:
            finals[event.index] = (event, counts[event.index])
    return finals


async def until_disconnect(request: Any, awaitable: Any) -> Any:
    """``await awaitable``, cancelled if the client disconnects first."""
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ApiError):
            await task
        raise ApiError(499, "the client disconnected")
    return task.result()


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def stream_events(state: ServerState, group: Any, stops: list, chat: bool, head: dict,
                        prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
    """The SSE lines of a streamed response: deltas per choice, a last chunk with each
    choice's finish_reason, the usage chunk when asked, then ``[DONE]``."""
    from eventkernel.serve.async_engine import Failure, TextDeltas
    deltas = [TextDeltas(state.tokenizer, stop) for stop in stops]
    usage_field = {"usage": None} if include_usage else {}
    ended, completion_tokens = 0, 0

    def chunk(index: int, text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else (
                {} if text is None else {"content": text})
            choice = {"index": index, "delta": delta, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None,
                      "finish_reason": finish}
        return sse({**head, "choices": [choice], **usage_field})

    if chat:
        for index in range(group.size):
            yield chunk(index, None, None, role=True)
    while ended < group.size:
        event = await group.events.get()
        if isinstance(event, Failure):
            from eventkernel.serve.protocol import error_body
            yield sse(error_body(event.message, _ERROR_TYPES.get(event.status, "server_error"),
                                 code=str(event.status)))
            break
        completion_tokens += 1
        if event.finished:
            ended += 1
            text = deltas[event.index].finish(event.text or "")
            if text and chat:
                yield chunk(event.index, text, None)
                text = None
            yield chunk(event.index, text, event.finish_reason)
        else:
            text = deltas[event.index].push(event.token_id)
            if text:
                yield chunk(event.index, text, None)
    else:
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            yield sse({**head, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


# -- the app ------------------------------------------------------------------------------------

def create_app(config: ServerConfig, plan: BuildPlan | None = None,
               on_fatal: Callable[[], None] | None = None):
    """The FastAPI app of one server. ``plan``: the checked build (default: planned from
    ``config`` while loading); ``on_fatal``: called when the model fails to load (the
    command stops uvicorn then)."""
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.exceptions import HTTPException

    from eventkernel.serve.async_engine import EngineStopped, QueueFull
    from eventkernel.serve.llm import check_messages
    from eventkernel.serve.protocol import (
        AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse,
        CompletionChoice, CompletionRequest, CompletionResponse, ModelCard, ModelList, Usage,
        describe_validation_error, error_body)

    state = ServerState(config, plan, on_fatal)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state.start_loading()
        yield
        await state.shutdown()

    app = FastAPI(title="eventkernel", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = state

    def error_response(status: int, message: str, param: str | None = None,
                       code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, _ERROR_TYPES.get(status, "server_error"),
                                       param, code), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError):
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError):
        message, param = describe_validation_error(err.errors())
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException):
        return error_response(err.status_code, str(err.detail))

    def authorized(request: Request) -> None:
        state.check_key(request.headers.get("authorization"))

    def ready() -> None:
        state.check_ready()

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized), Depends(ready)])

    def submit(jobs):
        try:
            return state.engine.submit(jobs)
        except QueueFull as err:
            raise ApiError(429, str(err), code="queue_full") from None
        except EngineStopped as err:
            raise ApiError(503, str(err)) from None

    def head(kind: str) -> dict:
        prefix, obj = ("chatcmpl", "chat.completion.chunk") if kind == "chat" else (
            "cmpl", "text_completion")
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj,
                "created": int(time.time()), "model": state.model_name}

    class _EngineStream(StreamingResponse):
        """An SSE response that aborts its requests however it ends (finished, client gone,
        cancelled on shutdown, or never started)."""

        def __init__(self, lines: AsyncIterator[str], on_close: Callable[[], None]) -> None:
            super().__init__(lines, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
            self._on_close = on_close

        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._on_close()
                with contextlib.suppress(Exception):
                    await self.body_iterator.aclose()

    async def respond(request: Request, body: Any, prompts: list[list[int]],
                      jobs: list, chat: bool):
        prompt_tokens = sum(len(ids) for ids in prompts)
        group = submit(jobs)
        if body.stream:
            stops = [params.stop for _, params in jobs]
            lines = stream_events(state, group, stops, chat, head("chat" if chat else "text"),
                                  prompt_tokens, body.include_usage)
            return _EngineStream(lines, lambda: state.engine.abort(group))
        try:
            finals = await until_disconnect(request, collect(group))
        finally:
            state.engine.abort(group)
        completion_tokens = sum(count for _, count in finals.values())
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      total_tokens=prompt_tokens + completion_tokens)
        info = head("chat" if chat else "text")
        info.pop("object")
        ordered = [finals[i][0] for i in range(len(jobs))]
        if chat:
            choices = [ChatChoice(index=i, message=AssistantMessage(content=t.text or ""),
                                  finish_reason=t.finish_reason) for i, t in enumerate(ordered)]
            return ChatCompletionResponse(**info, choices=choices, usage=usage)
        choices = [CompletionChoice(index=i, text=t.text or "", finish_reason=t.finish_reason)
                   for i, t in enumerate(ordered)]
        return CompletionResponse(**info, choices=choices, usage=usage)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        state.check_model(body.model)
        _reject_unsupported(body)
        prompts = body.prompts()
        if not prompts:
            raise ApiError(400, "prompt is empty: give a text or token ids", param="prompt")
        ids = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if not prompt:
                    raise ApiError(400, f"prompt {i} is empty: give some text", param="prompt")
                prompt = state.tokenizer.encode(prompt)
            ids.append(prompt)
        max_tokens = body.max_tokens
        if max_tokens is None:
            from eventkernel.serve.protocol import DEFAULT_COMPLETION_TOKENS
            max_tokens = DEFAULT_COMPLETION_TOKENS
        jobs = make_jobs(state, body, ids, max_tokens, "prompt")
        return await respond(request, body, ids, jobs, chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        state.check_model(body.model)
        _reject_unsupported(body)
        messages = [m.as_template_message() for m in body.messages]
        try:
            check_messages(messages)
            ids = state.tokenizer.apply_chat_template(messages)
        except ValueError as err:
            raise ApiError(400, str(err).replace("conversation 0, ", ""),
                           param="messages") from None
        except Exception as err:  # noqa: BLE001 - the chat template's own checks (jinja2)
            if not type(err).__module__.startswith("jinja2"):
                raise
            raise ApiError(400, f"the chat template rejected the messages: {err}",
                           param="messages") from None
        jobs = make_jobs(state, body, [ids], body.token_limit, "messages")
        return await respond(request, body, [ids], jobs, chat=True)

    @v1.get("/models")
    async def models():
        card = ModelCard(id=state.model_name, created=state.created,
                         max_model_len=state.limits.max_context)
        return ModelList(data=[card])

    @app.get("/health")
    async def health():
        state.check_ready()
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    app.include_router(v1)

    return app


# -- the command --------------------------------------------------------------------------------

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``eventkernel`` command line's subparsers."""
    parser = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP server",
                                   description=_DESCRIPTION)
    _add_arguments(parser)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    parser.add_argument("model", nargs="?", default=None,
                        help="smollm2-135m-instruct (built-in, the default), a preset (random "
                             "weights), a model directory, a .gguf file or a Hugging Face id "
                             "in the local cache")
    parser.add_argument("--host", default=defaults.host,
                        help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--backend", choices=("auto", "cpu", "cuda"), default=defaults.backend)
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1 routes")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests that may wait beyond the running ones; more get 429")
    parser.add_argument("--max-tokens-per-step", type=int, default=defaults.max_tokens_per_step,
                        help="tokens per engine step (decodes + prompt chunks)")
    parser.add_argument("--max-seqs", type=int, default=defaults.max_seqs,
                        help="requests run at once")
    parser.add_argument("--max-context", type=int, default=None,
                        help="tokens of context per request (default: the model's, at most "
                             "4096, and what fits in memory)")
    parser.add_argument("--served-model-name", default=None,
                        help="the model's name in the API (default: the model's own)")
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout,
                        help="seconds in-flight requests get to finish on shutdown")
    parser.add_argument("--log-level", default=defaults.log_level,
                        choices=("critical", "error", "warning", "info", "debug"))


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m eventkernel.serve.server``."""
    parser = argparse.ArgumentParser(prog="eventkernel serve",
                                     description=_DESCRIPTION)
    _add_arguments(parser)
    return parser


def uvicorn_server(app: Any, config: ServerConfig) -> Any:
    """uvicorn's server for ``app``, told not to re-raise SIGINT/SIGTERM after its graceful
    shutdown (that would end the process with a KeyboardInterrupt traceback, or by the
    signal, instead of exit code 0)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(uvicorn.Config(app, host=config.host, port=config.port,
                                 log_level=config.log_level, access_log=False,
                                 timeout_graceful_shutdown=config.drain_timeout,
                                 lifespan="on"))


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code (0 after a clean
    shutdown, 1 when the model failed to load or the port is taken, 2 for bad input)."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    try:
        config = ServerConfig(
            model=args.model, host=args.host, port=args.port, backend=args.backend,
            api_key=args.api_key, max_queue=args.max_queue,
            max_tokens_per_step=args.max_tokens_per_step, max_seqs=args.max_seqs,
            max_context=args.max_context, served_model_name=args.served_model_name,
            drain_timeout=args.drain_timeout, log_level=args.log_level)
        config.build_options()                 # the limits' own checks, before listening
    except ValueError as err:
        print(f"eventkernel serve: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    servers: list[Any] = []
    app = create_app(config, on_fatal=lambda: setattr(servers[0], "should_exit", True))
    server = uvicorn_server(app, config)
    servers.append(server)
    state = app.state.server
    logger.info("serving on http://%s:%d; loading %s in the background", config.host,
                config.port, config.model or "the built-in model")
    try:
        server.run()
    except SystemExit as done:         # uvicorn exits 1 when it cannot bind
        return done.code if isinstance(done.code, int) else 1
    if state.load_error is not None:
        what = "error" if state.bad_model else "error: the model failed to load"
        print(f"eventkernel serve: {what}: {state.load_error}", file=sys.stderr)
        return 2 if state.bad_model else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
