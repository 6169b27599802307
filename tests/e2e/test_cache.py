"""The result cache against the real engine and a real Redis (Debian's redis-server)."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qwenvl_serve.deploy.loading import load_deployment
from qwenvl_serve.deploy.local_nginx import local_variant, running_nginx
from qwenvl_serve.deploy.nginx import render_nginx
from qwenvl_serve.sample_images import synthetic_jpeg
from tests.servers import REPO, RunningServer, free_port, running_server_with_env

pytestmark = pytest.mark.e2e
CONFIG = REPO / "tests" / "configs" / "cache.yaml"
MODEL = "qwen3-vl-tiny"
ALPHA = "alpha-cache-key-0123456789abcdef"
BETA = "beta-cache-key-0123456789abcdef"
REDIS_START_TIMEOUT_S = 30.0
HITS_RESUME_WITHIN = 5  # requests after Redis is back


class Redis:
    """A redis-server on a loopback port, started and stopped by pid."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            )
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.1)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Images(http.server.BaseHTTPRequestHandler):
    """Serves whatever image bytes the test puts behind /photo.jpg."""

    current = synthetic_jpeg(96, 64, seed=1)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "image/jpeg")
        self.send_header("content-length", str(len(self.current)))
        self.end_headers()
        self.wfile.write(self.current)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, redis: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("logs") / "cache-server.log"
    overrides = [f"model={tiny_model_dir}"]
    with running_server_with_env(CONFIG, overrides, log_path, server_environment(redis)) as running:
        yield running


def server_environment(redis: Redis) -> dict[str, str]:
    """What the cache config reads from the environment."""
    return {
        "QWENVL_TEST_ALPHA_KEY": ALPHA,
        "QWENVL_TEST_BETA_KEY": BETA,
        "QWENVL_TEST_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
    }


def post(
    server: RunningServer, body: dict[str, Any], key: str = ALPHA, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=120,
    )


def chat(text: str, **fields: Any) -> dict[str, Any]:
    message = {"role": "user", "content": text}
    return {"model": MODEL, "messages": [message], "temperature": 0, "max_tokens": 8, **fields}


def engine_requests(server: RunningServer) -> float:
    """vLLM's own count of the requests its engine finished (aborted ones are not)."""
    return served_metric(server, "vllm:request_success_total")


def served_metric(server: RunningServer, name: str, **labels: str) -> float:
    """The sum of one of the server's metrics (vLLM's or ours) over the samples that
    carry ``labels``."""
    text = httpx.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {ALPHA}"}, timeout=30
    ).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_a_repeat_is_a_hit_with_the_same_body_and_usage(server: RunningServer):
    body = chat("Describe the sea.")
    first = post(server, body)
    before = engine_requests(server)
    second = post(server, body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-qwenvl-cache"] == "miss"
    assert second.headers["x-qwenvl-cache"] == "hit"
    assert second.json() == first.json()
    assert "usage" in second.json()
    assert engine_requests(server) == before  # the engine never saw the repeat


def test_a_streaming_hit_replays_chunk_by_chunk(server: RunningServer):
    body = chat("Describe a forest.", stream=True, stream_options={"include_usage": True})

    def events() -> tuple[str, list[str]]:
        with (
            httpx.Client(timeout=120) as client,
            client.stream(
                "POST",
                f"{server.base_url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {ALPHA}"},
            ) as response,
        ):
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
            return response.headers["x-qwenvl-cache"], lines

    live_outcome, live = events()
    hit_outcome, replayed = events()
    assert (live_outcome, hit_outcome) == ("miss", "hit")
    assert replayed == live  # the same chunks, usage chunk and [DONE] included
    assert len(live) > 3


