"""A video's bytes on their way to its worker, with no whole extra copy in the server.

A fetched video is bytes already, and goes to the worker in slices of them. An inline
video is base64 inside the request's parsed text, and is decoded one chunk at a time as
the worker takes it: the server never holds the decoded video whole, nor a copy of its
base64. Either way, the pipe's buffer holds at most one chunk.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import AsyncIterator
from typing import Protocol

import pybase64

from qwenvl_serve.images.data_url import check_base64_length, data_url_header
from qwenvl_serve.images.rejections import Reason, RefusalError

CHUNK_BYTES = 3 << 20  # what one write to the worker carries
CHUNK_CHARS = CHUNK_BYTES // 3 * 4  # the base64 of one chunk: a multiple of 4 characters


class VideoSource(Protocol):
    """What the decoder pool needs of a video: its size, its first bytes (to tell the
    container) and its bytes in order."""

    @property
    def size(self) -> int: ...

    @property
    def head(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes | memoryview]: ...


class BufferedVideo:
    """A video whose bytes are in memory (fetched, or given as bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def head(self) -> bytes:
        return self.data[:CHUNK_BYTES]

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        view = memoryview(self.data)
        for start in range(0, len(view), CHUNK_BYTES):
            yield view[start : start + CHUNK_BYTES]


class InlineVideo:
    """A video inside a ``data:`` URL, decoded chunk by chunk (strict base64, as
    :func:`~qwenvl_serve.images.data_url.decode_payload` reads it)."""

    def __init__(self, url: str, start: int, head: bytes) -> None:
        self.url = url
        self.start = start
        self.head = head
        padding = 2 if url.endswith("==") else 1 if url.endswith("=") else 0
        self.size = (len(url) - start) // 4 * 3 - padding  # exact once the last chunk decodes

    @classmethod
    async def open(cls, url: str, max_bytes: int) -> InlineVideo:
        """The video of ``url``, its length checked and its first chunk decoded (in a
        thread: a chunk is megabytes); RefusalError for a malformed or oversized one."""
        _, start = data_url_header(url)
        check_base64_length(len(url) - start, max_bytes)
        head = await asyncio.to_thread(_decoded_chunk, url, start)
        video = cls(url, start, head)
        if video.size > max_bytes:
            raise RefusalError(Reason.IMAGE_TOO_LARGE)
        return video

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        yield self.head
        for begin in range(self.start + CHUNK_CHARS, len(self.url), CHUNK_CHARS):
            yield await asyncio.to_thread(_decoded_chunk, self.url, begin)


def _decoded_chunk(url: str, begin: int) -> bytes:
    """The chunk of base64 starting at ``begin``. Padding belongs only at the very end:
    a chunk before the last that holds "=" would decode alone but not as part of the
    whole, so it is refused."""
    piece = url[begin : begin + CHUNK_CHARS]
    if begin + CHUNK_CHARS < len(url) and "=" in piece:
        raise RefusalError(Reason.MALFORMED_BASE64)
    try:
        return pybase64.b64decode(piece, validate=True)
    except (binascii.Error, ValueError):  # bad alphabet, bad padding or non-ASCII text
        raise RefusalError(Reason.MALFORMED_BASE64) from None
