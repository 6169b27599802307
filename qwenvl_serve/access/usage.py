"""Token usage read from responses as they pass: JSON bodies and SSE streams. Pure.

OpenAI responses carry ``usage`` (``prompt_tokens``, ``completion_tokens``); Google
generateContent responses carry ``usageMetadata`` (``promptTokenCount``,
``candidatesTokenCount``, ``thoughtsTokenCount``). Streams repeat or end with a usage
object; the last one seen is the request's total.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Bigger JSON bodies or SSE events than this are passed on without being read.
MAX_SCANNED_BYTES = 8 * 1024 * 1024
_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Usage:
    """Tokens one request used."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_in(document: object) -> Usage | None:
    """The usage an OpenAI or Google response object (or a streamed array of them) reports."""
    if isinstance(document, list):
        found = [usage for usage in map(usage_in, document) if usage is not None]
        return found[-1] if found else None
    if not isinstance(document, dict):
        return None
    openai = document.get("usage")
    if isinstance(openai, dict):
        return Usage(_int(openai.get("prompt_tokens")), _int(openai.get("completion_tokens")))
    google = document.get("usageMetadata")
    if isinstance(google, dict):
        completion = _int(google.get("candidatesTokenCount")) + _int(
            google.get("thoughtsTokenCount")
        )
        return Usage(_int(google.get("promptTokenCount")), completion)
    return None


def is_usage_only_chunk(document: object) -> bool:
    """True for the final OpenAI stream chunk that carries usage and no choices."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("usage"), dict)
        and document.get("choices") == []
    )


def _event_json(event: bytes) -> object:
    data = b"\n".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )
    if b"sage" not in data:  # cheap skip: no "usage" / "usageMetadata" in this event
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None


class JsonUsageCollector:
    """Keeps a copy of a JSON response body (up to a cap) to read its usage at the end."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        """Record one body chunk."""
        self._size += len(chunk)
        if self._size <= MAX_SCANNED_BYTES:
            self._parts.append(chunk)
        else:
            self._parts.clear()

    def usage(self) -> Usage | None:
        """The body's usage, or None when it has none or was too big to keep."""
        if not self._parts:
            return None
        try:
            return usage_in(json.loads(b"".join(self._parts)))
        except (UnicodeDecodeError, ValueError):
            return None


class SseUsageScanner:
    """Reads usage from an SSE stream chunk by chunk.

    With ``drop_usage_chunk`` (the client did not ask for usage, we did), the usage-only
    chunk is cut out of what the client gets; complete events still go out at once, and
    only the unfinished tail of a chunk waits for its end. Without it, chunks pass
    through unchanged.
    """

    def __init__(self, drop_usage_chunk: bool) -> None:
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: Usage | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes to send to the client now."""
        buffer = self._pending + chunk
        forward: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(buffer):
            event = buffer[start : match.end()]
            start = match.end()
            if not self._keep(event):
                continue
            forward.append(event)
        self._pending = buffer[start:]
        if len(self._pending) > MAX_SCANNED_BYTES:  # not an event stream we can read
            forward.append(self._pending)
            self._pending = b""
        if not self.drop_usage_chunk:
            return chunk
        return b"".join(forward)

    def finish(self) -> bytes:
        """The stream ended: whatever is left, as it came."""
        rest, self._pending = self._pending, b""
        return rest if self.drop_usage_chunk else b""

    def _keep(self, event: bytes) -> bool:
        document = _event_json(event)
        usage = usage_in(document)
        if usage is not None:
            self.usage = usage
        return not (self.drop_usage_chunk and is_usage_only_chunk(document))
