"""The access layers in the real stack, in front of a small stand-in for vLLM's app."""

import asyncio
import base64
import hashlib
import io
import json
import logging
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.auth import AuthMiddleware
from qwenvl_serve.access.limits import LimitsMiddleware
from qwenvl_serve.access.metering import MeteringMiddleware
from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.middleware import QwenVLServeMiddleware
from qwenvl_serve.middleware.observe import ObserveMiddleware
from tests.unit.request_core import in_request_core, whole_body

ALPHA = "alpha-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"
SCRAPER = "scraper-token-0123456789"
MODEL = "tiny"
PROMPT_TEXT = "a secret prompt about a cat"


def make_config(tmp_path=None, **sections):
    tree: dict[str, Any] = {
        "model": "m",
        "served_model_name": MODEL,
        "auth": {
            "keys": [
                {"name": "alpha", "key": ALPHA, "rpm": 3},
                {"name": "beta", "key": "sha256:" + hashlib.sha256(BETA.encode()).hexdigest()},
            ]
        },
        **sections,
    }
    if tmp_path is not None:
        tree["metering"] = {
            "usage_log": str(tmp_path / "usage.jsonl"),
            "prices": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0},
        }
    return resolve_config(tree)


class FakeVllm:
    """Answers like vLLM's OpenAI server, and remembers what reached it."""

    def __init__(self):
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = await whole_body(receive)
        request = json.loads(body) if body else {}
        self.seen.append((scope["path"], request))
        if scope["path"] == "/v1/chat/completions":
            await self.chat(request, send)
        else:
            await json_response(send, 200, {"path": scope["path"]})

    async def chat(self, request: dict[str, Any], send: Send) -> None:
        completion = request.get("max_completion_tokens") or request.get("max_tokens", 5)
        usage = {"prompt_tokens": 11, "completion_tokens": completion}
        if not request.get("stream"):
            await json_response(send, 200, {"model": MODEL, "choices": [], "usage": usage})
            return
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        options = request.get("stream_options") or {}
        chunks: list[dict[str, Any]] = []
        for made in range(1, completion + 1):
            chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": "w"}}]}
            if options.get("continuous_usage_stats"):  # as vLLM: this choice's running usage
                chunk["usage"] = {"prompt_tokens": 11, "completion_tokens": made}
            chunks.append(chunk)
        if options.get("include_usage"):
            chunks.append({"choices": [], "usage": usage})
        for chunk in chunks:
            data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def json_response(send: Send, status: int, document: object) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def chat_body(**fields) -> dict[str, Any]:
    content = [{"type": "text", "text": PROMPT_TEXT}]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.fixture
