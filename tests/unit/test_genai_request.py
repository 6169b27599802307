"""Google generateContent request -> OpenAI chat completions request."""

from __future__ import annotations

import base64

import pytest

from qwenvl_serve.genai.fields import InvalidRequestError, snake_case
from qwenvl_serve.genai.request import chat_request_from_google

MODEL = "qwen3-vl-tiny"
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"


def translate(body: object, stream: bool = False) -> dict[str, object]:
    return chat_request_from_google(body, MODEL, stream)


def refusal(body: object) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        translate(body)
    return str(caught.value)


def user(*parts: object) -> dict[str, object]:
    return {"contents": [{"role": "user", "parts": list(parts)}]}


def test_snake_case_folds_camel_case_keys():
    assert snake_case("maxOutputTokens") == "max_output_tokens"
    assert snake_case("inlineData") == "inline_data"
    assert snake_case("top_p") == "top_p"


def test_the_issue_body_becomes_a_chat_request_with_an_image_data_url():
    data = base64.b64encode(JPEG).decode()
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "请分析这张图中的布局，并生成对应的HTML代码"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": data}},
                ],
            }
        ],
        "generation_config": {"temperature": 0.5, "max_output_tokens": 64, "top_p": 0.8},
    }
    assert translate(body) == {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "请分析这张图中的布局，并生成对应的HTML代码"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}},
                ],
            }
        ],
        "temperature": 0.5,
        "top_p": 0.8,
        "max_completion_tokens": 64,
    }


def test_camel_case_spelling_gives_the_same_request():
    data = base64.b64encode(JPEG).decode()
    snake = user({"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": data}})
    snake["generation_config"] = {"top_k": 5, "stop_sequences": ["END"], "candidate_count": 2}
    camel = user({"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": data}})
    camel["generationConfig"] = {"topK": 5, "stopSequences": ["END"], "candidateCount": 2}
    assert translate(camel) == translate(snake)
    assert translate(camel)["top_k"] == 5
    assert translate(camel)["stop"] == ["END"]
    assert translate(camel)["n"] == 2


def test_url_safe_base64_from_the_sdk_becomes_standard_base64():
    raw = bytes(range(250, 256)) * 3  # encodes to characters that differ between alphabets
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    request = translate(user({"inlineData": {"mimeType": "image/jpeg", "data": url_safe}}))
    url = request["messages"][0]["content"][0]["image_url"]["url"]  # type: ignore[index]
    assert url == "data:image/jpeg;base64," + base64.b64encode(raw).decode()


