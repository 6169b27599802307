"""Sizes: the bounds an image must meet and the size it is resized to.

Both sides of a resized image are multiples of 32 (Qwen3-VL: 16-pixel patches merged
2x2 into one token), chosen by the same rule as the model's processor, so vLLM takes
the image as it is and never resamples it a second time.
"""

from __future__ import annotations

from qwenvl_serve.vision_tokens import FACTOR, MAX_ASPECT_RATIO, PixelBounds, smart_resize


def within_bounds(width: int, height: int, max_side: int, max_pixels: int) -> bool:
    """True when an image of this size needs no resize."""
    return max(width, height) <= max_side and width * height <= max_pixels


def aspect_ratio_too_extreme(width: int, height: int) -> bool:
    """True for images the model's processor refuses (sides differ by over 200x)."""
    return max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height))


def target_size(width: int, height: int, max_side: int, max_pixels: int) -> tuple[int, int]:
    """The (width, height) an image is resized to: longest side <= ``max_side``, pixels
    <= ``max_pixels``, both sides multiples of 32 (at least 32), never enlarged beyond
    the next multiple of 32."""
    scale = min(1.0, max_side / max(width, height))
    # At least one token wide: a thin side rounded towards 0 would change the aspect
    # ratio past what the processor accepts, or send it down its minimum-pixels path.
    scaled_w = max(FACTOR, round(width * scale))
    scaled_h = max(FACTOR, round(height * scale))
    # The processor's own rule; max_side is a multiple of 32, so rounding keeps it.
    return smart_resize(scaled_w, scaled_h, PixelBounds(FACTOR * FACTOR, max_pixels))
