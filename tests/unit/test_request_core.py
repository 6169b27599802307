"""The request core: each request body parsed once by our code, unchanged bodies sent
to vLLM byte for byte, and one error boundary that keeps the server serving."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from qwenvl_serve.access.logs import server_logger
from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.images import middleware as images_middleware
from qwenvl_serve.middleware import LAYER_ORDER, QwenVLServeMiddleware
from qwenvl_serve.sample_images import synthetic_jpeg
from tests.unit.request_core import whole_body

MODEL = "tiny"
MARKER = "a-prompt-marker-7f3a"
REAL_LOADS = json.loads  # the stand-in engine parses with this, so it is not counted
IMAGE_URL = "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(640, 480, 3)).decode()
ANSWER = json.dumps(
    {
        "id": "c1",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }
).encode()


class StubEngine:
    """Stands in for vLLM's app: keeps the raw bytes and scopes it gets, answers one JSON."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await whole_body(receive)
        self.bodies.append(body)
        self.scopes.append(scope)
        if MARKER.encode() + b"-engine-fails" in body:
            raise RuntimeError("engine internals: KeyError('secret')")
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})


def config():
    return resolve_config({"model": "m", "served_model_name": MODEL})


def stack(engine: StubEngine) -> QwenVLServeMiddleware:
    return QwenVLServeMiddleware(engine, config(), CollectorRegistry())


def chat(text: str = MARKER, image: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image:
        content.append({"type": "image_url", "image_url": {"url": IMAGE_URL}})
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}


FAMILIES = {
    "chat": ("/v1/chat/completions", chat()),
    "chat with an image": ("/v1/chat/completions", chat(image=True)),
    "completions": ("/v1/completions", {"model": MODEL, "prompt": MARKER, "max_tokens": 4}),
    "generateContent": (
        f"/v1beta/models/{MODEL}:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": MARKER}]}]},
    ),
    "streamGenerateContent": (
        f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": MARKER}]}]},
    ),
}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every argument our code hands to json.loads while the test runs."""
    seen: list[object] = []

    def counting(text: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(text)
        return REAL_LOADS(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    return seen


JSON_TYPE = {"content-type": "application/json"}


def holds_marker(text: object) -> bool:
    if isinstance(text, str):
        return MARKER in text
    return isinstance(text, bytes | bytearray) and MARKER.encode() in text


@pytest.mark.anyio
@pytest.mark.parametrize("family", list(FAMILIES))
async def test_each_request_body_is_parsed_exactly_once(family: str, parses: list[object]):
    path, document = FAMILIES[family]
    body = json.dumps(document).encode()
    engine = StubEngine()
    transport = httpx.ASGITransport(app=stack(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, content=body, headers=JSON_TYPE)
    assert response.status_code == 200
    assert len(engine.bodies) == 1
    request_parses = [text for text in parses if holds_marker(text)]
    assert request_parses == [body]  # once, the client's bytes; never a re-serialized copy


@pytest.mark.anyio
@pytest.mark.parametrize("family", ["chat", "chat with an image", "completions"])
async def test_an_unchanged_body_reaches_vllm_byte_for_byte(family: str):
    path, document = FAMILIES[family]
    # Odd spacing, key order and escapes that any re-serialization would change.
    body = json.dumps(document, indent=3, ensure_ascii=True).replace(MARKER, "\\u00e9 caf\\u00e9")
    engine = StubEngine()
    transport = httpx.ASGITransport(app=stack(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, content=body.encode(), headers=JSON_TYPE)
    assert response.status_code == 200
    assert engine.bodies == [body.encode()]
    assert dict(engine.scopes[0]["headers"])[b"content-length"] == str(len(body)).encode()


def test_the_layer_order_is_declared_once_with_a_reason_for_each():
    names = [name for name, _ in LAYER_ORDER]
    assert names[:2] == ["request id", "error boundary"]
    assert names.index("intake") < names.index("limits") < names.index("metering")
    assert names[-1] == "engine edge"
    assert all(reason for _, reason in LAYER_ORDER)


# -- the error boundary, over a real socket -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[int, StubEngine]]:
    """The whole stack around the stand-in engine, served by uvicorn on a loopback port."""
    engine = StubEngine()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            stack(engine), host="127.0.0.1", port=port, lifespan="off", log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        threading.Event().wait(0.01)
    try:
        yield port, engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def post(connection: http.client.HTTPConnection, path: str, document: object) -> tuple[int, Any]:
    body = json.dumps(document).encode()
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    return response.status, (REAL_LOADS(payload), dict(response.getheaders()))


@pytest.fixture
def layer_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test-only fault: the image layer raises on requests that carry the marker."""
    real = images_middleware.find_images  # type: ignore[attr-defined]

    def failing(document: Any, *args: Any, **kwargs: Any) -> Any:
        if MARKER + "-layer-fails" in json.dumps(document):
            raise RuntimeError("layer internals: /srv/secret/path")
        return real(document, *args, **kwargs)

    monkeypatch.setattr(images_middleware, "find_images", failing)


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("fault", ["layer", "engine"])
@pytest.mark.usefixtures("layer_fault")
def test_an_exception_is_a_500_in_the_route_format_and_the_connection_stays_usable(
    served: tuple[int, StubEngine], fault: str
):
    port, _ = served
    handler = RecordingHandler()
    server_logger().addHandler(handler)
    text = f"{MARKER}-{fault}-fails"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, (error, headers) = post(connection, "/v1/chat/completions", chat(text))
    first_socket = connection.sock
    assert status == 500
    request_id = headers["x-request-id"]
    assert error == {
        "error": {
            "message": f"The server failed to handle this request; request id {request_id}.",
            "type": "api_error",
            "param": None,
            "code": "internal_error",
        }
    }
    google_path = f"/v1beta/models/{MODEL}:generateContent"
    google = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    status, (google_error, _) = post(connection, google_path, google)
    assert status == 500
    assert set(google_error["error"]) == {"code", "message", "status"}
    assert google_error["error"]["status"] == "INTERNAL"
    assert "secret" not in json.dumps([error, google_error])
    # The same connection serves the next request.
    status, (answer, _) = post(connection, "/v1/chat/completions", chat())
    assert status == 200
    assert answer["usage"]["total_tokens"] == 8
    assert connection.sock is first_socket
    connection.close()
    server_logger().removeHandler(handler)
    # The traceback went to the server log, with the request id.
    failures = [record for record in handler.records if record.exc_info]
    assert request_id in failures[0].getMessage()
    assert "internals" in str(failures[0].exc_info[1])  # type: ignore[index]
