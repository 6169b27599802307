"""vLLM's error answers become ours: the messages below are vLLM 0.32's, as it sent them."""

from __future__ import annotations

import json

import pytest

from qwenvl_serve.core.engine_errors import engine_error, field_path, stream_error
from qwenvl_serve.routes import ErrorFormat


def vllm_body(message: str, param: str | None = None, kind: str = "BadRequestError") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": 400}}
    ).encode()


FLOAT_DUMP = (
    "1 validation error:\n  {'type': 'float_parsing', 'loc': 'body.temperature', 'msg': "
    "'Input should be a valid number, unable to parse string as a number', 'input': 'hot'}"
)
UNION_DUMP = (
    "22 validation errors:\n  {'type': 'string_type', 'loc': "
    "'body.messages.0.ChatCompletionDeveloperMessageParam.content', 'msg': 'Input should be a "
    "valid string', 'input': '5'}\n  {'type': 'iterable_type', 'loc': "
    "'body.messages.0.ChatCompletionDeveloperMessageParam.content', 'msg': 'Input should be "
    "iterable', 'input': '5'}"
)


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [
        (
            vllm_body(FLOAT_DUMP, "body.temperature", "Bad Request"),
            "temperature must be a number.",
            "temperature",
            "invalid_value",
        ),
        (
            vllm_body(UNION_DUMP, "body.messages.0.ChatCompletionDeveloperMessageParam.content"),
            "messages[0].content has an invalid value.",
            "messages[0].content",
            "invalid_value",
        ),
        (
            vllm_body(
                "1 validation error:\n  {'type': 'int_from_float', 'loc': 'body.seed', "
                "'msg': 'x', 'input': '1.5'}"
            ),
            "seed must be a whole number.",
            "seed",
            "invalid_value",
        ),
        (
            vllm_body(
                "1 validation error:\n  {'type': 'missing', 'loc': 'body.tools.0.function', "
                "'msg': 'Field required', 'input': '<dict of 1 items>'}"
            ),
            "tools[0].function is required.",
            "tools[0].function",
            "invalid_value",
        ),
        (
            vllm_body("top_p must be in (0, 1], got 5.0. (parameter=top_p, value=5.0)", "top_p"),
            "top_p must be in (0, 1], got 5.0.",
            "top_p",
            "invalid_value",
        ),
        (
            vllm_body(
                "When using `tool_choice`, `tools` must be set. (parameter=tool_choice)",
                "tool_choice",
            ),
            "When using `tool_choice`, `tools` must be set.",
            "tool_choice",
            "invalid_value",
        ),
        (
            vllm_body("Token id 999999999 is out of vocabulary"),
            "Token id 999999999 is out of vocabulary",
            None,
            "invalid_request",
        ),
        # Library internals: the tokenizer's type error, a grammar compiler's report.
        (
            vllm_body(
                "TextEncodeInput must be Union[TextInputSequence, "
                "Tuple[InputSequence, InputSequence]]"
            ),
            "The request is invalid.",
            None,
            "invalid_request",
        ),
        (
            vllm_body(
                'Grammar error: at 1(8): invalid regex "(" (in regex): '
                "regex parse error:\n    (\n    ^"
            ),
            "The request is invalid.",
            None,
            "invalid_request",
        ),
        (
            vllm_body("'NoneType' object has no attribute 'get'"),
            "The request is invalid.",
            None,
            "invalid_request",
        ),
        (
            vllm_body(
                "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
            ),
            "The request is invalid.",
            None,
            "invalid_request",
        ),
        # FastAPI's and Starlette's own shapes.
        (
            b'{"detail": "There was an error parsing the body"}',
            "There was an error parsing the body",
            None,
            "invalid_request",
        ),
        (
            b'{"detail": [{"type": "json_invalid", "loc": ["body", 12], "msg": "decode error"}]}',
            "[12] must be valid JSON.",
            "[12]",
            "invalid_value",
        ),
        (
            b"Disallowed CORS origin, method",
            "This cross-origin request is not allowed (disallowed: origin, method).",
            None,
            "cors_not_allowed",
        ),
        (b"", "The request is invalid.", None, "invalid_request"),
        (b"[1, 2]", "The request is invalid.", None, "invalid_request"),
    ],
)
def test_client_errors_name_the_field_without_internals(body, message, param, code):
    error = engine_error(400, body, "rid")
    assert (error.status, error.message, error.param, error.code) == (400, message, param, code)
    assert json.loads(error.body_in(ErrorFormat.OPENAI))["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_failures_get_a_fixed_message_with_the_request_id(status):
    body = vllm_body("AssertionError: expected 3 placeholders, got 2", kind="InternalServerError")
    error = engine_error(status, body, "req-7")
    assert error.status == status
    assert error.message == "The model server failed to handle this request; request id req-7."
    assert error.code == "engine_error"


def test_plain_text_internal_server_error_is_a_fixed_500():
    assert engine_error(500, b"Internal Server Error", "r").code == "engine_error"


def test_unavailable_keeps_its_status_with_a_fixed_message():
    error = engine_error(503, vllm_body("EngineDeadError: the engine died", kind="x"), "r")
    assert (error.status, error.message) == (503, "The model server is not ready; try again later.")


def test_model_not_found_keeps_vllm_s_sentence():
    body = vllm_body("The model `nope` does not exist. Valid aliases: tiny.", "model")
    error = engine_error(404, body, "r")
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    assert error.message == "The model `nope` does not exist. Valid aliases: tiny."


def test_fields_are_named_as_the_client_called_them():
    names = {"top_p": "generationConfig.topP", "temperature": "generationConfig.temperature"}.get
    said = vllm_body("top_p must be in (0, 1], got 7.0. (parameter=top_p, value=7.0)", "top_p")
    error = engine_error(400, said, "r", lambda name: names(name) or name)
    assert error.message == "generationConfig.topP must be in (0, 1], got 7.0."
    assert error.param == "generationConfig.topP"
    dump = engine_error(400, vllm_body(FLOAT_DUMP), "r", lambda name: names(name) or name)
    assert dump.message == "generationConfig.temperature must be a number."


def test_stream_errors_are_rewritten_by_their_status():
    failure = stream_error(
        {"message": "Internal server error", "type": "InternalServerError", "code": 500}, "r9"
    )
    assert (failure.status, failure.code) == (500, "engine_error")
    assert "r9" in failure.message
    client = stream_error({"message": FLOAT_DUMP, "param": "body.temperature", "code": 400}, "r")
    assert (client.status, client.message) == (400, "temperature must be a number.")
    assert stream_error("not an object", "r").status == 500


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (
            "body.messages.0.ChatCompletionUserMessageParam.content.1.image_url",
            "messages[0].content[1].image_url",
        ),
        ("body.temperature", "temperature"),
        (
            "messages.2.function-after[check(), ChatCompletionToolMessageParam].role",
            "messages[2].role",
        ),
        ("body", "body"),
    ],
)
def test_field_paths_drop_pydantic_s_own_segments(location, path):
    assert field_path(location) == path
