"""A cached answer and its bytes on a backend. Pure.

An entry is vLLM's answer as it came: one JSON body, or the events of an SSE stream,
replayed one message each. On a backend it is a versioned header line and length-framed
chunks; anything else (corrupt, foreign, from another version) decodes to None and is
treated as a miss, then replaced.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

MAGIC = b"QVC1\n"
_LENGTH = struct.Struct(">Q")


@dataclass(frozen=True)
class Entry:
    """One cached answer."""

    streamed: bool
    content_type: bytes
    created: float  # seconds since the epoch
    chunks: tuple[bytes, ...]  # the JSON body, or each SSE event as vLLM sent it

    @property
    def size(self) -> int:
        """Bytes of the answer itself."""
        return sum(len(chunk) for chunk in self.chunks)


def encode(entry: Entry) -> bytes:
    """The entry as bytes for a backend."""
    header = {
        "streamed": entry.streamed,
        "content_type": entry.content_type.decode("latin-1"),
        "created": entry.created,
        "chunks": len(entry.chunks),
    }
    parts = [MAGIC, json.dumps(header).encode(), b"\n"]
    for chunk in entry.chunks:
        parts += [_LENGTH.pack(len(chunk)), chunk]
    return b"".join(parts)


def decode(data: bytes) -> Entry | None:
    """The entry ``data`` holds, or None when it is not one of ours, whole."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        streamed, count = header["streamed"], header["chunks"]
        content_type = str(header["content_type"]).encode("latin-1")
        created = float(header["created"])
    except (ValueError, KeyError, TypeError):
        return None
    if end < 0 or not isinstance(streamed, bool) or not isinstance(count, int):
        return None
    chunks, at = [], end + 1
    for _ in range(count):
        if at + _LENGTH.size > len(data):
            return None
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + length > len(data):
            return None
        chunks.append(data[at : at + length])
        at += length
    if at != len(data):
        return None
    return Entry(streamed, content_type, created, tuple(chunks))
