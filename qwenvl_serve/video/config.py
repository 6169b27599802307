"""The ``video:`` config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwenvl_serve.config_base import StrictModel

MIB = 1024 * 1024

# Containers by magic bytes: mp4 is ISO base media (QuickTime .mov included);
# webm and mkv are Matroska with their EBML DocType.
VideoFormat = Literal["mp4", "webm", "mkv"]
# Codec names as FFmpeg reports them for the stream.
VideoCodec = Literal["h264", "hevc", "vp8", "vp9", "av1", "mpeg4"]


def _default_formats() -> list[VideoFormat]:
    return ["mp4", "webm", "mkv"]


def _default_codecs() -> list[VideoCodec]:
    return ["h264", "hevc", "vp8", "vp9", "av1"]


class VideoConfig(StrictModel):
    """How videos in requests are probed, sampled and decoded before the engine sees them.

    vLLM never decodes a client's video: a worker process samples the frames and
    vLLM receives only JPEG frames we encoded, with the timing of the source.
    """

    enabled: bool = Field(
        default=False,
        description=(
            "Accept video parts. vLLM then reserves encoder memory for one video of "
            "`max_tokens` tokens per request (`engine.limit_mm_per_prompt.video` follows)."
        ),
    )
    formats: list[VideoFormat] = Field(
        default_factory=_default_formats,
        description="Containers accepted, recognized by their magic bytes (mp4 includes mov).",
    )
    codecs: list[VideoCodec] = Field(
        default_factory=_default_codecs,
        description="Video codecs accepted, as the stream header declares them.",
    )
    max_bytes: int = Field(
        default=64 * MIB,
        ge=1,
        description="Largest encoded video in bytes (after base64 decoding, or as downloaded).",
    )
    max_duration_seconds: float = Field(
        default=1200.0,
        gt=0,
        description="Longest video accepted, by the duration its header declares.",
    )
    max_side: int = Field(
        default=4096,
        ge=32,
        description="Longest side of a source video's frames, as its header declares it.",
    )
    max_frame_pixels: int = Field(
        default=3840 * 2160,
        ge=32 * 32,
        description="Most pixels of one source frame, as the header declares them.",
    )
    max_source_fps: float = Field(
        default=240.0,
        gt=0,
        description="Highest source frame rate accepted.",
    )
    fps: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="Frames sampled per second of video (Qwen3-VL's default is 2).",
    )
    max_frames: int = Field(
        default=768,
        ge=4,
        le=768,
        description="Most frames sampled from one video (Qwen3-VL takes 4 to 768).",
    )
    max_tokens: int = Field(
        default=16384,
        ge=64,
        description=(
            "Most prompt tokens one video becomes, timestamps included. Long videos are "
            "sampled at a lower rate and smaller frames to stay within it."
        ),
    )
    min_frame_tokens: int = Field(
        default=16,
        ge=1,
        description=(
            "Fewest visual tokens per pair of frames (one token covers 32x32 pixels of two "
            "frames): below it, fewer frames are sampled instead of smaller ones."
        ),
    )
    max_frame_tokens: int = Field(
        default=768,
        ge=1,
        description="Most visual tokens per pair of frames (768: about 1024x768 pixels).",
    )
    jpeg_quality: int = Field(
        default=90, ge=50, le=100, description="JPEG quality of the frames sent to the engine."
    )
    max_concurrent: int = Field(
        default=2,
        ge=1,
        description="Videos decoded at once (one worker process each); others wait.",
    )
    max_concurrent_per_key: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Videos one API key may have decoding at once; its others wait their turn "
            "without holding a worker slot, so one client cannot take every slot. Empty: "
            "half of `max_concurrent`, rounded up. Applies when `auth.keys` is set."
        ),
    )
    worker_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock deadline of one video's worker; it is killed after it.",
    )
    worker_cpu_seconds: int = Field(
        default=120,
        ge=1,
        description="CPU seconds one video's worker may use (a kernel limit).",
    )
    worker_memory_mib: int = Field(
        default=2048,
        ge=256,
        description="Address space of one video's worker in MiB (a kernel limit).",
    )
    fetch_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Deadline for one remote video: DNS, every redirect and the whole body.",
    )

    @property
    def per_key_concurrency(self) -> int:
        """Videos one key may have decoding at once."""
        if self.max_concurrent_per_key is not None:
            return min(self.max_concurrent_per_key, self.max_concurrent)
        return (self.max_concurrent + 1) // 2

    @model_validator(mode="after")
    def _frame_tokens_ordered(self) -> VideoConfig:
        if self.min_frame_tokens > self.max_frame_tokens:
            raise ValueError("video.min_frame_tokens must not exceed video.max_frame_tokens")
        return self
