"""The adversarial video corpus: each case's bytes and the outcome it must have.

``sampled`` means the video is accepted and becomes frames; anything else is the
refusal's code. The cases run against the real worker process (unit tests) and a
few of them through the real server (e2e tests). Clips are made small, so the
corpus runs in seconds under the bounds of :data:`CORPUS_VIDEO`.
"""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream
from PIL import Image

from qwenvl_serve.video.config import VideoConfig
from tests.video_clips import make_clip, video_stream

# Small bounds, so that the cases over them are small files.
CORPUS_VIDEO = VideoConfig(
    enabled=True,
    max_bytes=4 * 1024 * 1024,
    max_duration_seconds=300,
    max_side=1024,
    max_frame_pixels=1024 * 576,
    max_source_fps=120,
    max_tokens=1024,
    worker_timeout_seconds=20,
    worker_cpu_seconds=10,
    worker_memory_mib=1024,
)


@dataclass(frozen=True)
class Case:
    """One corpus entry."""

    name: str
    build: Callable[[], bytes]
    outcome: str  # "sampled" or the refusal code


def _clip(**kwargs: object) -> Callable[[], bytes]:
    return lambda: make_clip(**{"seconds": 2, "width": 160, "height": 96, **kwargs})  # type: ignore[arg-type]


def _faststart_clip() -> bytes:
    """An MP4 with its index (moov) before the media data, as web servers serve them
    (the muxer moves it in a second pass, which needs a real file)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "faststart.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as output:
            _encode_frames(output, "libx264", 40, 10)
        return path.read_bytes()


def _encode_frames(
    output: av.container.OutputContainer,
    codec: str,
    frames: int,
    fps: int,
    width: int = 160,
    height: int = 96,
) -> None:
    stream = video_stream(output, codec, fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(
            np.full((height, width, 3), index * 5 % 256, dtype=np.uint8), format="rgb24"
        )
        frame.pts, frame.time_base = index, Fraction(1, fps)
        for packet in stream.encode(frame):
            output.mux(packet)
    for packet in stream.encode():
        output.mux(packet)


def _muxed(container: str, codec: str, frames: int = 20, fps: int = 10) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format=container) as output:
            _encode_frames(output, codec, frames, fps)
        return buffer.getvalue()

    return build


def _audio_only(container: str, codec: str) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format=container) as output:
            stream = cast(AudioStream, output.add_stream(codec, rate=48000))
            samples = np.zeros((1, 48000), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 48000
            for packet in [*stream.encode(frame), *stream.encode()]:
                output.mux(packet)
        return buffer.getvalue()

    return build


class _Unseekable(io.RawIOBase):
    """A sink the muxer cannot seek back in, as a live stream: no duration is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk: bytes) -> int:  # type: ignore[override]
        self.data += chunk
        return len(chunk)


def _live_webm() -> bytes:
    sink = _Unseekable()
    with av.open(sink, "w", format="webm") as output:
        _encode_frames(output, "libvpx", 20, 10)
    return bytes(sink.data)


