"""How a generateContent client asked for its stream to be framed."""

from __future__ import annotations

from urllib.parse import parse_qs


def wants_sse(query_string: bytes) -> bool:
    """True for ``?alt=sse``: Server-Sent Events instead of a streamed JSON array."""
    query = parse_qs(query_string.decode("latin-1"))
    return query.get("alt", [""])[-1] == "sse"
