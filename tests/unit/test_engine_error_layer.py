"""The whole stack rewrites vLLM's error answers, JSON, text or mid-stream, in the route's
format; successful answers pass byte for byte. (The real engine's own errors are in
tests/e2e/test_engine_errors.py.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.middleware import QwenVLServeMiddleware
from tests.unit.request_core import whole_body

MODEL = "tiny"
DUMP = (
    "1 validation error:\n  {'type': 'float_parsing', 'loc': 'body.temperature', 'msg': "
    "'Input should be a valid number', 'input': 'hot'}"
)
OK = b'{"id":"c1","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}]}'


class ErringEngine:
    """Stands in for vLLM's app: answers as the request's ``user`` field says."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "OPTIONS":
            await self._answer(send, 400, b"Disallowed CORS origin", b"text/plain; charset=utf-8")
            return
        document = json.loads(await whole_body(receive))
        behaviour = document.get("user", "")
        if behaviour == "pydantic":
            body = {"error": {"message": DUMP, "type": "Bad Request", "param": "body.temperature"}}
            await self._answer(send, 400, json.dumps(body).encode())
        elif behaviour == "plain-500":
            await self._answer(send, 500, b"Internal Server Error", b"text/plain; charset=utf-8")
        elif behaviour == "stream-error":
            start = b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
            error = {"error": {"message": "Internal server error", "type": "X", "code": 500}}
            events = [start, b"data: " + json.dumps(error).encode() + b"\n\n", b"data: [DONE]\n\n"]
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await self._answer(send, 200, OK)

    @staticmethod
    async def _answer(
        send: Send, status: int, body: bytes, content_type: bytes = b"application/json"
    ) -> None:
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def client() -> httpx.AsyncClient:
    config = resolve_config({"model": "m", "served_model_name": MODEL})
    app = QwenVLServeMiddleware(ErringEngine(), config, CollectorRegistry())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def chat(user: str, **fields: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    return {"model": MODEL, "messages": messages, "max_tokens": 2, "user": user, **fields}


@pytest.mark.anyio
async def test_a_pydantic_dump_becomes_one_sentence_naming_the_field():
    async with client() as http:
        response = await http.post("/v1/chat/completions", json=chat("pydantic"))
    assert response.status_code == 400
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json() == {
        "error": {
            "message": "temperature must be a number.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }


@pytest.mark.anyio
async def test_a_plain_text_500_becomes_json_with_the_request_id():
    async with client() as http:
        response = await http.post(
            "/v1/chat/completions", json=chat("plain-500"), headers={"x-request-id": "trace-1"}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "engine_error"
    assert "trace-1" in error["message"]


@pytest.mark.anyio
async def test_an_error_event_in_a_stream_is_rewritten_and_the_rest_passes():
    async with client() as http:
        response = await http.post("/v1/chat/completions", json=chat("stream-error", stream=True))
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert json.loads(events[0])["choices"][0]["delta"] == {"role": "assistant"}
    error = json.loads(events[1])["error"]
    assert (error["code"], error["type"]) == ("engine_error", "api_error")
    assert events[2] == "[DONE]"


@pytest.mark.anyio
async def test_a_refused_cors_preflight_is_json_in_the_route_s_format():
    headers = {"origin": "http://elsewhere", "access-control-request-method": "POST"}
    async with client() as http:
        openai = await http.options("/v1/chat/completions", headers=headers)
        google_format = await http.options(
            f"/v1beta/models/{MODEL}:generateContent", headers=headers
        )
    assert openai.status_code == google_format.status_code == 400
    assert openai.json()["error"]["code"] == "cors_not_allowed"
    assert google_format.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.anyio
async def test_successful_answers_pass_byte_for_byte():
    async with client() as http:
        response = await http.post("/v1/chat/completions", json=chat("ok"))
    assert response.status_code == 200
    assert response.content == OK


@pytest.mark.anyio
async def test_a_body_not_declared_as_json_gets_415_before_any_work():
    async with client() as http:
        response = await http.post(
            "/v1/chat/completions",
            content=json.dumps(chat("ok")).encode(),
            headers={"content-type": "text/plain"},
        )
        missing = await http.post("/v1/completions", content=b'{"prompt": "x"}')
        with_charset = await http.post(
            "/v1/chat/completions",
            content=json.dumps(chat("ok")).encode(),
            headers={"content-type": "Application/JSON; charset=utf-8"},
        )
    assert (response.status_code, missing.status_code) == (415, 415)
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert with_charset.status_code == 200  # vLLM's own test: lowercased, before any ';'
