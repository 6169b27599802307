"""API-key authentication: one 401 for a missing, wrong or malformed key."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.config import AuthConfig, MetricsConfig
from qwenvl_serve.access.keys import (
    StoredKey,
    match_key,
    presented_key,
    stored_key,
    stored_keys,
    without_query_key,
)
from qwenvl_serve.access.logs import server_logger
from qwenvl_serve.access.notes import NO_KEY, notes_for
from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.asgi_body import header
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.routes import GENERATE_CONTENT, METRICS, PUBLIC_ROUTES, route_of

UNAUTHORIZED = ApiError(
    401,
    "Invalid or missing API key.",
    code="invalid_api_key",
    headers=(("WWW-Authenticate", "Bearer"),),
)
REASON = "auth"
NO_AUTH_WARNING = (
    "auth.keys is empty: every request is served without a key. "
    "This is allowed only because the server binds a loopback address."
)


class AuthMiddleware:
    """Lets a request in only with a configured key, except on public routes.

    /health and the playground page are public. /metrics is public with
    ``metrics.public``; otherwise it takes any API key or the metrics token. With no
    keys configured (loopback only), only a configured metrics token is ever asked for.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: AuthConfig,
        metrics_access: MetricsConfig,
        metrics: ServeMetrics,
    ) -> None:
        self.app = app
        self.enabled = auth.enabled
        self.keys = stored_keys(auth.keys)
        token = metrics_access.token
        scraper = () if token is None else (stored_key(NO_KEY, token),)
        self.metrics_keys: tuple[StoredKey, ...] = (*self.keys, *scraper)
        self.metrics_open = metrics_access.public or not self.metrics_keys
        self.rejections = metrics.rejections.labels(reason=REASON)
        if not self.enabled:
            server_logger().warning(NO_AUTH_WARNING)

    def _candidates(self, route: str) -> tuple[StoredKey, ...] | None:
        """The keys that open ``route``, or None when it needs none."""
        if route in PUBLIC_ROUTES:
            return None
        if route == METRICS:
            return None if self.metrics_open else self.metrics_keys
        return self.keys if self.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope).name
        candidates = self._candidates(route)
        if candidates is None or (route != METRICS and _is_cors_preflight(scope)):
            await self.app(scope, receive, send)
            return
        query_key_allowed = route == GENERATE_CONTENT
        presented = presented_key(scope["headers"], scope["query_string"], query_key_allowed)
        key = match_key(presented, candidates)
        if key is None:
            self.rejections.inc()
            notes_for(scope).rejection = REASON
            await send_error(scope, send, UNAUTHORIZED)
            return
        notes_for(scope).key_name = key.name
        if query_key_allowed:
            scope = {**scope, "query_string": without_query_key(scope["query_string"])}
        await self.app(scope, receive, send)


def _is_cors_preflight(scope: Scope) -> bool:
    """A browser's CORS preflight, which carries no key by design; vLLM's CORS layer
    answers it. Without ``Origin`` that layer passes the request on to the route, so
    such a request is no preflight and needs a key like any other."""
    return (
        scope["method"] == "OPTIONS"
        and header(scope, b"origin") is not None
        and header(scope, b"access-control-request-method") is not None
    )
