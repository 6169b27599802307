"""Real nginx, rendered from a deployment file, in front of real engine instances.

Two models on loopback: `tiny` (the session's tiny server, also the default model) and
`tiny-b` with two replicas. The replica kill runs last: it leaves `tiny-b` with one.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import yaml

from qwenvl_serve.deploy.loading import Deployment, load_deployment
from qwenvl_serve.deploy.local_nginx import local_variant, running_nginx
from qwenvl_serve.deploy.nginx import render_nginx
from tests.servers import REPO, RunningServer, free_port, start_server, stop_server

pytestmark = pytest.mark.e2e
TINY_B = "tiny-b"
TINY = "qwen3-vl-tiny"
MIB = 1024 * 1024
TTFT_SAMPLES = 10
LOG_WAIT_S = 10.0
LONG_STREAM_TOKENS = 2000  # with the prompt, within tiny.yaml's max_model_len of 4096


@dataclass
class Site:
    """nginx in front of the instances, and where its logs are."""

    base_url: str
    prefix: Path
    tiny: RunningServer
    replicas: list[RunningServer]

    def access_log(self) -> list[dict[str, Any]]:
        lines = (self.prefix / "access.log").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def logged(self, request_ids: list[str]) -> list[dict[str, Any]]:
        """The access log entries of these requests, in order; nginx writes an entry once
        it is done with the connection, which can be a moment after the client is."""
        deadline = time.monotonic() + LOG_WAIT_S
        while True:
            by_id = {e["request_id"]: e for e in self.access_log()}
            if all(rid in by_id for rid in request_ids) or time.monotonic() > deadline:
                return [by_id[rid] for rid in request_ids if rid in by_id]
            time.sleep(0.05)


def write_tiny_b_config(directory: Path) -> Path:
    """configs/tiny.yaml served under another name: the second model."""
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    path = directory / "tiny-b.yaml"
    path.write_text(yaml.safe_dump({**tiny, "served_model_name": TINY_B}))
    return path


def write_deployment(directory: Path, tiny: RunningServer, replicas: list[RunningServer]) -> Path:
    deployment = {
        "models": [
            {
                "name": "tiny",
                "config": str(REPO / "configs" / "tiny.yaml"),
                "default": True,
                "replicas": [f"127.0.0.1:{tiny.port}"],
            },
            {
                "name": TINY_B,
                "config": str(write_tiny_b_config(directory)),
                "replicas": [f"127.0.0.1:{r.port}" for r in replicas],
            },
        ],
        "limits": {"rate_per_ip": "50r/s", "burst_per_ip": 50},
    }
    path = directory / "deploy.yaml"
    path.write_text(yaml.safe_dump(deployment))
    return path


def start_replicas(directory: Path, model_dir: Path, count: int) -> list[RunningServer]:
    """Start ``count`` tiny-b instances at once: model loading dominates, so overlap it."""
    config = write_tiny_b_config(directory)
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(
                start_server, config, [f"model={model_dir}"], directory / f"b{i}.log", free_port()
            )
            for i in range(count)
        ]
        started, failures = [], []
        for future in futures:
            try:
                started.append(future.result())
            except Exception as exc:  # stop the others, then report this one
                failures.append(exc)
    if failures:
        for server in started:
            stop_server(server)
        raise failures[0]
    return started


@pytest.fixture(scope="module")
def deployment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deployment")


@pytest.fixture(scope="module")
def replicas(tiny_model_dir: Path, deployment_dir: Path) -> Iterator[list[RunningServer]]:
    servers = start_replicas(deployment_dir, tiny_model_dir, 2)
    yield servers
    for server in servers:
        stop_server(server)


@pytest.fixture(scope="module")
def deployment(
    tiny_server: RunningServer, replicas: list[RunningServer], deployment_dir: Path
) -> Deployment:
    return load_deployment(write_deployment(deployment_dir, tiny_server, replicas), {})


@pytest.fixture(scope="module")
def site(
    deployment: Deployment,
    tiny_server: RunningServer,
    replicas: list[RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    text = render_nginx(local_variant(deployment, prefix, f"127.0.0.1:{port}"))
    with running_nginx(text, prefix, port):
        yield Site(f"http://127.0.0.1:{port}", prefix, tiny_server, replicas)


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def chat(base_url: str, model: str, max_tokens: int = 4) -> str:
    """The model that answered a chat request sent to ``base_url`` for ``model``."""
    response = client(base_url).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=max_tokens,
    )
    return response.model


def vllm_metric(server: RunningServer, name: str) -> float:
    """The sum of one of vLLM's own metrics over its labels, from the instance's /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    values = re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M)
    return sum(float(value) for value in values)


