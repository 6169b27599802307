"""The video decoder process: ``python -m qwenvl_serve.video.worker``.

One process per video. It limits its own CPU time and address space (kernel limits,
so a decoder bomb or a loop ends here, not in the server), reads one job from stdin,
checks the stream header against the bounds, samples the planned frames (seeking
across long gaps, decoding forward across short ones), scales each onto the 32-px
grid and writes JPEG frames to stdout. Refusals are messages; anything worse is a
crash, which the server turns into a refusal of its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import sys
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import pybase64
from PIL import Image

from qwenvl_serve.video.protocol import (
    CPU_ENV_VAR,
    FAULT_ENV_VAR,
    MEMORY_ENV_VAR,
    DecodedVideo,
    DecodeJob,
    SourceBounds,
    encode_refusal,
    encode_result,
    read_job,
)
from qwenvl_serve.video.sampling import MAX_ASPECT_RATIO, SourceVideo, plan_sampling

# Decode forward across gaps up to this many seconds; seek across longer ones.
SEEK_GAP_SECONDS = 4.0
# Packets that fail to decode before the video is refused as broken; fewer are skipped
# (a damaged packet in a long recording should not cost the whole video).
MAX_BAD_PACKETS = 16
# Decoder names of codecs that FFmpeg decodes with a library of another name.
_CODEC_NAMES = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9"}


class VideoRefusalError(Exception):
    """A refusal, by the name of its reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def apply_limits(environ: dict[str, str]) -> None:
    """The kernel limits the server asked for, on this process."""
    cpu = int(environ[CPU_ENV_VAR])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(environ[MEMORY_ENV_VAR])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def source_of(
    stream: av.video.stream.VideoStream,
    container: av.container.InputContainer,
    bounds: SourceBounds,
) -> SourceVideo:
    """The stream header's description of the video, checked against ``bounds``."""
    codec = _CODEC_NAMES.get(stream.codec_context.name, stream.codec_context.name)
    if codec not in bounds.codecs:
        raise VideoRefusalError("VIDEO_CODEC")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise VideoRefusalError("VIDEO_UNDECODABLE")
    if max(width, height) > bounds.max_side or width * height > bounds.max_frame_pixels:
        raise VideoRefusalError("VIDEO_TOO_MANY_PIXELS")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise VideoRefusalError("VIDEO_ASPECT_RATIO")
    duration = _duration(stream, container)
    if duration is None:
        raise VideoRefusalError("VIDEO_DURATION_UNKNOWN")
    if duration <= 0:
        raise VideoRefusalError("VIDEO_EMPTY")
    if duration > bounds.max_duration_seconds:
        raise VideoRefusalError("VIDEO_TOO_LONG")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if not 0 < fps <= bounds.max_source_fps:
        raise VideoRefusalError("VIDEO_FRAME_RATE")
    frames = stream.frames or round(duration * fps)
    return SourceVideo(duration=duration, fps=fps, width=width, height=height, frames=frames)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns the display matrix asks for (phone videos are
    often stored sideways and turned on playback)."""
    return round((frame.rotation or 0) / 90) % 4


def _duration(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def sample_frames(job: DecodeJob, data: bytes) -> DecodedVideo:
    """The job's video, sampled and encoded for the engine."""
    opened = av.open(io.BytesIO(data), mode="r", format=job.demuxer, metadata_errors="ignore")
    with opened as container:
        if not container.streams.video:
            raise VideoRefusalError("VIDEO_NO_VIDEO_STREAM")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source = source_of(stream, container, job.bounds)
        plan = plan_sampling(source, job.rules)
        times: list[float] = []
        jpegs: list[bytes] = []
        turns = 0
        # Each frame is scaled and encoded as soon as it is decoded: one full-size
        # frame at a time is ever held.
        for time_, frame in _frames_at(container, stream, plan.times, source):
            turns = _quarter_turns(frame) if not times else turns
            times.append(time_)
            jpegs.append(_jpeg(frame, plan.width, plan.height, turns, job.jpeg_quality))
        codec = stream.codec_context.name
    indices = [round(time_ * source.fps) for time_ in times]
    sideways = turns % 2 == 1
    return DecodedVideo(
        codec=_CODEC_NAMES.get(codec, codec),
        source_width=source.height if sideways else source.width,
        source_height=source.width if sideways else source.height,
        width=plan.height if sideways else plan.width,
        height=plan.width if sideways else plan.height,
        source_fps=source.fps,
        duration=source.duration,
        total_frames=max(source.frames, indices[-1] + 1),
        frame_indices=indices,
        frame_times=times,
        payload=b",".join(jpegs),
    )


