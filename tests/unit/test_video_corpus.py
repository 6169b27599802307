"""The adversarial video corpus against the real worker process, and the worker's
isolation: a decoder that crashes, hangs, spins or hoards memory costs its request a
refusal and leaves nothing behind."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os

import numpy as np
import psutil
import pytest
from PIL import Image

from qwenvl_serve.images.rejections import RefusalError
from qwenvl_serve.video.pool import VideoDecoder, worker_environment
from qwenvl_serve.video.protocol import FAULT_ENV_VAR, DecodedVideo
from tests.video_clips import make_clip, turned_clockwise
from tests.video_corpus import CASES, CORPUS_VIDEO, Case


def video_workers() -> list[psutil.Process]:
    """This process's decoder workers (the session may run servers of its own)."""
    workers = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "qwenvl_serve.video.worker" in " ".join(child.cmdline()):
                workers.append(child)
    return workers


def outcome_of(data: bytes, decoder: VideoDecoder) -> str:
    try:
        video = asyncio.run(decoder.decode(data))
    except RefusalError as refused:
        return refused.reason.code
    assert isinstance(video, DecodedVideo)
    assert video.frames % 2 == 0
    assert video.frames >= 2
    assert video.payload.count(b",") == video.frames - 1
    return "sampled"


def test_a_video_stored_sideways_arrives_upright():
    stored = make_clip(seconds=1, width=192, height=128, top_band=True)
    video = asyncio.run(VideoDecoder(CORPUS_VIDEO, os.environ).decode(turned_clockwise(stored)))
    assert (video.width, video.height) == (128, 192)
    assert (video.source_width, video.source_height) == (128, 192)
    first = Image.open(io.BytesIO(base64.b64decode(video.payload.split(b",")[0])))
    assert first.size == (128, 192)
    red = np.asarray(first)[:, :, 0].astype(int) - np.asarray(first)[:, :, 1]
    # Turned a quarter clockwise, the stored top edge is the displayed right edge.
    assert red[:, -8:].mean() > 200
    assert red[:, :8].mean() < 60


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)
    assert len({case.outcome for case in CASES}) >= 12


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_case_has_its_outcome(case: Case):
    decoder = VideoDecoder(CORPUS_VIDEO, os.environ)
    assert outcome_of(case.build(), decoder) == case.outcome
    assert not video_workers()


@pytest.mark.parametrize(
    ("fault", "limits", "outcome"),
    [
        ("crash", {}, "video_decode_failed"),
        ("hang", {"worker_timeout_seconds": 2}, "video_decode_timeout"),
        ("spin", {"worker_cpu_seconds": 1}, "video_decode_failed"),
        ("memory", {"worker_memory_mib": 256}, "video_decode_failed"),
    ],
)
def test_a_failing_decoder_costs_only_its_own_request(fault, limits, outcome):
    clip = make_clip(seconds=1, width=64, height=64)
    config = CORPUS_VIDEO.model_copy(update=limits)
    failing = VideoDecoder(config, {**os.environ, FAULT_ENV_VAR: fault})
    assert outcome_of(clip, failing) == outcome
    assert not video_workers()
    # The next video, in a fresh worker, is sampled.
    assert outcome_of(clip, VideoDecoder(config, os.environ)) == "sampled"


def test_a_worker_inherits_no_secrets_of_the_server():
    server = {"PATH": "/usr/bin", "QWENVL_SERVE_CONFIG": "{keys}", "REDIS_URL": "redis://:pw@h"}
    env = worker_environment(CORPUS_VIDEO, server)
    assert env["PATH"] == "/usr/bin"
    assert "QWENVL_SERVE_CONFIG" not in env
    assert "REDIS_URL" not in env
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_workers_run_at_most_max_concurrent_at_once():
    config = CORPUS_VIDEO.model_copy(update={"max_concurrent": 2, "worker_timeout_seconds": 1})
    decoder = VideoDecoder(config, {**os.environ, FAULT_ENV_VAR: "hang"})
    clip = make_clip(seconds=1, width=64, height=64)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(video_workers()))
            await asyncio.sleep(0.05)

    async def main() -> list[DecodedVideo | BaseException]:
        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(
            *(decoder.decode(clip) for _ in range(4)), return_exceptions=True
        )
        watcher.cancel()
        return results

    results = asyncio.run(main())
    assert all(isinstance(result, RefusalError) for result in results)
    assert peak == 2
