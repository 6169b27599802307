"""``data:`` image URLs: parsing and base64 checks that need no decoding.

Base64 goes through pybase64, the decoder vLLM itself uses for ``data:`` URLs (with
the same ``validate=True``), so both read a payload the same way; its SIMD code is
also about 40 times faster than the standard library's on a 55 KB photo.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import pybase64

from qwenvl_serve.images.rejections import Reason, RefusalError

JPEG_DATA_URL_PREFIX = "data:image/jpeg;base64,"


@dataclass(frozen=True)
class DataUrl:
    """A base64 ``data:`` URL; ``media_type`` is what the client declared (not trusted)."""

    media_type: str
    payload: str


def parse_data_url(url: str) -> DataUrl:
    """Split ``data:<type>;base64,<payload>``; anything else is refused."""
    media_type, start = data_url_header(url)
    return DataUrl(media_type=media_type, payload=url[start:])


def data_url_header(url: str) -> tuple[str, int]:
    """The declared media type of ``data:<type>;base64,<payload>`` and where its payload
    starts, without copying the payload; anything else is refused."""
    comma = url.find(",")
    if comma < 0 or not url.startswith("data:"):
        raise RefusalError(Reason.BAD_IMAGE_URL)
    media_type, _, encoding = url[len("data:") : comma].rpartition(";")
    if encoding.lower() != "base64":
        raise RefusalError(Reason.MALFORMED_BASE64)
    return media_type, comma + 1


def max_payload_length(max_bytes: int) -> int:
    """The longest base64 text that can decode to at most ``max_bytes`` bytes."""
    return 4 * -(-max_bytes // 3)


def check_payload_length(payload: str, max_bytes: int) -> None:
    """Refuse an oversized or impossible payload from its length alone."""
    check_base64_length(len(payload), max_bytes)


def check_base64_length(length: int, max_bytes: int) -> None:
    """Refuse a payload of ``length`` base64 characters that is too long or impossible."""
    if length > max_payload_length(max_bytes):
        raise RefusalError(Reason.IMAGE_TOO_LARGE)
    if not length or length % 4:
        raise RefusalError(Reason.MALFORMED_BASE64)


def decode_payload(payload: str, max_bytes: int) -> bytes:
    """Strict base64 (standard alphabet, padded, no whitespace) to at most ``max_bytes``."""
    check_payload_length(payload, max_bytes)
    try:
        data = pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):  # bad alphabet, bad padding or non-ASCII text
        raise RefusalError(Reason.MALFORMED_BASE64) from None
    if len(data) > max_bytes:
        raise RefusalError(Reason.IMAGE_TOO_LARGE)
    return data


def jpeg_data_url(data: bytes) -> str:
    """The ``data:`` URL the engine receives for JPEG bytes."""
    return JPEG_DATA_URL_PREFIX + pybase64.b64encode(data).decode("ascii")
