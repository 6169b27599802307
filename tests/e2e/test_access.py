"""Keys, the route allowlist, rate limits and metering against the real engine."""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwenvl_serve.sample_images import synthetic_jpeg
from tests.servers import REPO, RunningServer, running_server_with_env

pytestmark = pytest.mark.e2e
CONFIG = REPO / "tests" / "configs" / "access.yaml"
MODEL = "qwen3-vl-tiny"
ALPHA = "alpha-test-key-0123456789abcdef"
BETA = "beta-test-key-0123456789abcdef"  # the config holds only its sha256 digest
WRONG = "wrong-test-key-0123456789abcdef"
USAGE_LOG_WAIT_S = 30.0
PROMTOOL_LINT_PROBLEMS = 3  # promtool's exit status for lint findings; 1 is a parse error
OUR_LINE = re.compile(r"^(# (HELP|TYPE) )?qwenvl_")


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, usage_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("logs") / "access-server.log"
    overrides = [f"model={tiny_model_dir}", f"metering.usage_log={usage_log}"]
    with running_server_with_env(
        CONFIG, overrides, log_path, {"QWENVL_TEST_ALPHA_KEY": ALPHA}
    ) as running:
        yield running
    # A clean stop: the lifespan shutdown passed through our layers and closed the log.
    assert running.process.returncode == 0, running.log_tail()


