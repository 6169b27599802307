"""The result cache's own logic: keys, controls, entries, stores, and the layer in the stack
around a stand-in for vLLM (the real engine and Redis: tests/e2e/test_cache.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from qwenvl_serve.cache.entry import Entry, decode, encode
from qwenvl_serve.cache.policy import (
    AS_ENGINE_GETS,
    AS_SENT,
    Controls,
    cache_key,
    controls_of,
    is_deterministic,
    media_are_inline,
    policy_fingerprint,
)
from qwenvl_serve.cache.stores import MemoryStore, StoreUnavailableError
from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.core.responses import Usage
from qwenvl_serve.images.chat_request import MediaPart
from qwenvl_serve.middleware import QwenVLServeMiddleware
from qwenvl_serve.sample_images import synthetic_photo
from tests.unit.request_core import whole_body

MODEL = "tiny"
ALPHA = "alpha-test-key-0123456789abcdef"
BETA = "beta-test-key-0123456789abcdef"


# --- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "controls"),
    [
        (None, Controls()),
        (b"no-cache", Controls(no_cache=True)),
        (b"No-Store, max-age=30", Controls(no_store=True, max_age=30)),
        (b"max-age=abc, no-cache", Controls(no_cache=True)),
        (b"private", Controls()),
    ],
)
def test_cache_control_directives(header, controls):
    assert controls_of(header) == controls


@pytest.mark.parametrize(
    ("fields", "greedy", "deterministic"),
    [
        ({}, False, False),  # the model's default temperature samples
        ({"temperature": 0}, True, True),
        ({"temperature": "0.0"}, True, True),  # read as vLLM reads it
        ({"temperature": 0.7}, False, False),
        ({"temperature": 0.7, "seed": 3}, False, True),
        ({"seed": "3"}, False, True),
        ({"seed": "three"}, False, False),
    ],
)
def test_only_deterministic_requests_are_cached_by_default(fields, greedy, deterministic):
    assert is_deterministic(fields, "greedy") is greedy
    assert is_deterministic(fields, "deterministic") is deterministic
    assert is_deterministic(fields, "always")


def test_the_key_changes_with_every_byte_vllm_gets_and_the_caller():
    document = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    body = json.dumps(document).encode()
    route = f"{AS_ENGINE_GETS} /v1/chat/completions"
    key = cache_key(route, MODEL, "alpha", [body])
    assert key.startswith("alpha:")
    assert cache_key(route, MODEL, "alpha", [bytes(body)]) == key
    changes: list[dict[str, Any]] = [{"max_tokens": 3}, {"top_k": 2}, {"messages": []}, {"n": 2}]
    for changed in changes:
        other = json.dumps({**document, **changed}).encode()
        assert cache_key(route, MODEL, "alpha", [other]) != key
    assert cache_key(route, MODEL, "beta", [body]) != key
    assert cache_key(f"{AS_ENGINE_GETS} /v1/completions", MODEL, "alpha", [body]) != key
    assert cache_key(f"{AS_SENT} 0123", MODEL, "alpha", [body]) != key
    assert cache_key(route, "other", "alpha", [body]) != key
    assert cache_key(route, MODEL, None, [body]).startswith("_shared:")
    # The parts are separated: no two (route, model, scope) spell the same prefix, and
    # no two sequences of material hash alike.
    assert cache_key("/v1/chat", "x", "a", [body]) != cache_key("/v1/cha", "tx", "a", [body])
    assert cache_key(route, MODEL, "a", [b"ab", b"c"]) != cache_key(
        route, MODEL, "a", [b"a", b"bc"]
    )


def _parts(*urls: object, kind: str = "image") -> list[MediaPart]:
    key = {"image": "image_url", "video": "video_url"}.get(kind, kind)
    return [MediaPart(kind, 0, i, {"type": key, key: url}) for i, url in enumerate(urls)]


@pytest.mark.parametrize(
    ("media", "inline"),
    [
        ([], True),
        (_parts("data:image/png;base64,AAAA", {"url": "data:image/jpeg;base64,AA"}), True),
        (_parts({"url": "data:video/mp4;base64,AAAA"}, kind="video"), True),
        (_parts("data:image/png;base64,AAAA", "https://example.com/a.png"), False),
        (_parts({"url": "http://example.com/v.mp4"}, kind="video"), False),
        (_parts("DATA:image/png;base64,AAAA"), False),  # not what the image layer decodes
        (_parts({"url": 3}), False),
        (_parts(None), False),
        (_parts("data:audio/wav;base64,AAAA", kind="audio"), False),
    ],
)
def test_only_requests_whose_media_are_all_inline_are_keyed_as_sent(media, inline):
    assert media_are_inline(media) is inline


def test_the_policy_fingerprint_changes_with_any_section():
    policy = {"images": {"max_pixels": 1}, "video": {"fps": 2}, "version": "1"}
    assert policy_fingerprint(policy) == policy_fingerprint(dict(reversed(policy.items())))
    assert policy_fingerprint({**policy, "images": {"max_pixels": 2}}) != policy_fingerprint(policy)
    assert policy_fingerprint({**policy, "version": "2"}) != policy_fingerprint(policy)


# --- entries and stores ---------------------------------------------------------------------


def test_entries_round_trip_and_anything_else_decodes_to_none():
    headers = ((b"x-qwenvl-normalized-images", b"640x480"), (b"x-qwenvl-video", b""))
    chunks = (b"data: a\n\n", b"", b"data: [DONE]\n\n")
    entry = Entry(True, b"text/event-stream", 12.5, chunks, headers)
    data = encode(entry)
    assert decode(data) == entry
    assert decode(encode(Entry(False, b"", 0.0, (b"{}",)))) == Entry(False, b"", 0.0, (b"{}",))
    answered = Entry(False, b"application/json", 1.0, (b"{}",), usage=Usage(314, 2**40))
    assert decode(encode(answered)) == answered
    for broken in (
        b"",
        b"junk",
        data[:-1],
        data + b"x",
        data.replace(b"QVC3", b"QVC9"),
        b"QVC3\n{",
        data[:5] + b"\xff" * 21 + data[26:],  # counts far beyond the data
        b"QVC2\n" + data[5:],  # the previous version's entries are misses
    ):
        assert decode(broken) is None


@pytest.mark.anyio
async def test_the_memory_store_is_bounded_lru_with_a_ttl():
    now = [0.0]
    evicted = []
    store = MemoryStore(10, ttl_seconds=5, on_evict=lambda: evicted.append(1), clock=lambda: now[0])
    await store.put("a:1", b"1234")
    await store.put("a:2", b"1234")
    assert await store.get("a:1") == b"1234"  # now the most recent
    await store.put("b:3", b"1234")
    assert await store.get("a:2") is None  # the least recently used went
    assert evicted == [1]
    assert store.bytes == 8
    now[0] = 6
    assert await store.get("a:1") is None  # expired
    await store.put("a:4", b"1")
    await store.put("b:5", b"1")
    assert await store.purge("a") == 1
    assert await store.get("b:5") == b"1"
    assert await store.purge(None) == 2  # b:3 (expired, not yet read) and b:5


# --- the layer in the stack ----------------------------------------------------------------


class FakeVllm:
    """Answers like vLLM and counts the requests that reach it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.cut = False
        self.hears_client_leave = False
        self.leaving_call: int | None = None  # the call whose client leaves mid-stream
        self.running = 0
        self.most_running = 0  # calls under way at once, at most

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = json.loads(await whole_body(receive))
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        text = f"answer {self.calls}"
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        if not request.get("stream"):
            choice = {"index": 0, "message": {"content": text}, "finish_reason": "stop"}
            body = json.dumps({"id": "x", "choices": [choice], "usage": usage}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        reason = "abort" if self.cut else "stop"
        for index, (delta, finish) in enumerate([(text, None), ("", reason)], start=1):
            chunk = {
                "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": finish}]
            }
            chunk["usage"] = {"prompt_tokens": 7, "completion_tokens": index}  # type: ignore[assignment]
            await send(sse_message(chunk))
            if self.hears_client_leave or self.calls == self.leaving_call:
                assert (await receive())["type"] == "http.disconnect"
        await send(sse_message({"choices": [], "usage": usage}))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