def _empty_mp4() -> bytes:
    """A video stream header with no frames after it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = video_stream(output, "libx264", 10)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        output.start_encoding()
    return buffer.getvalue()


def _image(format_name: str) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buffer, format=format_name)
        return buffer.getvalue()

    return build


def _truncated(build: Callable[[], bytes], keep: float) -> Callable[[], bytes]:
    return lambda: (lambda data: data[: int(len(data) * keep)])(build())


def _corrupted_middle() -> bytes:
    data = bytearray(make_clip(seconds=2, width=160, height=96))
    middle = len(data) // 2
    data[middle : middle + 512] = bytes(512)
    return bytes(data)


def _ftyp(brand: bytes) -> bytes:
    return struct.pack(">I4s4sI", 16, b"ftyp", brand, 0) + bytes(64)


# Text formats FFmpeg would follow to other files or URLs if it probed them.
HLS_PLAYLIST = b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1/a.ts\n"
FFCONCAT_SCRIPT = b"ffconcat version 1.0\nfile /etc/passwd\n"


def _noise(size: int) -> bytes:
    return np.random.default_rng(1).bytes(size)


def _mp4_in_ebml() -> bytes:
    header = b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm" + bytes(16)
    return header + make_clip(seconds=1, width=160, height=96)


def _huge_metadata() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        output.metadata["comment"] = "x" * 1_000_000
        _encode_frames(output, "libx264", 20, 10)
    return buffer.getvalue()


def _lying_frame_count() -> bytes:
    """A Matroska file whose header declares 1 s, holding 60 s of frames: the
    declared duration is patched down in the Segment Info."""
    data = bytearray(
        make_clip(seconds=60, width=64, height=64, fps=10, codec="libvpx", container="mkv")
    )
    marker = data.find(b"\x44\x89")  # EBML id of Duration (a float)
    size = data[marker + 2] & 0x7F
    value = struct.pack(">f", 1000.0) if size == 4 else struct.pack(">d", 1000.0)
    data[marker + 3 : marker + 3 + size] = value
    return bytes(data)


CASES: tuple[Case, ...] = (
    Case("mp4 h264", _clip(), "sampled"),
    Case("mov h264", _clip(container="mov"), "sampled"),
    Case("webm vp9", _clip(codec="libvpx-vp9", container="webm"), "sampled"),
    Case("mkv vp8", _clip(codec="libvpx", container="mkv"), "sampled"),
    Case("faststart mp4", _faststart_clip, "sampled"),
    Case("one frame", _clip(seconds=0.1), "sampled"),
    Case("three frames", _clip(seconds=0.3), "sampled"),
    Case("huge metadata box", _huge_metadata, "sampled"),
    Case("truncated, moov lost", _truncated(_clip(), 0.5), "invalid_video"),
    Case("truncated after a faststart moov", _truncated(_faststart_clip, 0.5), "video_truncated"),
    Case("first kilobyte only", _truncated(_faststart_clip, 0.02), "video_no_video_stream"),
    Case("zeros", lambda: bytes(4096), "unsupported_video_format"),
    Case(
        "random bytes behind an ftyp box",
        lambda: _ftyp(b"isom") + np.random.default_rng(1).bytes(8192),
        "invalid_video",
    ),
    Case("JPEG as video", _image("JPEG"), "unsupported_video_format"),
    Case("PNG as video", _image("PNG"), "unsupported_video_format"),
    Case("AVIF-branded ftyp", lambda: _ftyp(b"avif"), "unsupported_video_format"),
    Case(
        "HLS playlist as video",
        lambda: b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1/a.ts\n",
        "unsupported_video_format",
    ),
    Case(
        "ffconcat script as video",
        lambda: b"ffconcat version 1.0\nfile /etc/passwd\n",
        "unsupported_video_format",
    ),
    Case("mp4 inside a Matroska header", _mp4_in_ebml, "invalid_video"),
    Case("audio-only mp4", _audio_only("mp4", "aac"), "video_no_video_stream"),
    Case("audio-only webm", _audio_only("webm", "libopus"), "video_no_video_stream"),
    Case("MPEG-4 part 2 codec", _muxed("mp4", "mpeg4"), "unsupported_video_codec"),
    Case("Motion JPEG in mkv", _muxed("matroska", "mjpeg"), "unsupported_video_codec"),
    Case("a stream header and no frames", _empty_mp4, "video_no_video_stream"),
    Case("live webm without a duration", _live_webm, "video_duration_unknown"),
    Case("longer than allowed", _clip(seconds=400, width=32, height=32, fps=1), "video_too_long"),
    Case(
        "frame rate over the bound",
        _clip(seconds=1, width=64, height=64, fps=200),
        "video_frame_rate",
    ),
    Case("wider than allowed", _clip(seconds=1, width=1280, height=64), "video_too_many_pixels"),
    Case("too long and thin", _clip(seconds=1, width=1000, height=4), "video_aspect_ratio"),
    Case("header declares 1 s, holds 60 s", _lying_frame_count, "sampled"),
    Case("larger than allowed", lambda: _ftyp(b"isom") + bytes(5 * 1024 * 1024), "video_too_large"),
    Case("corrupted packets mid-stream", _corrupted_middle, "sampled"),
)
