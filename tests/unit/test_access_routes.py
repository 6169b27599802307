"""The route allowlist reads the path as routed, and nothing odd gets through."""

import pytest

from qwenvl_serve.routes import (
    CHAT_COMPLETIONS,
    GENERATE_CONTENT,
    INFERENCE_ROUTES,
    OTHER,
    PLAYGROUND,
    is_allowed,
    is_inference,
    route_name,
)

ALLOWED = [
    ("/v1/chat/completions", CHAT_COMPLETIONS),
    ("/v1/completions", "completions"),
    ("/v1/models", "models"),
    ("/v1/models/qwen3-vl:generateContent", GENERATE_CONTENT),
    ("/v1beta/models/qwen3-vl:streamGenerateContent", GENERATE_CONTENT),
    ("/health", "health"),
    ("/metrics", "metrics"),
    ("/playground", PLAYGROUND),
    ("/playground/", PLAYGROUND),
    ("/playground/app.js", PLAYGROUND),
    ("/playground/assets/style.v2.css", PLAYGROUND),
]

REFUSED = [
    "/tokenize",
    "/detokenize",
    "/invocations",
    "/pause",
    "/resume",
    "/collective_rpc",
    "/docs",
    "/openapi.json",
    "/version",
    "/ping",
    "/load",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/audio/transcriptions",
    "/v1/models/qwen3-vl",  # retrieve-model is not served
    "/v1/models/qwen3-vl:countTokens",
    "/v1/models/a/b:generateContent",
    "//tokenize",
    "/v1/chat/completions/",
    "/v1/chat/completions/../../tokenize",
    "/v1/chat/completions/..%2F..%2Ftokenize",
    "/v1/chat/completions%00",
    "/v1/chat/completions;x",
    "/V1/chat/completions",
    "/v1//chat/completions",
    "/./v1/chat/completions",
    "/metrics/",
    "/metrics/anything",
    "/health/",
    "/healthz",
    "/playground/../tokenize",
    "/playground/./index.html",
    "/playground//etc/passwd",
    "/playground/a/../../tokenize",
    "/playground/..",
    "/playground/.env",
    "/playground\\..\\tokenize",
    "/playgroundx",
    "",
    "/",
]


@pytest.mark.parametrize(("path", "name"), ALLOWED)
def test_allowed_paths_and_their_route_names(path, name):
    assert is_allowed(path)
    assert route_name(path) == name


@pytest.mark.parametrize("path", REFUSED)
def test_everything_else_is_refused(path):
    assert not is_allowed(path)
    assert route_name(path) == OTHER


def test_only_posts_to_model_routes_count_as_inference():
    assert {CHAT_COMPLETIONS, GENERATE_CONTENT, "completions"} == INFERENCE_ROUTES
    assert is_inference("POST", "/v1/chat/completions")
    assert is_inference("POST", "/v1beta/models/m:streamGenerateContent")
    assert not is_inference("GET", "/v1/chat/completions")
    assert not is_inference("OPTIONS", "/v1/completions")
    assert not is_inference("POST", "/v1/models")
    assert not is_inference("POST", "/tokenize")