def stack():
    inner = FakeVllm()
    registry = CollectorRegistry()
    app = QwenVLServeMiddleware(inner, config=make_config(), registry=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, inner, registry


async def raw_call(app, path: str, method: str = "GET", headers=(), raw_path=None):
    """Call an ASGI app with a path exactly as a server would pass it on."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("latin-1"),
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


@pytest.mark.anyio
async def test_missing_wrong_and_malformed_keys_get_the_same_401(stack):
    client, inner, registry = stack
    attempts = [
        {},
        bearer("wrong-key-0123456789abcdef"),
        bearer(ALPHA[:-1]),
        {"Authorization": f"Basic {ALPHA}"},
        {"Authorization": "Bearer"},
        {"x-goog-api-key": "nope"},
    ]
    async with client:
        responses = [
            await client.post("/v1/chat/completions", json=chat_body(), headers=h) for h in attempts
        ]
        query = await client.post(f"/v1/chat/completions?key={ALPHA}", json=chat_body())
    for response in [*responses, query]:  # ?key= is for generateContent routes only
        assert response.status_code == 401
        assert response.content == responses[0].content
        assert response.headers["www-authenticate"] == "Bearer"
    assert responses[0].json()["error"]["type"] == "authentication_error"
    assert inner.seen == []
    assert sample(registry, "qwenvl_rejections_total", reason="auth") == 7
    assert sample(registry, "qwenvl_requests_total", key="-", status="401") == 7


@pytest.mark.anyio
async def test_right_keys_in_a_header_pass_and_name_the_key(stack):
    client, inner, registry = stack
    async with client:
        by_bearer = await client.get("/v1/models", headers=bearer(BETA))
        by_goog = await client.get("/v1/models", headers={"x-goog-api-key": ALPHA})
    assert by_bearer.status_code == by_goog.status_code == 200
    assert [path for path, _ in inner.seen] == ["/v1/models", "/v1/models"]
    exposition = generate_latest(registry).decode()
    assert 'qwenvl_requests_total{key="beta",route="models",status="200"} 1.0' in exposition
    assert 'qwenvl_requests_total{key="alpha",route="models",status="200"} 1.0' in exposition
    assert ALPHA not in exposition
    assert BETA not in exposition


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/tokenize",
        "/detokenize",
        "/invocations",
        "/pause",
        "/collective_rpc",
        "/docs",
        "//tokenize",
        "/v1/chat/completions/../../tokenize",
        "/v1/chat/completions/",
    ],
)
async def test_unlisted_paths_are_404_in_openai_format_with_or_without_a_key(path):
    inner = FakeVllm()
    registry = CollectorRegistry()
    app = QwenVLServeMiddleware(inner, config=make_config(), registry=registry)
    for headers in ((), ((b"authorization", f"Bearer {BETA}".encode()),)):
        status, response_headers, body = await raw_call(app, path, "POST", headers)
        assert status == 404
        assert response_headers[b"content-type"] == b"application/json"
        assert json.loads(body)["error"]["type"] == "not_found_error"
    assert inner.seen == []
    assert sample(registry, "qwenvl_rejections_total", reason="route") == 2
    assert path not in generate_latest(registry).decode()


@pytest.mark.anyio
async def test_the_path_is_the_decoded_scope_path_never_the_raw_one():
    inner = FakeVllm()
    app = QwenVLServeMiddleware(inner, config=make_config(), registry=CollectorRegistry())
    status, _, _ = await raw_call(app, "/tokenize", raw_path=b"/%74okenize")
    assert status == 404
    status, _, _ = await raw_call(app, "/tokenize", raw_path=b"/v1/models")
    assert status == 404
    assert inner.seen == []


@pytest.mark.anyio
async def test_public_routes_need_no_key():
    inner = FakeVllm()
    registry = CollectorRegistry()
    app, _ = layers(inner, make_config(), registry)  # the layers, without the playground's own
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/playground")).status_code == 200
        assert (await client.get("/playground/app.js")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
    assert [path for path, _ in inner.seen] == ["/health", "/playground", "/playground/app.js"]


@pytest.mark.anyio
async def test_cors_preflight_passes_without_a_key(stack):
    client, inner, _ = stack
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with client:
        passed = await client.options("/v1/chat/completions", headers=preflight)
        plain_options = await client.options("/v1/chat/completions")
        # Without Origin, vLLM's CORS layer would hand the request to the route itself.
        no_origin = {"Access-Control-Request-Method": "GET"}
        metrics_without_origin = await client.options("/metrics", headers=no_origin)
        metrics_preflight = await client.options("/metrics", headers=preflight)
    assert passed.status_code == 200
    assert plain_options.status_code == 401
    assert metrics_without_origin.status_code == metrics_preflight.status_code == 401
    assert [path for path, _ in inner.seen] == ["/v1/chat/completions"]


ADMIN = "admin-key-0123456789abcdef"


def with_admin(**sections):
    keys = [
        {"name": "alpha", "key": ALPHA},
        {"name": "beta", "key": BETA},
        {"name": "ops", "key": ADMIN, "admin": True},
    ]
    return make_config(auth={"keys": keys}, **sections)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("metrics_section", "headers", "status"),
    [
        ({}, {}, 401),
        ({}, bearer("wrong-key-0123456789"), 401),
        ({}, bearer(BETA), 403),  # a tenant key
        ({}, bearer(ADMIN), 200),
        ({"token": SCRAPER}, bearer(SCRAPER), 200),
        ({"token": SCRAPER}, {}, 401),
        ({"public": True}, {}, 200),
    ],
)
async def test_metrics_access(metrics_section, headers, status):
    app = QwenVLServeMiddleware(
        FakeVllm(), config=with_admin(metrics=metrics_section), registry=CollectorRegistry()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "metrics_forbidden"


EXPOSITION = b"""# HELP qwenvl_tokens_total Tokens.
# TYPE qwenvl_tokens_total counter
qwenvl_tokens_total{key="alpha",model="tiny",type="prompt"} 12.0
qwenvl_tokens_total{key="-",model="tiny",type="prompt"} 3.0
qwenvl_requests_total{route="chat_completions",key="beta",status="200"} 2.0
qwenvl_in_flight 0.0
vllm:prompt_tokens_total{model_name="tiny"} 15.0
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "full"), [({}, False), (bearer(BETA), False), (bearer(ADMIN), True)]
)
async def test_a_public_metrics_page_hides_per_key_series_from_all_but_admins(headers, full):
    seen_headers = []

    async def exposition(scope: Scope, receive: Receive, send: Send) -> None:
        seen_headers.append(dict(scope["headers"]))
        response_headers = [(b"content-type", b"text/plain"), (b"content-length", b"999")]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": EXPOSITION[:100], "more_body": True})
        await send({"type": "http.response.body", "body": EXPOSITION[100:]})

    config = with_admin(metrics={"public": True})
    app = QwenVLServeMiddleware(exposition, config=config, registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics", headers={**headers, "Accept-Encoding": "gzip"})
    assert response.status_code == 200
    if full:
        assert response.content == EXPOSITION
        return
    assert b"alpha" not in response.content
    assert b"beta" not in response.content
    assert b'qwenvl_tokens_total{key="-",model="tiny",type="prompt"} 3.0' in response.content
    assert b"qwenvl_in_flight 0.0" in response.content
    assert b"vllm:prompt_tokens_total" in response.content
    assert b"accept-encoding" not in seen_headers[0]  # plain text, so it can be filtered


@pytest.mark.anyio
async def test_the_metrics_token_opens_nothing_else():
    app = QwenVLServeMiddleware(
        FakeVllm(), config=make_config(metrics={"token": SCRAPER}), registry=CollectorRegistry()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/v1/models", headers=bearer(SCRAPER))
    assert response.status_code == 401


@pytest.mark.anyio
async def test_without_keys_everything_is_open_and_a_warning_is_logged(caplog):
    config = resolve_config({"model": "m", "served_model_name": MODEL})
    registry = CollectorRegistry()
    server_log = logging.getLogger("qwenvl_serve.server")  # writes to stdout, not to root
    server_log.addHandler(caplog.handler)
    try:
        app = QwenVLServeMiddleware(FakeVllm(), config=config, registry=registry)
    finally:
        server_log.removeHandler(caplog.handler)
    assert "auth.keys is empty" in caplog.text
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        unused_key = bearer("unused")
        assert (await client.get("/v1/models", headers=unused_key)).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200
        assert (await client.get("/tokenize")).status_code == 404
    assert sample(registry, "qwenvl_tokens_total", key="-", model=MODEL, type="prompt") == 11


@pytest.mark.anyio
async def test_rpm_429_with_retry_after_in_openai_format(stack):
    client, inner, registry = stack
    async with client:
        statuses = [
            (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(ALPHA)))
            for _ in range(4)
        ]
        other_key = await client.post(
            "/v1/chat/completions", json=chat_body(), headers=bearer(BETA)
        )
        models = await client.get("/v1/models", headers=bearer(ALPHA))
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    refused = statuses[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rpm_exceeded"
    assert other_key.status_code == 200  # limits are per key
    assert models.status_code == 200  # only inference routes count
    assert len(inner.seen) == 5
    assert sample(registry, "qwenvl_rejections_total", reason="rpm") == 1
    assert sample(registry, "qwenvl_requests_total", key="alpha", status="429") == 1


@pytest.mark.anyio
async def test_tokens_are_metered_from_json_and_streams(stack):
    client, inner, registry = stack
    async with client:
        plain = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=4), headers=bearer(BETA)
        )
        asked = await client.post(
            "/v1/chat/completions",
            json=chat_body(max_tokens=3, stream=True, stream_options={"include_usage": True}),
            headers=bearer(BETA),
        )
        not_asked = await client.post(
            "/v1/chat/completions",
            json=chat_body(max_tokens=2, stream=True),
            headers=bearer(BETA),
        )
    assert plain.json()["usage"] == {"prompt_tokens": 11, "completion_tokens": 4}
    asked_events = [line for line in asked.text.split("\n\n") if line]
    assert json.loads(asked_events[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 3
    # We asked vLLM for usage on the client's behalf and cut the chunk it did not ask for.
    assert inner.seen[2][1]["stream_options"] == {
        "include_usage": True,
        "continuous_usage_stats": True,
    }
    not_asked_events = [line for line in not_asked.text.split("\n\n") if line]
    assert len(not_asked_events) == 3  # two content chunks and [DONE]
    assert "usage" not in not_asked.text
    prompt = sample(registry, "qwenvl_tokens_total", key="beta", model=MODEL, type="prompt")
    completion = sample(registry, "qwenvl_tokens_total", key="beta", model=MODEL, type="completion")
    assert (prompt, completion) == (33, 9)
    assert sample(registry, "qwenvl_in_flight") == 0


@pytest.mark.anyio
async def test_usage_log_has_one_line_per_model_request_and_no_prompt(tmp_path):
    inner = FakeVllm()
    registry = CollectorRegistry()
    app = QwenVLServeMiddleware(inner, config=make_config(tmp_path), registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ids = []
        for body in (chat_body(max_tokens=4), chat_body(max_tokens=2, stream=True)):
            response = await client.post("/v1/chat/completions", json=body, headers=bearer(ALPHA))
            ids.append(response.headers["x-request-id"])
        await client.post("/v1/chat/completions", json=chat_body())  # 401: not usage
        await client.get("/v1/models", headers=bearer(ALPHA))  # not a model request
    await run_lifespan(app)  # shutdown closes the log: everything queued is written
    text = (tmp_path / "usage.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["request_id"] for r in records] == ids
    assert [(r["key"], r["model"], r["route"], r["status"]) for r in records] == [
        ("alpha", MODEL, "chat_completions", 200)
    ] * 2
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in records] == [(11, 4), (11, 2)]
    assert records[0]["cost"] == pytest.approx((11 * 1.0 + 4 * 2.0) / 1000)
    assert PROMPT_TEXT not in text
    assert ALPHA not in text


async def run_lifespan(app) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.anyio
async def test_websockets_are_refused():
    inner = FakeVllm()
    app = QwenVLServeMiddleware(inner, config=make_config(), registry=CollectorRegistry())
    sent = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/v1/realtime", "headers": []}, receive, send)
    reason = "This server has no WebSocket routes; use HTTP."
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": reason}]
    assert inner.seen == []


@pytest.mark.anyio
async def test_websockets_are_refused_with_an_error_body_where_the_server_can_send_one():
    inner = FakeVllm()
    app = QwenVLServeMiddleware(inner, config=make_config(), registry=CollectorRegistry())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/v1beta/models/m:generateContent",
        "headers": [],
        "extensions": {"websocket.http.response": {}},
    }
    await app(scope, receive, send)
    assert [message["type"] for message in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 404
    assert json.loads(sent[1]["body"])["error"]["status"] == "NOT_FOUND"  # Google's format
    assert inner.seen == []


def layers(inner, config, registry, **clocks):
    metrics = ServeMetrics.create(MODEL, registry)

    def access(app: ASGIApp) -> ASGIApp:
        app = MeteringMiddleware(app, MODEL, config.metering, metrics)
        return LimitsMiddleware(
            app,
            config.auth,
            config.limits,
            metrics,
            config.max_tokens_per_media,
            config.engine.max_model_len,
            **clocks,
        )

    app = in_request_core(inner, config, access)
    app = AuthMiddleware(app, config.auth, config.metrics, metrics)
    lines: list[str] = []
    return ObserveMiddleware(app, metrics, log_line=lines.append), lines


@pytest.mark.anyio
async def test_max_in_flight_answers_503_with_retry_after_at_once():
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/v1/chat/completions":
            entered.set()
            await release.wait()
        await json_response(send, 200, {"usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    registry = CollectorRegistry()
    app, _ = layers(slow_app, make_config(limits={"max_in_flight": 1}), registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat_body(), headers=bearer(BETA))
        )
        await entered.wait()
        assert sample(registry, "qwenvl_in_flight") == 1
        second = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(BETA))
        health = await client.get("/health")
        release.set()
        assert (await first).status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert second.json()["error"]["type"] == "service_unavailable_error"
    assert health.status_code == 200  # only model requests count against max_in_flight
    assert sample(registry, "qwenvl_rejections_total", reason="max_in_flight") == 1
    assert sample(registry, "qwenvl_in_flight") == 0


TPM = 1000


def body_bytes(**fields) -> int:
    return len(json.dumps(chat_body(**fields)).encode())


async def post_chat(client: httpx.AsyncClient, max_tokens: int) -> httpx.Response:
    body = json.dumps(chat_body(max_tokens=max_tokens)).encode()
    headers = {**bearer(ALPHA), "content-type": "application/json"}
    return await client.post("/v1/chat/completions", content=body, headers=headers)


@pytest.mark.anyio
async def test_max_concurrent_and_tpm_per_key():
    config = make_config()
    config = config.model_copy(
        update={
            "auth": config.auth.model_copy(
                update={
                    "keys": [
                        config.auth.keys[0].model_copy(
                            update={"rpm": None, "max_concurrent": 1, "tpm": TPM}
                        )
                    ]
                }
            )
        }
    )
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await json_response(send, 200, {"usage": {"prompt_tokens": 20, "completion_tokens": 5}})

    registry = CollectorRegistry()
    app, lines = layers(slow_app, config, registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat_body(max_tokens=5), headers=bearer(ALPHA))
        )
        await entered.wait()
        concurrent = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=5), headers=bearer(ALPHA)
        )
        release.set()
        assert (await first).status_code == 200
        # 25 tokens used. A request reserves its worst case: a token per body byte
        # outside media plus its output tokens, so this one would pass TPM.
        too_many_tokens = await post_chat(client, TPM - 25 - body_bytes(max_tokens=200) + 1)
        fits = await post_chat(client, TPM - 25 - body_bytes(max_tokens=200))
    assert concurrent.status_code == 429
    assert concurrent.json()["error"]["code"] == "max_concurrent_exceeded"
    assert too_many_tokens.status_code == 429
    assert too_many_tokens.json()["error"]["code"] == "tpm_exceeded"
    assert 1 <= int(too_many_tokens.headers["retry-after"]) <= 60
    assert fits.status_code == 200
    logged = [json.loads(line) for line in lines]
    assert [(e["status"], e["rejection"]) for e in logged] == [
        (429, "max_concurrent"),
        (200, None),
        (429, "tpm"),
        (200, None),
    ]


