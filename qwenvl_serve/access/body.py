"""Read a request body once and hand it on, unchanged or rewritten, to the inner app."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope


async def read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, and the disconnect message if the client left while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replaying(body: bytes, receive: Receive, disconnect: Message | None = None) -> Receive:
    """A ``receive`` that yields ``body`` in one message, then defers to the original."""
    delivered = False

    async def receive_again() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnect is not None:
            return disconnect
        return await receive()

    return receive_again


def with_content_length(scope: Scope, length: int) -> Scope:
    """``scope`` with its content-length header set to ``length``."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case), or None."""
    return next((v for k, v in scope["headers"] if k.lower() == name), None)