def test_multi_turn_roles_and_system_instruction():
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}]},
            {"role": "model", "parts": [{"text": "Hi, "}, {"text": "there."}]},
            {"parts": [{"text": "What now?"}]},  # no role: the user
        ],
    }
    assert translate(body)["messages"] == [
        {"role": "system", "content": "Be brief.\nAnswer in English."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": "Hi, there."},
        {"role": "user", "content": [{"type": "text", "text": "What now?"}]},
    ]


def test_file_data_with_an_https_uri_becomes_an_image_url():
    part = {"file_data": {"mime_type": "image/jpeg", "file_uri": "https://example.com/a.jpg"}}
    content = translate(user(part))["messages"][0]["content"]  # type: ignore[index]
    assert content == [{"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]


def test_video_mime_types_become_video_url_parts():
    inline = {"inline_data": {"mime_type": "video/mp4", "data": "AAAA"}}
    remote = {"file_data": {"mime_type": "video/webm", "file_uri": "https://example.com/a.webm"}}
    content = translate(user(inline, remote))["messages"][0]["content"]  # type: ignore[index]
    assert content == [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
        {"type": "video_url", "video_url": {"url": "https://example.com/a.webm"}},
    ]


@pytest.mark.parametrize(
    "uri", ["gs://bucket/a.jpg", "file:///etc/passwd", "data:image/png;base64,AAAA", "a.jpg"]
)
def test_file_data_with_another_scheme_is_refused(uri):
    message = refusal(user({"fileData": {"fileUri": uri}}))
    assert message.startswith("contents[0].parts[0].fileData.fileUri must be an http or https URL")


def test_generation_settings_map_to_chat_parameters():
    request = translate(
        {
            **user({"text": "x"}),
            "generationConfig": {
                "temperature": 0,
                "topP": 1,
                "topK": 40.0,  # the SDK types top_k as a float
                "maxOutputTokens": "16",  # proto3 JSON may write integers as strings
                "seed": 7,
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
                "responseModalities": ["TEXT"],
                "responseMimeType": "text/plain",
            },
        }
    )
    assert {key: value for key, value in request.items() if key not in ("model", "messages")} == {
        "temperature": 0,
        "top_p": 1,
        "top_k": 40,
        "max_completion_tokens": 16,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }


def test_json_mime_type_asks_for_a_json_object():
    body = {**user({"text": "x"}), "generationConfig": {"responseMimeType": "application/json"}}
    assert translate(body)["response_format"] == {"type": "json_object"}


def test_response_schema_becomes_a_json_schema_response_format():
    schema = {
        "type": "OBJECT",
        "properties": {
            "colour": {"type": "STRING", "enum": ["red", "blue"], "format": "enum"},
            "count": {"type": "INTEGER", "nullable": True, "format": "int32"},
        },
        "required": ["colour"],
        "propertyOrdering": ["colour", "count"],
    }
    body = {
        **user({"text": "x"}),
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    assert translate(body)["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {
                "type": "object",
                "properties": {
                    "colour": {"type": "string", "enum": ["red", "blue"]},
                    "count": {"type": ["integer", "null"]},
                },
                "required": ["colour"],
            },
        },
    }


def test_response_json_schema_is_passed_as_it_is():
    schema = {"type": "object", "additionalProperties": False, "properties": {}}
    body = {
        **user({"text": "x"}),
        "generation_config": {
            "response_mime_type": "application/json",
            "response_json_schema": schema,
        },
    }
    response_format = translate(body)["response_format"]
    assert response_format == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_streaming_asks_for_the_usage_chunk():
    request = translate(user({"text": "x"}), stream=True)
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert "stream" not in translate(user({"text": "x"}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"contents": []}, "contents must hold at least one message."),
        ({}, "contents must hold at least one message."),
        ([1, 2], "The request body must be a JSON object."),
        (
            {**user({"text": "x"}), "safetySettings": []},
            "safetySettings is not supported by this server.",
        ),
        (
            {**user({"text": "x"}), "tools": [{"functionDeclarations": []}]},
            "tools is not supported by this server.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"thinkingConfig": {}}},
            "generationConfig.thinkingConfig is not supported by this server.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"responseLogprobs": True}},
            "generationConfig.responseLogprobs is not supported by this server.",
        ),
        (
            user({"functionCall": {"name": "f"}}),
            "contents[0].parts[0].functionCall is not supported by this server.",
        ),
        (
            {"contents": [{"role": "function", "parts": [{"text": "x"}]}]},
            "contents[0].role must be user or model.",
        ),
        (
            {"contents": [{"role": "user", "parts": []}]},
            "contents[0].parts must hold at least one part.",
        ),
        (
            user({"text": "x", "inlineData": {"mimeType": "image/png", "data": "AAAA"}}),
            "contents[0].parts[0] must hold exactly one of text, inline_data or file_data.",
        ),
        (user({"text": 5}), "contents[0].parts[0].text must be a string."),
        (
            user({"inline_data": {"mime_type": "image/jpeg", "data": "not base64!"}}),
            "contents[0].parts[0].inline_data.data is not valid base64.",
        ),
        (
            user({"inline_data": {"data": "AAAA"}}),
            "contents[0].parts[0].inline_data.mime_type is required.",
        ),
        (
            user({"inlineData": {"mimeType": "application/pdf", "data": "AAAA"}}),
            "contents[0].parts[0].inlineData.mimeType must be an image or video type such "
            "as image/jpeg or video/mp4; this server reads images and video only.",
        ),
        (
            {"contents": [{"role": "model", "parts": [{"fileData": {"fileUri": "https://a/b"}}]}]},
            "contents[0].parts[0]: a model turn can hold text parts only.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"temperature": "hot"}},
            "generationConfig.temperature must be a number.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"maxOutputTokens": 1.5}},
            "generationConfig.maxOutputTokens must be an integer.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"stopSequences": "END"}},
            "generationConfig.stopSequences must be a list of strings.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"responseModalities": ["IMAGE"]}},
            "generationConfig.responseModalities supports TEXT only.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"responseMimeType": "text/x.enum"}},
            "generationConfig.responseMimeType must be text/plain or application/json.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"responseSchema": {"type": "STRING"}}},
            "generationConfig.responseSchema needs responseMimeType application/json.",
        ),
        (
            {**user({"text": "x"}), "generationConfig": {"topP": 1, "top_p": 1}},
            "generationConfig.top_p is given twice (camelCase and snake_case).",
        ),
    ],
)
def test_refusals_name_the_field_as_sent(body, expected):
    assert refusal(body) == expected
