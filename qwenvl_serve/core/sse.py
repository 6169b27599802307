"""Server-Sent Events framing: cut a byte stream into events, read an event's data. Pure.

The one SSE parser of the project: the engine's streams (metering, generateContent)
and the benchmark client's both go through it.
"""

from __future__ import annotations

import re

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class SseSplitter:
    """Cuts a stream into complete events as chunks arrive (chunks may cut anywhere)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events ``chunk`` completes, each with its blank-line terminator."""
        if not self._pending and _one_plain_event(chunk):
            return [chunk]  # how vLLM sends a stream: one event per chunk
        buffer = self._pending + chunk if self._pending else chunk
        events: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        self._pending = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """The unfinished tail held back so far."""
        return self._pending

    def finish(self) -> bytes:
        """The stream ended: the unfinished tail, as it came."""
        rest, self._pending = self._pending, b""
        return rest


def _one_plain_event(chunk: bytes) -> bool:
    """``chunk`` is one event ending in a blank line, with no other blank line in it."""
    return chunk.endswith(b"\n\n") and chunk.find(b"\n\n") == len(chunk) - 2 and b"\r" not in chunk


def is_plain_data_event(chunk: bytes) -> bool:
    """``chunk`` is one whole event of one ``data: `` line, as vLLM writes every event:
    its data is ``chunk[6:-2]``."""
    one_line = chunk.find(b"\n") == len(chunk) - 2
    return one_line and chunk.startswith(b"data: ") and _one_plain_event(chunk)


def event_data(event: bytes) -> bytes:
    """The event's payload: its ``data:`` lines joined by newlines."""
    if is_plain_data_event(event):
        return event[6:-2]  # a single data line, as vLLM writes every event
    return b"\n".join(
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )
