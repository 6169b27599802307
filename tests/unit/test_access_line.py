"""The access line: one JSON object per request, written field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from qwenvl_serve.access.logs import access_log_line


@pytest.mark.parametrize(
    ("key_name", "method", "rejection", "duration_s"),
    [
        ("tenant", "POST", None, 0.123456),
        ('a "quoted" \\ name', "GET", "rpm", 2.0),
        ("naïve-ключ-\u2028", "X" * 40, "auth", 0),
        ("", "OPTIONS", "", 1e-7),
    ],
)
def test_an_access_line_is_what_json_dumps_writes(key_name, method, rejection, duration_s):
    at = datetime(2026, 12, 4, 20, 41, 42, 648_123, tzinfo=UTC)
    fields = {
        "request_id": "0123456789abcdef",
        "key_name": key_name,
        "method": method,
        "route": "chat_completions",
        "status": 429,
        "prompt_tokens": 12,
        "completion_tokens": 0,
        "duration_s": duration_s,
        "rejection": rejection,
    }
    expected = {
        "time": "2026-12-04T20:41:42.648Z",
        "type": "access",
        "request_id": "0123456789abcdef",
        "key": key_name,
        "method": method[:16],
        "route": "chat_completions",
        "status": 429,
        "prompt_tokens": 12,
        "completion_tokens": 0,
        "duration_s": round(duration_s, 4),
        "rejection": rejection,
    }
    assert access_log_line(at=at, **fields) == json.dumps(expected)
