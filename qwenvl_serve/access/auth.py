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
from qwenvl_serve.access.metrics_privacy import filtering_per_key_series, uncompressed
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
NOT_A_METRICS_READER = ApiError(
    403,
    "This key may not read /metrics; use an admin key or the metrics token.",
    code="metrics_forbidden",
)
REASON = "auth"
NO_AUTH_WARNING = (
    "auth.keys is empty: every request is served without a key. "
    "This is allowed only because the server binds a loopback address."
)


class AuthMiddleware:
    """Lets a request in only with a configured key, except on public routes.

    /health and the playground page are public. /metrics takes an admin key or the
    metrics token (other keys: 403); with ``metrics.public`` anyone may read it, less
    the per-key series unless an admin key or the token comes with the request. With no
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
        # Who may see every key's series: admin keys and the scraper's token.
        self.metrics_readers = frozenset(
            {key.name for key in auth.keys if key.admin} | ({NO_KEY} if scraper else set())
        )
        self.metrics_public = metrics_access.public
        self.metrics_open = not self.metrics_keys  # no keys, no token: nothing to hide
        self.rejections = metrics.rejections.labels(reason=REASON)
        if not self.enabled:
            server_logger().warning(NO_AUTH_WARNING)

    def _candidates(self, route: str) -> tuple[StoredKey, ...] | None:
        """The keys that open ``route``, or None when it needs none."""
        if route in PUBLIC_ROUTES:
            return None
        if route == METRICS:
            return None  # open: no key or token is configured
        return self.keys if self.enabled else None

    async def _serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/metrics: every series for admins and the token, 403 for other keys; when
        public, everyone else gets it less the per-key series."""
        presented = presented_key(scope["headers"], scope["query_string"], False)
        key = match_key(presented, self.metrics_keys)
        if key is not None and key.name in self.metrics_readers:
            await self.app(scope, receive, send)
            return
        if self.metrics_public:
            await self.app(uncompressed(scope), receive, filtering_per_key_series(send))
            return
        self.rejections.inc()
        notes_for(scope).rejection = REASON
        await send_error(scope, send, UNAUTHORIZED if key is None else NOT_A_METRICS_READER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope).name
        if route == METRICS and not self.metrics_open:
            await self._serve_metrics(scope, receive, send)
            return
        candidates = self._candidates(route)
        if candidates is None or _is_cors_preflight(scope):
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
