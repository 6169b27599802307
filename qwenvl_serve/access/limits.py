"""Per-key rpm / tpm / max_concurrent (429) and whole-instance max_in_flight (503)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.config import AuthConfig, LimitsConfig
from qwenvl_serve.access.limiter import (
    MAX_CONCURRENT,
    MAX_IN_FLIGHT,
    RPM,
    TPM,
    Limiter,
    Refusal,
    Ticket,
)
from qwenvl_serve.access.notes import RequestNotes, notes_for
from qwenvl_serve.access.request_facts import parse_json_object, request_facts
from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.asgi_body import BODY_TOO_LARGE, BodyTooLargeError, read_body, replaying
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.routes import is_inference, route_name

MESSAGES = {
    RPM: "Rate limit reached: too many requests per minute for this key.",
    TPM: "Rate limit reached: too many tokens per minute for this key.",
    MAX_CONCURRENT: "Rate limit reached: too many concurrent requests for this key.",
    MAX_IN_FLIGHT: "The server is at capacity; retry shortly.",
}


def refusal_error(refusal: Refusal) -> ApiError:
    """429 (rate_limit_error) for a key's limit, 503 for the instance's; both with Retry-After."""
    status = 503 if refusal.reason == MAX_IN_FLIGHT else 429
    return ApiError(
        status,
        MESSAGES[refusal.reason],
        code=f"{refusal.reason}_exceeded",
        headers=(("Retry-After", str(refusal.retry_after)),),
    )


def used_tokens(ticket: Ticket, notes: RequestNotes, status: int | None) -> int:
    """What a finished request costs its key's tpm: its usage; for a success whose usage
    could not be read (the client left mid-stream), the tokens it reserved."""
    if notes.usage is not None:
        return notes.usage.total
    succeeded = status is not None and status < 400
    return ticket.reserved_tokens if succeeded else 0


class LimitsMiddleware:
    """Admits inference requests within their key's and the instance's limits."""

    def __init__(
        self,
        app: ASGIApp,
        auth: AuthConfig,
        limits: LimitsConfig,
        metrics: ServeMetrics,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limiter = Limiter(auth.keys, limits.max_in_flight)
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_inference(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        notes = notes_for(scope)
        requested = 0
        if self.limiter.needs_token_estimate(notes.key_name):
            try:
                body, disconnect = await read_body(scope, receive, self.max_body_bytes)
            except BodyTooLargeError:
                await send_error(scope, send, BODY_TOO_LARGE)
                return
            parsed = parse_json_object(body)
            requested = request_facts(route_name(scope["path"]), parsed, scope["path"]).max_tokens
            receive = replaying(body, receive, disconnect)
        decision = self.limiter.admit(notes.key_name, requested, self.clock())
        if isinstance(decision, Refusal):
            self.metrics.rejections.labels(reason=decision.reason).inc()
            notes.rejection = decision.reason
            await send_error(scope, send, refusal_error(decision))
            return
        await self._serve(scope, receive, send, decision, notes)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ticket: Ticket, notes: RequestNotes
    ) -> None:
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.in_flight.dec()
            self.limiter.release(ticket, used_tokens(ticket, notes, status), self.clock())
