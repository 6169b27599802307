"""Metering as accounting, cost bounds and slow clients, against the real engine.

Every token vLLM's engine processes is metered to the key that asked, whatever the
client does: our totals (``qwenvl_tokens_total`` and the usage log) must equal vLLM's
own ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total`` exactly.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import REPO, RunningServer, running_server_with_env

pytestmark = pytest.mark.e2e
T = TypeVar("T")
CONFIG = REPO / "tests" / "configs" / "accounting.yaml"
MODEL = "qwen3-vl-tiny"
TENANT = "tenant-test-key-0123456789abcdef"
ADMIN = "admin-test-key-0123456789abcdef"  # the config holds only its sha256 digest
SETTLE_TIMEOUT_S = 60.0
MAX_TOKENS = 256  # limits.max_tokens in the config
DEFAULT_MAX_TOKENS = 24  # limits.default_max_tokens
GOOGLE_STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
GOOGLE = f"/v1beta/models/{MODEL}:generateContent"
LEAVE_ATTEMPTS = 5  # a machine fast enough may answer before the client sees it start


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, usage_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("logs") / "accounting-server.log"
    overrides = [f"model={tiny_model_dir}", f"metering.usage_log={usage_log}"]
    with running_server_with_env(
        CONFIG, overrides, log_path, {"QWENVL_TEST_TENANT_KEY": TENANT}
    ) as running:
        yield running


def headers(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(text: str = "Tell me a story.", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


def google(text: str = "Tell me a story.", **generation: object) -> dict[str, Any]:
    return {"contents": [{"parts": [{"text": text}]}], "generationConfig": generation}


# --- reading the counters -------------------------------------------------------------


def samples(server: RunningServer) -> list[tuple[str, dict[str, str], float]]:
    response = httpx.get(f"{server.base_url}/metrics", headers=headers(ADMIN), timeout=30)
    assert response.status_code == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def totals(server: RunningServer) -> dict[str, float]:
    """Our token totals, vLLM's, and our requests in flight."""
    found = {"ours_prompt": 0.0, "ours_completion": 0.0, "engine_prompt": 0.0}
    found |= {"engine_generation": 0.0, "in_flight": 0.0}
    names = {
        "vllm:prompt_tokens_total": "engine_prompt",
        "vllm:generation_tokens_total": "engine_generation",
        "qwenvl_in_flight": "in_flight",
    }
    for name, labels, value in samples(server):
        if name == "qwenvl_tokens_total":
            found[f"ours_{labels['type']}"] += value
        elif name in names:
            found[names[name]] += value
    return found


def settled(server: RunningServer) -> dict[str, float]:
    """The totals once nothing is in flight and they stopped moving."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = totals(server)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = totals(server)
        if now == last and now["in_flight"] == 0:
            return now
        last = now
    raise AssertionError(f"requests still in flight after {SETTLE_TIMEOUT_S}s: {last}")


def assert_reconciled(found: dict[str, float]) -> None:
    assert (found["ours_prompt"], found["ours_completion"]) == (
        found["engine_prompt"],
        found["engine_generation"],
    ), found


def costed(server: RunningServer, action: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """What ``action`` returned, and what it cost by our meter and vLLM's once settled."""
    before = settled(server)
    result = action()
    after = settled(server)
    return result, {name: after[name] - before[name] for name in after}


def metered(server: RunningServer, action: Callable[[], object]) -> dict[str, float]:
    """What ``action`` cost, by our meter and by vLLM's, once it has settled."""
    return costed(server, action)[1]


