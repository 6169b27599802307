"""Give every request an X-Request-ID: the client's when it is sane, else a fresh one."""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.asgi_body import REQUEST_ID_HEADER as HEADER

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def choose_request_id(incoming: bytes | None) -> str:
    """Keep a client's id if it is short and printable (it ends up in logs), else mint one."""
    if incoming is not None and _SANE_ID.match(incoming):
        return incoming.decode("ascii")
    return os.urandom(16).hex()  # 32 hex digits, like a uuid4's, at a quarter of its CPU


class RequestIdMiddleware:
    """Sets ``x-request-id`` on the request seen by inner layers and on the response.

    The id is also put in ``scope["state"]["request_id"]`` for logging layers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != HEADER]
        incoming = next((v for k, v in scope["headers"] if k == HEADER), None)
        request_id = choose_request_id(incoming)
        encoded = request_id.encode("ascii")
        scope = {**scope, "headers": [*headers, (HEADER, encoded)]}
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != HEADER
                ]
                message = {**message, "headers": [*response_headers, (HEADER, encoded)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
