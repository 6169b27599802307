"""The generateContent family (intake -> engine edge) around a small inner chat app."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.core.engine_edge import EngineEdgeMiddleware
from qwenvl_serve.core.families import families_from_config
from qwenvl_serve.core.intake import IntakeMiddleware
from qwenvl_serve.middleware import QwenVLServeMiddleware

pytestmark = pytest.mark.anyio
MODEL = "qwen3-vl-tiny"
COMPLETION = {
    "id": "chatcmpl-1",
    "model": MODEL,
    "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
BODY = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def chunk(text: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": reason}],
    }


STREAM_EVENTS = [
    chunk("a"),
    chunk("b"),
    chunk("c", "length"),
    {"id": "chatcmpl-2", "model": MODEL, "choices": [], "usage": COMPLETION["usage"]},
]


@dataclass
class ChatApp:
    """Stands in for the chat completions route: records what it got, answers as told."""

    status: int = 200
    answer: object = field(default_factory=lambda: COMPLETION)
    stream_events: list[dict[str, Any]] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    scopes: list[Scope] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        if scope["method"] == "OPTIONS":  # vLLM's CORS layer answers a preflight
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        message = await receive()
        self.bodies.append(json.loads(message["body"]))
        scope.setdefault("state", {})["seen_by_inner"] = True
        if self.stream_events is not None:
            await self._stream(send)
            return
        payload = json.dumps(self.answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _stream(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        assert self.stream_events is not None
        for event in self.stream_events:
            data = f"data: {json.dumps(event)}\n\n".encode()
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def config_with(aliases: list[str] | None = None):
    return resolve_config(
        {
            "model": "m",
            "served_model_name": MODEL,
            "generate_content": {"model_aliases": aliases or []},
        }
    )


def layer(inner: ChatApp, aliases: list[str] | None = None) -> IntakeMiddleware:
    families = families_from_config(config_with(aliases))
    return IntakeMiddleware(EngineEdgeMiddleware(inner), families, max_body_bytes=1 << 20)


async def post(
    app: object, path: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        json_type = {"content-type": "application/json"}
        return await client.post(path, content=content, headers={**json_type, **(headers or {})})


async def test_generate_content_calls_the_chat_route_in_process_and_translates_back():
    inner = ChatApp()
    response = await post(
        layer(inner),
        f"/v1beta/models/{MODEL}:generateContent?key=secret",
        BODY,
        {"x-goog-api-key": "secret", "x-request-id": "req-1", "authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hi"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
        "modelVersion": MODEL,
        "responseId": "chatcmpl-1",
    }
    [scope] = inner.scopes
    assert (scope["method"], scope["path"], scope["query_string"]) == (
        "POST",
        "/v1/chat/completions",
        b"",
    )
    headers = dict(scope["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"req-1"
    compact = json.dumps(inner.bodies[0], separators=(",", ":")).encode()
    assert int(headers[b"content-length"]) == len(compact)
    assert b"x-goog-api-key" not in headers
    assert b"authorization" not in headers
    assert inner.bodies == [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        }
    ]


async def test_v1_path_and_aliases_reach_the_served_model():
    inner = ChatApp()
    response = await post(
        layer(inner, ["gemini-2.5-flash"]), "/v1/models/gemini-2.5-flash:generateContent", BODY
    )
    assert response.status_code == 200
    assert inner.bodies[0]["model"] == MODEL


async def test_an_unknown_model_is_404_in_google_format_and_never_reaches_the_engine():
    inner = ChatApp()
    response = await post(layer(inner), "/v1beta/models/gemini-pro:generateContent", BODY)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": f"Model not found; this server serves {MODEL}.",
            "status": "NOT_FOUND",
        }
    }
    assert inner.scopes == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The request body is not a valid JSON object."),
        (b"[" * 5000 + b"]" * 5000, "The request body is not a valid JSON object."),
        ({**BODY, "safetySettings": []}, "safetySettings is not supported by this server."),
    ],
)
async def test_refused_requests_are_400_in_google_format(body, message):
    inner = ChatApp()
    response = await post(layer(inner), f"/v1beta/models/{MODEL}:generateContent", body)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    }
    assert inner.scopes == []


async def test_a_deeply_nested_schema_is_400_not_a_crash():
    schema: dict[str, Any] = {"type": "STRING"}
    for _ in range(900):
        schema = {"type": "ARRAY", "items": schema}
    body = {
        **BODY,
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    response = await post(layer(ChatApp()), f"/v1beta/models/{MODEL}:generateContent", body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is nested too deeply."


async def test_in_the_stack_get_is_405_and_a_cors_preflight_reaches_the_cors_layer():
    from prometheus_client import CollectorRegistry

    inner = ChatApp()
    app = QwenVLServeMiddleware(inner, config_with(), CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    path = f"/v1beta/models/{MODEL}:generateContent"
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)
        preflight = await client.options(
            path,
            headers={"Origin": "http://page.test", "Access-Control-Request-Method": "POST"},
        )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == 405
    # The preflight went on to vLLM's app (here the stand-in), as on the OpenAI routes.
    assert [scope["method"] for scope in inner.scopes] == ["OPTIONS"]
    assert preflight.status_code == 200


async def test_inner_errors_come_back_in_google_format_with_their_status_and_headers():
    inner = ChatApp(
        status=400,
        answer={"error": {"message": "Image too large.", "type": "invalid_request_error"}},
        headers=[(b"retry-after", b"3")],
    )
    response = await post(layer(inner), f"/v1beta/models/{MODEL}:generateContent", BODY)
    assert response.status_code == 400
    assert response.headers["retry-after"] == "3"
    assert response.json() == {
        "error": {"code": 400, "message": "Image too large.", "status": "INVALID_ARGUMENT"}
    }


async def test_streaming_with_alt_sse_sends_each_event_as_it_comes():
    inner = ChatApp(stream_events=STREAM_EVENTS)
    sent: list[Message] = []
    request = json.dumps(BODY).encode()
    messages = iter([{"type": "http.request", "body": request, "more_body": False}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    state: dict[str, object] = {}
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1beta/models/{MODEL}:streamGenerateContent",
        "raw_path": b"",
        "query_string": b"alt=sse",
        "headers": [],
        "state": state,
    }
    await layer(inner)(scope, receive, send)
    assert inner.bodies[0]["stream"] is True
    assert inner.bodies[0]["stream_options"] == {"include_usage": True}
    start, *bodies = sent
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream") in start["headers"]
    payloads = [m["body"] for m in bodies if m["body"]]
    assert len(payloads) >= 3  # one event per text chunk, not one buffered blob
    assert bodies[-1].get("more_body") is False
    events = [
        json.loads(e[len("data: ") :]) for e in b"".join(payloads).decode().split("\n\n") if e
    ]
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == ["a", "b", "c"]
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert events[-1]["usageMetadata"] == {
        "promptTokenCount": 5,
        "candidatesTokenCount": 1,
        "totalTokenCount": 6,
    }
    assert state["seen_by_inner"] is True  # state is shared with inner layers


async def test_streaming_errors_before_the_stream_are_plain_google_errors():
    inner = ChatApp(status=400, answer={"error": {"message": "Bad temperature.", "code": 400}})
    response = await post(layer(inner), f"/v1/models/{MODEL}:streamGenerateContent?alt=sse", BODY)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {
        "code": 400,
        "message": "Bad temperature.",
        "status": "INVALID_ARGUMENT",
    }


async def test_streaming_without_alt_sse_is_a_json_array():
    inner = ChatApp(stream_events=STREAM_EVENTS)
    response = await post(layer(inner), f"/v1beta/models/{MODEL}:streamGenerateContent", BODY)
    assert response.headers["content-type"] == "application/json"
    events = response.json()
    assert len(events) == 3
    assert events[-1]["usageMetadata"]["totalTokenCount"] == 6


async def test_other_paths_and_other_scope_types_pass_through_untouched():
    inner = ChatApp()
    chat = {"model": MODEL, "messages": []}
    response = await post(layer(inner), "/v1/chat/completions", chat)
    assert response.json() == COMPLETION
    assert inner.bodies == [chat]
    lifespan = {"type": "lifespan", "state": {}}

    async def never() -> Message:
        raise AssertionError

    async def ignore(message: Message) -> None:
        raise AssertionError

    await layer(inner)(lifespan, never, ignore)
    assert inner.scopes[-1] is lifespan


async def test_a_client_that_leaves_before_its_body_gets_nothing():
    inner = ChatApp()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1beta/models/{MODEL}:generateContent",
        "query_string": b"",
        "headers": [],
    }
    await layer(inner)(scope, receive, send)
    assert sent == []
    assert inner.scopes == []