JSON = [(b"content-type", b"application/json")]
JSON_TYPE = {"content-type": "application/json"}
SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]


def sse_message(chunk: dict[str, Any]) -> dict[str, Any]:
    data = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    return {"type": "http.response.body", "body": data, "more_body": True}


def config(images: dict[str, Any] | None = None, **cache: Any):
    return resolve_config(
        {
            "model": "m",
            "images": images or {},
            "served_model_name": MODEL,
            "auth": {
                "keys": [
                    {"name": "alpha", "key": ALPHA, "admin": True},
                    {"name": "beta", "key": "sha256:" + hashlib.sha256(BETA.encode()).hexdigest()},
                ]
            },
            "cache": {"enabled": True, **cache},
        }
    )


def stack(
    inner: FakeVllm, images: dict[str, Any] | None = None, **cache: Any
) -> tuple[httpx.AsyncClient, CollectorRegistry]:
    registry = CollectorRegistry()
    app = QwenVLServeMiddleware(inner, config=config(images, **cache), registry=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, registry


def chat(**fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    return {**body, **fields}


def auth(key: str = ALPHA, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = 0.0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


@pytest.mark.anyio
async def test_a_repeat_is_a_hit_with_the_same_body_and_is_metered_as_the_cache_s():
    inner = FakeVllm()
    client, registry = stack(inner)
    async with client:
        first = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        second = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert inner.calls == 1
    assert first.headers["x-qwenvl-cache"] == "miss"
    assert second.headers["x-qwenvl-cache"] == "hit"
    assert int(second.headers["age"]) >= 0
    assert second.content == first.content
    assert metric(registry, "qwenvl_tokens_total", source="engine") == 9
    assert metric(registry, "qwenvl_tokens_total", source="cache") == 9
    assert metric(registry, "qwenvl_cache_requests_total", outcome="hit") == 1


def png_image(width: int = 96) -> bytes:
    png = io.BytesIO()
    synthetic_photo(width, 64).save(png, "PNG")  # its noise differs on every call
    return png.getvalue()


def image_chat(png: bytes) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    content = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": url}]
    return chat(messages=[{"role": "user", "content": content}])


@pytest.mark.anyio
async def test_an_inline_image_hit_skips_the_image_layer_and_keeps_its_header():
    inner = FakeVllm()
    client, registry = stack(inner)
    image = png_image()
    async with client:
        first = await client.post("/v1/chat/completions", json=image_chat(image), headers=auth())
        second = await client.post("/v1/chat/completions", json=image_chat(image), headers=auth())
        other = await client.post(
            "/v1/chat/completions", json=image_chat(png_image()), headers=auth()
        )
    assert [first.status_code, second.status_code, other.status_code] == [200] * 3
    assert [a.headers["x-qwenvl-cache"] for a in (first, second, other)] == ["miss", "hit", "miss"]
    assert inner.calls == 2
    assert (
        second.headers["x-qwenvl-normalized-images"] == first.headers["x-qwenvl-normalized-images"]
    )
    assert second.content == first.content
    # The hit never reached the image layer: two images were handled, not three.
    assert metric(registry, "qwenvl_images_total") == 2


@pytest.mark.anyio
async def test_entries_made_under_another_media_policy_are_never_read():
    inner = FakeVllm()
    client, _ = stack(inner)
    other_client, _ = stack(inner, images={"jpeg_quality": 70})
    store = find_layer(client._transport.app, "CacheMiddleware").cache.store  # type: ignore[attr-defined]
    find_layer(other_client._transport.app, "CacheMiddleware").cache.store = store  # type: ignore[attr-defined]
    image = png_image()
    async with client, other_client:
        await client.post("/v1/chat/completions", json=image_chat(image), headers=auth())
        under_other = await other_client.post(
            "/v1/chat/completions", json=image_chat(image), headers=auth()
        )
        text = await other_client.post("/v1/chat/completions", json=chat(), headers=auth())
        text_again = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert under_other.headers["x-qwenvl-cache"] == "miss"
    assert [text.headers["x-qwenvl-cache"], text_again.headers["x-qwenvl-cache"]] == [
        "miss",
        "miss",
    ]


@pytest.mark.anyio
async def test_a_streaming_hit_replays_chunk_by_chunk_in_the_shape_asked_for():
    inner = FakeVllm()
    client, _ = stack(inner)
    asked = chat(stream=True, stream_options={"include_usage": True})
    async with client:
        live = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
        plain = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
        live_asked = await client.post("/v1/chat/completions", json=asked, headers=auth())
        hit_asked = await client.post("/v1/chat/completions", json=asked, headers=auth())
    # Another usage ask is another body, so another entry: a miss, never a wrong shape.
    assert inner.calls == 2
    assert plain.headers["x-qwenvl-cache"] == hit_asked.headers["x-qwenvl-cache"] == "hit"
    assert plain.text == live.text  # metering trims a hit as it trims a live answer
    assert '"usage"' not in plain.text
    assert hit_asked.text == live_asked.text
    events = [e for e in hit_asked.text.split("\n\n") if e]
    assert json.loads(events[-2].removeprefix("data: "))["usage"]["total_tokens"] == 9
    assert sum('"usage"' in e for e in events) == 1  # only the usage chunk it asked for


@pytest.mark.anyio
async def test_generate_content_hits_answer_in_google_s_format():
    inner = FakeVllm()
    client, _ = stack(inner)
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"temperature": 0}}
    path = f"/v1beta/models/{MODEL}:generateContent"
    async with client:
        first = await client.post(path, json=body, headers=auth())
        second = await client.post(path, json=body, headers=auth())
        streamed = await client.post(
            f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=body, headers=auth()
        )
        streamed_again = await client.post(
            f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=body, headers=auth()
        )
    assert inner.calls == 2  # one JSON, one stream
    assert second.json() == first.json()
    assert second.json()["candidates"][0]["content"]["parts"][0]["text"] == "answer 1"
    assert streamed_again.text == streamed.text


@pytest.mark.anyio
async def test_keys_do_not_share_entries_unless_configured():
    inner = FakeVllm()
    client, _ = stack(inner)
    async with client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth(ALPHA))
        other = await client.post("/v1/chat/completions", json=chat(), headers=auth(BETA))
    assert other.headers["x-qwenvl-cache"] == "miss"
    assert inner.calls == 2
    shared_inner = FakeVllm()
    client, _ = stack(shared_inner, shared=True)
    async with client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth(ALPHA))
        other = await client.post("/v1/chat/completions", json=chat(), headers=auth(BETA))
    assert other.headers["x-qwenvl-cache"] == "hit"


