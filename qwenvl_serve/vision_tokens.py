"""Qwen3-VL's image token rule: how many LLM tokens an image of a given size costs.

Qwen3-VL cuts images into 16x16 patches and merges 2x2 patches into one LLM token,
so each token covers 32x32 pixels after the processor's own resize ("smart resize":
both sides rounded to multiples of 32, total pixels kept within [min, max]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATCH_SIZE = 16
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 32 pixels per token side
DEFAULT_MIN_PIXELS = 65_536
DEFAULT_MAX_PIXELS = 16_777_216
MAX_ASPECT_RATIO = 200
# <|vision_start|> and <|vision_end|> wrap every image's pad tokens.
IMAGE_WRAPPER_TOKENS = 2


@dataclass(frozen=True)
class PixelBounds:
    """The processor's pixel range; an image is scaled into it before patching."""

    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS


def smart_resize(width: int, height: int, bounds: PixelBounds = PixelBounds()) -> tuple[int, int]:
    """The (width, height) the Qwen processor resizes an image to; multiples of 32."""
    if min(width, height) <= 0:
        raise ValueError("image sides must be positive")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio above {MAX_ASPECT_RATIO}")
    h_bar = round(height / FACTOR) * FACTOR
    w_bar = round(width / FACTOR) * FACTOR
    if h_bar * w_bar > bounds.max_pixels:
        beta = math.sqrt((height * width) / bounds.max_pixels)
        h_bar = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h_bar * w_bar < bounds.min_pixels:
        beta = math.sqrt(bounds.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / FACTOR) * FACTOR
        w_bar = math.ceil(width * beta / FACTOR) * FACTOR
    return w_bar, h_bar


def image_pad_tokens(width: int, height: int, bounds: PixelBounds = PixelBounds()) -> int:
    """``<|image_pad|>`` tokens the model sees for one image of this size."""
    resized_w, resized_h = smart_resize(width, height, bounds)
    return (resized_w // FACTOR) * (resized_h // FACTOR)


def image_prompt_tokens(width: int, height: int, bounds: PixelBounds = PixelBounds()) -> int:
    """All prompt tokens one image adds: its pad tokens plus the vision start/end markers."""
    return image_pad_tokens(width, height, bounds) + IMAGE_WRAPPER_TOKENS
