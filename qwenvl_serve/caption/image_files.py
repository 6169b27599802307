"""Turn image and video bytes into the ``data:`` URLs the API takes, after a cheap type check.

The type comes from the file's first bytes, not its name, so a renamed file is sent with
the right MIME type and a file that is not an image at all is reported without a request.
The server does the decoding and resizing; nothing is resized here.
"""

from __future__ import annotations

import base64

from qwenvl_serve.video.containers import sniff_container

_ISO_MEDIA_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


# The MIME type each container the server takes is sent with.
_VIDEO_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska"}


class NotAnImageError(ValueError):
    """The bytes are empty or of no image or video type the server accepts."""


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
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_MEDIA_BRANDS:
        return _ISO_MEDIA_BRANDS[data[8:12]]
    container = sniff_container(data)
    return _VIDEO_TYPES[container] if container is not None else None


def image_data_url(data: bytes) -> str:
    """``data:<type>;base64,...`` for image or video bytes; :class:`NotAnImageError`
    otherwise."""
    if not data:
        raise NotAnImageError("the file is empty")
    mime = sniff_image_type(data)
    if mime is None:
        raise NotAnImageError(
            "not an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or HEIC) "
            "or video file (MP4, MOV, WebM or MKV)"
        )
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
