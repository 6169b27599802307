"""The image core: bytes in, bytes the engine can take out, or a refusal. No I/O.

Order matters: cheap checks that need no decoding come first (byte size; for a plain
JPEG, its marker structure; otherwise magic bytes, header pixel count, aspect ratio);
pixels are only decoded for images that pass them and do not already comply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.geometry import aspect_ratio_too_extreme, target_size, within_bounds
from qwenvl_serve.images.jpeg_structure import MAX_SCANS, jpeg_structure, scan_count
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
    be re-encoded. No decoding: refusals raise as in :func:`normalize_image`."""
    if len(data) > config.max_bytes:
        raise RefusalError(Reason.IMAGE_TOO_LARGE)
    unchanged = as_it_is(data, config)
    if unchanged is None:
        inspect(data, config)  # an image we would refuse raises here
    return unchanged


def as_it_is(data: bytes, config: ImagesConfig) -> NormalizedImage | None:
    """``data`` unchanged, for a plain JPEG (see :mod:`~qwenvl_serve.images.jpeg_structure`)
    within the size bounds; None for anything that needs the full path."""
    if "jpeg" not in config.formats:
        return None
    structure = jpeg_structure(data)
    width, height = structure.width, structure.height
    if not structure.passable or aspect_ratio_too_extreme(width, height):
        return None
    if not within_bounds(width, height, config.max_side, config.max_pixels):
        return None
    return NormalizedImage(data, width, height, Outcome.PASSTHROUGH, len(data), width * height)


def normalize_image(data: bytes, config: ImagesConfig) -> NormalizedImage:
    """Check ``data`` and make it safe for the engine: upright, RGB, within bounds,
    sides multiples of 32, JPEG without metadata; plain compliant JPEGs pass unchanged."""
    if len(data) > config.max_bytes:
        raise RefusalError(Reason.IMAGE_TOO_LARGE)
    unchanged = as_it_is(data, config)
    if unchanged is not None:
        return unchanged
    header = inspect(data, config)
    if header.format == "jpeg" and scan_count(data) > MAX_SCANS:
        raise RefusalError(Reason.TOO_MANY_SCANS)
    upright_w, upright_h = header.upright_size
    size = target_size(upright_w, upright_h, config.max_side, config.max_pixels)
    encoded = reencode(data, header, size, config.jpeg_quality)
    outcome = Outcome.CONVERTED if size == (upright_w, upright_h) else Outcome.RESIZED
    return NormalizedImage(encoded, size[0], size[1], outcome, len(data), header.pixels)
