"""OpenAI chat completions answers -> Google ``GenerateContentResponse`` objects and errors.

Pure: takes the parsed JSON the chat completions route produced and returns the JSON a
Google client expects. Streaming chunks are translated by :mod:`qwenvl_serve.genai.stream`
with the same building blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwenvl_serve.api_errors import OPENAI_TYPE, ApiError

JsonObject = dict[str, Any]

_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS"}
_FALLBACK_MESSAGES = {
    400: "The request is invalid.",
    401: "The request is not authenticated.",
    403: "The request is not allowed.",
    404: "Not found.",
    413: "The request is too large.",
    429: "Too many requests; try again later.",
    503: "The model server is not ready; try again later.",
}
_SERVER_FAILURE = "The model server could not complete the request."


def google_finish_reason(reason: object) -> str | None:
    """stop -> STOP, length -> MAX_TOKENS, any other reason -> OTHER; None while unfinished."""
    if reason is None:
        return None
    return _FINISH_REASONS.get(str(reason), "OTHER")


def usage_metadata(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI ``usage`` -> Google ``usageMetadata``."""
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = usage.get("total_tokens")
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": int(total) if total is not None else prompt + completion,
    }


def candidate(index: int, text: str | None, finish_reason: str | None) -> JsonObject:
    """One Google candidate; ``text`` None gives a content without parts."""
    result: JsonObject = {
        "content": {"role": "model", "parts": [] if text is None else [{"text": text}]},
        "index": index,
    }
    if finish_reason is not None:
        result["finishReason"] = finish_reason
    return result


def response_identity(chat: Mapping[str, Any]) -> JsonObject:
    """``modelVersion`` and ``responseId`` from a response or chunk's ``model`` and ``id``."""
    identity: JsonObject = {}
    if isinstance(chat.get("model"), str):
        identity["modelVersion"] = chat["model"]
    if isinstance(chat.get("id"), str):
        identity["responseId"] = chat["id"]
    return identity


def google_response(chat: Mapping[str, Any]) -> JsonObject:
    """A complete (non-streaming) chat completion -> a ``GenerateContentResponse``."""
    candidates = []
    for position, choice in enumerate(chat.get("choices") or []):
        message = choice.get("message") or {}
        content = message.get("content")
        candidates.append(
            candidate(
                int(choice.get("index", position)),
                content if isinstance(content, str) else None,
                google_finish_reason(choice.get("finish_reason")),
            )
        )
    response: JsonObject = {"candidates": candidates}
    usage = chat.get("usage")
    if isinstance(usage, Mapping):
        response["usageMetadata"] = usage_metadata(usage)
    response.update(response_identity(chat))
    return response


def error_from_openai(status: int, document: object) -> ApiError:
    """An error answer of the chat completions route (its parsed body), as the same
    error for Google clients.

    Client errors keep the inner message (it tells the caller what to fix); server
    errors get a fixed message, since theirs may carry internals.
    """
    if status >= 500:
        return ApiError(status, _SERVER_FAILURE)
    message = openai_error_message(document)
    return ApiError(status, message or _FALLBACK_MESSAGES.get(status, "The request failed."))


def openai_error_message(parsed: object) -> str | None:
    """``error.message`` of a parsed OpenAI error body, if it has one."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else None


def error_from_openai_chunk(error: Mapping[str, Any]) -> ApiError:
    """An ``{"error": ...}`` event in an OpenAI stream, as a Google error."""
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else _status_of(error.get("type"))
    return error_from_openai(status, {"error": error})


def _status_of(openai_type: object) -> int:
    """The status an OpenAI error ``type`` stands for (its lowest); 500 when unknown."""
    statuses = [status for status, name in OPENAI_TYPE.items() if name == openai_type]
    return min(statuses, default=500)
