"""What vLLM receives for a decoded video. Pure.

vLLM takes a ``video/jpeg`` data URL (comma-separated base64 JPEG frames) and reads
the frames' timing from ``media_io_kwargs``: the source's frame rate, the source
index of every frame, the source's frame count and duration, and no sampling of its
own. Qwen3-VL's processor turns index / fps into the timestamp text before each pair
of frames, so the model reads the times of the source video.
"""

from __future__ import annotations

from typing import Any

from qwenvl_serve.video.protocol import DecodedVideo
from qwenvl_serve.video.sampling import PATCH, pair_times, prompt_tokens

VIDEO_DATA_URL_PREFIX = "data:video/jpeg;base64,"
VIDEO_HEADER = b"x-qwenvl-video"


def video_data_url(video: DecodedVideo) -> str:
    """The frames as one ``video/jpeg`` data URL."""
    return VIDEO_DATA_URL_PREFIX + video.payload.decode("ascii")


def media_io_kwargs(video: DecodedVideo) -> dict[str, dict[str, Any]]:
    """The request's ``media_io_kwargs``: the timing of the frames we send."""
    return {
        "video": {
            "num_frames": video.frames,  # vLLM keeps only the first 32 frames otherwise
            "fps": video.source_fps,
            "frames_indices": video.frame_indices,
            "total_num_frames": video.total_frames,
            "duration": video.duration,
            "do_sample_frames": False,
        }
    }


def model_timestamps(video: DecodedVideo) -> list[float]:
    """The time the model reads before each pair of frames, as vLLM computes it."""
    return pair_times([index / video.source_fps for index in video.frame_indices])


def video_prompt_tokens(video: DecodedVideo) -> int:
    """Prompt tokens the video becomes in Qwen3-VL's prompt."""
    tokens_per_pair = (video.width // PATCH) * (video.height // PATCH)
    return prompt_tokens(model_timestamps(video), tokens_per_pair)


def describe(video: DecodedVideo) -> str:
    """The ``x-qwenvl-video`` header value: what the video became."""
    return (
        f"{video.width}x{video.height};frames={video.frames};"
        f"tokens={video_prompt_tokens(video)};"
        f"source={video.source_width}x{video.source_height}@{video.source_fps:g}fps;"
        f"duration={video.duration:.2f}s;codec={video.codec}"
    )
