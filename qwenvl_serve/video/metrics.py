"""The video layer's Prometheus metrics, created in the registry the layer is given."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

DECODE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class VideoMetrics:
    """Counters and the timing histogram of the video layer."""

    videos: Counter
    seconds_in: Counter
    frames_in: Counter
    frames_out: Counter
    tokens: Counter
    decode_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> VideoMetrics:
        """Register the metrics in ``registry``."""
        return cls(
            videos=Counter(
                "qwenvl_videos",
                "Videos handled, by outcome: sampled, or the refusal's reason.",
                ["outcome"],
                registry=registry,
            ),
            seconds_in=Counter(
                "qwenvl_video_input_seconds",
                "Seconds of accepted source video.",
                registry=registry,
            ),
            frames_in=Counter(
                "qwenvl_video_input_frames",
                "Frames of accepted source videos (what decoding every frame would cost).",
                registry=registry,
            ),
            frames_out=Counter(
                "qwenvl_video_output_frames",
                "Frames of accepted videos as passed to the engine.",
                registry=registry,
            ),
            tokens=Counter(
                "qwenvl_video_prompt_tokens",
                "Prompt tokens accepted videos became (timestamps included).",
                registry=registry,
            ),
            decode_seconds=Histogram(
                "qwenvl_video_decode_seconds",
                "Wall time of one video's worker: probe, sampling, scaling and encoding.",
                buckets=DECODE_BUCKETS,
                registry=registry,
            ),
        )