@pytest.mark.anyio
async def test_access_log_lines_hold_names_and_numbers_only():
    registry = CollectorRegistry()
    app, lines = layers(FakeVllm(), make_config(), registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=3), headers=bearer(BETA)
        )
        await client.post("/v1/chat/completions", json=chat_body(), headers=bearer("wrong"))
    first, second = (json.loads(line) for line in lines)
    assert first["key"] == "beta"
    assert (first["route"], first["status"], first["method"]) == ("chat_completions", 200, "POST")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (11, 3)
    assert first["duration_s"] >= 0
    assert (second["key"], second["status"], second["rejection"]) == ("-", 401, "auth")
    joined = "\n".join(lines)
    assert PROMPT_TEXT not in joined
    assert BETA not in joined


@pytest.mark.anyio
async def test_generate_content_keys_usage_metadata_and_query_key_removal():
    inner = FakeVllm()
    seen_scopes: list[Scope] = []

    async def recording_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen_scopes.append(scope)
        await inner(scope, receive, send)

    registry = CollectorRegistry()
    app, _ = layers(recording_app, make_config(), registry)
    body = {"contents": [{"parts": [{"text": PROMPT_TEXT}]}], "generationConfig": {}}
    streamed_body = {**body, "generationConfig": {"maxOutputTokens": 7}}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        by_query = await client.post(
            f"/v1beta/models/{MODEL}:generateContent?key={BETA}", json=body
        )
        streamed = await client.post(
            f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&key={BETA}", json=streamed_body
        )
        refused = await client.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    assert by_query.status_code == streamed.status_code == 200
    assert by_query.json()["usageMetadata"]["promptTokenCount"] == 11
    assert "usageMetadata" in streamed.text  # Google streams keep their usage
    for scope in seen_scopes:  # the key never reaches vLLM, by query or header
        assert scope["query_string"] == b""
        assert BETA.encode() not in b"".join(value for _, value in scope["headers"])
    assert refused.status_code == 401
    assert refused.json() == {
        "error": {
            "code": 401,
            "message": "Invalid or missing API key.",
            "status": "UNAUTHENTICATED",
        }
    }
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="prompt") == 22
    # The request without maxOutputTokens got limits.default_max_tokens (the fake uses all).
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="completion") == 1024 + 7


