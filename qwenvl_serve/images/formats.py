"""Recognise an image format from its first bytes; the declared MIME type is never trusted."""

from __future__ import annotations

# Formats we may decode, with the Pillow plugin that reads their headers.
PILLOW_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}
JPEG_END_OF_IMAGE = b"\xff\xd9"

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    # Recognised, never decoded: refused as unsupported rather than undecodable.
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"%PDF", "pdf"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
)
_ISO_MEDIA_BRANDS = {
    b"heic": "heic",
    b"heix": "heic",
    b"mif1": "heic",
    b"msf1": "heic",
    b"avif": "avif",
    b"avis": "avif",
}


def sniff_format(data: bytes) -> str | None:
    """The format ``data`` starts like, or None when it looks like no image at all."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _ISO_MEDIA_BRANDS.get(data[8:12], "iso-media")
    for prefix, name in _PREFIXES:
        if data.startswith(prefix):
            return name
    return None
