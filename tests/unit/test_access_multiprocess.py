"""Our metrics in prometheus-client's multiprocess mode, as vLLM uses it with
``--api-server-count`` > 1: several processes, one /metrics, valid exposition."""

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

# One API-server process: our stack over a tiny chat app, two metered requests.
SERVER_PROCESS = textwrap.dedent(
    """
    import asyncio, json, httpx
    from qwenvl_serve.config_loading import resolve_config
    from qwenvl_serve.middleware import QwenVLServeMiddleware

    async def chat(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        body = json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 3}}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = resolve_config({
        "model": "m", "served_model_name": "tiny",
        "auth": {"keys": [{"name": "alpha", "key": "alpha-key-0123456789abcdef"}]},
    })
    app = QwenVLServeMiddleware(chat, config=config)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(2):
                response = await client.post(
                    "/v1/chat/completions", json={"messages": []},
                    headers={"Authorization": "Bearer alpha-key-0123456789abcdef"},
                )
                assert response.status_code == 200, response.text
            assert (await client.get("/tokenize")).status_code == 404

    asyncio.run(main())
    """
)


def run_server_process(multiproc_dir: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", SERVER_PROCESS],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def collected(multiproc_dir: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc_dir))
    return generate_latest(registry).decode()


def samples(text: str, name: str) -> list[Any]:
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_metrics_from_several_processes_add_up(tmp_path):
    for _ in range(2):
        run_server_process(tmp_path)
    text = collected(tmp_path)
    requests = samples(text, "qwenvl_requests_total")
    by_labels = {
        (s.labels["key"], s.labels["route"], s.labels["status"]): s.value for s in requests
    }
    assert by_labels == {("alpha", "chat_completions", "200"): 4.0, ("-", "other", "404"): 2.0}
    tokens = {s.labels["type"]: s.value for s in samples(text, "qwenvl_tokens_total")}
    assert tokens == {"prompt": 40.0, "completion": 12.0}
    rejections = {s.labels["reason"]: s.value for s in samples(text, "qwenvl_rejections_total")}
    assert rejections == {"route": 2.0, "auth": 0.0}
    assert sum(s.value for s in samples(text, "qwenvl_request_duration_seconds_count")) == 6
    # Gauges are combined across processes, never split by pid.
    in_flight = samples(text, "qwenvl_in_flight")
    assert [(s.labels, s.value) for s in in_flight] == [({}, 0.0)]
    build = samples(text, "qwenvl_build_info")
    assert len(build) == 1
    assert build[0].labels["served_model_name"] == "tiny"
    assert "pid=" not in text


def test_promtool_accepts_the_multiprocess_exposition(tmp_path):
    run_server_process(tmp_path)
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=collected(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
