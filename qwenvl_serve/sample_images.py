"""Synthetic photo-like test images: gradients, shapes, texture and noise, not flat colour.

Flat images compress to almost nothing and decode unrealistically fast, so benchmarks
and tests use these instead. Deterministic for a given seed.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFilter


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with a sky-like gradient, overlapping shapes, texture and sensor noise."""
    rng = random.Random(seed)  # noqa: S311 - test pictures, not secrets
    gradient = Image.linear_gradient("L").resize((width, height))
    sky = Image.merge(
        "RGB",
        (
            gradient.point(lambda v: 40 + v // 3),
            gradient.point(lambda v: 90 + v // 4),
            gradient.point(lambda v: 200 - v // 3),
        ),
    )
    draw = ImageDraw.Draw(sky)
    for _ in range(24):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = x0 + rng.randrange(width // 10 + 1, width // 3 + 2)
        y1 = y0 + rng.randrange(height // 10 + 1, height // 3 + 2)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour, outline=(20, 20, 20), width=max(1, width // 400))
    sky = sky.filter(ImageFilter.GaussianBlur(radius=max(1, width // 800)))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(sky, noise, 0.12)


def synthetic_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """JPEG bytes of :func:`synthetic_photo`."""
    buffer = io.BytesIO()
    synthetic_photo(width, height, seed).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def progressive_scan_bomb(repeats: int, side: int = 64) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times: a few kilobytes
    that cost a decoder one full pass per repeat (for tests and the soak)."""
    buffer = io.BytesIO()
    synthetic_photo(side, side, seed=5).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * repeats + b"\xff\xd9"