@pytest.mark.anyio
@pytest.mark.parametrize("tpm", [None, 1_000_000])
async def test_bodies_over_the_cap_are_refused_before_being_buffered(tmp_path, tpm):
    key = {"name": "alpha", "key": ALPHA} | ({"tpm": tpm} if tpm else {})
    config = make_config(tmp_path, images={"max_request_bytes": 1024}, auth={"keys": [key]})
    inner = FakeVllm()
    app = QwenVLServeMiddleware(inner, config=config, registry=CollectorRegistry())
    big = chat_body(max_tokens=4, padding="x" * 4096)
    body_chunks_read = 0

    async def chunks():
        nonlocal body_chunks_read
        for _ in range(100):
            body_chunks_read += 1
            yield b" " * 512

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        declared = await client.post("/v1/chat/completions", json=big, headers=bearer(ALPHA))
        streamed = await client.post(
            "/v1/completions", content=chunks(), headers=bearer(ALPHA)
        )  # no Content-Length: refused once the bytes received pass the cap
        google = await client.post(
            f"/v1beta/models/{MODEL}:generateContent", json=big, headers=bearer(ALPHA)
        )
        fits = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(ALPHA))
    await run_lifespan(app)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert body_chunks_read < 10
    assert google.status_code == 413
    assert google.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fits.status_code == 200
    assert [path for path, _ in inner.seen] == ["/v1/chat/completions"]
    records = [json.loads(line) for line in (tmp_path / "usage.jsonl").read_text().splitlines()]
    # The usage log holds model requests: the intake refused the others before any ran.
    assert [r["status"] for r in records] == [200]


