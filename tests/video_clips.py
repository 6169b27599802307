"""Video clips made in the tests, with PyAV (its wheels bundle libx264 and libvpx)."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.video.stream import VideoStream

# Formats PyAV writes each of our container names with.
_MUXERS = {"mp4": "mp4", "mov": "mov", "webm": "webm", "mkv": "matroska"}
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def make_clip(
    seconds: float,
    width: int,
    height: int,
    fps: int = 10,
    codec: str = "libx264",
    container: str = "mp4",
    gop: int | None = None,
    top_band: bool = False,
) -> bytes:
    """A clip of a square moving across a background that brightens with time.

    Frames are drawn from a few precomputed ones, so a long clip costs encoding time
    only. ``top_band`` paints the top eighth of every frame pure red (to tell which way
    up a frame arrives).
    """
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=_MUXERS[container]) as output:
        stream = video_stream(output, codec, fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = dict(_ENCODER_OPTIONS.get(codec, {}))
        stream.codec_context.gop_size = gop or 2 * fps
        frames = _palette(width, height)
        if top_band:
            for picture in frames:
                picture[: height // 8] = (255, 0, 0)
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(frames[index % len(frames)], format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def turned_clockwise(mp4: bytes) -> bytes:
    """``mp4`` with its track's display matrix set to a quarter turn clockwise, as a
    phone stores a portrait video (PyAV writes no display matrix itself)."""
    data = bytearray(mp4)
    box = data.find(b"tkhd")
    matrix = box + 4 + (40 if data[box + 4] == 0 else 52)  # after the version's fields
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    return bytes(data)


def video_stream(output: av.container.OutputContainer, codec: str, fps: int) -> VideoStream:
    """A new video stream of ``output`` (PyAV types ``add_stream`` by codec literal only)."""
    return cast(VideoStream, output.add_stream(codec, rate=Fraction(fps)))


def _palette(width: int, height: int, count: int = 16) -> list[np.ndarray]:
    frames = []
    for index in range(count):
        frame = np.full((height, width, 3), index * 16, dtype=np.uint8)
        left = index * max(1, (width - height // 4) // count)
        frame[height // 3 : height // 3 + height // 4, left : left + height // 4] = (250, 60, 30)
        frames.append(frame)
    return frames


def cached_clip(directory: Path, name: str, **kwargs: object) -> bytes:
    """``make_clip(**kwargs)``, kept in ``directory`` under ``name`` across a session."""
    path = directory / name
    if not path.exists():
        path.write_bytes(make_clip(**kwargs))  # type: ignore[arg-type]
    return path.read_bytes()