@pytest.mark.anyio
async def test_no_cache_no_store_max_age_and_sampling_requests():
    inner = FakeVllm()
    client, _ = stack(inner)
    path = "/v1/chat/completions"
    async with client:
        not_kept = await client.post(
            path, json=chat(), headers=auth(**{"Cache-Control": "no-store"})
        )
        after_no_store = await client.post(path, json=chat(), headers=auth())
        fresh = await client.post(path, json=chat(), headers=auth(**{"Cache-Control": "no-cache"}))
        hit = await client.post(path, json=chat(), headers=auth(**{"Cache-Control": "max-age=60"}))
        sampled = await client.post(path, json=chat(temperature=0.8), headers=auth())
    assert not_kept.headers["x-qwenvl-cache"] == "miss"
    assert after_no_store.headers["x-qwenvl-cache"] == "miss"  # no-store kept nothing
    assert fresh.headers["x-qwenvl-cache"] == "miss"  # no-cache skipped the lookup
    assert fresh.json()["choices"][0]["message"]["content"] == "answer 3"
    assert hit.json()["choices"][0]["message"]["content"] == "answer 3"  # what no-cache stored
    assert sampled.headers["x-qwenvl-cache"] == "bypass"
    assert inner.calls == 4


@pytest.mark.anyio
async def test_a_stream_that_did_not_finish_is_not_kept():
    inner = FakeVllm()
    inner.cut = True  # vLLM ends it with finish_reason abort: the client left
    client, _ = stack(inner)
    async with client:
        await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
        inner.cut = False
        again = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert again.headers["x-qwenvl-cache"] == "miss"
    assert inner.calls == 2


