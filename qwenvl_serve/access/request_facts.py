"""What metering and limits need from a request body. Pure functions on parsed JSON.

Reads only numbers, flags and the count of image parts: never prompt text or image
data. OpenAI bodies (chat and completions) and Google generateContent bodies are
both understood, since these layers sit outside the generateContent adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from qwenvl_serve.genai.fields import snake_case
from qwenvl_serve.images.chat_request import media_kind
from qwenvl_serve.routes import GENERATE_CONTENT

_T = TypeVar("_T")
# vLLM reads request fields with pydantic in lax mode ("stream": 1 and "true" both
# stream, "max_tokens": "64" is 64), so these facts are read the same way.
_FLAG = TypeAdapter(bool)
_COUNT = TypeAdapter(int)


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
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or absurdly nested
        return None
    return parsed if isinstance(parsed, dict) else None


def request_facts(route: str, body: dict[str, Any] | None, path: str) -> RequestFacts:
    """Facts about a parsed request body sent to ``route``."""
    if body is None:
        return RequestFacts()
    if route == GENERATE_CONTENT:
        config = _snake_keys(_snake_keys(body).get("generation_config"))
        return RequestFacts(
            max_tokens=_count(config.get("max_output_tokens")),
            images=_google_images(_snake_keys(body).get("contents")),
            stream=path.endswith(":streamGenerateContent"),
        )
    options = body.get("stream_options")
    limit = body.get("max_completion_tokens")
    return RequestFacts(
        max_tokens=_count(body.get("max_tokens") if limit is None else limit),
        images=_openai_images(body.get("messages")),
        stream=_lax(_FLAG, body.get("stream"), False),
        usage_requested=isinstance(options, dict)
        and _lax(_FLAG, options.get("include_usage"), False),
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


def _lax(adapter: TypeAdapter[_T], value: object, default: _T) -> _T:
    """``value`` as vLLM's request models read it; ``default`` when they would refuse
    it (vLLM then answers 400 itself) or it is absent."""
    if value is None:
        return default
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return default


def _count(value: object) -> int:
    return max(0, _lax(_COUNT, value, 0))


def _snake_keys(value: object) -> dict[str, Any]:
    """A Google object's members under their snake_case names ({} if not an object)."""
    return (
        {snake_case(key): member for key, member in value.items()}
        if isinstance(value, dict)
        else {}
    )


def _openai_images(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        1
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and media_kind(part) == "image"
    )


def _google_images(contents: object) -> int:
    if not isinstance(contents, list):
        return 0
    return sum(
        1
        for content in contents
        for part in _object_list(_snake_keys(content).get("parts"))
        if _is_google_image(_snake_keys(part))
    )


def _is_google_image(part: dict[str, Any]) -> bool:
    """An image part as the adapter reads it: inline data of an image type, or a file
    URI of an image type or of none (the image layer then checks the bytes)."""
    for field in ("inline_data", "file_data"):
        if field in part:
            mime = _snake_keys(part[field]).get("mime_type")
            if mime is None:
                return field == "file_data"
            return isinstance(mime, str) and mime.startswith("image/")
    return False


def _object_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
