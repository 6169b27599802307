"""What metering and limits need from a request body. Pure functions on parsed JSON.

Reads only numbers, flags and the count of image parts: never prompt text or image
data. OpenAI bodies (chat and completions) and Google generateContent bodies are
both understood, since these layers sit outside the generateContent adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qwenvl_serve.routes import GENERATE_CONTENT


@dataclass(frozen=True)
class RequestFacts:
    """The parts of a request body that limits and metering use."""

    max_tokens: int = 0  # 0 when the request does not say
    images: int = 0
    stream: bool = False
    usage_requested: bool = False  # the client asked for a usage chunk in its stream


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (vLLM will say why)."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def request_facts(route: str, body: dict[str, Any] | None, path: str) -> RequestFacts:
    """Facts about a parsed request body sent to ``route``."""
    if body is None:
        return RequestFacts()
    if route == GENERATE_CONTENT:
        config = body.get("generationConfig")
        max_tokens = config.get("maxOutputTokens") if isinstance(config, dict) else None
        return RequestFacts(
            max_tokens=_count(max_tokens),
            images=_google_images(body.get("contents")),
            stream=path.endswith(":streamGenerateContent"),
        )
    options = body.get("stream_options")
    return RequestFacts(
        max_tokens=_count(body.get("max_completion_tokens", body.get("max_tokens"))),
        images=_openai_images(body.get("messages")),
        stream=body.get("stream") is True,
        usage_requested=isinstance(options, dict) and options.get("include_usage") is True,
    )


def with_usage_requested(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI streaming body that asks for the final usage chunk (and only that one)."""
    options = body.get("stream_options")
    kept = {
        name: value
        for name, value in (options.items() if isinstance(options, dict) else ())
        if name != "continuous_usage_stats"
    }
    return {**body, "stream_options": {**kept, "include_usage": True}}


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def _openai_images(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        1
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def _google_images(contents: object) -> int:
    if not isinstance(contents, list):
        return 0
    return sum(
        1
        for content in contents
        if isinstance(content, dict) and isinstance(content.get("parts"), list)
        for part in content["parts"]
        if isinstance(part, dict) and _is_google_image(part)
    )


def _is_google_image(part: dict[str, Any]) -> bool:
    for field in ("inlineData", "inline_data", "fileData", "file_data"):
        data = part.get(field)
        if isinstance(data, dict):
            mime = data.get("mimeType", data.get("mime_type", ""))
            return isinstance(mime, str) and mime.startswith("image/")
    return False