def chat_scope() -> dict[str, Any]:
    """The ASGI scope of a JSON chat request with alpha's key, for a raw ASGI call."""
    headers = [(b"authorization", f"Bearer {ALPHA}".encode())]
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [*headers, (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
    }


def leaving_client(body: bytes) -> tuple[Receive, Send, list[Message]]:
    """receive and send of a client that sends ``body`` and then has left."""
    messages: list[Message] = [{"type": "http.request", "body": body}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    return receive, send, sent


@pytest.mark.anyio
async def test_a_stream_whose_client_left_is_not_kept_even_when_vllm_completes_it():
    # The engine can finish an answer before it hears that the client left: the answer
    # then ends whole, with finish_reason stop, and must still not be kept.
    inner = FakeVllm()
    inner.hears_client_leave = True
    app = QwenVLServeMiddleware(inner, config=config(), registry=CollectorRegistry())
    body = json.dumps(chat(stream=True)).encode()
    receive, send, sent = leaving_client(body)
    await app(chat_scope(), receive, send)
    assert not sent[-1].get("more_body", False)  # the answer did end whole
    inner.hears_client_leave = False
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    async with client:
        again = await client.post(
            "/v1/chat/completions",
            content=body,
            headers=auth(**{"content-type": "application/json"}),
        )
    assert again.headers["x-qwenvl-cache"] == "miss"
    assert inner.calls == 2


@pytest.mark.anyio
async def test_concurrent_identical_misses_make_one_engine_call():
    inner = FakeVllm(delay=0.2)
    client, _ = stack(inner)
    async with client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=chat(), headers=auth()) for _ in range(10))
        )
    assert inner.calls == 1
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"answer 1"}
    assert sorted(a.headers["x-qwenvl-cache"] for a in answers) == ["hit"] * 9 + ["miss"]


