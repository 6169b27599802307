"""SIGTERM during a streaming request: the stream finishes, new requests get 503, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.servers import descendants
from tests.servers import REPO, RunningServer, free_port, start_server, stop_server

pytestmark = pytest.mark.e2e
MODEL = "qwen3-vl-tiny"
STREAM_TOKENS = 400  # long enough to still run well after the signal
SIGNAL_AFTER_CHUNKS = 5
EXIT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("graceful") / "server.log"
    overrides = [f"model={tiny_model_dir}", "shutdown.drain_seconds=120"]
    running = start_server(REPO / "configs" / "tiny.yaml", overrides, log_path, free_port())
    yield running
    stop_server(running)


def stream_body() -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": STREAM_TOKENS,
        "ignore_eos": True,  # random weights: make the length certain
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_sigterm_lets_the_stream_finish_refuses_new_requests_and_exits_0(server: RunningServer):
    processes = [server.process.pid, *(p.pid for p in descendants(server.process.pid))]
    events: list[dict[str, Any]] = []
    after_signal: dict[str, httpx.Response] = {}
    chunks_before_signal = 0

    def probe_while_draining() -> None:
        # The signal reaches vLLM through the launcher: wait until the instance says so.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after_signal["health"] = httpx.get(f"{server.base_url}/health", timeout=30)
            if after_signal["health"].status_code == 503:
                break
            time.sleep(0.05)
        after_signal["chat"] = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=30,
        )

    prober = threading.Thread(target=probe_while_draining)
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=stream_body(), timeout=120
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == SIGNAL_AFTER_CHUNKS:
                server.process.send_signal(signal.SIGTERM)
                chunks_before_signal = len(events)
                prober.start()
    prober.join(60)

    # The request that was running when the signal came finished in full.
    assert len(events) > chunks_before_signal + 10
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finishes[-1] == "length"
    usage = events[-1]["usage"]
    assert isinstance(usage, dict)
    assert usage["completion_tokens"] == STREAM_TOKENS

    # Meanwhile new requests were refused cleanly, so a balancer could go elsewhere.
    chat, health = after_signal["chat"], after_signal["health"]
    assert chat.status_code == 503
    assert chat.headers["retry-after"] == "1"
    assert chat.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 503

    # Then the process exited 0 and left nothing behind.
    assert server.process.wait(EXIT_TIMEOUT_S) == 0, server.log_tail()
    alive = [pid for pid in processes if _alive(pid)]
    assert alive == []
    assert "aborting in-flight" not in server.log_path.read_text()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
