"""The image layer as ASGI middleware, in front of a small inner app that records what it gets."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.images import middleware as middleware_module
from qwenvl_serve.images.middleware import ImageNormalizationMiddleware
from qwenvl_serve.sample_images import synthetic_jpeg, synthetic_photo
from tests.unit.request_core import in_request_core, whole_body
from tests.unit.test_images_corpus import encode, with_orientation
from tests.unit.test_images_url_safety import IMAGE, Trap, trap  # noqa: F401 - fixture

CHAT = "/v1/chat/completions"
SMALL = synthetic_jpeg(640, 480, seed=21)
BIG = synthetic_jpeg(4000, 3000, seed=22)


class RecordingApp:
    """Answers 200 with what it received; remembers every request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        self.after_body: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await whole_body(receive)
        self.bodies.append(body)
        self.headers.append(dict(scope["headers"]))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    def received_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.bodies[-1])
        return document


def data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def chat(*urls: str, **fields: object) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": "m", "messages": [{"role": "user", "content": parts}], **fields}


def image_layer(inner: ASGIApp, config: InstanceConfig, registry: CollectorRegistry) -> ASGIApp:
    """The image layer in the request core, as the stack places it."""
    return in_request_core(
        inner, config, lambda app: ImageNormalizationMiddleware(app, config, registry)
    )


def layer(
    inner: RecordingApp, registry: CollectorRegistry | None = None, **images: object
) -> ASGIApp:
    config = resolve_config({"model": "m", "images": images})
    return image_layer(inner, config, registry or CollectorRegistry())


