"""Qwen's vision special tokens, which no client text or token list may carry.

The engine inserts these around and for every image itself; a prompt that brings its
own would make the placeholder count disagree with the images (or reach the vision
path with no image at all). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from qwenvl_serve.images.rejections import Reason, RefusalError

VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Their ids in the Qwen tokenizer, the same in Qwen2-VL, Qwen2.5-VL and Qwen3-VL
# (`vision_start_token_id` ... `video_token_id` in the models' configs).
VISION_TOKEN_IDS = frozenset(range(151652, 151657))


def contains_vision_token(value: object) -> bool:
    """True if any string (or key) anywhere in ``value`` holds a vision token."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            # A one-character search runs at memchr speed over a long data: URL (base64
            # holds no "<"); only a string with "<" is searched for the tokens.
            if "<" in item and any(token in item for token in VISION_TOKENS):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def vision_token_location(body: dict[str, Any]) -> str | None:
    """Where a vision token appears in a chat body: ``messages[i]`` or a field name."""
    for key, value in body.items():
        if key == "messages" and isinstance(value, list):
            for index, message in enumerate(value):
                if contains_vision_token(message):
                    return f"messages[{index}]"
        elif contains_vision_token(key) or contains_vision_token(value):
            return key
    return None


def check_completion_request(body: dict[str, Any]) -> None:
    """Refuse a ``/v1/completions`` body whose prompt brings vision tokens, as text
    anywhere in the body or as token ids in ``prompt``."""
    location = vision_token_location(body)
    if location is not None:
        raise RefusalError(Reason.VISION_TOKEN, location)
    if _has_vision_token_id(body.get("prompt")):
        raise RefusalError(Reason.VISION_TOKEN, "prompt")


def _has_vision_token_id(prompt: object) -> bool:
    """True for a token-id prompt (``[int]`` or ``[[int]]``) holding a vision id."""
    if not isinstance(prompt, list):
        return False
    for item in prompt:
        if type(item) is int and item in VISION_TOKEN_IDS:
            return True
        if isinstance(item, list) and any(type(i) is int and i in VISION_TOKEN_IDS for i in item):
            return True
    return False
