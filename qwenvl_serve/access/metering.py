"""Token metering: usage from vLLM's answers, to metrics and the usage log.

Usage is read from the engine's response events (see :mod:`qwenvl_serve.core.responses`):
this layer sits inside the API-family translation, so it only ever sees OpenAI answers.
For a stream the client did not ask usage of, the request view is changed to ask for
it (``stream_options.include_usage``) and the usage chunk is cut from what the client
gets.
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
from qwenvl_serve.core.responses import ResponseWatch, engine_events
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.metrics import ServeMetrics

_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


def with_usage_requested(document: dict[str, Any]) -> dict[str, Any]:
    """The ``stream_options`` that ask for the final usage chunk (and only that one)."""
    options = document.get("stream_options")
    kept = {
        name: value
        for name, value in (options.items() if isinstance(options, dict) else ())
        if name != "continuous_usage_stats"
    }
    return {**kept, "include_usage": True}


def without_usage_chunk(message: Message) -> Message:
    """A body message of vLLM's stream with the usage-only chunk cut out of its bytes.

    The events stay attached, so outer layers still read the usage.
    """
    events = engine_events(message)
    if not any(event.is_usage_only for event in events):
        return message
    body = b"".join(event.raw for event in events if not event.is_usage_only)
    return {**message, "body": body}


class MeteringMiddleware:
    """Meters inference requests; closes the usage log when the server shuts down."""

    def __init__(
        self,
        app: ASGIApp,
        model_name: str,
        metering: MeteringConfig,
        metrics: ServeMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.model_name = model_name
        self.prices = metering.prices
        self.metrics = metrics
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
        inject = request.cost.stream and not request.cost.usage_requested
        if inject:
            request.override("stream_options", with_usage_requested(request.document))
        watch = ResponseWatch()

        async def send_metered(message: Message) -> None:
            watch.see(message)
            if inject and message["type"] == "http.response.body":
                message = without_usage_chunk(message)
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_metered)
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
        usage = watch.succeeded_usage
        if usage is not None:
            tokens = self.metrics.tokens
            tokens.labels(key=key_name, model=self.model_name, type="prompt").inc(
                usage.prompt_tokens
            )
            tokens.labels(key=key_name, model=self.model_name, type="completion").inc(
                usage.completion_tokens
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
        )
        self.writer.submit(record)

    def _closing_log_on_shutdown(self, send: Send) -> Send:
        async def send_after_closing(message: Message) -> None:
            if message["type"] in _SHUTDOWN_DONE and self.writer is not None:
                await asyncio.to_thread(self.writer.close)
            await send(message)

        return send_after_closing