def _frames_at(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    times: tuple[float, ...],
    source: SourceVideo,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """The first frame at or after each of ``times`` (within half a frame), with its time.

    Decoding is bounded by the frames the header declares: a stream holding far more
    than that is refused rather than decoded to its end.
    """
    tolerance = 0.5 / source.fps
    budget = 2 * source.frames + 256
    decoded = 0
    position: float | None = None
    last: av.VideoFrame | None = None
    may_seek = True
    bad_packets = [0]
    frames = _decoded(container, stream, bad_packets)
    for target in times:
        if may_seek and position is not None and target - position > SEEK_GAP_SECONDS:
            container.seek(_pts(target, stream.time_base), stream=stream, backward=True)
            frames = _decoded(container, stream, bad_packets)
            landed = True
        else:
            landed = False
        for frame in frames:
            decoded += 1
            if decoded > budget:
                raise VideoRefusalError("VIDEO_FRAMES_EXCEED_HEADER")
            if frame.time is None:
                continue
            if landed:
                # A seek that lands behind where we were gains nothing: from here on,
                # decode forward only, so no stretch is decoded more than twice.
                may_seek = position is None or frame.time > position
                landed = False
            position, last = frame.time, frame
            if frame.time + tolerance >= target:
                yield frame.time, frame
                break
        else:
            # The stream ended: a target within the last frame's display time is
            # that frame (a one-frame clip is still a clip); beyond it, it is cut short.
            if last is None or position is None or position + 1 / source.fps < target:
                raise VideoRefusalError("VIDEO_TRUNCATED")
            yield position, last


def _decoded(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    bad_packets: list[int],
) -> Iterator[av.VideoFrame]:
    """The stream's frames from the demuxer's position, skipping packets that fail to
    decode (counted in ``bad_packets[0]`` across seeks) up to :data:`MAX_BAD_PACKETS`."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            bad_packets[0] += 1
            if bad_packets[0] > MAX_BAD_PACKETS:
                raise VideoRefusalError("VIDEO_UNDECODABLE") from None


def _pts(seconds: float, time_base: Fraction | None) -> int:
    return int(seconds / time_base) if time_base else int(seconds * av.time_base)


def _jpeg(frame: av.VideoFrame, width: int, height: int, turns: int, quality: int) -> bytes:
    """One frame scaled (with an area filter) to the plan's size, turned upright, as
    base64 JPEG."""
    image: Image.Image = frame.reformat(
        width=width, height=height, format="rgb24", interpolation="AREA"
    ).to_image()  # type: ignore[no-untyped-call]
    if turns:
        image = image.rotate(90 * turns, expand=True)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return pybase64.b64encode(buffer.getvalue())


def fault_for(spec: str, data: bytes) -> str | None:
    """The test-only fault to act out for ``data``: ``spec`` is comma-separated
    ``mode`` (every video) or ``mode:sha256`` (the video with that digest) entries."""
    digest = hashlib.sha256(data).hexdigest()
    for entry in filter(None, spec.split(",")):
        mode, _, target = entry.partition(":")
        if not target or target == digest:
            return mode
    return None


def _fault(name: str) -> None:
    """Fail the way a broken decoder would (tests prove the server survives each)."""
    if name == "crash":
        os.abort()
    if name == "hang":
        time.sleep(3600)
    if name == "spin":
        while True:
            pass
    if name == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))


def main() -> int:
    apply_limits(dict(os.environ))
    av.logging.set_level(None)  # FFmpeg's messages describe client bytes: keep them out
    job, data = read_job(sys.stdin.buffer)
    fault = fault_for(os.environ.get(FAULT_ENV_VAR, ""), data)
    if fault:
        _fault(fault)
    try:
        message = encode_result(sample_frames(job, data))
    except VideoRefusalError as refused:
        message = encode_refusal(refused.reason)
    except (av.FFmpegError, ValueError, OSError, EOFError):
        message = encode_refusal("VIDEO_UNDECODABLE")
    except MemoryError:
        message = encode_refusal("VIDEO_TOO_MUCH_MEMORY")
    sys.stdout.buffer.write(message)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
