"""Serve only the routes on the allowlist, each with its methods; 404 and 405 otherwise."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.notes import notes_for
from qwenvl_serve.api_errors import ApiError, json_headers, send_error
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.routes import OTHER, route_of

NOT_FOUND = ApiError(404, "Not found.", code="not_found")
NO_WEBSOCKETS = ApiError(
    404, "This server has no WebSocket routes; use HTTP.", code="websocket_not_served"
)
REASON = "route"


class RouteAllowlistMiddleware:
    """404 in the route's API format for every path not in :mod:`qwenvl_serve.routes`,
    405 (with ``Allow``) for a method its route does not answer: the one place either
    is decided. OPTIONS goes on to vLLM's CORS layer on every route.

    WebSocket handshakes are refused outright with a 404: no allowed route is one.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.rejections = metrics.rejections.labels(reason=REASON)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.rejections.inc()
            await refuse_websocket(scope, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope).route
        methods = route.methods
        if route.name != OTHER and (scope["method"] in methods or scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        self.rejections.inc()
        notes_for(scope).rejection = REASON
        refusal = NOT_FOUND if route.name == OTHER else method_not_allowed(methods)
        await send_error(scope, send, refusal)


async def refuse_websocket(scope: Scope, send: Send) -> None:
    """Refuse a WebSocket handshake with an HTTP error in the path's API format, where
    the server can send one (ASGI's denial response); else close with the reason."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": NO_WEBSOCKETS.message})
        return
    body = NO_WEBSOCKETS.body_for_path(scope["path"])
    start = {"type": "websocket.http.response.start", "status": 404, "headers": json_headers(body)}
    await send(start)
    await send({"type": "websocket.http.response.body", "body": body})


def method_not_allowed(methods: tuple[str, ...]) -> ApiError:
    """405 naming the methods the route answers."""
    allow = ", ".join(methods)
    return ApiError(405, f"Use {allow}.", code="method_not_allowed", headers=[("allow", allow)])