def test_a_different_image_behind_the_same_url_is_a_miss(server: RunningServer, image_url: str):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]
    body = {**chat(""), "messages": [{"role": "user", "content": content}]}
    assert post(server, body).headers["x-qwenvl-cache"] == "miss"
    assert post(server, body).headers["x-qwenvl-cache"] == "hit"
    Images.current = synthetic_jpeg(96, 64, seed=2)
    assert post(server, body).headers["x-qwenvl-cache"] == "miss"


def test_tenants_do_not_share_entries(server: RunningServer):
    body = chat("A tenant's question.")
    assert post(server, body, ALPHA).headers["x-qwenvl-cache"] == "miss"
    assert post(server, body, BETA).headers["x-qwenvl-cache"] == "miss"
    assert post(server, body, BETA).headers["x-qwenvl-cache"] == "hit"


def test_no_cache_and_no_store(server: RunningServer):
    body = chat("Controls.")
    assert post(server, body, **{"Cache-Control": "no-store"}).headers["x-qwenvl-cache"] == "miss"
    assert post(server, body).headers["x-qwenvl-cache"] == "miss"  # nothing was kept
    assert post(server, body, **{"Cache-Control": "no-cache"}).headers["x-qwenvl-cache"] == "miss"
    assert post(server, body).headers["x-qwenvl-cache"] == "hit"
    sampled = post(server, chat("Controls.", temperature=0.9))
    assert sampled.headers["x-qwenvl-cache"] == "bypass"


def test_a_stream_the_client_cut_short_leaves_no_entry(server: RunningServer):
    # A stream the server finished writing before it heard the client leave ended
    # whole and may be kept; so an attempt counts only when the cut request was metered
    # fewer tokens than it asked (the server heard the client leave and stopped it), and
    # a new prompt is tried otherwise. That happens when this client is not scheduled
    # for the whole stream: the kernel's per-session group scheduling was seen to hold
    # a process off both CPUs for 1.7 s while the busy-polling engine ran, so the
    # stream is long (about 10 s here) and there are several attempts.
    for attempt in range(CUT_ATTEMPTS):
        body = chat(
            f"A long tale, take {attempt}.",
            max_tokens=CUT_STREAM_TOKENS,
            ignore_eos=True,
            stream=True,
        )
        completed_before = completion_tokens(server)
        cut_short(server, body)
        if not was_aborted(server, completed_before, body["max_tokens"]):
            continue
        assert post(server, body).headers["x-qwenvl-cache"] == "miss"
        return
    pytest.fail(f"the server never heard a client leave in {CUT_ATTEMPTS} attempts")


CUT_ATTEMPTS = 5
CUT_STREAM_TOKENS = 3000  # the prompt and these fit the tiny model's 4,096
FINISH_SEEN_WITHIN_S = 60.0


def cut_short(server: RunningServer, body: dict[str, Any]) -> None:
    """Read three lines of a streamed answer, then leave."""
    headers = {"Authorization": f"Bearer {ALPHA}"}
    with (
        httpx.Client(timeout=120) as client,
        client.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        for count, _ in enumerate(response.iter_lines()):
            if count > 2:
                break


def completion_tokens(server: RunningServer) -> float:
    """The completion tokens the engine computed, as metered."""
    return served_metric(server, "qwenvl_tokens_total", type="completion", source="engine")


def was_aborted(server: RunningServer, completed_before: float, max_tokens: int) -> bool:
    """Whether the request just cut short was stopped before its end, once it is
    answered (nothing else runs meanwhile): it was metered fewer tokens than it asked."""
    deadline = time.monotonic() + FINISH_SEEN_WITHIN_S
    while served_metric(server, "qwenvl_in_flight") > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the request was not answered")
        time.sleep(0.2)
    return completion_tokens(server) - completed_before < max_tokens


def test_ten_concurrent_identical_misses_make_one_engine_call(server: RunningServer):
    body = chat("Ten at once.", max_tokens=32, ignore_eos=True)
    before = engine_requests(server)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post(server, body), range(10)))
    assert [answer.status_code for answer in answers] == [200] * 10
    assert len({answer.text for answer in answers}) == 1
    assert engine_requests(server) - before == 1


