"""The messages between the server and a decoder worker: one job in, one result out.

Each message is a JSON header line followed by raw bytes whose length the header
gives (the video in, the frames out), so no bytes are base64-wrapped twice. Only the
standard library is imported here: the worker starts with as little as it can.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import IO, Any

from qwenvl_serve.video.sampling import SamplingRules

# The worker's kernel limits, set by the server in its environment.
CPU_ENV_VAR = "QWENVL_SERVE_VIDEO_WORKER_CPU_SECONDS"
MEMORY_ENV_VAR = "QWENVL_SERVE_VIDEO_WORKER_MEMORY_BYTES"
# Test-only: make the worker fail on purpose (crash, hang, spin, memory), for every
# video or for the one with a given sha256 (see worker.fault_for).
FAULT_ENV_VAR = "QWENVL_SERVE_VIDEO_WORKER_FAULT"


@dataclass(frozen=True)
class SourceBounds:
    """What a video's header may declare (from :class:`VideoConfig`)."""

    codecs: tuple[str, ...]
    max_duration_seconds: float
    max_side: int
    max_frame_pixels: int
    max_source_fps: float


@dataclass(frozen=True)
class DecodeJob:
    """One video to sample: the demuxer to open it with and every bound."""

    demuxer: str
    bounds: SourceBounds
    rules: SamplingRules
    jpeg_quality: int
    size: int  # bytes of video after the header


@dataclass(frozen=True)
class DecodedVideo:
    """What a video became: the frames (``payload``: comma-separated base64 JPEGs, the
    body of a ``video/jpeg`` data URL) and the source timing the model needs."""

    codec: str
    source_width: int
    source_height: int
    width: int
    height: int
    source_fps: float
    duration: float
    total_frames: int
    frame_indices: list[int]  # index in the source of every frame sent
    frame_times: list[float]  # seconds into the source of every frame sent
    payload: bytes

    @property
    def frames(self) -> int:
        return len(self.frame_indices)


def encode_job(job: DecodeJob) -> bytes:
    """A job's header line (the video bytes follow it)."""
    return json.dumps(asdict(job)).encode() + b"\n"


def read_job(stream: IO[bytes]) -> tuple[DecodeJob, bytes]:
    """A job and its video bytes."""
    header = json.loads(stream.readline())
    job = DecodeJob(
        demuxer=header["demuxer"],
        bounds=SourceBounds(**{**header["bounds"], "codecs": tuple(header["bounds"]["codecs"])}),
        rules=SamplingRules(**header["rules"]),
        jpeg_quality=header["jpeg_quality"],
        size=header["size"],
    )
    return job, stream.read(job.size)


def encode_result(video: DecodedVideo) -> bytes:
    """The result message: header line, then the payload."""
    header = {k: v for k, v in asdict(video).items() if k != "payload"}
    header["payload_size"] = len(video.payload)
    return json.dumps({"ok": header}).encode() + b"\n" + video.payload


def encode_refusal(reason: str) -> bytes:
    """A refusal message, naming a :class:`~qwenvl_serve.images.rejections.Reason`."""
    return json.dumps({"refused": reason}).encode() + b"\n"


def decode_message(message: bytes) -> DecodedVideo | str:
    """A worker's output: the decoded video, or the name of the refusal's reason.
    Raises ValueError when the output is not a whole message."""
    line, _, rest = message.partition(b"\n")
    header: dict[str, Any] = json.loads(line)
    if "refused" in header:
        return str(header["refused"])
    fields = dict(header["ok"])
    size = fields.pop("payload_size")
    if len(rest) != size:
        raise ValueError("truncated worker output")
    return DecodedVideo(**fields, payload=rest)