@pytest.mark.anyio
async def test_loosely_typed_stream_requests_are_still_metered(stack):
    client, inner, registry = stack
    async with client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(stream=1, max_tokens=3), headers=bearer(BETA)
        )
    assert response.status_code == 200
    assert inner.seen[0][1]["stream_options"] == {
        "include_usage": True,
        "continuous_usage_stats": True,
    }
    assert "usage" not in response.text  # the client did not ask for the chunk
    completion = sample(registry, "qwenvl_tokens_total", key="beta", model=MODEL, type="completion")
    assert completion == 3


@pytest.mark.anyio
async def test_absurdly_nested_json_gets_a_json_400(stack):
    client, inner, _ = stack
    nested = b"[" * 1200 + b"]" * 1200
    async with client:
        responses = [
            await client.post(
                path, content=nested, headers={**bearer(BETA), "content-type": "application/json"}
            )
            for path in ("/v1/chat/completions", f"/v1beta/models/{MODEL}:generateContent")
        ]
    for response in responses:
        assert response.status_code == 400
        assert response.json()["error"]["message"]
        assert response.headers["x-request-id"]
    assert inner.seen == []


@pytest.mark.anyio
async def test_a_lone_surrogate_anywhere_is_refused_and_a_pair_passes(stack):
    client, inner, _ = stack
    png = io.BytesIO()
    Image.new("RGBA", (64, 48), (255, 0, 0, 128)).save(png, "PNG")  # re-encoded: body rewritten
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    image = {"type": "image_url", "image_url": {"url": url}}
    lone = "\ud800 what is this"
    google = {"contents": [{"parts": [{"text": lone}]}]}
    json_type = {**bearer(BETA), "content-type": "application/json"}
    async with client:
        chat = await client.post(
            "/v1/chat/completions",
            content=escaped(
                {
                    "model": MODEL,
                    "messages": [
                        {"role": "user", "content": [image, {"type": "text", "text": lone}]}
                    ],
                }
            ),
            headers=json_type,
        )
        streamed = await client.post(
            "/v1/chat/completions",
            content=escaped(chat_body(stream=True, stop=["ok", lone])),
            headers=json_type,
        )
        translated = await client.post(
            f"/v1beta/models/{MODEL}:generateContent", content=escaped(google), headers=json_type
        )
        paired = await client.post(
            "/v1/chat/completions",
            content=escaped(chat_body(messages=[{"role": "user", "content": "\U0001f600 hi"}])),
            headers=json_type,
        )
    assert (chat.status_code, streamed.status_code, translated.status_code) == (400, 400, 400)
    assert [error_of(chat)["param"], error_of(streamed)["param"]] == [
        "messages[0].content[1].text",
        "stop[1]",
    ]
    assert error_of(chat)["code"] == error_of(streamed)["code"] == "invalid_text"
    assert translated.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert paired.status_code == 200  # an escaped pair (an emoji) is text
    assert [path for path, _ in inner.seen] == ["/v1/chat/completions"]
    assert "\\ud83d\\ude00 hi" in json.dumps(inner.seen[0][1])


