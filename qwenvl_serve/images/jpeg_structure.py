"""A JPEG's structure, read marker by marker without decoding: may it pass as it is? Pure.

An image passes to the engine byte for byte only if decoding it costs what its pixels
cost and it carries nothing but pixels: a baseline (or extended sequential) Huffman
JPEG, three components (YCbCr, which decoders turn into RGB), at most one scan per
component, a small header, no metadata segment but JFIF's, nothing after its end. A
progressive JPEG can repeat its scans thousands of times in a few kilobytes, and the
decoder pays for each one; metadata is what the README promises never to forward;
EXIF is where orientation lives. Anything else is re-encoded (or refused) by the
image core, which decodes it under its own limits.

The walk costs one regular-expression search per scan over the entropy-coded data
(C speed) and a few steps per header segment: cheaper than opening the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
SEQUENTIAL_HUFFMAN = frozenset({0xC0, 0xC1})  # baseline, extended sequential
FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15
TABLE_MARKERS = frozenset({0xC4, 0xDB, 0xDD})  # DHT, DQT, DRI
JFIF = 0xE0
MAX_HEADER_BYTES = 16 * 1024  # a plain JPEG's tables and frame take well under 1 KiB
MAX_JFIF_BYTES = 64  # JFIF's own fields (a thumbnail would be metadata)
# A progressive JPEG has about 10 scans (libjpeg's default script); each costs a pass
# over the whole image when decoded, so far more is a decoding-cost bomb.
MAX_SCANS = 64
# In entropy-coded data, 0xFF is followed by 0x00 (a stuffed byte) or a restart marker;
# any other byte after it is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


@dataclass(frozen=True)
class JpegStructure:
    """What the walk found: the frame's size, and whether the file may pass unchanged."""

    width: int
    height: int
    passable: bool
    why_not: str | None = None  # the first reason it may not (for tests and logs)


def _refused(why: str) -> JpegStructure:
    return JpegStructure(0, 0, passable=False, why_not=why)


def jpeg_structure(data: bytes) -> JpegStructure:
    """Walk ``data``'s markers; ``passable`` only for the plain JPEGs described above."""
    if not data.startswith(b"\xff\xd8"):
        return _refused("not a JPEG")
    at, header_bytes, scans = 2, 0, 0
    width = height = components = 0
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return _refused("bytes between segments")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == EOI:
            break
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        end = at + 2 + length
        if length < 2 or end > len(data):
            return _refused("a segment runs past the end")
        header_bytes += length
        if header_bytes > MAX_HEADER_BYTES:
            return _refused("header too large")
        if marker in FRAME_MARKERS:
            if marker not in SEQUENTIAL_HUFFMAN or components:
                return _refused("not one baseline frame")
            if length < 8:
                return _refused("short frame header")
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            components = data[at + 9]
        elif marker == JFIF:
            if length > MAX_JFIF_BYTES:
                return _refused("JFIF with a thumbnail")
        elif marker == SOS:
            scans += 1
            if not components or scans > components:
                return _refused("more scans than components")
            at = _end_of_scan(data, end)
            continue
        elif marker not in TABLE_MARKERS:
            return _refused(f"segment 0x{marker:02X} (metadata or unsupported)")
        at = end
    if at != len(data) - 2 or not data.endswith(b"\xff\xd9"):
        return _refused("does not end with its end-of-image marker")
    if components != 3 or scans == 0 or width == 0 or height == 0:
        return _refused("not a three-component image with its scans")
    return JpegStructure(width, height, passable=True)


def scan_count(data: bytes) -> int:
    """At most how many scans a JPEG holds: its start-of-scan markers (the bytes cannot
    occur in entropy-coded data; a metadata payload holding them only counts higher)."""
    return data.count(b"\xff\xda")


def _end_of_scan(data: bytes, start: int) -> int:
    """Where the marker after a scan's entropy-coded data starts (the end if none)."""
    found = _NEXT_MARKER.search(data, start)
    while found is not None and data[found.start() + 1] == 0xFF:
        found = _NEXT_MARKER.search(data, found.start() + 1)  # fill bytes before a marker
    return len(data) if found is None else found.start()