def request_head(path: str, length: int) -> bytes:
    """The head of a JSON POST to ``path`` as the admin, for clients on a raw socket."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


# --- clients that leave -------------------------------------------------------------------


def cut_stream(server: RunningServer, path: str, body: dict[str, Any], events: int) -> int:
    """Read ``events`` SSE events of a stream, then hang up. Returns the events read."""
    seen = 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", server.base_url + path, json=body, headers=headers()) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen += 1
            if seen >= events:
                break
    return seen


def leave_before_answer(server: RunningServer, path: str, body: dict[str, Any]) -> bool:
    """Send a JSON request and hang up once the engine is generating its answer.

    The client leaves on the engine's own signal, not after a fixed time, so how fast a
    machine generates does not decide what is tested. Returns False when the answer
    still came first: the caller tries again.
    """
    before = totals(server)["engine_generation"]
    payload = json.dumps(body).encode()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(request_head(path, len(payload)) + payload)
        while totals(server)["engine_generation"] == before:
            assert time.monotonic() < deadline, "the engine never started the request"
        answered, _, _ = select.select([connection], [], [], 0)
    return not answered


def metered_leaving(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, float]:
    """What a request whose client left before its JSON answer cost, once settled."""
    for _ in range(LEAVE_ATTEMPTS):
        left, cost = costed(server, partial(leave_before_answer, server, path, body))
        if left:
            return cost
    raise AssertionError(f"the answer came before the client left in {LEAVE_ATTEMPTS} attempts")


def may_leave_before_answer(server: RunningServer, path: str, body: dict[str, Any]) -> None:
    """Like :func:`leave_before_answer`, where the answer may also come in time."""
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(server.base_url + path, json=body, headers=headers(), timeout=0.5)


def long_chat(**fields: Any) -> dict[str, Any]:
    return {**chat(max_tokens=MAX_TOKENS, ignore_eos=True), **fields}


def test_a_stream_cut_short_is_metered_and_stopped(server: RunningServer):
    cost = metered(
        server,
        lambda: cut_stream(server, "/v1/chat/completions", long_chat(stream=True), events=3),
    )
    assert cost["engine_generation"] > 0
    assert_reconciled(cost)
    # The engine stopped when the client left, rather than generating all it could.
    assert cost["engine_generation"] < MAX_TOKENS


def test_a_stream_of_several_choices_cut_short_counts_each_started_prompt(
    server: RunningServer,
):
    body = long_chat(stream=True, n=3)
    cost = metered(server, lambda: cut_stream(server, "/v1/chat/completions", body, events=4))
    assert cost["engine_prompt"] > 0
    assert_reconciled(cost)


def test_a_client_that_leaves_before_a_json_answer_is_metered(server: RunningServer):
    cost = metered_leaving(server, "/v1/chat/completions", long_chat())
    assert cost["engine_generation"] > 0
    assert_reconciled(cost)


def test_several_choices_without_a_stream_run_to_their_end_and_are_metered(
    server: RunningServer,
):
    cost = metered_leaving(server, "/v1/chat/completions", long_chat(n=2))
    assert cost["engine_generation"] == 2 * MAX_TOKENS
    assert_reconciled(cost)


def test_completions_with_several_prompts_cut_short_are_metered(server: RunningServer):
    body = {
        "model": MODEL,
        "prompt": ["Once upon a time", "In a land far away"],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
    }
    cost = metered(server, lambda: cut_stream(server, "/v1/completions", body, events=3))
    assert cost["engine_generation"] > 0
    assert_reconciled(cost)


def test_a_generate_content_stream_cut_short_is_metered(server: RunningServer):
    body = google(maxOutputTokens=MAX_TOKENS)
    cost = metered(server, lambda: cut_stream(server, GOOGLE_STREAM, body, events=1))
    assert cost["engine_generation"] > 0
    assert_reconciled(cost)


# --- cost bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", chat(n=5), "n"),
        ("/v1/chat/completions", chat(n="1024"), "n"),
        ("/v1/completions", {"model": MODEL, "prompt": "p", "n": 5}, "n"),
        ("/v1/chat/completions", chat(max_tokens=MAX_TOKENS + 1), "max_tokens"),
        (
            "/v1/chat/completions",
            chat(max_completion_tokens=MAX_TOKENS + 1, max_tokens=1),
            "max_completion_tokens",
        ),
        ("/v1/chat/completions", chat(use_beam_search=True), "use_beam_search"),
        ("/v1/chat/completions", chat(logprobs=True, top_logprobs=21), "top_logprobs"),
        ("/v1/chat/completions", chat(logprobs=True, top_logprobs=-1), "top_logprobs"),
        ("/v1/chat/completions", chat(prompt_logprobs=1), "prompt_logprobs"),
        ("/v1/chat/completions", chat(echo=True, top_logprobs=2), "echo"),
        ("/v1/completions", {"model": MODEL, "prompt": "p", "logprobs": 21}, "logprobs"),
        ("/v1/completions", {"model": MODEL, "prompt": "p", "echo": 1, "logprobs": 1}, "echo"),
    ],
)
def test_each_cost_bound_is_a_400_naming_the_field(
    server: RunningServer, path: str, body: dict[str, Any], field: str
):
    response = httpx.post(server.base_url + path, json=body, headers=headers(), timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("generation", "field"),
    [
        ({"candidateCount": 5}, "generationConfig.candidateCount"),
        ({"maxOutputTokens": MAX_TOKENS + 1}, "generationConfig.maxOutputTokens"),
    ],
)
def test_generate_content_bounds_name_google_s_fields(
    server: RunningServer, generation: dict[str, Any], field: str
):
    response = httpx.post(
        server.base_url + GOOGLE, json=google(**generation), headers=headers(), timeout=60
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"{field}: ")


def test_a_request_without_an_output_limit_gets_the_default(server: RunningServer):
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=chat(ignore_eos=True),
        headers=headers(),
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    google_answer = httpx.post(
        server.base_url + GOOGLE, json=google(), headers=headers(), timeout=60
    )
    assert google_answer.json()["usageMetadata"]["candidatesTokenCount"] <= DEFAULT_MAX_TOKENS


def test_requests_within_the_bounds_are_served(server: RunningServer):
    body = chat(n=4, max_tokens=4, logprobs=True, top_logprobs=20)
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers(), timeout=60
    )
    assert response.status_code == 200
    assert len(response.json()["choices"]) == 4


# --- slow clients -------------------------------------------------------------------------


def trickle(server: RunningServer, body: bytes, chunk: int, gap_s: float) -> tuple[bytes, float]:
    """Send a request whose body comes ``chunk`` bytes every ``gap_s`` seconds; return
    the response's first bytes and when they came (after the first body byte)."""
    head = request_head("/v1/chat/completions", len(body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(head)
        started = time.monotonic()
        connection.setblocking(False)
        for start in range(0, len(body), chunk):
            try:
                answer = connection.recv(65536)
            except BlockingIOError:
                answer = b""
            if answer:
                return answer, time.monotonic() - started
            connection.sendall(body[start : start + chunk])
            time.sleep(gap_s)
        connection.setblocking(True)
        return connection.recv(65536), time.monotonic() - started


def test_a_body_trickled_below_the_minimum_rate_gets_408_and_never_counts_in_flight(
    server: RunningServer,
):
    body = json.dumps(chat(max_tokens=2)).encode()
    with ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(trickle, server, body, 1, 0.5) for _ in range(3)]
        time.sleep(3)
        assert totals(server)["in_flight"] == 0  # bodies still arriving hold nothing
        answers = [future.result() for future in slow]
    for answer, _elapsed in answers:
        assert answer.startswith(b"HTTP/1.1 408")
        assert b'"code":"request_timeout"' in answer.replace(b" ", b"")


def test_a_body_past_its_deadline_gets_408_however_steady(server: RunningServer):
    # 400 bytes a second is above the minimum rate; 6 KB of it takes longer than 8 s.
    body = json.dumps(chat(text="x" * 6000, max_tokens=2)).encode()
    answer, elapsed = trickle(server, body, 200, 0.5)
    assert answer.startswith(b"HTTP/1.1 408")
    assert elapsed < len(body) / 400  # refused before the body could have arrived


# --- tpm ------------------------------------------------------------------------------------


def test_tpm_reserves_the_worst_case_of_every_choice(server: RunningServer):
    # 4 choices of up to 256 tokens each, plus their prompts: over 1,000 tokens
    # reserved, so a second such request while it runs would pass the key's 2,000 tpm.
    body = json.dumps(long_chat(n=4, stream=True)).encode()
    url = f"{server.base_url}/v1/chat/completions"
    request_headers = {**headers(TENANT), "content-type": "application/json"}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", url, content=body, headers=request_headers) as first,
    ):
        assert first.status_code == 200
        second = client.post(url, content=body, headers=request_headers)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "tpm_exceeded"


