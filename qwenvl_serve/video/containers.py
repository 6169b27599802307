"""Which container a video is, from its first bytes alone. Pure: no I/O.

The worker opens a video with exactly the demuxer named here, so FFmpeg never probes
its other formats: a playlist, an image sequence or a concat script disguised as a
video is refused here, before FFmpeg could read it (an HLS playlist would make FFmpeg
fetch URLs).
"""

from __future__ import annotations

from qwenvl_serve.video.config import VideoFormat

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# Top-level ISO base media boxes a QuickTime or MP4 file can start with.
_ISO_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"})
# ftyp brands of still-image formats built on the same box structure (AVIF, HEIF).
_IMAGE_BRANDS = frozenset({b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})
# How far into an EBML header the DocType is looked for.
_EBML_HEADER_BYTES = 64

# FFmpeg's demuxer for each of our container names.
DEMUXERS: dict[VideoFormat, str] = {"mp4": "mov", "webm": "matroska", "mkv": "matroska"}


def sniff_container(data: bytes) -> VideoFormat | None:
    """The container of ``data`` by its magic bytes; None when it is no video we know."""
    if data[4:8] in _ISO_FIRST_BOXES:
        if data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS:
            return None
        return "mp4"
    if data.startswith(EBML_MAGIC):
        header = data[:_EBML_HEADER_BYTES]
        if b"webm" in header:
            return "webm"
        if b"matroska" in header:
            return "mkv"
    return None