@pytest.mark.anyio
async def test_when_the_first_client_leaves_one_of_the_waiting_runs_it_for_the_rest():
    inner = FakeVllm(delay=0.1)
    inner.leaving_call = 1
    client, _ = stack(inner)
    app = client._transport.app  # type: ignore[attr-defined]
    body = json.dumps(chat(stream=True)).encode()
    receive, send, _ = leaving_client(body)
    async with client:
        first = asyncio.ensure_future(app(chat_scope(), receive, send))
        await asyncio.sleep(0.02)
        others = [
            client.post("/v1/chat/completions", content=body, headers=auth(**JSON_TYPE))
            for _ in range(5)
        ]
        answers = await asyncio.gather(*others)
        await first
    assert inner.calls == 2  # the first, cut; then one for the five that waited
    assert sorted(a.headers["x-qwenvl-cache"] for a in answers) == ["hit"] * 4 + ["miss"]
    assert {a.text for a in answers} == {answers[0].text}


@pytest.mark.anyio
async def test_waiting_requests_run_side_by_side_when_the_first_answer_may_not_be_kept():
    inner = FakeVllm(delay=0.1)
    inner.cut = True  # every answer ends aborted: none may be kept
    client, _ = stack(inner)
    request = chat(stream=True)
    async with client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=request, headers=auth()) for _ in range(4))
        )
    assert inner.calls == 4
    assert inner.most_running == 3  # the first alone, then the three that waited, at once
    assert [a.headers["x-qwenvl-cache"] for a in answers] == ["miss"] * 4


