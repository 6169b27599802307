"""Errors come back in the format of the API the request was made to."""

import json

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from qwenvl_serve.api_errors import ApiError, send_error


def test_openai_shape_with_type_from_status():
    body = json.loads(ApiError(429, "slow down").body_for_path("/v1/chat/completions"))
    assert body == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }


def test_google_shape_on_generate_content_routes():
    path = "/v1beta/models/qwen3-vl:generateContent"
    body = json.loads(ApiError(401, "bad key").body_for_path(path))
    assert body == {"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}


def test_explicit_fields_win():
    error = ApiError(400, "m", type="invalid_request_error", param="messages[0]", code="x")
    assert json.loads(error.body_for_path("/v1/completions"))["error"]["param"] == "messages[0]"


@pytest.mark.anyio
async def test_send_error_writes_status_headers_and_body():
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(scope, send, ApiError(503, "busy", headers=[("Retry-After", "1")]))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/v1/chat/completions")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "service_unavailable_error"
