"""Count every answered request by route and status."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.routes import route_name


class RequestMetricsMiddleware:
    """Increments ``qwenvl_requests_total{route,status}`` once per HTTP response."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_name(scope["path"])

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route=route, status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, send_and_count)
