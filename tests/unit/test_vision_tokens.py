"""Our token rule against the transformers implementation of Qwen's smart resize."""

import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenvl_serve.vision_tokens import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    image_prompt_tokens,
    smart_resize,
)

SIZES = [
    (640, 480),
    (2048, 1536),
    (4000, 3000),
    (1, 1),
    (33, 4000),
    (5000, 40),
    (7, 1000),
    (8192, 8192),
]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_smart_resize_matches_transformers(width, height):
    expected_h, expected_w = hf_smart_resize(
        height, width, factor=32, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS
    )
    assert smart_resize(width, height) == (expected_w, expected_h)


def test_known_token_counts():
    # 640x480 -> 20x15 tokens; 4000x3000 -> 4000/32=125 x 3000/32=93.75->94.
    assert image_prompt_tokens(640, 480) == 302
    assert image_prompt_tokens(4000, 3000) == 125 * 94 + 2


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10_000, 10)
