"""The real engine's refusals reach clients in the route's own format, naming the field,
with no pydantic dumps, type names or library text, and the server keeps serving."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.servers import RunningServer

pytestmark = pytest.mark.e2e

MODEL = "qwen3-vl-tiny"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
# What no client-facing message may hold (each seen in vLLM 0.32's own answers).
INTERNALS = re.compile(
    r"validation error|\{'type'|'loc'|pydantic|Union\[|TextEncodeInput|Traceback|"
    r"Grammar error|Input should be|parameter=|BadRequestError|NoneType"
)


def chat(**fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        **fields,
    }


# (request, status, param): each is refused by vLLM itself, not by our layers.
ENGINE_REFUSALS = {
    "a string temperature": (CHAT, chat(temperature="hot"), 400, "temperature"),
    "a negative temperature": (CHAT, chat(temperature=-1), 400, "temperature"),
    "top_p above 1": (CHAT, chat(top_p=5), 400, "top_p"),
    "a string max_tokens": (CHAT, chat(max_tokens="x"), 400, "max_tokens"),
    "a fractional seed": (CHAT, chat(seed=1.5), 400, "seed"),
    "messages as a string": (CHAT, {"model": MODEL, "messages": "hi"}, 400, "messages"),
    "a number as content": (
        CHAT,
        {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
        400,
        "messages[0].content",
    ),
    "stop as a number": (CHAT, chat(stop=5), 400, "stop"),
    "a tool without its function": (
        CHAT,
        chat(tools=[{"type": "function"}]),
        400,
        "tools[0].function",
    ),
    "logit_bias with a word key": (CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    "an unclosed regex": (CHAT, chat(structured_outputs={"regex": "("}), 400, None),
    "tool_choice without tools": (CHAT, chat(tool_choice="required"), 400, "tool_choice"),
    "an unknown model": (CHAT, chat(model="nope"), 404, "model"),
    "a prompt of mixed ids": (
        COMPLETIONS,
        {"model": MODEL, "prompt": [[1, "a"]]},
        400,
        "prompt[0]",
    ),
    "a prompt object": (COMPLETIONS, {"model": MODEL, "prompt": {"a": 1}}, 400, "prompt"),
    "an id beyond the vocabulary": (
        COMPLETIONS,
        {"model": MODEL, "prompt": [999999999]},
        400,
        None,
    ),
    "an infinite max_tokens": (CHAT, chat(max_tokens=1e400), 400, "max_tokens"),
}


def openai_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert set(document) == {"error"}
    error: dict[str, Any] = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["code"], str)
    assert isinstance(error["type"], str)
    assert error["type"].endswith("_error")
    assert not INTERNALS.search(error["message"]), error["message"]
    return error


@pytest.mark.parametrize("case", list(ENGINE_REFUSALS))
def test_vllm_s_refusals_name_the_field_in_openai_s_format(tiny_server: RunningServer, case: str):
    path, body, status, param = ENGINE_REFUSALS[case]
    content = (
        json.dumps(body).encode()
        if case != "an infinite max_tokens"
        else (json.dumps(body).replace("Infinity", "1e400").encode())
    )
    response = httpx.post(
        tiny_server.base_url + path,
        content=content,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    error = openai_error(response)
    assert error["param"] == param
    if param is not None:
        assert param in error["message"] or status == 404


def test_a_refused_stream_request_is_refused_the_same_way(tiny_server: RunningServer):
    response = httpx.post(
        tiny_server.base_url + CHAT, json=chat(stream=True, temperature="x"), timeout=60
    )
    assert response.status_code == 400
    assert openai_error(response)["message"] == "temperature must be a number."


def test_generate_content_names_google_s_field(tiny_server: RunningServer):
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"topP": 7}}
    response = httpx.post(tiny_server.base_url + GENERATE, json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "status"}
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("generationConfig.topP must be in (0, 1]")
    assert not INTERNALS.search(error["message"])


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_declared_as_json_is_415(tiny_server: RunningServer, content_type: str | None):
    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx.post(
        tiny_server.base_url + CHAT,
        content=json.dumps(chat()).encode(),
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 415
    assert openai_error(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("messages[0].content", chat(messages=[{"role": "user", "content": "\ud800"}])),
        ("stop[0]", chat(stop=["\udfff"])),
        ("prompt", {"model": MODEL, "prompt": "a\ud83d", "max_tokens": 2}),
    ],
)
def test_a_lone_surrogate_is_refused_where_it_is(tiny_server: RunningServer, where, body):
    path = COMPLETIONS if "prompt" in body else CHAT
    response = httpx.post(
        tiny_server.base_url + path,
        content=json.dumps(body).encode(),  # ASCII-escaped, as most clients send
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert (error["code"], error["param"]) == ("invalid_text", where)


def test_an_escaped_surrogate_pair_is_text(tiny_server: RunningServer):
    body = chat(messages=[{"role": "user", "content": "\U0001f600 what is this?"}])
    response = httpx.post(
        tiny_server.base_url + CHAT,
        content=json.dumps(body).encode(),  # "\ud83d\ude00"
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(("path", "google"), [(CHAT, False), (GENERATE, True)])
def test_a_refused_cors_preflight_is_json(tiny_server: RunningServer, path: str, google: bool):
    headers = {"origin": "http://elsewhere.example", "access-control-request-method": "POST"}
    response = httpx.options(tiny_server.base_url + path, headers=headers, timeout=10)
    assert response.status_code == 400
    if google:
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert openai_error(response)["code"] == "cors_not_allowed"


def test_a_websocket_handshake_gets_a_json_404(tiny_server: RunningServer):
    handshake = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    response = httpx.get(tiny_server.base_url + "/v1/realtime", headers=handshake, timeout=10)
    assert response.status_code == 404
    assert openai_error(response)["code"] == "websocket_not_served"
    assert httpx.get(tiny_server.base_url + "/health", timeout=10).status_code == 200