def successes(server: RunningServer) -> float:
    """Requests the instance finished."""
    return vllm_metric(server, "vllm:request_success_total")


def settled_generated_tokens(server: RunningServer) -> float:
    """Tokens the instance generated so far, once the count stops moving."""
    last = vllm_metric(server, "vllm:generation_tokens_total")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = vllm_metric(server, "vllm:generation_tokens_total")
        if now == last:
            return now
        last = now
    raise TimeoutError("the engine kept generating")


# ---- routing


def test_each_prefix_reaches_its_model_through_the_openai_client(site: Site):
    assert chat(f"{site.base_url}/{TINY_B}/v1", TINY_B) == TINY_B
    assert chat(f"{site.base_url}/tiny/v1", TINY) == TINY
    assert chat(f"{site.base_url}/v1", TINY) == TINY  # the default model
    with pytest.raises(openai.NotFoundError):  # the prefix decides: tiny-b is not behind /tiny
        chat(f"{site.base_url}/tiny/v1", TINY_B)
    listed = client(f"{site.base_url}/{TINY_B}/v1").models.list()
    assert [m.id for m in listed] == [TINY_B]


def test_generate_content_goes_to_the_model_named_in_the_path(site: Site):
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "generationConfig": {"maxOutputTokens": 4},
    }
    response = httpx.post(
        f"{site.base_url}/v1beta/models/{TINY_B}:generateContent", json=body, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["modelVersion"] == TINY_B


def test_both_replicas_take_traffic(site: Site):
    before = [successes(server) for server in site.replicas]
    for _ in range(8):
        assert chat(f"{site.base_url}/{TINY_B}/v1", TINY_B) == TINY_B
    gained = [successes(server) - was for server, was in zip(site.replicas, before, strict=True)]
    assert sum(gained) == 8
    assert all(count >= 2 for count in gained), gained


# ---- streaming


class FirstChunk(Exception):  # noqa: N818 - a signal to stop reading, not an error
    """Raised to stop reading a stream after its first chunk."""


def hang_up() -> None:
    raise FirstChunk


@dataclass
class Streamed:
    """One streamed answer: when its first chunk came, and every chunk's delta text."""

    first_chunk_s: float
    deltas: list[str]


def stream_chat(url: str, max_tokens: int, on_first_chunk=None) -> Streamed:
    """POST a greedy streaming chat request (the same prompt gives the same chunks)."""
    body = {
        "model": TINY,
        "messages": [{"role": "user", "content": "Tell a story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    first: float | None = None
    deltas: list[str] = []
    started = time.perf_counter()
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None:
                first = time.perf_counter() - started
                if on_first_chunk is not None:
                    on_first_chunk()
            choices = json.loads(line.removeprefix("data: "))["choices"]
            deltas.append((choices[0]["delta"].get("content") or "") if choices else "")
    assert first is not None
    return Streamed(first, deltas)


def test_a_stream_arrives_as_it_is_generated(site: Site):
    direct_url = f"{site.tiny.base_url}/v1/chat/completions"
    proxied_url = f"{site.base_url}/tiny/v1/chat/completions"

    # Causal, not timed: take the first chunk through nginx, then hang up. Had nginx held
    # the stream back until the end, the engine would have generated every token by then;
    # as it passes chunks on as they come, hanging up stops the generation early.
    before = settled_generated_tokens(site.tiny)
    with pytest.raises(FirstChunk):
        stream_chat(proxied_url, LONG_STREAM_TOKENS, on_first_chunk=hang_up)
    generated = settled_generated_tokens(site.tiny) - before
    assert 0 < generated < LONG_STREAM_TOKENS / 2

    # A whole stream comes through nginx chunk for chunk as it comes direct.
    proxied = stream_chat(proxied_url, 300)
    direct = stream_chat(direct_url, 300)
    assert len(direct.deltas) > 300  # role chunk, tokens, finish chunk
    assert proxied.deltas == direct.deltas  # nginx neither merges, splits nor drops chunks

    # Time to first chunk, direct vs through nginx, interleaved; logged, not asserted.
    ttft: dict[str, list[float]] = {"direct": [], "nginx": []}
    for _ in range(TTFT_SAMPLES):
        ttft["direct"].append(stream_chat(direct_url, 16).first_chunk_s)
        ttft["nginx"].append(stream_chat(proxied_url, 16).first_chunk_s)
    medians = {name: statistics.median(values) * 1000 for name, values in ttft.items()}
    print(
        f"\nTTFT median over {TTFT_SAMPLES}: direct {medians['direct']:.1f} ms, "
        f"through nginx {medians['nginx']:.1f} ms "
        f"(+{medians['nginx'] - medians['direct']:.1f} ms); {len(direct.deltas)} chunks both ways"
    )


# ---- edge caps


def test_an_oversized_body_gets_413_from_nginx(site: Site):
    """The cap comes from tiny.yaml's media limits: 4 images of 10 MiB and a video of
    64 MiB, base64, plus 1 MiB, held to `images.max_request_bytes` -> 64 MiB."""
    host, port = site.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", f"/{TINY_B}/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(65 * MIB))
    connection.putheader("X-Request-ID", "oversize-1")
    connection.endheaders(b"{")
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413
    assert body["error"]["type"] == "invalid_request_error"
    [entry] = site.logged(["oversize-1"])
    assert entry["status"] == 413
    assert entry["upstream_addr"] == ""  # never reached an instance

    # Just under the cap, the same route takes a real request with a large body.
    padding = "x" * (50 * MIB)
    response2 = httpx.post(
        f"{site.base_url}/{TINY_B}/v1/chat/completions",
        json={
            "model": TINY_B,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
            "user": padding,
        },
        timeout=120,
    )
    assert response2.status_code != 413


def test_tokenize_is_not_reachable_through_nginx(site: Site):
    paths = ("/tokenize", "/tiny/tokenize", f"/{TINY_B}/tokenize", "/tiny/v1/../tokenize")
    for number, path in enumerate(paths):
        response = httpx.post(
            f"{site.base_url}{path}",
            json={"prompt": "hi"},
            headers={"x-request-id": f"tokenize-{number}"},
            timeout=10,
        )
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
    entries = site.logged([f"tokenize-{number}" for number in range(len(paths))])
    assert len(entries) == len(paths)
    assert all(entry["upstream_addr"] == "" for entry in entries)  # none reached an instance


def test_a_burst_over_the_per_ip_rate_gets_429(deployment: Deployment, tmp_path: Path):
    """A second nginx with a strict rate (2/s, burst 5) in front of the same instances."""
    limits = deployment.config.limits.model_copy(update={"rate_per_ip": "2r/s", "burst_per_ip": 5})
    strict = deployment.config.model_copy(update={"limits": limits})
    port = free_port()
    variant = local_variant(
        Deployment(config=strict, models=deployment.models, source=deployment.source),
        tmp_path,
        f"127.0.0.1:{port}",
    )
    with running_nginx(render_nginx(variant), tmp_path, port):
        url = f"http://127.0.0.1:{port}/{TINY_B}/v1/models"
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(lambda _: httpx.get(url, timeout=30), range(30)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 1
    assert statuses.count(429) >= 20  # 1 + burst 5 pass, give or take the refill
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"


# ---- failover (last: it kills a replica)


def test_after_kill_9_of_a_replica_requests_go_to_the_other(site: Site):
    victim, survivor = site.replicas
    processes = [psutil.Process(victim.process.pid)]
    processes += processes[0].children(recursive=True)
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    victim.process.wait(30)
    # A killed process frees its memory before its sockets: until it is gone, the kernel
    # still completes connections to its port. "After the kill" starts when it is gone.
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == []

    before = successes(survivor)
    for i in range(6):
        httpx_response = httpx.post(
            f"{site.base_url}/{TINY_B}/v1/chat/completions",
            json={
                "model": TINY_B,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2,
            },
            headers={"x-request-id": f"failover-{i}"},
            timeout=60,
        )
        assert httpx_response.status_code == 200, httpx_response.text
        assert httpx_response.json()["model"] == TINY_B
    assert successes(survivor) - before == 6

    # At least one request met the dead replica first and was passed on by nginx.
    entries = site.logged([f"failover-{i}" for i in range(6)])
    assert len(entries) == 6
    victim_address = f"127.0.0.1:{victim.port}"
    retried = [e for e in entries if victim_address in str(e["upstream_addr"])]
    assert retried, entries
    assert all(str(e["upstream_status"]).endswith("200") for e in entries)
