"""Decode, orient, convert to RGB, resize and re-encode one image with libvips.

libvips was chosen by measurement (benchmarks/images/RESULTS.md): on a 12 MP JPEG it
takes about a third of the time of the plain Pillow pipeline, and it streams, so large
images never sit fully decoded in memory. It releases the GIL, so the layer's thread
pool runs several images at once.
"""

from __future__ import annotations

import pyvips

from qwenvl_serve.images.probe import ImageHeader
from qwenvl_serve.images.rejections import Reason, RefusalError

# The libvips loader each accepted format must be read by; anything else is refused.
VIPS_LOADER = {
    "jpeg": "jpegload_buffer",
    "png": "pngload_buffer",
    "webp": "webpload_buffer",
    "gif": "gifload_buffer",
}
# EXIF orientation -> the operations that make the picture upright, in order
# (``rot`` turns clockwise). Matches Pillow's ``ImageOps.exif_transpose``.
_UPRIGHT_STEPS: dict[int, tuple[tuple[str, str], ...]] = {
    2: (("flip", "horizontal"),),
    3: (("rot", "d180"),),
    4: (("flip", "vertical"),),
    5: (("rot", "d90"), ("flip", "horizontal")),
    6: (("rot", "d90"),),
    7: (("rot", "d270"), ("flip", "horizontal")),
    8: (("rot", "d270"),),
}
WHITE = [255.0, 255.0, 255.0]


def reencode(data: bytes, header: ImageHeader, size: tuple[int, int], quality: int) -> bytes:
    """JPEG bytes of ``data`` upright, RGB, exactly ``size`` (upright width, height),
    alpha composited on white, no metadata."""
    try:
        return _reencode(data, header, size, quality)
    except pyvips.Error:
        # Truncated or corrupt pixel data surfaces here; the text is the decoder's.
        raise RefusalError(Reason.UNDECODABLE) from None


def _reencode(data: bytes, header: ImageHeader, size: tuple[int, int], quality: int) -> bytes:
    loader = pyvips.Image.new_from_buffer(data, "").get("vips-loader")
    if loader != VIPS_LOADER.get(header.format):
        raise RefusalError(Reason.UNDECODABLE)
    width, height = size
    if header.upright_size != (header.width, header.height):
        width, height = height, width  # resize as stored, turn upright afterwards
    image = pyvips.Image.thumbnail_buffer(
        data,
        width,
        height=height,
        size="force",
        no_rotate=True,  # orientation comes from our own header reading, applied below
        option_string="fail_on=truncated",
    )
    steps = _UPRIGHT_STEPS.get(header.orientation, ())
    if steps:
        # Turning reads pixels out of order; the (already reduced) image is decoded
        # into memory first, since the loader streams top to bottom.
        image = image.copy_memory()
    for operation, argument in steps:
        image = getattr(image, operation)(argument)
    encoded: bytes = _to_rgb(image).jpegsave_buffer(Q=quality, keep="none")
    return encoded


def _to_rgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB with three bands, whatever the input's mode (grey, CMYK, 16-bit, alpha)."""
    if image.hasalpha():
        image = image.flatten(background=WHITE)
    if image.interpretation != "srgb" or image.bands != 3:
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image