class SlowStore(MemoryStore):
    """A memory store whose reads after the first, and every write, take a while: as a
    remote backend's can under load."""

    def __init__(self) -> None:
        super().__init__(1 << 20, 60, lambda: None)
        self.reads = 0

    async def get(self, name: str) -> bytes | None:
        self.reads += 1
        if self.reads > 1:
            await asyncio.sleep(0.2)
        return await super().get(name)

    async def put(self, name: str, data: bytes) -> None:
        await asyncio.sleep(0.3)
        await super().put(name, data)


@pytest.mark.anyio
async def test_identical_requests_join_a_flight_before_reading_the_store():
    # The first request's read returns at once and its answer comes in 50 ms; the
    # others' reads return only after that answer was made but before it was stored.
    inner = FakeVllm(delay=0.05)
    client, _ = stack(inner)
    find_layer(client._transport.app, "CacheMiddleware").cache.store = SlowStore()  # type: ignore[attr-defined]
    async with client:
        first = asyncio.ensure_future(
            client.post("/v1/chat/completions", json=chat(), headers=auth())
        )
        await asyncio.sleep(0.01)
        others = [
            client.post("/v1/chat/completions", json=chat(), headers=auth()) for _ in range(5)
        ]
        answers = await asyncio.gather(first, *others)
    assert inner.calls == 1
    assert sorted(a.headers["x-qwenvl-cache"] for a in answers) == ["hit"] * 5 + ["miss"]


class FailingStore:
    async def get(self, name: str) -> bytes | None:
        raise StoreUnavailableError("down")

    async def put(self, name: str, data: bytes) -> None:
        raise StoreUnavailableError("down")

    async def purge(self, scope: str | None) -> int:
        raise StoreUnavailableError("down")


@pytest.mark.anyio
async def test_a_failing_backend_is_a_miss_never_an_error(caplog):
    inner = FakeVllm()
    client, registry = stack(inner)
    app = client._transport.app  # type: ignore[attr-defined]
    find_layer(app, "CacheMiddleware").cache.store = FailingStore()
    async with client:
        answers = [
            await client.post("/v1/chat/completions", json=chat(), headers=auth()) for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200] * 3
    assert metric(registry, "qwenvl_cache_errors_total", operation="get") == 3
    assert sum("cache backend get failed" in r.message for r in caplog.records) == 1  # throttled


@pytest.mark.anyio
async def test_a_corrupt_entry_is_ignored_and_replaced():
    inner = FakeVllm()
    client, _ = stack(inner)
    cache = find_layer(client._transport.app, "CacheMiddleware").cache  # type: ignore[attr-defined]
    async with client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth())
        store = cache.store
        for name in list(store._entries):
            await store.put(name, b"garbage")
        again = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        third = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert again.headers["x-qwenvl-cache"] == "miss"
    assert third.headers["x-qwenvl-cache"] == "hit"


@pytest.mark.anyio
async def test_only_an_admin_purges_by_key_or_all():
    inner = FakeVllm()
    client, _ = stack(inner, shared=False)
    async with client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth(ALPHA))
        await client.post("/v1/chat/completions", json=chat(), headers=auth(BETA))
        refused = await client.post("/admin/cache/purge", json={}, headers=auth(BETA))
        by_key = await client.post("/admin/cache/purge", json={"key": "beta"}, headers=auth())
        everything = await client.post("/admin/cache/purge", json={}, headers=auth())
        bad = await client.post("/admin/cache/purge", json={"key": 3}, headers=auth())
    assert refused.status_code == 403
    assert by_key.json() == {"purged": 1}
    assert everything.json() == {"purged": 1}
    assert bad.status_code == 400


def find_layer(app: Any, name: str) -> Any:
    while type(app).__name__ != name:
        app = app.app
    return app
