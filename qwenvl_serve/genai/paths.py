"""Which generateContent call a request path names, if any."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

# The same shape routes.py labels ``generate_content``; the SDK sends ``models/{name}``.
_PATH = re.compile(
    r"^/(?:v1|v1beta)/models/(?P<model>[^/]+):(?P<method>generateContent|streamGenerateContent)$"
)


@dataclass(frozen=True)
class GenerateContentCall:
    """A parsed generateContent path: the model segment and whether it streams."""

    model: str
    stream: bool


def parse_call(path: str) -> GenerateContentCall | None:
    """The call ``path`` names, or None for every other path."""
    match = _PATH.match(path)
    if match is None:
        return None
    return GenerateContentCall(
        model=match.group("model"), stream=match.group("method") == "streamGenerateContent"
    )


def wants_sse(query_string: bytes) -> bool:
    """True for ``?alt=sse``: Server-Sent Events instead of a streamed JSON array."""
    query = parse_qs(query_string.decode("latin-1"))
    return query.get("alt", [""])[-1] == "sse"
