"""Classify the lines of an OpenAI chat-completions event stream. Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

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


def parse_sse_line(line: str) -> StreamEvent | None:
    """The event on ``line``, or ``None`` for blank lines, comments and non-data fields."""
    if not line.startswith("data:"):
        return None
    payload = line[len("data:") :].strip()
    if payload == "[DONE]":
        return StreamEvent("done")
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
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


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """Complete lines of ``pending + chunk`` (decoded, without line ends) and the rest.

    Network chunks cut events anywhere; the rest waits for the next chunk.
    """
    *lines, rest = (pending + chunk).split(b"\n")
    return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines], rest
