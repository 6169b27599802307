"""Per-request cost bounds (400), per-key rpm / tpm / max_concurrent (429) and
whole-instance max_in_flight (503)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.config import AuthConfig, LimitsConfig
from qwenvl_serve.access.cost_bounds import (
    Bounded,
    OutOfBounds,
    bounded,
    prompt_tokens_bound,
    worst_case_tokens,
)
from qwenvl_serve.access.limiter import (
    MAX_CONCURRENT,
    MAX_IN_FLIGHT,
    RPM,
    TPM,
    Limiter,
    Refusal,
    Ticket,
)
from qwenvl_serve.access.notes import notes_for
from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.core.cost import MAX_TOKENS, Cost
from qwenvl_serve.core.responses import ResponseWatch, watched
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.metrics import ServeMetrics

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


def out_of_bounds_error(request: InferenceRequest, problem: OutOfBounds) -> ApiError:
    """400 naming the field in the client's own terms."""
    name = request.client_field(problem.field)
    return ApiError(400, f"{name}: {problem.reason}.", param=name, code=problem.code)


def used_tokens(ticket: Ticket, watch: ResponseWatch, cost: Cost, hit_factor: float) -> int:
    """What a finished request costs its key's tpm: the tokens the engine processed
    (``hit_factor`` of them for a cache hit); for a success whose usage could not be
    read, the worst case it reserved."""
    usage = watch.engine_usage(cost)
    if usage is not None:
        if watch.cache_hit:
            return round(usage.total * hit_factor)
        # A prompt prefilled before the client left counts for the key's budget, even
        # where vLLM's counters (and so metering) do not count it.
        reported = watch.usage.prompt_tokens if watch.usage is not None else 0
        return max(usage.total, reported)
    return ticket.reserved_tokens if watch.succeeded else 0


class LimitsMiddleware:
    """Admits inference requests within their key's and the instance's limits.

    It sits inside the intake layer: a request is counted in flight only once its
    body has arrived, and its cost fields come from the request view.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: AuthConfig,
        limits: LimitsConfig,
        metrics: ServeMetrics,
        max_tokens_per_media: int,
        max_model_len: int | None,
        hit_price_factor: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.hit_price_factor = hit_price_factor
        self.limits = limits
        self.limiter = Limiter(auth.keys, limits.max_in_flight)
        self.metrics = metrics
        self.max_tokens_per_media = max_tokens_per_media
        self.max_model_len = max_model_len
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        notes = notes_for(scope)
        within = bounded(request.cost, self.limits)
        if isinstance(within, OutOfBounds):
            notes.rejection = within.code
            await send_error(scope, send, out_of_bounds_error(request, within))
            return
        if within.default_applied:
            request.override(MAX_TOKENS, within.max_tokens)
        decision = self.limiter.admit(
            request.key_name, self._worst_case(request, within), self.clock()
        )
        if isinstance(decision, Refusal):
            self.metrics.rejections.labels(reason=decision.reason).inc()
            notes.rejection = decision.reason
            await send_error(scope, send, refusal_error(decision))
            return
        await self._serve(scope, receive, send, decision, request.cost)

    def _worst_case(self, request: InferenceRequest, within: Bounded) -> int:
        media = request.media
        prompt = prompt_tokens_bound(
            request.body_size,
            sum(part.chars for part in media),
            len(media),
            self.max_tokens_per_media,
        )
        return worst_case_tokens(request.cost, within.max_tokens, prompt, self.max_model_len)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ticket: Ticket, cost: Cost
    ) -> None:
        watch, send = watched(scope, send)
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.in_flight.dec()
            used = used_tokens(ticket, watch, cost, self.hit_price_factor)
            self.limiter.release(ticket, used, self.clock())
