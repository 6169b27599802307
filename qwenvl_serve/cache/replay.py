"""Answers into and out of the cache: recorded as they pass, replayed as they came.

A recorded answer keeps vLLM's bytes, one chunk per JSON body or SSE event, and the
``x-qwenvl-*`` headers our layers inside the cache added (what the images and the video
became). A replay sends them with the engine edge's annotations, so the layers outside
read a hit like a live answer.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Receive, Send

from qwenvl_serve.asgi_body import header
from qwenvl_serve.cache.entry import Entry
from qwenvl_serve.cache.policy import complete_answer
from qwenvl_serve.core.responses import (
    CACHE_OUTCOME,
    ENGINE_EVENTS,
    FROM_ENGINE,
    EngineEvent,
    EngineStart,
    engine_events,
    is_event_stream,
)
from qwenvl_serve.core.sse import event_data

HIT, MISS, BYPASS = "hit", "miss", "bypass"
OUTCOME_HEADER = b"x-qwenvl-cache"
_OUR_HEADERS = b"x-qwenvl-"


def with_outcome(send: Send, outcome: str) -> Send:
    """``send`` that marks the response start with the cache's outcome (header and
    annotation)."""

    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (OUTCOME_HEADER, outcome.encode())]
            message = {**message, "headers": headers, CACHE_OUTCOME: outcome}
        await send(message)

    return send_marked


class Recorder:
    """Keeps vLLM's answer as it passes, for the cache: whole and successful, or nothing.

    An answer whose client left before its end is nothing, whatever vLLM sends after:
    the layers inside may still complete it (the engine can finish before it hears of
    the disconnect), and one cut short must never be replayed as a whole one.
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.status: int | None = None
        self.streamed = False
        self.content_type = b"application/json"
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        self.events: list[EngineEvent] = []
        self.size = 0
        self.ended = False
        self.client_left = False

    def watch(self, receive: Receive) -> Receive:
        """``receive`` that notes a disconnect heard before the answer ended."""

        async def receive_watched() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not self.ended:
                self.client_left = True
            return message

        return receive_watched

    def wrap(self, send: Send) -> Send:
        """``send`` that records what passes."""

        async def send_recorded(message: Message) -> None:
            self._see(message)
            await send(message)

        return send_recorded

    def _see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.streamed = is_event_stream(message)
            headers = message.get("headers", [])
            self.content_type = header({"headers": headers}, b"content-type") or b""
            self.headers = tuple(
                (bytes(name), bytes(value))
                for name, value in headers
                if name.startswith(_OUR_HEADERS) and name != OUTCOME_HEADER
            )
            return
        if message["type"] != "http.response.body":
            return
        for event in engine_events(message):
            self.events.append(event)
            self.size += len(event.raw)
        self.ended = not message.get("more_body", False)

    def entry(self) -> Entry | None:
        """The answer to keep, if it may be kept."""
        if self.status != 200 or not self.ended or self.client_left or self.size > self.max_bytes:
            return None
        if not self.events or not complete_answer(self.events):
            return None
        chunks = tuple(event.raw for event in self.events)
        usage = None if self.streamed else self.events[0].usage  # read as it passed out
        return Entry(self.streamed, self.content_type, self.clock(), chunks, self.headers, usage)


async def replay(entry: Entry, send: Send, age: float) -> None:
    """Answer with ``entry``, annotated as vLLM's answers are, one message per event."""
    headers = [
        (b"content-type", entry.content_type),
        *entry.headers,
        (OUTCOME_HEADER, HIT.encode()),
        (b"age", b"%d" % max(0, int(age))),
    ]
    if not entry.streamed:
        headers.append((b"content-length", b"%d" % entry.size))
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    await send({**start, FROM_ENGINE: EngineStart(200, entry.streamed), CACHE_OUTCOME: HIT})
    if not entry.streamed:
        event = EngineEvent.answered(entry.chunks[0], entry.usage)
        await send({"type": "http.response.body", "body": event.raw, ENGINE_EVENTS: [event]})
        return
    for raw in entry.chunks:
        event = EngineEvent(raw, event_data(raw), streamed=True)
        await send(
            {"type": "http.response.body", "body": raw, "more_body": True, ENGINE_EVENTS: [event]}
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
