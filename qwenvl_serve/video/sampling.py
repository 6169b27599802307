"""Which frames of a video the model sees, how large, and what they cost. Pure.

Qwen3-VL's rule: ``duration x fps`` frames (at least 4, at most ``max_frames``), in
pairs (one temporal patch covers two frames), one visual token per 32x32 pixels of a
pair, and before each pair its timestamp as text (``<12.5 seconds>``) between the
vision start and end tokens. Within ``max_tokens`` a long video gets fewer frames
rather than frames below ``min_frame_tokens``; a short one gets frames as large as
its share of the budget allows, up to ``max_frame_tokens`` and the source's own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATCH = 32  # pixels of one visual token's side (16-px patches merged 2x2)
TEMPORAL_PATCH = 2  # frames per visual token
MIN_FRAMES = 4  # Qwen3-VL's sampler takes at least this many
MAX_ASPECT_RATIO = 200  # the Qwen video processor refuses longer and thinner frames
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around every pair
# The chat template's own markers around the whole video, which vLLM keeps (it expands
# only the video token inside them, with transformers 5.10 and later).
OUTER_MARKERS = 2


@dataclass(frozen=True)
class SourceVideo:
    """What the stream header declares about a video."""

    duration: float  # seconds
    fps: float  # average frame rate
    width: int
    height: int
    frames: int  # frames in the stream (declared or duration x fps)


@dataclass(frozen=True)
class SamplingRules:
    """The ``video:`` bounds that decide sampling (from :class:`VideoConfig`)."""

    fps: float
    max_frames: int
    max_tokens: int
    min_frame_tokens: int
    max_frame_tokens: int


@dataclass(frozen=True)
class SamplePlan:
    """The frames to take: their target times and the size every frame is scaled to."""

    times: tuple[float, ...]  # seconds into the source, one per frame, ascending
    width: int
    height: int

    @property
    def tokens_per_pair(self) -> int:
        return (self.width // PATCH) * (self.height // PATCH)


def timestamp_tokens(seconds: float) -> int:
    """Tokens of the ``<{t:.1f} seconds>`` text before a pair: one per character of
    the number (Qwen's tokenizer splits digits), ``<``, `` seconds`` and ``>``."""
    return len(f"{seconds:.1f}") + 3


def pair_times(frame_times: list[float]) -> list[float]:
    """The timestamp the model reads for each pair: the mean of its two frames' times
    (vLLM's ``_calculate_timestamps``; an odd last frame is paired with itself)."""
    padded = frame_times + frame_times[-1:] * (len(frame_times) % TEMPORAL_PATCH)
    return [(padded[i] + padded[i + 1]) / 2 for i in range(0, len(padded), TEMPORAL_PATCH)]


def prompt_tokens(pair_timestamps: list[float], tokens_per_pair: int) -> int:
    """Prompt tokens one video becomes: per pair its timestamp, markers and visual
    tokens, and the template's markers around them all."""
    pairs = sum(timestamp_tokens(t) + VISION_MARKERS + tokens_per_pair for t in pair_timestamps)
    return OUTER_MARKERS + pairs


def plan_sampling(source: SourceVideo, rules: SamplingRules) -> SamplePlan:
    """The frames to sample from ``source`` under ``rules``; within ``max_tokens``."""
    overhead = timestamp_tokens(source.duration) + VISION_MARKERS  # the most a pair's text costs
    budget = rules.max_tokens - OUTER_MARKERS
    pairs = _pair_count(source, rules, overhead, budget)
    share = min(rules.max_frame_tokens, budget // pairs - overhead)
    width, height = frame_size(source.width, source.height, share)
    frames = pairs * TEMPORAL_PATCH
    step = source.duration / frames
    times = tuple((index + 0.5) * step for index in range(frames))
    return SamplePlan(times=times, width=width, height=height)


def _pair_count(source: SourceVideo, rules: SamplingRules, overhead: int, budget: int) -> int:
    wanted = max(MIN_FRAMES, round(source.duration * rules.fps))
    frames = min(wanted, rules.max_frames, max(source.frames, TEMPORAL_PATCH))
    affordable = budget // (rules.min_frame_tokens + overhead)
    return max(1, min(frames // TEMPORAL_PATCH, affordable))


def frame_size(width: int, height: int, max_tokens: int) -> tuple[int, int]:
    """The largest size on the 32-px grid, with the source's aspect ratio, no larger
    than the source (rounded to the grid) and at most ``max_tokens`` tokens."""
    budget = max(1, max_tokens)
    scale = min(1.0, math.sqrt(budget * PATCH * PATCH / (width * height)))
    columns = max(1, round(width * scale / PATCH))
    rows = max(1, round(height * scale / PATCH))
    while columns * rows > budget:  # rounding up may overshoot: trim the longer side
        if columns >= rows and columns > 1:
            columns -= 1
        else:
            rows -= 1
    return columns * PATCH, rows * PATCH
