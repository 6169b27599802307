"""/metrics for readers who may not see per-key series: those series cut out. Pure core.

Our per-key families (``qwenvl_requests_total``, ``qwenvl_tokens_total``) carry each
tenant's key name and counts; an anonymous reader of a public /metrics gets every other
series (vLLM's and our aggregates) and none of those.
"""

from __future__ import annotations

import re

from starlette.types import Message, Scope, Send

# A sample of one of our families labelled with a real key (the no-key label "-" is kept).
_PER_KEY_SAMPLE = re.compile(rb'^qwenvl_[a-z_]+\{(?:[^}]*,)?key="(?!-")')


def without_per_key_series(exposition: bytes) -> bytes:
    """The exposition text less every sample that names a key."""
    lines = exposition.splitlines(keepends=True)
    return b"".join(line for line in lines if not _PER_KEY_SAMPLE.match(line))


def uncompressed(scope: Scope) -> Scope:
    """``scope`` without Accept-Encoding, so the exposition comes back as plain text."""
    headers = [(name, value) for name, value in scope["headers"] if name != b"accept-encoding"]
    return {**scope, "headers": headers}


def filtering_per_key_series(send: Send) -> Send:
    """``send`` that buffers the /metrics answer and sends it less the per-key series."""
    start: Message | None = None
    parts: list[bytes] = []

    async def send_filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = without_per_key_series(b"".join(parts))
        headers = [(n, v) for n, v in start.get("headers", []) if n.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_filtered
