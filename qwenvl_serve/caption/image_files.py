"""Turn image bytes into the ``data:`` URLs the API takes, after a cheap type check.

The type comes from the file's first bytes, not its name, so a renamed file is sent with
the right MIME type and a file that is not an image at all is reported without a request.
The server does the decoding and resizing; nothing is resized here.
"""

from __future__ import annotations

import base64

_ISO_MEDIA_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


class NotAnImageError(ValueError):
    """The bytes are empty or of no image type the server accepts."""


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type that ``data`` starts like, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp":
        return _ISO_MEDIA_BRANDS.get(data[8:12])
    return None


def image_data_url(data: bytes) -> str:
    """``data:<type>;base64,...`` for the image bytes; :class:`NotAnImageError` otherwise."""
    if not data:
        raise NotAnImageError("the file is empty")
    mime = sniff_image_type(data)
    if mime is None:
        raise NotAnImageError("not an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or HEIC)")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
