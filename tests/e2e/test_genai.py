"""Google generateContent against the real engine: raw HTTP, the google-genai SDK, the README."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from qwenvl_serve.api_errors import GOOGLE_STATUS
from qwenvl_serve.sample_images import synthetic_jpeg
from tests.e2e.test_readme_examples import run_readme_example
from tests.servers import RunningServer

pytestmark = pytest.mark.e2e
MODEL = "qwen3-vl-tiny"
PROMPT = "请分析这张图中的布局，并生成对应的HTML代码"
JPEG = synthetic_jpeg(640, 480, seed=5)
JPEG_B64 = base64.b64encode(JPEG).decode()
ISSUE_BODY: dict[str, Any] = {
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": PROMPT},
                {"inline_data": {"mime_type": "image/jpeg", "data": JPEG_B64}},
            ],
        }
    ],
    "generation_config": {"temperature": 0.5, "max_output_tokens": 64, "top_p": 0.8},
}
IMAGE_MESSAGE: dict[str, Any] = {
    "role": "user",
    "content": [
        {"type": "text", "text": PROMPT},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
    ],
}


@pytest.fixture(scope="module")
def http(tiny_server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=tiny_server.base_url, timeout=120)


@pytest.fixture(scope="module")
def sdk(tiny_server: RunningServer) -> genai.Client:
    options = types.HttpOptions(base_url=tiny_server.base_url, timeout=120_000)
    return genai.Client(api_key="any-string", http_options=options)


def chat_usage(http: httpx.Client, messages: list[dict[str, Any]]) -> dict[str, int]:
    """Usage of the equivalent chat completions request."""
    body = {"model": MODEL, "messages": messages, "max_tokens": 1}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    usage: dict[str, int] = response.json()["usage"]
    return usage


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
        else:
            assert line == "", line
    return events


def assert_google_error(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "status"}
    assert (error["code"], error["status"]) == (code, status)
    message: str = error["message"]
    assert message
    return message


def test_the_issue_body_returns_text_and_the_chat_completions_usage(http):
    response = http.post(f"/v1/models/{MODEL}:generateContent", json=ISSUE_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    [candidate] = body["candidates"]
    assert candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    [part] = candidate["content"]["parts"]
    assert isinstance(part["text"], str)
    assert candidate["finishReason"] in ("STOP", "MAX_TOKENS")
    usage = body["usageMetadata"]
    assert usage["promptTokenCount"] == chat_usage(http, [IMAGE_MESSAGE])["prompt_tokens"]
    assert usage["promptTokenCount"] > 300  # the 640x480 photo alone is 302 tokens
    assert 1 <= usage["candidatesTokenCount"] <= 64
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert body["modelVersion"] == MODEL


def test_streaming_sends_several_events_and_ends_with_usage(http):
    body = {**ISSUE_BODY, "generationConfig": {"maxOutputTokens": 16}}
    del body["generation_config"]
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert len(events) >= 3
    *middle, final = events
    assert all("usageMetadata" not in event and "error" not in event for event in middle)
    texts = [part["text"] for e in events for part in e["candidates"][0]["content"]["parts"]]
    assert "".join(texts)
    assert final["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
    usage = final["usageMetadata"]
    assert usage["promptTokenCount"] == chat_usage(http, [IMAGE_MESSAGE])["prompt_tokens"]
    assert 1 <= usage["candidatesTokenCount"] <= 16
    assert final["modelVersion"] == MODEL


def test_a_multi_turn_conversation_is_the_same_prompt_as_its_chat_equivalent(http):
    body = {
        "systemInstruction": {"parts": [{"text": "You describe pictures."}]},
        "contents": [
            ISSUE_BODY["contents"][0],
            {"role": "model", "parts": [{"text": "<div>header</div>"}]},
            {"role": "user", "parts": [{"text": "Now only the footer."}]},
        ],
        "generationConfig": {"maxOutputTokens": 8, "seed": 1},
    }
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    assert response.status_code == 200, response.text
    messages = [
        {"role": "system", "content": "You describe pictures."},
        IMAGE_MESSAGE,
        {"role": "assistant", "content": "<div>header</div>"},
        {"role": "user", "content": [{"type": "text", "text": "Now only the footer."}]},
    ]
    prompt_tokens = response.json()["usageMetadata"]["promptTokenCount"]
    assert prompt_tokens == chat_usage(http, messages)["prompt_tokens"]
    assert prompt_tokens > chat_usage(http, [IMAGE_MESSAGE])["prompt_tokens"]


def test_a_response_schema_is_enforced_by_structured_output(http):
    schema = {"type": "STRING", "enum": ["red", "blue"]}
    body = {
        "contents": [{"parts": [{"text": "Pick a colour."}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": schema,
            "maxOutputTokens": 32,
            "temperature": 0,
        },
    }
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    assert response.status_code == 200, response.text
    [candidate] = response.json()["candidates"]
    assert candidate["finishReason"] == "STOP"
    # The tiny model's weights are random: only the grammar makes this valid JSON.
    assert json.loads(candidate["content"]["parts"][0]["text"]) in ("red", "blue")


def test_an_unknown_model_is_404_in_google_format(http):
    response = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=ISSUE_BODY)
    assert_google_error(response, 404, "NOT_FOUND")


def test_an_unsupported_field_is_400_naming_it(http):
    body = {**ISSUE_BODY, "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH"}]}
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    message = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert message == "safetySettings is not supported by this server."


def test_bad_image_data_is_refused_as_on_the_chat_route_and_the_server_keeps_serving(http):
    not_an_image = base64.b64encode(b"this is not an image at all" * 40).decode()
    body = {
        "contents": [{"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": not_an_image}}]}]
    }
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    url = f"data:image/jpeg;base64,{not_an_image}"
    chat = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ],
    }
    chat_response = http.post("/v1/chat/completions", json=chat)
    assert chat_response.status_code in (400, 422)  # a client error, never a 500
    message = assert_google_error(response, chat_response.status_code, "INVALID_ARGUMENT")
    assert message == chat_response.json()["error"]["message"]
    broken_base64 = {
        "contents": [{"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "@@"}}]}]
    }
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=broken_base64)
    message = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert message == "contents[0].parts[0].inlineData.data is not valid base64."
    again = http.post(f"/v1/models/{MODEL}:generateContent", json=ISSUE_BODY)
    assert again.status_code == 200


def test_file_data_urls_go_through_the_same_vetted_fetch_as_chat_image_urls(http, tiny_server):
    url = f"{tiny_server.base_url}/health"  # loopback: the fetcher must refuse it
    body = {"contents": [{"parts": [{"fileData": {"mimeType": "image/jpeg", "fileUri": url}}]}]}
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)
    chat = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ],
    }
    chat_response = http.post("/v1/chat/completions", json=chat)
    assert 400 <= chat_response.status_code < 500
    status = GOOGLE_STATUS[chat_response.status_code]
    message = assert_google_error(response, chat_response.status_code, status)
    assert message == chat_response.json()["error"]["message"]


def test_an_engine_refusal_comes_back_as_a_google_error(http):
    too_long = {"contents": [{"parts": [{"text": "word " * 6000}]}]}
    response = http.post(f"/v1beta/models/{MODEL}:generateContent", json=too_long)
    message = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert "context length" in message


def test_sdk_generate_content_with_an_image_part(sdk, http):
    image = types.Part.from_bytes(data=JPEG, mime_type="image/jpeg")
    response = sdk.models.generate_content(
        model=MODEL,
        contents=[PROMPT, image],
        config=types.GenerateContentConfig(max_output_tokens=16, temperature=0.7, top_k=20),
    )
    assert isinstance(response.text, str)
    assert response.model_version == MODEL
    assert response.candidates is not None
    assert response.candidates[0].finish_reason in (
        types.FinishReason.STOP,
        types.FinishReason.MAX_TOKENS,
    )
    assert response.usage_metadata is not None
    expected = chat_usage(http, [IMAGE_MESSAGE])["prompt_tokens"]
    assert response.usage_metadata.prompt_token_count == expected
    assert 1 <= (response.usage_metadata.candidates_token_count or 0) <= 16


def test_sdk_generate_content_stream_on_v1beta(tiny_server, http):
    options = types.HttpOptions(base_url=tiny_server.base_url, api_version="v1beta")
    client = genai.Client(api_key="any-string", http_options=options)
    parts = [
        types.Part.from_text(text=PROMPT),
        types.Part.from_bytes(data=JPEG, mime_type="image/jpeg"),
    ]
    chunks = list(
        client.models.generate_content_stream(
            model=f"models/{MODEL}",
            contents=types.Content(role="user", parts=parts),
            config=types.GenerateContentConfig(
                max_output_tokens=16, system_instruction="Be terse."
            ),
        )
    )
    assert len(chunks) >= 3
    assert "".join(chunk.text or "" for chunk in chunks)
    final = chunks[-1]
    assert final.usage_metadata is not None
    messages = [{"role": "system", "content": "Be terse."}, IMAGE_MESSAGE]
    assert final.usage_metadata.prompt_token_count == chat_usage(http, messages)["prompt_tokens"]
    assert final.candidates is not None
    assert final.candidates[0].finish_reason is not None


def test_sdk_raises_the_servers_errors(sdk):
    with pytest.raises(errors.ClientError) as caught:
        sdk.models.generate_content(model="gemini-2.5-flash", contents="hello")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"


def test_readme_curl_example(tiny_server):
    body = json.loads(run_readme_example("genai-curl", tiny_server))
    assert body["modelVersion"] == MODEL
    assert body["usageMetadata"]["promptTokenCount"] > 300


def test_readme_sdk_example(tiny_server):
    assert "prompt_token_count=" in run_readme_example("genai-sdk", tiny_server, python=True)
