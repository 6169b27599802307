"""Read what an image declares (format, size, mode, EXIF orientation) without decoding it.

Pillow's ``Image.open`` parses headers only; pixels are never loaded here, so the
pixel-count check runs before any large allocation. Only the plugin of the sniffed,
allowed format is tried.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from qwenvl_serve.images.formats import PILLOW_FORMAT, sniff_format
from qwenvl_serve.images.rejections import Reason, RefusalError

EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 turn the picture by 90 degrees: width and height swap.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
UNREADABLE_ORIENTATION = 0


@dataclass(frozen=True)
class ImageHeader:
    """An image as its header describes it; ``width``/``height`` as stored."""

    format: str
    width: int
    height: int
    mode: str
    orientation: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied."""
        if self.orientation in SWAPPING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def probe(data: bytes, allowed_formats: frozenset[str]) -> ImageHeader:
    """The header of ``data``; refuses unknown or disallowed formats and unreadable headers."""
    sniffed = sniff_format(data)
    if sniffed is None:
        raise RefusalError(Reason.UNDECODABLE)
    if sniffed not in allowed_formats or sniffed not in PILLOW_FORMAT:
        raise RefusalError(Reason.UNSUPPORTED_FORMAT)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[PILLOW_FORMAT[sniffed]]) as image:
                return ImageHeader(
                    format=sniffed,
                    width=image.width,
                    height=image.height,
                    mode=image.mode,
                    orientation=_orientation(image),
                )
    except Image.DecompressionBombError:
        raise RefusalError(Reason.TOO_MANY_PIXELS) from None
    except Exception as exc:
        # A hostile header can make a parser raise almost anything; every such failure
        # is the client's undecodable image, never an internal error.
        raise RefusalError(Reason.UNDECODABLE) from exc


def _orientation(image: Image.Image) -> int:
    """The orientation (1-8) that Pillow's ``exif_transpose``, and so vLLM, would apply:
    from the EXIF block, a PNG raw-profile chunk or XMP's ``tiff:Orientation``. 1 when
    none says, :data:`UNREADABLE_ORIENTATION` when the block is broken (the image is
    then re-encoded as stored).

    The base class's reader works from the header; PNG's own would decode the pixels
    first, before our pixel limit is checked.
    """
    try:
        value = Image.Image.getexif(image).get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a broken block must not make a decodable image fail
        return UNREADABLE_ORIENTATION
    return value if isinstance(value, int) and 1 <= value <= 8 else UNREADABLE_ORIENTATION