def escaped(body: dict[str, Any]) -> bytes:
    """JSON as a client that escapes non-ASCII sends it (httpx's json= cannot send a
    lone surrogate)."""
    return json.dumps(body).encode()


@pytest.mark.anyio
async def test_methods_a_route_does_not_answer_get_405_in_its_format(stack):
    client, inner, registry = stack
    async with client:
        get_chat = await client.get("/v1/chat/completions", headers=bearer(BETA))
        delete_models = await client.delete("/v1/models", headers=bearer(BETA))
        head_health = await client.head("/health")
        get_google = await client.get(f"/v1beta/models/{MODEL}:generateContent")
    assert get_chat.status_code == delete_models.status_code == 405
    assert head_health.status_code == get_google.status_code == 405
    assert get_chat.headers["allow"] == "POST"
    assert get_chat.json()["error"]["code"] == "method_not_allowed"
    assert delete_models.headers["allow"] == "GET"
    assert get_google.json()["error"] == {
        "code": 405,
        "message": "Use POST.",
        "status": "UNIMPLEMENTED",
    }
    assert inner.seen == []
    assert sample(registry, "qwenvl_rejections_total", reason="route") == 4


@pytest.mark.anyio
async def test_a_response_over_8_mib_is_metered_like_any_other():
    usage = {"prompt_tokens": 1200, "completion_tokens": 2409}

    async def huge_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await whole_body(receive)
        choices = [{"index": i, "message": {"content": "w" * 1_200_000}} for i in range(8)]
        body = json.dumps({"choices": choices, "usage": usage}).encode()
        assert len(body) > 8 * 1024 * 1024
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(body), 1 << 20):  # in pieces, as a server may send it
            piece = body[start : start + (1 << 20)]
            more = start + (1 << 20) < len(body)
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    registry = CollectorRegistry()
    app = QwenVLServeMiddleware(huge_answer, config=make_config(), registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(n=8), headers=bearer(BETA)
        )
    assert response.status_code == 200
    # Each of the 8 sequences prefilled the prompt, as vLLM's counter counts it.
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="prompt") == 8 * 1200
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="completion") == 2409


