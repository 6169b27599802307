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
# Where vLLM's text-like parts keep their text (text, input_text, output_text,
# thinking, refusal).
_TEXT_KEYS = ("text", "thinking", "refusal")


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
    """Where a vision token appears in a chat body: ``messages[i]`` or a field name.

    A message is judged as the chat template renders it too: its text parts joined with
    nothing between them, so a token split across two adjacent parts is found.
    """
    for key, value in body.items():
        if key == "messages" and isinstance(value, list):
            for index, message in enumerate(value):
                if contains_vision_token(message) or contains_vision_token(_joined_text(message)):
                    return f"messages[{index}]"
        elif contains_vision_token(key) or contains_vision_token(value):
            return key
    return None


def _joined_text(message: object) -> str:
    """A message's text parts as the template concatenates them (a media part breaks
    the run: the vision block it becomes cannot complete a token)."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return ""
    return "".join(_text_of(part) for part in content)


def _text_of(part: object) -> str:
    """The text a part renders as (vLLM takes plain strings as text parts, and reads
    ``text``, ``thinking`` or ``refusal`` by type); a line break for anything else."""
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        for key in _TEXT_KEYS:
            value = part.get(key)
            if isinstance(value, str):
                return value
    return "\n"


def check_completion_request(body: dict[str, Any]) -> None:
    """Refuse a ``/v1/completions`` body whose prompt brings vision tokens, as text
    anywhere in the body or as token ids in ``prompt``."""
    location = vision_token_location(body)
    if location is not None:
        raise RefusalError(Reason.VISION_TOKEN, location)
    if _has_vision_token_id(body.get("prompt")):
        raise RefusalError(Reason.VISION_TOKEN, "prompt")


def _has_vision_token_id(prompt: object) -> bool:
    """True for a token-id prompt (``[int]`` or ``[[int]]``) holding a vision id, read
    as vLLM's pydantic reads ids: lax, so ``151652.0`` and ``"151652"`` are that id too."""
    if not isinstance(prompt, list) or all(isinstance(item, str) for item in prompt):
        return False  # a list of strings is a list of text prompts, checked as text
    for item in prompt:
        if _is_vision_id(item):
            return True
        token_list = isinstance(item, list) and not all(isinstance(i, str) for i in item)
        if token_list and any(_is_vision_id(i) for i in item):
            return True
    return False


def _is_vision_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in VISION_TOKEN_IDS
    if isinstance(value, float):
        return value.is_integer() and int(value) in VISION_TOKEN_IDS
    if isinstance(value, str):
        stripped = value.strip()
        return stripped.isdigit() and int(stripped) in VISION_TOKEN_IDS
    return False
