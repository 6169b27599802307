"""Streaming: OpenAI chat completion chunks (SSE) -> Google ``GenerateContentResponse`` events.

Pure: :class:`StreamConverter` takes the engine's stream events (see
:mod:`qwenvl_serve.core.responses`) as they arrive and returns the bytes to send on.
Each Google event carries the delta text; the last also carries ``finishReason`` and
``usageMetadata``. To put the last text and the finish
reason in one event, as Google does, each text event is held back until the next one
(or the end) arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qwenvl_serve.api_errors import ApiError
from qwenvl_serve.core.responses import EngineEvent
from qwenvl_serve.genai.response import (
    JsonObject,
    candidate,
    error_from_openai_chunk,
    google_finish_reason,
    response_identity,
    usage_metadata,
)
from qwenvl_serve.json_encoders import UNESCAPED

_BROKEN_OFF = ApiError(500, "The model server ended the stream early.")
_BAD_CHUNK = ApiError(500, "The model server sent an unreadable stream event.")


@dataclass
class ChunkTranslator:
    """OpenAI chunk objects -> Google response events (JSON objects)."""

    _pending: JsonObject | None = None
    _finish_reasons: dict[int, str] = field(default_factory=dict)
    _usage: Mapping[str, Any] | None = None
    _identity: JsonObject = field(default_factory=dict)
    closed: bool = False

    def feed(self, chunk: Mapping[str, Any]) -> list[JsonObject]:
        """The events that can be sent now that ``chunk`` arrived."""
        if self.closed:
            return []
        error = chunk.get("error")
        if isinstance(error, Mapping):
            return self.fail(error_from_openai_chunk(error))
        self._identity = self._identity or response_identity(chunk)
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        candidates = []
        for position, choice in enumerate(chunk.get("choices") or []):
            index = int(choice.get("index", position))
            reason = google_finish_reason(choice.get("finish_reason"))
            if reason is not None:
                self._finish_reasons[index] = reason
            text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and text:
                candidates.append(candidate(index, text, None))
        if not candidates:
            return []
        ready = [self._pending] if self._pending is not None else []
        self._pending = {"candidates": candidates, **self._identity}
        return ready

    def fail(self, error: ApiError) -> list[JsonObject]:
        """What is held back, then ``error`` as a Google error event; nothing follows."""
        if self.closed:
            return []
        ready = [self._pending] if self._pending is not None else []
        self._pending = None
        self.closed = True
        return [*ready, error.google_body()]

    def finish(self) -> list[JsonObject]:
        """The last event: the held-back text with finish reasons and usage."""
        if self.closed:
            return []
        final = self._pending or {"candidates": [], **self._identity}
        self._pending = None
        self.closed = True
        by_index = {item["index"]: item for item in final["candidates"]}
        for index, reason in self._finish_reasons.items():
            by_index.setdefault(index, candidate(index, "", None))["finishReason"] = reason
        final["candidates"] = [by_index[index] for index in sorted(by_index)]
        if self._usage is not None:
            final["usageMetadata"] = usage_metadata(self._usage)
        return [final]


class EventFraming:
    """How Google frames stream events: SSE with ``?alt=sse``, else one JSON array."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self._started = False

    @property
    def content_type(self) -> bytes:
        return b"text/event-stream" if self.sse else b"application/json"

    def frame(self, events: list[JsonObject]) -> bytes:
        """The bytes for ``events``."""
        out = []
        for event in events:
            encoded = UNESCAPED.encode(event).encode()
            if self.sse:
                out.append(b"data: " + encoded + b"\n\n")
            else:
                out.append((b",\n" if self._started else b"[") + encoded)
            self._started = True
        return b"".join(out)

    def close(self) -> bytes:
        """The bytes that end the stream."""
        if self.sse:
            return b""
        return b"]" if self._started else b"[]"


class StreamConverter:
    """vLLM's stream events in (read once by the engine edge), the Google stream's bytes out."""

    def __init__(self, sse: bool) -> None:
        self.framing = EventFraming(sse)
        self._translator = ChunkTranslator()

    def feed(self, events: list[EngineEvent]) -> bytes:
        """Google stream bytes for these engine events (may be empty)."""
        out: list[JsonObject] = []
        for event in events:
            if event.done:
                out += self._translator.finish()
                continue
            chunk = event.document
            if isinstance(chunk, dict):
                out += self._translator.feed(chunk)
            elif event.payload:  # an event with data that is not a JSON object
                out += self._translator.fail(_BAD_CHUNK)
        return self.framing.frame(out)

    def close(self) -> bytes:
        """The rest of the Google stream once the inner body has ended."""
        out = b""
        if not self._translator.closed:  # no [DONE]: the inner route broke off
            out += self.framing.frame(self._translator.fail(_BROKEN_OFF))
        return out + self.framing.close()
