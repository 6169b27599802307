"""OpenAI chat completion answers and errors -> Google responses and errors."""

from __future__ import annotations

import json

import pytest

from qwenvl_serve.genai.response import (
    error_from_openai,
    google_finish_reason,
    google_response,
)

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "qwen3-vl-tiny",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "<html>布局</html>"},
            "finish_reason": "length",
        },
        {"index": 1, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 314, "completion_tokens": 64, "total_tokens": 378},
}


def test_a_completion_becomes_candidates_with_usage_metadata():
    assert google_response(COMPLETION) == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "<html>布局</html>"}]},
                "finishReason": "MAX_TOKENS",
                "index": 0,
            },
            {
                "content": {"role": "model", "parts": [{"text": "ok"}]},
                "finishReason": "STOP",
                "index": 1,
            },
        ],
        "usageMetadata": {
            "promptTokenCount": 314,
            "candidatesTokenCount": 64,
            "totalTokenCount": 378,
        },
        "modelVersion": "qwen3-vl-tiny",
        "responseId": "chatcmpl-1",
    }


def test_a_message_without_text_has_no_parts():
    completion = {
        "choices": [{"index": 0, "message": {"content": None}, "finish_reason": "tool_calls"}]
    }
    assert google_response(completion)["candidates"] == [
        {"content": {"role": "model", "parts": []}, "finishReason": "OTHER", "index": 0}
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "STOP"),
        ("length", "MAX_TOKENS"),
        ("abort", "OTHER"),
        ("content_filter", "OTHER"),
        (None, None),
    ],
)
def test_finish_reasons(reason, expected):
    assert google_finish_reason(reason) == expected


def test_client_errors_keep_the_inner_message_and_status():
    body = json.dumps(
        {"error": {"message": "Prompt too long.", "type": "BadRequestError", "code": 400}}
    )
    error = error_from_openai(400, json.loads(body))
    assert error.google_body() == {
        "error": {"code": 400, "message": "Prompt too long.", "status": "INVALID_ARGUMENT"}
    }


def test_rate_limits_map_to_resource_exhausted_with_a_fixed_message_when_none_is_given():
    assert error_from_openai(429, None).google_body() == {
        "error": {
            "code": 429,
            "message": "Too many requests; try again later.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }


def test_server_errors_never_pass_inner_text_on():
    body = json.dumps({"error": {"message": "Traceback: KeyError('x') at /srv/engine.py"}})
    error = error_from_openai(500, json.loads(body))
    assert error.status == 500
    assert "Traceback" not in error.message
    assert error.google_body()["error"]["status"] == "INTERNAL"  # type: ignore[index]
