"""The image core: bytes in, bytes the engine can take out, or a refusal. No I/O.

Order matters: cheap checks that need no decoding (byte size, magic bytes, header
pixel count, aspect ratio) come first; pixels are only decoded for images that pass
them and do not already comply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.formats import JPEG_END_OF_IMAGE
from qwenvl_serve.images.geometry import aspect_ratio_too_extreme, target_size, within_bounds
from qwenvl_serve.images.probe import ImageHeader, probe
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.transform import reencode


class Outcome(enum.Enum):
    """What normalization did to one image (the metric label)."""

    PASSTHROUGH = "passthrough"  # the client's bytes, untouched
    RESIZED = "resized"
    CONVERTED = "converted"  # same size, re-encoded (format, mode, orientation)


@dataclass(frozen=True)
class NormalizedImage:
    """An image ready for the engine: JPEG bytes and the size the engine sees."""

    data: bytes
    width: int
    height: int
    outcome: Outcome
    input_bytes: int
    input_pixels: int


def is_compliant(data: bytes, header: ImageHeader, config: ImagesConfig) -> bool:
    """True for an image the engine can take byte for byte: a complete RGB JPEG
    within bounds that needs no turning. (Completeness is judged by the end-of-image
    marker, which costs nothing; a truncated JPEG would fail inside the engine.)"""
    return (
        header.format == "jpeg"
        and data.endswith(JPEG_END_OF_IMAGE)
        and header.mode == "RGB"
        and header.orientation == 1
        and within_bounds(header.width, header.height, config.max_side, config.max_pixels)
    )


def inspect(data: bytes, config: ImagesConfig) -> ImageHeader:
    """Every check that needs no decoding; the header of an acceptable image."""
    if len(data) > config.max_bytes:
        raise RefusalError(Reason.IMAGE_TOO_LARGE)
    header = probe(data, frozenset(config.formats))
    if header.pixels > config.max_input_pixels:
        raise RefusalError(Reason.TOO_MANY_PIXELS)
    if min(header.width, header.height) < 1 or aspect_ratio_too_extreme(
        header.width, header.height
    ):
        raise RefusalError(Reason.EXTREME_ASPECT_RATIO)
    return header


def passthrough_image(data: bytes, config: ImagesConfig) -> NormalizedImage | None:
    """``data`` as it is, when the engine can take it byte for byte; None when it must
    be re-encoded. Header checks only: refusals raise as in :func:`normalize_image`."""
    header = inspect(data, config)
    if not is_compliant(data, header, config):
        return None
    return NormalizedImage(
        data, header.width, header.height, Outcome.PASSTHROUGH, len(data), header.pixels
    )


def normalize_image(data: bytes, config: ImagesConfig) -> NormalizedImage:
    """Check ``data`` and make it safe for the engine: upright, RGB, within bounds,
    sides multiples of 32, JPEG without metadata; compliant JPEGs pass unchanged."""
    header = inspect(data, config)
    if is_compliant(data, header, config):
        return NormalizedImage(
            data, header.width, header.height, Outcome.PASSTHROUGH, len(data), header.pixels
        )
    upright_w, upright_h = header.upright_size
    size = target_size(upright_w, upright_h, config.max_side, config.max_pixels)
    encoded = reencode(data, header, size, config.jpeg_quality)
    outcome = Outcome.CONVERTED if size == (upright_w, upright_h) else Outcome.RESIZED
    return NormalizedImage(encoded, size[0], size[1], outcome, len(data), header.pixels)
