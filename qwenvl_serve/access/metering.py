"""Token metering: usage from JSON and SSE responses, to metrics and the usage log.

For OpenAI streams the client did not ask usage of, the request is changed to ask
for it (``stream_options.include_usage``) and the usage chunk is cut from what the
client gets. generateContent responses report ``usageMetadata`` on their own.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.config import MeteringConfig
from qwenvl_serve.access.notes import final_status, notes_for, request_id_of
from qwenvl_serve.access.request_facts import (
    RequestFacts,
    parse_json_object,
    request_facts,
    with_usage_requested,
)
from qwenvl_serve.access.usage import JsonUsageCollector, SseUsageScanner, Usage
from qwenvl_serve.access.usage_log import UsageLogWriter, usage_record
from qwenvl_serve.api_errors import send_error
from qwenvl_serve.asgi_body import (
    BODY_TOO_LARGE,
    BodyTooLargeError,
    read_body,
    replaying,
    with_body_length,
)
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.routes import GENERATE_CONTENT, is_inference, route_name

_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


class ResponseMeter:
    """Watches one response's messages for its status and usage."""

    def __init__(self, drop_usage_chunk: bool) -> None:
        self.drop_usage_chunk = drop_usage_chunk
        self.status: int | None = None
        self._sse: SseUsageScanner | None = None
        self._json = JsonUsageCollector()

    def see(self, message: Message) -> Message:
        """Read ``message``; return what to send on (the same, or with a chunk cut out)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if content_type.startswith(b"text/event-stream"):
                self._sse = SseUsageScanner(self.drop_usage_chunk)
            return message
        if message["type"] != "http.response.body":
            return message
        chunk = message.get("body", b"")
        if self._sse is None:
            self._json.feed(chunk)
            return message
        forwarded = self._sse.feed(chunk)
        if not message.get("more_body", False):
            forwarded += self._sse.finish()
        return message if forwarded is chunk else {**message, "body": forwarded}

    def usage(self) -> Usage | None:
        """The response's usage; None for failures and responses without one."""
        if self.status is None or self.status >= 400:
            return None
        return self._sse.usage if self._sse is not None else self._json.usage()


class MeteringMiddleware:
    """Meters inference requests; closes the usage log when the server shuts down."""

    def __init__(
        self,
        app: ASGIApp,
        model_name: str,
        metering: MeteringConfig,
        metrics: ServeMetrics,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
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
        if scope["type"] != "http" or not is_inference(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        started = self.clock()
        route = route_name(scope["path"])
        try:
            body, disconnect = await read_body(scope, receive, self.max_body_bytes)
        except BodyTooLargeError:
            body, disconnect = None, None
        parsed = None if body is None else parse_json_object(body)
        facts = request_facts(route, parsed, scope["path"])
        inject = parsed is not None and route != GENERATE_CONTENT
        inject = inject and facts.stream and not facts.usage_requested
        if parsed is not None and inject:
            # ASCII escapes: a lone surrogate in the prompt must not fail the encode.
            body = json.dumps(with_usage_requested(parsed)).encode()
            scope = with_body_length(scope, len(body))
        meter = ResponseMeter(drop_usage_chunk=inject)

        async def send_metered(message: Message) -> None:
            await send(meter.see(message))

        failed = True
        try:
            if body is None:  # over the cap: refused here, never buffered whole
                await send_error(scope, send_metered, BODY_TOO_LARGE)
            else:
                await self.app(scope, replaying(body, receive, disconnect), send_metered)
            failed = False
        finally:
            self._account(scope, route, facts, meter, self.clock() - started, failed)

    def _account(
        self,
        scope: Scope,
        route: str,
        facts: RequestFacts,
        meter: ResponseMeter,
        latency: float,
        failed: bool,
    ) -> None:
        notes = notes_for(scope)
        usage = meter.usage()
        notes.usage = usage
        if usage is not None:
            tokens = self.metrics.tokens
            tokens.labels(key=notes.key_name, model=self.model_name, type="prompt").inc(
                usage.prompt_tokens
            )
            tokens.labels(key=notes.key_name, model=self.model_name, type="completion").inc(
                usage.completion_tokens
            )
        if self.writer is None:
            return
        record = usage_record(
            at=datetime.now(UTC),
            request_id=request_id_of(scope),
            key_name=notes.key_name,
            model=self.model_name,
            route=route,
            status=final_status(meter.status, failed),
            usage=usage,
            images=facts.images,
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
