"""Buffering a request body in ASGI, and replaying a rewritten one to the inner app."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from qwenvl_serve.images.rejections import Reason, RefusalError


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it sent a valid one."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, refused (413) past ``limit`` bytes; None if the client left."""
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise RefusalError(Reason.BODY_TOO_LARGE)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise RefusalError(Reason.BODY_TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def with_body_length(scope: Scope, length: int) -> Scope:
    """``scope`` with Content-Length set to ``length`` (and no Transfer-Encoding)."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name.lower() not in (b"content-length", b"transfer-encoding")
    ]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that yields ``body`` once, then the client's own messages
    (so ``http.disconnect`` still reaches the inner app)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
