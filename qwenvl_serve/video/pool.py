"""The server's side of the decoder workers: one process per video, bounded and timed.

At most ``max_concurrent`` workers run at once; a request waits for a free slot, and
one API key's videos take at most ``per_key_concurrency`` of them. A
worker that refuses, crashes, hangs past its deadline or exceeds its kernel limits
costs only its own request a refusal: the process is killed by its pid and reaped
here, and nothing of it is left in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping

from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.video.config import VideoConfig, VideoFormat
from qwenvl_serve.video.containers import DEMUXERS, sniff_container
from qwenvl_serve.video.protocol import (
    CPU_ENV_VAR,
    FAULT_ENV_VAR,
    MEMORY_ENV_VAR,
    DecodedVideo,
    DecodeJob,
    SourceBounds,
    decode_message,
    encode_job,
)
from qwenvl_serve.video.sampling import SamplingRules
from qwenvl_serve.video.source import BufferedVideo, VideoSource

LOGGER = logging.getLogger(__name__)
WORKER_MODULE = "qwenvl_serve.video.worker"


def job_for(config: VideoConfig, container: VideoFormat, size: int) -> DecodeJob:
    """The decode job for a video of ``size`` bytes in ``container`` under ``config``."""
    bounds = SourceBounds(
        codecs=tuple(config.codecs),
        max_duration_seconds=config.max_duration_seconds,
        max_side=config.max_side,
        max_frame_pixels=config.max_frame_pixels,
        max_source_fps=config.max_source_fps,
    )
    rules = SamplingRules(
        fps=config.fps,
        max_frames=config.max_frames,
        max_tokens=config.max_tokens,
        min_frame_tokens=config.min_frame_tokens,
        max_frame_tokens=config.max_frame_tokens,
    )
    return DecodeJob(
        demuxer=DEMUXERS[container],
        bounds=bounds,
        rules=rules,
        jpeg_quality=config.jpeg_quality,
        size=size,
    )


# What a worker inherits of the server's environment: enough to start Python and find
# its packages. The server's config, keys and secrets stay out of a process that parses
# untrusted bytes.
INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    FAULT_ENV_VAR,
)


def worker_environment(config: VideoConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment: the few variables it needs of the server's, its kernel
    limits, and one malloc arena (so its address space is what it uses, not what idle
    arenas reserve)."""
    env = {name: environ[name] for name in INHERITED_VARIABLES if name in environ}
    env[CPU_ENV_VAR] = str(config.worker_cpu_seconds)
    env[MEMORY_ENV_VAR] = str(config.worker_memory_mib * 1024 * 1024)
    env["MALLOC_ARENA_MAX"] = "2"
    return env


class KeyTurns:
    """One key's share of the workers: how many of its videos may decode at once."""

    def __init__(self, turns: int) -> None:
        self.semaphore = asyncio.Semaphore(turns)
        self.holders = 0  # its videos waiting or decoding


class VideoDecoder:
    """Runs decode jobs in worker processes, ``max_concurrent`` at a time."""

    def __init__(self, config: VideoConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.env = worker_environment(config, environ)
        self.slots = asyncio.Semaphore(config.max_concurrent)
        # API key -> its turns; an entry lives while one of the key's videos is here.
        self.turns: dict[str, KeyTurns] = {}

    async def decode(self, video: bytes | VideoSource, key_name: str | None = None) -> DecodedVideo:
        """``video`` sampled and encoded; RefusalError for every way it can fail.

        With ``key_name``, the video first waits for one of that key's turns, then for
        a worker slot: a key's extra videos queue behind its own, not in front of
        another key's.
        """
        source = BufferedVideo(video) if isinstance(video, bytes) else video
        if source.size > self.config.max_bytes:
            raise RefusalError(Reason.VIDEO_TOO_LARGE)
        container = sniff_container(source.head)
        if container is None or container not in self.config.formats:
            raise RefusalError(Reason.VIDEO_FORMAT)
        job = job_for(self.config, container, source.size)
        async with self._turn_of(key_name), self.slots:
            output = await self._run(encode_job(job), source)
        try:
            result = decode_message(output)
            refusal = Reason[result] if isinstance(result, str) else None
        except (ValueError, KeyError, TypeError):
            raise RefusalError(Reason.VIDEO_DECODE_FAILED) from None
        if refusal is not None:
            raise RefusalError(refusal)
        assert not isinstance(result, str)
        return result

    @contextlib.asynccontextmanager
    async def _turn_of(self, key_name: str | None) -> AsyncIterator[None]:
        if key_name is None:
            yield
            return
        turns = self.turns.get(key_name)
        if turns is None:
            turns = self.turns[key_name] = KeyTurns(self.config.per_key_concurrency)
        turns.holders += 1
        try:
            async with turns.semaphore:
                yield
        finally:
            turns.holders -= 1
            if turns.holders == 0:
                del self.turns[key_name]

    async def _run(self, header: bytes, source: VideoSource) -> bytes:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env,
        )
        try:
            async with asyncio.timeout(self.config.worker_timeout_seconds):
                output = await _exchange(process, header, source)
                code = await process.wait()
        except TimeoutError:
            raise RefusalError(Reason.VIDEO_DECODE_TIMEOUT) from None
        finally:
            await _reap(process)
        if code != 0:
            # Killed by its CPU or memory limit, or crashed: the video is the cause.
            LOGGER.warning("video worker %d ended with status %d", process.pid, code)
            raise RefusalError(Reason.VIDEO_DECODE_FAILED)
        return output


async def _exchange(
    process: asyncio.subprocess.Process, header: bytes, source: VideoSource
) -> bytes:
    """Send the job, read the whole answer (empty when the worker died first).

    One chunk at a time, each drained before the next: what the pipe does not take at
    once waits in the transport's buffer, which then holds a chunk, not the video.
    """
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(header)
        async for chunk in source.chunks():
            process.stdin.write(chunk)
            await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died before reading everything: its exit status says so
    return await process.stdout.read()


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Kill the worker if it still runs, and wait for it (no zombie is left)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
