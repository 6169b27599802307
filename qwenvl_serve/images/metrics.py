"""The image layer's Prometheus metrics, created in the registry the layer is given."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

NORMALIZE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class ImageMetrics:
    """Counters and the timing histogram of the image layer."""

    images: Counter
    refusals: Counter
    bytes_in: Counter
    bytes_out: Counter
    pixels_in: Counter
    pixels_out: Counter
    normalize_seconds: Histogram
    fetches: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ImageMetrics:
        """Register the metrics in ``registry``."""
        return cls(
            images=Counter(
                "qwenvl_images",
                "Images handled, by outcome (passthrough, resized, converted, rejected).",
                ["outcome"],
                registry=registry,
            ),
            refusals=Counter(
                "qwenvl_image_refusals",
                "Chat requests refused by the image layer, by reason.",
                ["reason"],
                registry=registry,
            ),
            bytes_in=Counter(
                "qwenvl_image_input_bytes",
                "Encoded bytes of accepted images as received.",
                registry=registry,
            ),
            bytes_out=Counter(
                "qwenvl_image_output_bytes",
                "Encoded bytes of images as passed to the engine.",
                registry=registry,
            ),
            pixels_in=Counter(
                "qwenvl_image_input_pixels",
                "Pixels of accepted images as received.",
                registry=registry,
            ),
            pixels_out=Counter(
                "qwenvl_image_output_pixels",
                "Pixels of images as passed to the engine.",
                registry=registry,
            ),
            normalize_seconds=Histogram(
                "qwenvl_image_normalize_seconds",
                "Time to check and normalize one image (decode, resize, encode).",
                buckets=NORMALIZE_BUCKETS,
                registry=registry,
            ),
            fetches=Counter(
                "qwenvl_image_fetches",
                "Remote image fetches, by outcome (ok or the refusal code).",
                ["outcome"],
                registry=registry,
            ),
        )
