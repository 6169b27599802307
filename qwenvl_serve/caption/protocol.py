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
    """An OpenAI chat-completions body: the images first, then the prompt."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": url}} for url in image_urls
    ]
    content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    if temperature is not None:
        body["temperature"] = temperature
    return body


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
    """The caption, token counts and finish reason from a chat-completions answer."""
    try:
        choice = body["choices"][0]  # type: ignore[index]
        text = choice["message"]["content"]
        usage = body.get("usage") or {}  # type: ignore[attr-defined]
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UnexpectedAnswerError("the server's answer is not a chat completion") from exc
    if not isinstance(text, str):
        raise UnexpectedAnswerError("the server's answer has no text")
    return Completion(
        text=text.strip(),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        finish_reason=choice.get("finish_reason"),
    )


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
