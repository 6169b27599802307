"""The JPEG marker walk: which files pass to the engine unchanged, and the scan bomb."""

from __future__ import annotations

import io
import struct

import pytest

from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.jpeg_structure import MAX_SCANS, jpeg_structure, scan_count
from qwenvl_serve.images.normalize import Outcome, normalize_image, passthrough_image
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.sample_images import progressive_scan_bomb, synthetic_jpeg, synthetic_photo

PLAIN = synthetic_jpeg(640, 480, seed=3)


def progressive(width: int = 320, height: int = 256) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo(width, height, seed=5).save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def test_a_plain_baseline_jpeg_passes_with_its_frame_size():
    structure = jpeg_structure(PLAIN)
    assert structure.passable, structure.why_not
    assert (structure.width, structure.height) == (640, 480)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (progressive(), "not one baseline frame"),
        (PLAIN[:2] + b"\xff\xfe\x00\x07hello" + PLAIN[2:], "segment 0xFE"),  # COM
        (PLAIN[:2] + b"\xff\xe1\x00\x08Exif\x00\x00" + PLAIN[2:], "segment 0xE1"),  # EXIF
        (PLAIN + b"trailing", "end-of-image"),
        (PLAIN[:-200], "end-of-image"),  # truncated
        (PLAIN[:2] + b"\xff\xdb\xff\xff" + PLAIN[2:], "past the end"),  # a lying length
        (PLAIN[:2] + b"\xff\xe0" + struct.pack(">H", 200) + b"J" * 198 + PLAIN[2:], "thumbnail"),
        (b"\x89PNG\r\n", "not a JPEG"),
    ],
)
def test_anything_but_a_plain_jpeg_does_not_pass(data, why):
    structure = jpeg_structure(data)
    assert not structure.passable
    assert why in (structure.why_not or "")


def test_a_jpeg_holding_a_stuffed_ff_and_restart_markers_still_passes():
    buffer = io.BytesIO()
    synthetic_photo(256, 256, seed=7).save(buffer, "JPEG", restart_marker_blocks=1, quality=95)
    data = buffer.getvalue()
    assert b"\xff\xd0" in data  # restart markers inside the scan
    assert jpeg_structure(data).passable


def test_a_scan_bomb_is_refused_before_any_decoding():
    assert scan_count(progressive()) < MAX_SCANS
    bomb = progressive_scan_bomb(MAX_SCANS * 4)
    assert len(bomb) < 200_000
    with pytest.raises(RefusalError) as refused:
        normalize_image(bomb, ImagesConfig())
    assert refused.value.reason is Reason.TOO_MANY_SCANS


def test_the_inline_check_refuses_nothing_it_cannot_judge_and_passes_plain_jpegs():
    config = ImagesConfig()
    passed = passthrough_image(PLAIN, config)
    assert passed is not None
    assert passed.outcome is Outcome.PASSTHROUGH
    assert passthrough_image(progressive(), config) is None  # re-encoded in the pool


def test_metadata_never_reaches_the_engine():
    with_metadata = PLAIN[:2] + b"\xff\xe2" + struct.pack(">H", 60_002) + b"m" * 60_000 + PLAIN[2:]
    result = normalize_image(with_metadata, ImagesConfig())
    assert result.outcome is Outcome.CONVERTED
    assert b"m" * 1000 not in result.data