def client_for(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def text_messages(text: str = "Say something.") -> list[Any]:
    return [{"role": "user", "content": text}]


def image_messages() -> list[Any]:
    url = "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(128, 96, seed=4)).decode()
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def metrics_text(server: RunningServer) -> str:
    response = httpx.get(f"{server.base_url}/metrics", headers=bearer(BETA), timeout=30)
    assert response.status_code == 200
    return response.text


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def token_counts(server: RunningServer, key: str) -> dict[str, float]:
    counts = {"prompt": 0.0, "completion": 0.0}
    for family in text_string_to_metric_families(metrics_text(server)):
        for sample in family.samples:
            if sample.name == "qwenvl_tokens_total" and sample.labels["key"] == key:
                assert sample.labels["model"] == MODEL
                counts[sample.labels["type"]] += sample.value
    return counts


def raw_status(server: RunningServer, method: str, path: str, key: str | None = None) -> int:
    """Send ``path`` byte for byte (no client-side normalisation) and return the status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **(bearer(key) if key else {})}
        connection.request(method, path, body=b"{}", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_missing_and_wrong_keys_get_the_same_401(server: RunningServer):
    url = f"{server.base_url}/v1/chat/completions"
    body = {"model": MODEL, "messages": text_messages(), "max_tokens": 2}
    missing = httpx.post(url, json=body, timeout=30)
    wrong = httpx.post(url, json=body, headers=bearer(WRONG), timeout=30)
    digest_as_key = httpx.post(
        url,
        json=body,
        headers=bearer("sha256:6a0720920a58a7a4f73dc498ed52da26e6d4437c2b061f3030d43291b7e923cd"),
        timeout=30,
    )
    for response in (missing, wrong, digest_as_key):
        assert response.status_code == 401
        assert response.json() == missing.json()
    assert missing.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.base_url}/v1/models", timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client_for(server, WRONG).models.list()


def test_a_right_key_gets_200(server: RunningServer):
    assert [m.id for m in client_for(server, BETA).models.list()] == [MODEL]
    response = client_for(server, BETA).chat.completions.create(
        model=MODEL, messages=text_messages(), max_tokens=4
    )
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200  # public


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/tokenize"),
        ("POST", "/invocations"),
        ("POST", "/detokenize"),
        ("POST", "/pause"),
        ("POST", "/collective_rpc"),
        ("GET", "/docs"),
        ("GET", "/version"),
        ("POST", "//tokenize"),
        ("POST", "/v1/chat/completions/../../tokenize"),
        ("POST", "/v1/chat/completions/%2E%2E/%2E%2E/tokenize"),
        ("POST", "/%74okenize"),
        ("GET", "/metrics/"),
    ],
)
def test_routes_off_the_allowlist_are_404_even_with_a_key(server, method, path):
    assert raw_status(server, method, path) == 404
    assert raw_status(server, method, path, key=BETA) == 404


def test_rpm_tokens_and_usage_log_for_one_key(server: RunningServer, usage_log: Path):
    """alpha (rpm 3): three requests pass, the fourth gets 429; what the responses said
    they used is exactly what the metrics and the usage log count."""
    client = client_for(server, ALPHA)
    before = token_counts(server, "alpha")
    plain = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=text_messages(), max_tokens=6
    )
    with_image = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=image_messages(), max_tokens=6
    )
    streamed = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=text_messages("Tell a story."),
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    stream_chunks = list(streamed.parse())
    reported = [plain.parse().usage, with_image.parse().usage, stream_chunks[-1].usage]
    usages = [usage for usage in reported if usage is not None]
    assert len(usages) == 3

    fourth = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": text_messages(), "max_tokens": 2},
        headers=bearer(ALPHA),
        timeout=30,
    )
    assert fourth.status_code == 429
    assert 1 <= int(fourth.headers["retry-after"]) <= 60
    assert fourth.json()["error"]["type"] == "rate_limit_error"

    after = token_counts(server, "alpha")
    assert after["prompt"] - before["prompt"] == sum(u.prompt_tokens for u in usages)
    assert after["completion"] - before["completion"] == sum(u.completion_tokens for u in usages)

    ids = [r.headers["x-request-id"] for r in (plain, with_image, streamed)]
    records = wait_for_usage_records(usage_log, "alpha", 3)
    assert [r["request_id"] for r in records] == ids  # one line per request, none for the 429
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in records] == [
        (u.prompt_tokens, u.completion_tokens) for u in usages
    ]
    assert [r["images"] for r in records] == [0, 1, 0]
    assert all(r["model"] == MODEL and r["status"] == 200 for r in records)
    cost = (usages[0].prompt_tokens * 0.1 + usages[0].completion_tokens * 0.2) / 1000
    assert records[0]["cost"] == pytest.approx(cost)
    text = usage_log.read_text()
    assert ALPHA not in text
    assert "base64" not in text
    assert "Tell a story" not in text


def wait_for_usage_records(path: Path, key: str, count: int) -> list[dict[str, object]]:
    """The usage log is written in the background: poll for the expected lines."""
    deadline = time.monotonic() + USAGE_LOG_WAIT_S
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        records = [json.loads(line) for line in lines]
        mine = [r for r in records if r["key"] == key]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def test_a_stream_that_did_not_ask_for_usage_is_metered_without_showing_it(server):
    """Same prompt, same length (ignore_eos): the hidden stream usage is what a
    non-streaming response reports."""
    client = client_for(server, BETA)
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": text_messages("Count to ten."),
        "max_tokens": 5,
        "extra_body": {"ignore_eos": True},
    }
    shown = client.chat.completions.create(**request)
    assert shown.usage is not None
    before = token_counts(server, "beta")
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the client
    after = token_counts(server, "beta")
    assert after["prompt"] - before["prompt"] == shown.usage.prompt_tokens
    assert after["completion"] - before["completion"] == shown.usage.completion_tokens == 5


def test_generate_content_takes_the_key_in_the_query_and_is_metered(server):
    before = token_counts(server, "beta")
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{MODEL}:generateContent",
        params={"key": BETA},
        json={
            "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
            "generationConfig": {"maxOutputTokens": 3},
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usageMetadata"]
    after = token_counts(server, "beta")
    assert after["prompt"] - before["prompt"] == usage["promptTokenCount"]
    assert after["completion"] - before["completion"] == usage["candidatesTokenCount"]
    refused = httpx.post(
        f"{server.base_url}/v1beta/models/{MODEL}:generateContent",
        params={"key": WRONG},
        json={"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]},
        timeout=30,
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"


def test_metrics_need_an_admin_key_and_pass_promtool(server: RunningServer):
    assert httpx.get(f"{server.base_url}/metrics", timeout=30).status_code == 401
    assert httpx.get(
        f"{server.base_url}/metrics", headers=bearer(WRONG), timeout=30
    ).status_code == (401)
    # A tenant's key does not open other tenants' names and counts.
    tenant = httpx.get(f"{server.base_url}/metrics", headers=bearer(ALPHA), timeout=30)
    assert tenant.status_code == 403
    assert "beta" not in tenant.text
    text = metrics_text(server)
    for name in (
        "qwenvl_requests_total",
        "qwenvl_request_duration_seconds_bucket",
        "qwenvl_tokens_total",
        "qwenvl_rejections_total",
        "qwenvl_in_flight",
        "vllm:prompt_tokens_total",
    ):
        assert name in text
    assert 'qwenvl_rejections_total{reason="rpm"} 1.0' in text
    assert ALPHA not in text
    assert "/tokenize" not in text  # refused paths are counted as route "other"
    # The whole exposition parses; promtool's only complaints are about vLLM's own
    # `vllm:`-prefixed names (its lint rejects colons), none about ours.
    whole = promtool_check(text)
    assert whole.returncode in (0, PROMTOOL_LINT_PROBLEMS), whole.stdout + whole.stderr
    problems = (whole.stdout + whole.stderr).splitlines()
    assert [line for line in problems if line.strip() and not line.startswith("vllm:")] == []
    ours = "".join(line for line in text.splitlines(keepends=True) if OUR_LINE.match(line))
    assert "qwenvl_tokens_total{" in ours
    check = promtool_check(ours)
    assert check.returncode == 0, check.stdout + check.stderr


def promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )


def test_access_log_has_one_json_line_per_request_without_secrets(server: RunningServer):
    response = httpx.get(
        f"{server.base_url}/v1/models",
        headers={**bearer(BETA), "X-Request-ID": "access-log-probe"},
        timeout=30,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + USAGE_LOG_WAIT_S
    while True:
        lines = server.log_path.read_text(errors="replace").splitlines()
        entries = [json.loads(line) for line in lines if line.startswith('{"time"')]
        probe = [e for e in entries if e["request_id"] == "access-log-probe"]
        if probe or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(probe) == 1
    assert (probe[0]["key"], probe[0]["route"], probe[0]["status"]) == ("beta", "models", 200)
    assert any(e["status"] == 401 and e["rejection"] == "auth" for e in entries)
    assert any(e["status"] == 429 and e["rejection"] == "rpm" for e in entries)
    log_text = server.log_path.read_text(errors="replace")
    assert ALPHA not in log_text
    assert BETA not in log_text