# --- the whole account ----------------------------------------------------------------------


def workload(server: RunningServer, seed: int) -> list[Callable[[], object]]:
    """A mixed set of requests: cut streams, n > 1, errors, big answers, generateContent."""
    rng = random.Random(seed)
    base = server.base_url

    def post(path: str, body: dict[str, Any]) -> Callable[[], object]:
        return lambda: httpx.post(base + path, json=body, headers=headers(), timeout=120)

    long_prompt = " ".join(["word"] * 5000)  # longer than the context: vLLM refuses it
    chat_path = "/v1/chat/completions"
    actions: list[Callable[[], object]] = []
    for _ in range(3):
        events = rng.randint(1, 12)
        stream = long_chat(stream=True, n=rng.choice([1, 2]))
        actions += [
            partial(cut_stream, server, chat_path, stream, events),
            partial(cut_stream, server, GOOGLE_STREAM, google(maxOutputTokens=64), events),
            post(chat_path, chat(max_tokens=rng.randint(1, 32), n=rng.choice([1, 3]))),
            post(
                "/v1/completions",
                {"model": MODEL, "prompt": ["a", "b c"], "max_tokens": 8, "n": 2},
            ),
            post(GOOGLE, google(maxOutputTokens=rng.randint(1, 16), candidateCount=2)),
            partial(may_leave_before_answer, server, chat_path, long_chat()),
        ]
    big = chat(n=4, max_tokens=128, ignore_eos=True, logprobs=True, top_logprobs=20)
    actions += [
        post(chat_path, chat(long_prompt, max_tokens=8)),  # vLLM's 400
        post(chat_path, chat(n=99)),  # our 400
        post(chat_path, big),  # a big answer
    ]
    rng.shuffle(actions)
    return actions


def usage_log_totals(usage_log: Path) -> tuple[int, int]:
    records = [json.loads(line) for line in usage_log.read_text().splitlines()]
    return (
        sum(record["prompt_tokens"] for record in records),
        sum(record["completion_tokens"] for record in records),
    )


def test_our_totals_equal_vllm_s_counters_over_a_mixed_run(server: RunningServer, usage_log: Path):
    def run_all() -> None:
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(action) for action in workload(server, seed=11)]:
                future.result()

    cost = metered(server, run_all)
    assert cost["engine_generation"] > 0
    assert_reconciled(cost)
    # Over the whole run of this server, every test above included.
    found = settled(server)
    assert_reconciled(found)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while usage_log_totals(usage_log) != (found["ours_prompt"], found["ours_completion"]):
        assert time.monotonic() < deadline, (usage_log_totals(usage_log), found)
        time.sleep(0.5)
