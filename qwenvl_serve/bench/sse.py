"""Classify the events of an OpenAI chat-completions stream, as a client sees them. Pure.

Events are cut from the bytes by the project's one SSE parser, :mod:`qwenvl_serve.core.sse`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from qwenvl_serve.core.sse import event_data

EventKind = Literal["token", "usage", "done", "error", "other"]


@dataclass(frozen=True)
class StreamEvent:
    """One ``data:`` line: a chunk with choices (``token``), usage, the end, or an error."""

    kind: EventKind
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _count(usage: dict[str, object], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) else None


def parse_sse_event(event: bytes) -> StreamEvent | None:
    """The event's kind, or ``None`` for comments and events without data."""
    payload = event_data(event).strip()
    if not payload:
        return None
    if payload == b"[DONE]":
        return StreamEvent("done")
    try:
        chunk = json.loads(payload)
    except ValueError:
        return StreamEvent("error")
    if not isinstance(chunk, dict) or "error" in chunk:
        return StreamEvent("error")
    usage = chunk.get("usage")
    prompt = completion = None
    if isinstance(usage, dict):
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    if chunk.get("choices"):
        return StreamEvent("token", prompt, completion)
    if isinstance(usage, dict):
        return StreamEvent("usage", prompt, completion)
    return StreamEvent("other")
