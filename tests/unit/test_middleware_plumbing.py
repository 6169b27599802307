"""The composite middleware: config from the environment, request ids, our metric."""

import json

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.types import Receive, Scope, Send

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.launch_plan import CONFIG_ENV_VAR, build_launch_plan
from qwenvl_serve.middleware import QwenVLServeMiddleware, config_from_environment
from qwenvl_serve.middleware.request_id import choose_request_id

CONFIG = resolve_config({"model": "m", "served_model_name": "tiny"})


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes the request id it was given, answers 404 for /missing."""
    headers = dict(scope["headers"])
    status = 404 if scope["path"] == "/missing" else 200
    body = json.dumps({"seen_id": headers.get(b"x-request-id", b"").decode()}).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"x-request-id", b"inner")]}
    )
    await send({"type": "http.response.body", "body": body})


def client_for(registry: CollectorRegistry) -> httpx.AsyncClient:
    app = QwenVLServeMiddleware(inner_app, config=CONFIG, registry=registry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.anyio
async def test_request_id_is_minted_and_seen_by_the_inner_app():
    async with client_for(CollectorRegistry()) as client:
        response = await client.get("/v1/models")
    minted = response.headers["x-request-id"]
    assert len(minted) == 32
    assert response.json()["seen_id"] == minted
    assert response.headers.get_list("x-request-id") == [minted]  # inner app's id replaced


@pytest.mark.anyio
async def test_sane_client_request_id_is_kept_and_a_hostile_one_replaced():
    async with client_for(CollectorRegistry()) as client:
        kept = await client.get("/v1/models", headers={"x-request-id": "abc-123"})
        replaced = await client.get("/v1/models", headers={"x-request-id": "a b\x01" + "x" * 200})
    assert kept.headers["x-request-id"] == "abc-123"
    assert kept.json()["seen_id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "a b"
    assert len(replaced.headers["x-request-id"]) == 32


@pytest.mark.parametrize("incoming", [None, b"", b"has space", b"x" * 129, "é".encode()])
def test_unusable_ids_are_replaced(incoming):
    assert len(choose_request_id(incoming)) == 32


@pytest.mark.anyio
async def test_requests_are_counted_by_route_and_status_never_by_raw_path():
    registry = CollectorRegistry()
    async with client_for(registry) as client:
        await client.get("/v1/models")
        await client.get("/missing")
        await client.post("/v1/models/tiny:generateContent")
    exposition = generate_latest(registry).decode()
    assert 'qwenvl_requests_total{key="-",route="models",status="200"} 1.0' in exposition
    assert 'qwenvl_requests_total{key="-",route="other",status="404"} 1.0' in exposition
    assert 'qwenvl_requests_total{key="-",route="generate_content",status="' in exposition
    assert "/missing" not in exposition
    assert 'served_model_name="tiny"' in exposition


def test_config_round_trips_through_the_launch_environment():
    env = build_launch_plan(CONFIG).env
    assert config_from_environment(env) == CONFIG


def test_missing_environment_says_how_to_start():
    with pytest.raises(RuntimeError, match=f"{CONFIG_ENV_VAR} is not set"):
        config_from_environment({})


@pytest.mark.anyio
async def test_non_http_scopes_pass_through():
    seen = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    app = QwenVLServeMiddleware(lifespan_app, config=CONFIG, registry=CollectorRegistry())

    async def receive() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def send(message: object) -> None:
        pass

    await app({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
