"""The error boundary: no exception, ours or vLLM's, reaches the client as a traceback.

An exception that escapes any layer or vLLM's app becomes a 500 in the route's own
format, carrying the request id and no internals; the traceback goes to the server
log. The exception is not raised further, so the server keeps the connection open for
the client's next request. If the answer had already begun, it is ended where it is.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.logs import server_logger
from qwenvl_serve.access.notes import request_id_of
from qwenvl_serve.api_errors import ApiError, send_error

INTERNAL_MESSAGE = "The server failed to handle this request; request id {request_id}."


def internal_error(request_id: str) -> ApiError:
    """The 500 a client gets for an unexpected failure."""
    return ApiError(500, INTERNAL_MESSAGE.format(request_id=request_id), code="internal_error")


class ErrorBoundaryMiddleware:
    """Turns unexpected exceptions into a clean 500 and a logged traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        finished = False

        async def send_tracked(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            request_id = request_id_of(scope)
            server_logger().exception("request %s failed", request_id)
            if finished:
                return
            if not started:
                await send_error(scope, send, internal_error(request_id))
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
