"""A video reaches its worker chunk by chunk: inline base64 decoded a chunk at a time,
strictly, and never held whole in the server."""

from __future__ import annotations

import asyncio
import os
import sys
import tracemalloc

import pybase64
import pytest

from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.video import source as source_module
from qwenvl_serve.video.pool import _exchange
from qwenvl_serve.video.source import BufferedVideo, InlineVideo, VideoSource

PREFIX = "data:video/mp4;base64,"


def inline(data: bytes) -> str:
    return PREFIX + pybase64.b64encode(data).decode()


async def collected(source: VideoSource) -> bytes:
    return b"".join([bytes(chunk) async for chunk in source.chunks()])


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 6 bytes (8 characters), so a short payload spans many of them."""
    monkeypatch.setattr(source_module, "CHUNK_BYTES", 6)
    monkeypatch.setattr(source_module, "CHUNK_CHARS", 8)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 7, 12, 13, 14, 100])
def test_an_inline_video_decodes_to_its_bytes_across_chunks(
    small_chunks: None, length: int
) -> None:
    data = bytes(range(256))[:length] * 1
    video = asyncio.run(InlineVideo.open(inline(data), max_bytes=1000))
    assert video.size == len(data)  # exact, padding counted, before the last chunk decodes
    assert video.head == data[:6]
    assert asyncio.run(collected(video)) == data


@pytest.mark.parametrize(
    "payload",
    [
        "QUJDREVG" + "QQ==QUJD",  # padding in a chunk before the last
        "QUJDREVG" + "QUJD*EVG",  # a bad character in a later chunk
        "QUJDREVG" + "QUJD REV",  # whitespace
        "QUJDREVG" + "QUJDRéVG",  # non-ASCII text
    ],
)
def test_a_payload_bad_past_its_first_chunk_is_refused(small_chunks: None, payload: str) -> None:
    video = asyncio.run(InlineVideo.open(PREFIX + payload, max_bytes=1000))
    with pytest.raises(RefusalError) as refused:
        asyncio.run(collected(video))
    assert refused.value.reason is Reason.MALFORMED_BASE64


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (PREFIX + "QUJD" * 300, Reason.IMAGE_TOO_LARGE),  # 900 bytes over 800
        (PREFIX + "QUJ", Reason.MALFORMED_BASE64),  # not a multiple of 4
        (PREFIX, Reason.MALFORMED_BASE64),  # empty
        ("data:video/mp4,QUJD", Reason.MALFORMED_BASE64),  # not base64
        ("video/mp4;base64,QUJD", Reason.BAD_IMAGE_URL),
        (PREFIX + "*UJD", Reason.MALFORMED_BASE64),  # bad in the first chunk: before a worker
    ],
)
def test_an_inline_video_is_checked_before_any_worker_starts(url: str, reason: Reason) -> None:
    with pytest.raises(RefusalError) as refused:
        asyncio.run(InlineVideo.open(url, max_bytes=800))
    assert refused.value.reason is reason


def test_buffered_video_is_sent_in_slices_of_its_bytes(small_chunks: None) -> None:
    data = bytes(range(20))
    video = BufferedVideo(data)
    assert video.head == data[:6]
    assert asyncio.run(collected(video)) == data


# A worker stand-in that reads the whole job and answers with its length: what matters
# here is the server's side of the pipe.
_READER = "import sys; print(len(sys.stdin.buffer.read()))"


async def _sent(source: VideoSource) -> tuple[int, int]:
    """(bytes the reader got, peak bytes Python allocated in this process meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _READER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "")},
    )
    tracemalloc.start()
    try:
        output = await _exchange(process, b"", source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await process.wait()
    return int(output), peak


def test_an_inline_video_reaches_its_worker_without_a_whole_copy_in_the_server() -> None:
    data = os.urandom(32 << 20)  # 32 MiB: eleven chunks
    url = inline(data)
    video = asyncio.run(InlineVideo.open(url, max_bytes=64 << 20))
    received, peak = asyncio.run(_sent(video))
    assert received == len(data)
    # At most the first chunk (kept for the container check), one more decoded chunk,
    # its base64 and what the pipe did not take of it: decoded whole, or left whole in
    # the pipe's buffer, the video alone would be 32 MiB here.
    assert peak < 4 * source_module.CHUNK_BYTES


def test_a_fetched_video_is_not_copied_into_the_pipe_buffer() -> None:
    data = os.urandom(32 << 20)
    received, peak = asyncio.run(_sent(BufferedVideo(data)))
    assert received == len(data)
    assert peak < 2 * source_module.CHUNK_BYTES  # what the pipe did not take of a slice