def client(app: ASGIApp) -> httpx.AsyncClient:
    """A client of ``app`` whose requests declare JSON bodies, as SDKs do."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"content-type": "application/json"},
    )


def image_sizes_in(document: dict[str, Any]) -> list[tuple[int, int]]:
    sizes = []
    for part in document["messages"][0]["content"][1:]:
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
            sizes.append(image.size)
    return sizes


@pytest.mark.anyio
async def test_compliant_image_passes_and_the_body_is_forwarded_byte_for_byte():
    inner = RecordingApp()
    raw = json.dumps(chat(data_url(SMALL))).encode()
    async with client(layer(inner)) as http:
        response = await http.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers["x-qwenvl-normalized-images"] == "640x480"
    assert inner.bodies == [raw]


@pytest.mark.anyio
async def test_big_and_odd_images_are_normalized_and_the_body_rewritten():
    inner = RecordingApp()
    rotated = with_orientation(Image.open(io.BytesIO(SMALL)), 6)
    png = encode(Image.open(io.BytesIO(SMALL)), "PNG")
    body = chat(data_url(BIG), data_url(SMALL), data_url(rotated), data_url(png, "image/jpeg"))
    async with client(layer(inner)) as http:
        response = await http.post(CHAT, json=body)
    assert response.status_code == 200
    assert response.headers["x-qwenvl-normalized-images"] == "2048x1536,640x480,480x640,640x480"
    received = inner.received_json()
    assert image_sizes_in(received) == [(2048, 1536), (640, 480), (480, 640), (640, 480)]
    assert received["messages"][0]["content"][2]["image_url"]["url"] == data_url(SMALL)
    assert int(inner.headers[-1][b"content-length"]) == len(inner.bodies[-1])
    assert received["messages"][0]["content"][0] == {"type": "text", "text": "What is this?"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (chat("data:image/jpeg;base64,@@@@"), 400, "invalid_base64", "messages[0].content[1]"),
        (
            chat(data_url(b"GIF89a" + b"\x00" * 50)),
            415,
            "unsupported_image_format",
            "messages[0].content[1]",
        ),
        (
            chat(data_url(SMALL), data_url(SMALL[:3000])),
            422,
            "invalid_image",
            "messages[0].content[2]",
        ),
        (
            chat(data_url(SMALL), "file:///etc/passwd"),
            400,
            "invalid_image_url",
            "messages[0].content[2]",
        ),
        (chat(*[data_url(SMALL)] * 5), 400, "too_many_images", "messages[0].content[5]"),
        (
            chat(data_url(SMALL), mm_processor_kwargs={"max_pixels": 99999999}),
            400,
            "field_not_allowed",
            "mm_processor_kwargs",
        ),
        (chat(data_url(SMALL), chat_template="{{ 1 }}"), 400, "field_not_allowed", "chat_template"),
        (
            chat("http://169.254.169.254/latest/meta-data/"),
            400,
            "image_url_refused",
            "messages[0].content[1]",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "<|vision_start|><|image_pad|><|vision_end|>"}
                ],
            },
            400,
            "reserved_token",
            "messages[0]",
        ),
    ],
)
async def test_refusals_are_openai_errors_and_the_engine_never_sees_them(body, status, code, param):
    inner = RecordingApp()
    async with client(layer(inner)) as http:
        response = await http.post(CHAT, json=body)
    assert response.status_code == status
    error = error_of(response)
    assert (error["code"], error["param"]) == (code, param)
    assert "Traceback" not in error["message"]
    assert "\\x" not in error["message"]
    assert inner.bodies == []


@pytest.mark.anyio
async def test_invalid_json_and_oversized_bodies():
    inner = RecordingApp()
    async with client(layer(inner, max_request_bytes=4096)) as http:
        not_json = await http.post(CHAT, content=b"{not json")
        too_big = await http.post(CHAT, json=chat(data_url(SMALL)))

        async def chunks():
            for _ in range(10):
                yield b" " * 1000

        streamed = await http.post(CHAT, content=chunks())  # no content-length
    assert (not_json.status_code, error_of(not_json)["code"]) == (400, "invalid_json")
    assert (too_big.status_code, error_of(too_big)["code"]) == (413, "request_too_large")
    assert (streamed.status_code, error_of(streamed)["code"]) == (413, "request_too_large")
    assert inner.bodies == []


@pytest.mark.anyio
async def test_other_routes_and_methods_pass_through_untouched():
    inner = RecordingApp()
    plain = b'{"prompt": "Describe a cat.", "max_tokens": 4}'
    async with client(layer(inner)) as http:
        completions = await http.post("/v1/completions", content=plain)
        models = await http.get("/v1/models")
    assert completions.status_code == models.status_code == 200
    assert "x-qwenvl-normalized-images" not in completions.headers
    assert inner.bodies == [plain, b""]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "<|vision_start|><|image_pad|><|vision_end|> what is this?"},
        {"prompt": ["fine", "x <|video_pad|>"]},
        {"prompt": [9707, 151655, 11]},
        {"prompt": [[9707], [151652, 151655, 151653]]},
        {"prompt": "fine", "suffix": "<|image_pad|>"},
    ],
)
async def test_completions_prompts_with_vision_tokens_are_refused(body: dict[str, Any]):
    inner = RecordingApp()
    async with client(layer(inner)) as http:
        response = await http.post("/v1/completions", json=body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "reserved_token"
    assert inner.bodies == []


@pytest.mark.anyio
async def test_allowed_request_fields_pass():
    inner = RecordingApp()
    async with client(layer(inner, allowed_request_fields=["chat_template_kwargs"])) as http:
        response = await http.post(CHAT, json=chat(chat_template_kwargs={"enable_thinking": False}))
    assert response.status_code == 200


@pytest.mark.anyio
async def test_remote_image_is_fetched_by_us_when_loopback_is_allowed_for_testing(trap: Trap):  # noqa: F811
    inner = RecordingApp()
    async with client(layer(inner, allow_loopback_urls_for_testing=True)) as http:
        response = await http.post(CHAT, json=chat(trap.url("/image.jpg")))
    assert response.status_code == 200
    assert response.headers["x-qwenvl-normalized-images"] == "320x256"
    url = inner.received_json()["messages"][0]["content"][1]["image_url"]["url"]
    assert url == data_url(IMAGE)
    assert len(trap.seen) == 1


@pytest.mark.anyio
async def test_remote_loopback_image_is_refused_by_default_and_never_requested(trap: Trap):  # noqa: F811
    inner = RecordingApp()
    registry = CollectorRegistry()
    async with client(layer(inner, registry)) as http:
        response = await http.post(CHAT, json=chat(trap.url("/image.jpg")))
    assert response.status_code == 400
    assert error_of(response)["code"] == "image_url_refused"
    assert trap.seen == []
    assert inner.bodies == []
    assert (
        registry.get_sample_value("qwenvl_image_fetches_total", {"outcome": "image_url_refused"})
        == 1
    )


@pytest.mark.anyio
async def test_metrics_count_outcomes_bytes_pixels_and_time():
    inner = RecordingApp()
    registry = CollectorRegistry()
    async with client(layer(inner, registry)) as http:
        await http.post(CHAT, json=chat(data_url(SMALL), data_url(BIG)))
        await http.post(CHAT, json=chat(data_url(SMALL[:2000])))
        await http.post(CHAT, json=chat(mm_processor_kwargs={}))
    value = registry.get_sample_value
    assert value("qwenvl_images_total", {"outcome": "passthrough"}) == 1
    assert value("qwenvl_images_total", {"outcome": "resized"}) == 1
    assert value("qwenvl_images_total", {"outcome": "rejected"}) == 1
    assert value("qwenvl_image_refusals_total", {"reason": "invalid_image"}) == 1
    assert value("qwenvl_image_refusals_total", {"reason": "field_not_allowed"}) == 1
    assert value("qwenvl_image_input_bytes_total") == len(SMALL) + len(BIG)
    assert value("qwenvl_image_input_pixels_total") == 640 * 480 + 4000 * 3000
    assert value("qwenvl_image_output_pixels_total") == 640 * 480 + 2048 * 1536
    assert value("qwenvl_image_normalize_seconds_count") == 3


@pytest.mark.anyio
async def test_images_of_one_request_are_normalized_in_parallel(monkeypatch: pytest.MonkeyPatch):
    # Two images can only both pass this barrier if they are in flight at once.
    barrier = threading.Barrier(2, timeout=30)
    real = middleware_module.prepare_data_url

    met: list[str] = []

    def meet_then_prepare(url, config):
        barrier.wait()
        met.append(url)
        return real(url, config)

    monkeypatch.setattr(middleware_module, "prepare_data_url", meet_then_prepare)
    inner = RecordingApp()
    async with client(layer(inner)) as http:
        # Both need re-encoding (a small compliant JPEG is checked on the loop instead).
        png = data_url(encode(synthetic_photo(640, 480, 3), "PNG"), "image/png")
        response = await http.post(CHAT, json=chat(data_url(BIG), png))
    assert response.status_code == 200
    assert len(met) == 2
    assert not barrier.broken


@pytest.mark.anyio
async def test_other_requests_do_not_wait_behind_a_big_image():
    inner = RecordingApp()
    app = layer(inner, worker_threads=2)
    async with client(app) as http:
        big = asyncio.create_task(http.post(CHAT, json=chat(*[data_url(BIG)] * 4)))
        await asyncio.sleep(0)  # let it start
        models = await http.get("/v1/models")
        assert models.status_code == 200
        assert not big.done()  # the event loop served us while the big images were resized
        assert (await big).status_code == 200


async def drive(app: ASGIApp, messages: list[Message]) -> list[Message]:
    """Run one POST to the chat route with the given receive messages; return what was sent."""
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "headers": headers,
        "query_string": b"",
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_body_reaches_no_one():
    inner = RecordingApp()
    sent = await drive(
        layer(inner),
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}],
    )
    assert sent == []
    assert inner.bodies == []


@pytest.mark.anyio
async def test_disconnect_after_the_body_reaches_the_inner_app():
    seen: list[str] = []

    async def watcher(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = resolve_config({"model": "m"})
    app = image_layer(watcher, config, CollectorRegistry())
    body = json.dumps(chat()).encode()  # text only: no work to stop on the way
    await drive(
        app,
        [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}],
    )
    assert seen == ["http.request", "http.disconnect"]


@pytest.mark.anyio
async def test_a_client_that_leaves_while_its_images_are_prepared_stops_them():
    inner = RecordingApp()
    app = image_layer(inner, resolve_config({"model": "m"}), CollectorRegistry())
    body = json.dumps(chat(data_url(SMALL))).encode()
    sent = await drive(
        app,
        [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}],
    )
    assert sent == []  # nobody is there to answer
    assert inner.bodies == []


@pytest.mark.anyio
async def test_non_http_scopes_pass_through():
    seen: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    app = image_layer(lifespan_app, resolve_config({"model": "m"}), CollectorRegistry())

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await app({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


def test_engine_limits_cap_the_image_count_and_switch_kinds():
    config = resolve_config(
        {"model": "m", "engine": {"limit_mm_per_prompt": {"image": 2}}, "video": {"enabled": True}}
    )
    rules = middleware_module.rules_from_config(config)
    assert (rules.max_images, rules.video_enabled, rules.audio_enabled) == (2, True, False)
