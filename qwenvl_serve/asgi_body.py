"""Request bodies in ASGI: read once (optionally capped), then replayed to the inner app.

Every layer that needs the body (limits, metering, generateContent, images) reads it
with these, so a body is buffered the same way everywhere and a client that leaves
mid-body is seen the same way everywhere.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope

from qwenvl_serve.api_errors import ApiError
from qwenvl_serve.body_pace import BodyRead, PaceKeeper

BODY_TOO_LARGE_MESSAGE = "The request body is larger than this server accepts."
# What a layer answers when read_body refuses a body (413, in the route's format).
BODY_TOO_LARGE = ApiError(413, BODY_TOO_LARGE_MESSAGE, code="request_too_large")


BODY_TOO_SLOW = ApiError(408, "The request body arrived too slowly.", code="request_timeout")


class BodyTooLargeError(Exception):
    """The body (declared or received) is longer than the reader's limit."""


class BodyTooSlowError(Exception):
    """The body did not arrive within its deadline or at its minimum rate."""


REQUEST_ID_HEADER = b"x-request-id"  # the request id every layer and vLLM read


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case), or None."""
    return next((value for key, value in scope["headers"] if key.lower() == name), None)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it sent a valid one."""
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


async def read_body(
    scope: Scope, receive: Receive, limit: int | None = None, pace: PaceKeeper | None = None
) -> tuple[bytes, Message | None]:
    """The whole body, and the disconnect message if the client left while sending it.

    With a ``limit``, BodyTooLargeError as soon as the declared or received length
    passes it: a huge body is never buffered. With a ``pace``, BodyTooSlowError when
    the body falls behind it.
    """
    if limit is not None and (declared_length(scope) or 0) > limit:
        raise BodyTooLargeError
    if pace is None:
        return await _read(receive, limit, None)
    read = pace.begin()
    try:
        return await _read(receive, limit, read)
    except asyncio.CancelledError:
        if read.cancelled_by_keeper_alone():
            raise BodyTooSlowError from None
        raise
    finally:
        pace.end(read)


async def _read(
    receive: Receive, limit: int | None, read: BodyRead | None
) -> tuple[bytes, Message | None]:
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), message
        chunk = message.get("body", b"")
        received += len(chunk)
        if read is not None:
            read.received = received
        if limit is not None and received > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replaying(body: bytes, receive: Receive, disconnect: Message | None = None) -> Receive:
    """A ``receive`` that yields ``body`` in one message, then ``disconnect`` if the
    client already left, else the client's own messages (so a later disconnect still
    reaches the inner app)."""
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


def with_body_length(scope: Scope, length: int) -> Scope:
    """``scope`` with Content-Length set to ``length`` (and no Transfer-Encoding)."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name.lower() not in (b"content-length", b"transfer-encoding")
    ]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}