async def two_candidates_one_started(scope: Scope, receive: Receive, send: Send) -> None:
    """vLLM's stream for n=2 without usage on each chunk: only candidate 0 produced a
    token before the request ended (the other ends aborted, never started)."""
    await whole_body(receive)
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "A"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [{"index": 1, "delta": {}, "finish_reason": "abort"}]},
        {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 1}},
    ]
    for chunk in chunks:
        data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["?alt=sse", ""])
async def test_a_google_stream_counts_the_prompt_of_each_candidate_that_started(query):
    # With a reasoning parser, usage is not asked on every chunk: the candidates that
    # started are read from the chunks, whichever framing the client asked for (its
    # JSON array is still vLLM's SSE stream inside).
    registry = CollectorRegistry()
    config = make_config(engine={"reasoning_parser": "qwen3"})
    app = QwenVLServeMiddleware(two_candidates_one_started, config=config, registry=registry)
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 2}}
    path = f"/v1beta/models/{MODEL}:streamGenerateContent{query}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, json=body, headers=bearer(BETA))
    assert response.status_code == 200
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="prompt") == 100
    assert sample(registry, "qwenvl_tokens_total", key="beta", type="completion") == 1


async def unreadable_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """vLLM answers 200 with a body that is not a completion."""
    await whole_body(receive)
    await json_response(send, 200, ["not", "a", "completion"])


@pytest.mark.anyio
async def test_an_answer_vllm_computed_costs_its_key_even_when_the_client_gets_an_error():
    registry = CollectorRegistry()
    # A request reserves about 2,100 tokens (its output tokens and a token per body
    # byte): one fits in the minute's budget, two do not.
    config = make_config(auth={"keys": [{"name": "alpha", "key": ALPHA, "tpm": 3000}]})
    app = QwenVLServeMiddleware(unreadable_answer, config=config, registry=registry)
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 2000},
    }
    path = f"/v1beta/models/{MODEL}:generateContent"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.post(path, json=body, headers=bearer(ALPHA))
        second = await client.post(path, json=body, headers=bearer(ALPHA))
    assert first.status_code == 500  # Google-style: vLLM's answer could not be read
    assert first.json()["error"]["status"] == "INTERNAL"
    # vLLM answered 200, so what it computed costs the key: its usage unreadable, the
    # worst case it reserved, as for any success of vLLM's; not nothing.
    assert second.status_code == 429
    assert second.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