def test_generate_content_hits_answer_in_google_s_format(server: RunningServer):
    body = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"temperature": 0}}
    url = f"{server.base_url}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": ALPHA}
    first = httpx.post(url, json=body, headers=headers, timeout=120)
    second = httpx.post(url, json=body, headers=headers, timeout=120)
    assert second.headers["x-qwenvl-cache"] == "hit"
    assert second.json() == first.json()
    assert "candidates" in second.json()


def test_redis_killed_mid_load_gives_no_5xx_and_hits_resume(server: RunningServer, redis: Redis):
    body = chat("Through an outage.")
    post(server, body)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(post(server, body).status_code)

    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(load) for _ in range(2)]
        time.sleep(1)
        redis.stop()
        time.sleep(2)
        stop.set()
        for worker in workers:
            worker.result()
    assert statuses
    assert set(statuses) == {200}
    assert post(server, body).headers["x-qwenvl-cache"] == "miss"  # Redis is gone
    redis.start()
    # Hits resume: the next answers are stored again (on a loaded machine a reconnect
    # can outlast cache.redis_timeout_ms once, which is one more miss, never an error).
    answers = [post(server, body) for _ in range(HITS_RESUME_WITHIN)]
    assert {answer.status_code for answer in answers} == {200}
    outcomes = [answer.headers["x-qwenvl-cache"] for answer in answers]
    assert "hit" in outcomes, outcomes
    assert outcomes[outcomes.index("hit") :] == ["hit"] * (len(outcomes) - outcomes.index("hit"))


def test_an_admin_purges_a_tenant_s_entries(server: RunningServer):
    body = chat("To be purged.")
    post(server, body, BETA)
    purge = f"{server.base_url}/admin/cache/purge"
    refused = httpx.post(purge, json={}, headers={"Authorization": f"Bearer {BETA}"}, timeout=30)
    assert refused.status_code == 403
    purged = httpx.post(
        purge, json={"key": "beta"}, headers={"Authorization": f"Bearer {ALPHA}"}, timeout=30
    )
    assert purged.json()["purged"] >= 1
    assert post(server, body, BETA).headers["x-qwenvl-cache"] == "miss"


@pytest.fixture(scope="module")
def second_replica(
    tiny_model_dir: Path, redis: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("logs") / "cache-replica.log"
    with running_server_with_env(
        CONFIG, [f"model={tiny_model_dir}"], log_path, server_environment(redis)
    ) as running:
        yield running


def test_two_replicas_behind_nginx_share_hits_through_redis(
    server: RunningServer,
    second_replica: RunningServer,
    redis: Redis,
    tmp_path_factory: pytest.TempPathFactory,
):
    directory = tmp_path_factory.mktemp("nginx")
    replicas = [f"127.0.0.1:{server.port}", f"127.0.0.1:{second_replica.port}"]
    deployment_file = directory / "deploy.yaml"
    models = [{"name": "tiny", "config": str(CONFIG), "default": True, "replicas": replicas}]
    deployment_file.write_text(yaml.safe_dump({"models": models}))
    environment = {**os.environ, **server_environment(redis)}
    deployment = load_deployment(deployment_file, environment)
    port = free_port()
    site = render_nginx(local_variant(deployment, directory, f"127.0.0.1:{port}"))
    body = chat("Shared by replicas.")
    assert post(server, body).headers["x-qwenvl-cache"] == "miss"
    # The other replica has never seen this request: its hit is the first one's entry.
    assert post(second_replica, body).headers["x-qwenvl-cache"] == "hit"
    with running_nginx(site, directory, port):
        outcomes = [
            httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {ALPHA}"},
                timeout=120,
            ).headers["x-qwenvl-cache"]
            for _ in range(4)
        ]
    assert outcomes == ["hit"] * 4
