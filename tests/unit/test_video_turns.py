"""One key's videos take at most its share of the decoder workers; others go first.

The worker run is replaced by a stand-in that waits until released (the real workers
are exercised in test_video_corpus.py and tests/e2e/test_video.py): what is tested here
is the order in which the pool admits videos."""

from __future__ import annotations

import asyncio
import os

import pytest

from qwenvl_serve.video.config import VideoConfig
from qwenvl_serve.video.pool import VideoDecoder
from qwenvl_serve.video.source import VideoSource

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


class HeldDecoder(VideoDecoder):
    """A decoder whose worker runs until the test releases them, one by one."""

    def __init__(self, config: VideoConfig) -> None:
        super().__init__(config, os.environ)
        self.running: list[bytes] = []
        self.release = asyncio.Queue[None]()

    async def _run(self, header: bytes, source: VideoSource) -> bytes:
        self.running.append(source.head)
        await self.release.get()
        raise asyncio.CancelledError  # the result does not matter here


def video(tag: bytes) -> bytes:
    return MP4 + tag


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_share_is_half_the_workers_unless_set():
    assert VideoConfig(max_concurrent=2).per_key_concurrency == 1
    assert VideoConfig(max_concurrent=5).per_key_concurrency == 3
    assert VideoConfig(max_concurrent=4, max_concurrent_per_key=4).per_key_concurrency == 4
    assert VideoConfig(max_concurrent=2, max_concurrent_per_key=9).per_key_concurrency == 2


@pytest.mark.anyio
async def test_a_key_s_second_video_waits_without_holding_a_slot():
    decoder = HeldDecoder(VideoConfig(enabled=True, max_concurrent=2))
    jobs = [
        asyncio.create_task(decoder.decode(video(b"a1"), "alpha")),
        asyncio.create_task(decoder.decode(video(b"a2"), "alpha")),
        asyncio.create_task(decoder.decode(video(b"b1"), "beta")),
    ]
    await settle()
    assert decoder.running == [video(b"a1"), video(b"b1")]  # beta went before alpha's second
    decoder.release.put_nowait(None)
    await settle()
    assert decoder.running[-1] == video(b"a2")
    decoder.release.put_nowait(None)
    decoder.release.put_nowait(None)
    await asyncio.gather(*jobs, return_exceptions=True)
    assert decoder.turns == {}  # nothing kept for keys that left


@pytest.mark.anyio
async def test_without_keys_only_the_workers_bound_the_videos():
    decoder = HeldDecoder(VideoConfig(enabled=True, max_concurrent=2))
    jobs = [asyncio.create_task(decoder.decode(video(b"%d" % n))) for n in range(3)]
    await settle()
    assert len(decoder.running) == 2
    for _ in jobs:
        decoder.release.put_nowait(None)
    await asyncio.gather(*jobs, return_exceptions=True)
    assert len(decoder.running) == 3
