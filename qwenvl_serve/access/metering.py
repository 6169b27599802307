"""Token metering: usage from vLLM's answers, to metrics and the usage log.

Usage is read from the engine's response events, by the request's one response watch
(see :mod:`qwenvl_serve.core.responses`). This layer sits inside the API-family
translation, so the messages it changes are always OpenAI answers. Every stream asks
vLLM for its usage at the end (``stream_options.include_usage``) and on every chunk
(``continuous_usage_stats``; on chat not when a reasoning parser runs, which would make
that cost quadratic), so a stream that ends early is metered from what vLLM last
reported; the usage the client did not ask for is cut from the bytes it gets, while
the events keep it for the outer layers.

What is metered is what vLLM's engine processed, as its own counters
(``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``) count it: the prompt
once per sequence that produced a token (``n`` > 1 prefills it ``n`` times), and every
generated token, also those of a request the client left (see
:mod:`qwenvl_serve.core.engine_stop`).
"""

from __future__ import annotations

import asyncio
import atexit
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.config import MeteringConfig
from qwenvl_serve.access.notes import final_status, request_id_of
from qwenvl_serve.access.usage_log import UsageLogWriter, usage_record
from qwenvl_serve.core.responses import EngineEvent, ResponseWatch, engine_events, watched
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.json_encoders import COMPACT
from qwenvl_serve.metrics import Children, ServeMetrics

_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


def with_usage_requested(document: dict[str, Any], per_chunk: bool = True) -> dict[str, Any]:
    """The ``stream_options`` that ask vLLM for usage at the end and, with
    ``per_chunk``, on every chunk (what the client asked stays asked)."""
    options = document.get("stream_options")
    kept = dict(options) if isinstance(options, dict) else {}
    if per_chunk:
        kept["continuous_usage_stats"] = True
    return {**kept, "include_usage": True}


def without_usage(event: EngineEvent) -> bytes:
    """An SSE event's bytes with its chunk's top-level ``usage`` member cut out.

    vLLM writes chunks as compact JSON with usage last, so the member is cut where it
    was found (:attr:`EngineEvent.trailing_usage`); anything else is written again
    from the parsed chunk.
    """
    trailing = event.trailing_usage
    if trailing is not None:
        return event.raw[: trailing[0]] + event.raw[trailing[1] :]
    document = event.document
    if not isinstance(document, dict) or "usage" not in document:
        return event.raw
    member = b',"usage":' + COMPACT.encode(document["usage"]).encode()
    if event.raw.count(member) == 1:
        return event.raw.replace(member, b"")
    rest = {name: value for name, value in document.items() if name != "usage"}
    return b"data: " + COMPACT.encode(rest).encode() + b"\n\n"


def as_client_asked(message: Message, final_usage: bool, chunk_usage: bool) -> Message:
    """A body message of vLLM's stream holding only the usage the client asked for:
    the usage-only chunk with ``final_usage``, usage on each chunk with ``chunk_usage``.

    The events stay attached unchanged, so outer layers still read all the usage.
    """
    parts = []
    changed = False
    for event in engine_events(message):
        part = _as_asked(event, final_usage, chunk_usage)
        changed = changed or part is not event.raw
        parts.append(part)
    return {**message, "body": b"".join(parts)} if changed else message


def _as_asked(event: EngineEvent, final_usage: bool, chunk_usage: bool) -> bytes:
    """One event's bytes with only the usage the client asked for."""
    if event.usage is None:
        return event.raw
    if event.is_usage_only:
        return event.raw if final_usage else b""
    return event.raw if chunk_usage else without_usage(event)


class MeteringMiddleware:
    """Meters inference requests; closes the usage log when the server shuts down."""

    def __init__(
        self,
        app: ASGIApp,
        model_name: str,
        metering: MeteringConfig,
        metrics: ServeMetrics,
        hit_price_factor: float = 0.0,
        chat_usage_per_chunk: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.hit_price_factor = hit_price_factor
        # With a reasoning parser, vLLM recounts reasoning tokens over the whole output
        # for each chunk's usage: quadratic in the output's length, on the event loop.
        self.chat_usage_per_chunk = chat_usage_per_chunk
        self.model_name = model_name
        self.prices = metering.prices
        self.metrics = metrics
        self.tokens = Children(metrics.tokens)
        self.clock = clock
        self.writer = None if metering.usage_log is None else UsageLogWriter(metering.usage_log)
        if self.writer is not None:
            atexit.register(self.writer.close)  # a fallback when no lifespan shutdown runs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_log_on_shutdown(send))
            return
        request = inference_request(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        started = self.clock()
        cost = request.cost
        per_chunk = self.chat_usage_per_chunk or not cost.chat
        trim = cost.stream and not (cost.usage_requested and cost.continuous_usage_requested)
        if cost.stream:
            options = with_usage_requested(request.document, per_chunk)
            request.override("stream_options", options)
        watch, send = watched(scope, send)

        async def send_as_asked(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = as_client_asked(
                    message, cost.usage_requested, cost.continuous_usage_requested
                )
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_as_asked if trim else send)
            failed = False
        finally:
            self._account(scope, request, watch, self.clock() - started, failed)

    def _account(
        self,
        scope: Scope,
        request: InferenceRequest,
        watch: ResponseWatch,
        latency: float,
        failed: bool,
    ) -> None:
        key_name = request.key_name
        usage = watch.engine_usage(request.cost)
        source = "cache" if watch.cache_hit else "engine"
        if usage is not None:
            for kind, count in (
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ):
                self.tokens(key=key_name, model=self.model_name, type=kind, source=source).inc(
                    count
                )
        if self.writer is None:
            return
        record = usage_record(
            at=datetime.now(UTC),
            request_id=request_id_of(scope),
            key_name=key_name,
            model=self.model_name,
            route=request.route.name,
            status=final_status(watch.status, failed),
            usage=usage,
            images=request.image_count,
            latency_s=latency,
            prices=self.prices,
            cache=watch.cache_outcome,
            price_factor=self.hit_price_factor if watch.cache_hit else 1.0,
        )
        self.writer.submit(record)

    def _closing_log_on_shutdown(self, send: Send) -> Send:
        async def send_after_closing(message: Message) -> None:
            if message["type"] in _SHUTDOWN_DONE and self.writer is not None:
                await asyncio.to_thread(self.writer.close)
            await send(message)

        return send_after_closing
