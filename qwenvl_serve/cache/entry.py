"""A cached answer and its bytes on a backend. Pure.

An entry is vLLM's answer as it came: one JSON body, or the events of an SSE stream,
replayed one message each, with the headers our media layers added to it (what the
images and the video became), and a JSON body's usage as it was read when answered (so
a hit is metered without parsing the body again). On a backend it is a versioned fixed
header and length-framed fields; anything else (corrupt, foreign, from another version) decodes to
None and is treated as a miss, then replaced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qwenvl_serve.core.responses import Usage

MAGIC = b"QVC3\n"
# streamed, created, header pairs, chunks, usage known, prompt and completion tokens
_HEADER = struct.Struct(">?dII?QQ")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Entry:
    """One cached answer."""

    streamed: bool
    content_type: bytes
    created: float  # seconds since the epoch
    chunks: tuple[bytes, ...]  # the JSON body, or each SSE event as vLLM sent it
    headers: tuple[tuple[bytes, bytes], ...] = ()  # our layers' headers on the answer
    usage: Usage | None = None  # a JSON body's usage, read from it (None for streams)

    @property
    def size(self) -> int:
        """Bytes of the answer itself."""
        return sum(len(chunk) for chunk in self.chunks)


def encode(entry: Entry) -> bytes:
    """The entry as bytes for a backend."""
    fields = [entry.content_type, *(part for pair in entry.headers for part in pair)]
    usage = entry.usage
    tokens = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0)
    parts = [
        MAGIC,
        _HEADER.pack(
            entry.streamed,
            entry.created,
            len(entry.headers),
            len(entry.chunks),
            usage is not None,
            *tokens,
        ),
    ]
    for field in (*fields, *entry.chunks):
        parts += [_LENGTH.pack(len(field)), field]
    return b"".join(parts)


def decode(data: bytes) -> Entry | None:
    """The entry ``data`` holds, or None when it is not one of ours, whole."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEADER.size:
        return None
    streamed, created, pairs, count, has_usage, prompt, completion = _HEADER.unpack_from(
        data, len(MAGIC)
    )
    fields = _framed(data, len(MAGIC) + _HEADER.size, 1 + 2 * pairs + count)
    if fields is None:
        return None
    content_type, chunks = fields[0], tuple(fields[1 + 2 * pairs :])
    headers = tuple((fields[i], fields[i + 1]) for i in range(1, 1 + 2 * pairs, 2))
    usage = Usage(prompt, completion) if has_usage else None
    return Entry(streamed, content_type, created, chunks, headers, usage)


def _framed(data: bytes, at: int, count: int) -> list[bytes] | None:
    """``count`` length-framed fields from ``at`` to exactly the end of ``data``."""
    if count > len(data):  # a corrupt count: every field takes at least its length
        return None
    fields = []
    for _ in range(count):
        if at + _LENGTH.size > len(data):
            return None
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + length > len(data):
            return None
        fields.append(data[at : at + length])
        at += length
    return fields if at == len(data) else None
