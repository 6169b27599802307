"""The chat-completions request the caption command sends, and reading the answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


def chat_request(
    model: str,
    prompt: str,
    image_urls: Sequence[str],
    max_tokens: int,
    temperature: float | None,
) -> dict[str, Any]:
    """An OpenAI chat-completions body: the images (or the video) first, then the prompt."""
    content: list[dict[str, Any]] = [_media_part(url) for url in image_urls]
    content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _media_part(url: str) -> dict[str, Any]:
    kind = "video" if url.startswith("data:video/") else "image"
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}}


@dataclass(frozen=True)
class Completion:
    """What the caption command keeps from a chat completion."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


class UnexpectedAnswerError(ValueError):
    """A 2xx answer that is not a chat completion."""


def parse_completion(body: object) -> Completion:
    """The caption, token counts and finish reason from a chat-completions answer.

    Each level's type is checked, since a server or proxy may answer with any JSON:
    what is not a chat completion raises :class:`UnexpectedAnswerError`, which the
    caller records as the image's error.
    """
    choice = _first_choice(body)
    message = choice.get("message") if choice is not None else None
    if choice is None or not isinstance(message, dict):
        raise UnexpectedAnswerError("the server's answer is not a chat completion")
    text = message.get("content")
    if not isinstance(text, str):
        raise UnexpectedAnswerError("the server's answer has no text")
    # Usage and the finish reason are extras: a wrong shape just leaves them empty.
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        usage = {}
    finish_reason = choice.get("finish_reason")
    return Completion(
        text=text.strip(),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
    )


def _first_choice(body: object) -> dict[str, Any] | None:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def model_ids(body: object) -> list[str]:
    """The model ids of a ``/v1/models`` answer, in its order."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    return [
        item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def error_summary(status: int, body_text: str) -> str:
    """``HTTP 400: <the server's message>``: the message from an OpenAI- or Google-style
    error body, else the status's reason phrase."""
    message = _server_message(body_text)
    if message is None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "unexpected status"
    return f"HTTP {status}: {message}"


def _server_message(body_text: str) -> str | None:
    try:
        body = json.loads(body_text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    for field in ("message", "detail"):  # other servers' shapes, e.g. FastAPI's 404
        if isinstance(body, dict) and isinstance(body.get(field), str):
            return str(body[field])
    return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
