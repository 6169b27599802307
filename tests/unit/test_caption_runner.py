"""The caption runner against an in-process HTTP double: retries, errors, concurrency."""

import asyncio
import json

import httpx
import pytest

from qwenvl_serve.caption.batches import plan_batches
from qwenvl_serve.caption.retry import RetryPolicy
from qwenvl_serve.caption.runner import (
    Calling,
    CaptionRequest,
    ServerUnusableError,
    caption_all,
    caption_batch,
    resolve_model,
)
from qwenvl_serve.caption.summary import Tally

pytestmark = pytest.mark.anyio
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
REQUEST = CaptionRequest(
    model="tiny", max_tokens=16, temperature=None, prompt_for=lambda n, _video: f"describe {n}"
)


def completion(text="A photo.", prompt_tokens=300):
    return httpx.Response(
        200,
        json={
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 3},
        },
    )


class Recorder:
    """Collects sleeps, notes, rows and progress instead of waiting and printing."""

    def __init__(self):
        self.sleeps = []
        self.notes = []
        self.rows = []
        self.advanced = 0

    async def sleep(self, seconds):
        self.sleeps.append(seconds)

    def note(self, message):
        self.notes.append(message)

    def write(self, row):
        self.rows.append(row)

    def advance(self, images, tally):
        self.advanced += images


def calling_for(answers, recorder, max_attempts=4):
    """A client whose server answers from ``answers`` in turn (a response or an exception)."""
    sent = []

    def handle(request):
        sent.append(request)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://api/v1/")
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=0.5)
    return Calling(client, policy, sleep=recorder.sleep, jitter=lambda: 1.0), sent


def image(tmp_path, name="a.png", data=PNG):
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_429_is_retried_after_the_servers_retry_after(tmp_path):
    recorder = Recorder()
    busy = httpx.Response(429, headers={"retry-after": "1"}, json={"error": {"message": "busy"}})
    calling, sent = calling_for([busy, busy, completion()], recorder)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.succeeded
    assert row.caption == "A photo."
    assert len(sent) == 3
    assert recorder.sleeps == [1.0, 1.0]
    assert "HTTP 429; retrying in 1.0 s (attempt 2)" in recorder.notes[0]


async def test_connection_errors_back_off_exponentially(tmp_path):
    recorder = Recorder()
    down = httpx.ConnectError("refused")
    calling, _ = calling_for([down, down, httpx.Response(503), completion()], recorder)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.succeeded
    assert recorder.sleeps == [0.5, 1.0, 2.0]
    assert "connection failed" in recorder.notes[0]


async def test_a_client_error_is_recorded_with_the_servers_message_and_not_retried(tmp_path):
    recorder = Recorder()
    bad = httpx.Response(400, json={"error": {"message": "Failed to load image"}})
    calling, sent = calling_for([bad], recorder)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.error == "HTTP 400: Failed to load image"
    assert row.caption is None
    assert len(sent) == 1
    assert recorder.sleeps == []


async def test_attempts_run_out_on_a_server_that_stays_busy(tmp_path):
    recorder = Recorder()
    calling, sent = calling_for([httpx.Response(503, text="down")], recorder, max_attempts=3)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.error == "HTTP 503: Service Unavailable"
    assert len(sent) == 3


async def test_attempts_run_out_on_a_server_that_stays_unreachable(tmp_path):
    recorder = Recorder()
    calling, _ = calling_for([httpx.ConnectError("refused")], recorder, max_attempts=2)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.error == "connection failed after 2 attempts"


async def test_an_answer_nested_too_deep_to_parse_is_an_error_row(tmp_path):
    recorder = Recorder()
    calling, _ = calling_for([httpx.Response(200, content=b"[" * 100_000)], recorder)
    (batch,) = plan_batches([image(tmp_path)], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.error == "the server's answer is not a chat completion"


async def test_a_file_that_is_not_an_image_is_recorded_without_a_request(tmp_path):
    recorder = Recorder()
    calling, sent = calling_for([completion()], recorder)
    (batch,) = plan_batches([image(tmp_path, "notes.jpg", b"just text")], None)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    assert row.error is not None
    assert row.error.endswith(
        "notes.jpg: not an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or HEIC) "
        "or video file (MP4, MOV, WebM or MKV)"
    )
    assert sent == []


async def test_a_group_goes_in_one_request_with_the_group_prompt(tmp_path):
    recorder = Recorder()
    calling, sent = calling_for([completion()], recorder)
    paths = [image(tmp_path, f"{i}.png") for i in range(3)]
    (batch,) = plan_batches(paths, 4)
    row = await caption_batch(calling, REQUEST, batch, recorder.note)
    body = json.loads(sent[0].content)
    content = body["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url"] * 3 + ["text"]
    assert content[-1]["text"] == "describe 3"
    assert row.images == tuple(str(p) for p in paths)


async def test_caption_all_writes_every_row_once_with_bounded_concurrency(tmp_path):
    recorder = Recorder()
    in_flight = 0
    most = 0

    async def handle(request):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return completion(prompt_tokens=100)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://api/v1/")
    calling = Calling(client, RetryPolicy(), sleep=recorder.sleep)
    paths = [image(tmp_path, f"{i}.png") for i in range(7)]
    paths.append(image(tmp_path, "broken.png", b"broken"))
    batches = plan_batches(paths, None)
    tally = await caption_all(calling, REQUEST, batches, 3, recorder, recorder, Tally(skipped=4))
    assert sorted(row.images[0] for row in recorder.rows) == sorted(str(p) for p in paths)
    assert (tally.done, tally.failed, tally.skipped) == (7, 1, 4)
    assert tally.prompt_tokens == 700
    assert recorder.advanced == 8
    assert 1 < most <= 3


async def test_the_model_defaults_to_the_first_the_server_lists():
    recorder = Recorder()
    models = httpx.Response(200, json={"data": [{"id": "qwen3-vl-tiny"}]})
    calling, sent = calling_for([models], recorder)
    assert await resolve_model(calling, recorder.note, None) == "qwen3-vl-tiny"
    assert sent[0].url == "http://api/v1/models"


async def test_a_named_model_must_be_served():
    recorder = Recorder()
    models = httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]})
    calling, _ = calling_for([models], recorder)
    assert await resolve_model(calling, recorder.note, "b") == "b"
    with pytest.raises(ServerUnusableError, match="does not serve 'c': it serves a, b"):
        await resolve_model(calling, recorder.note, "c")


async def test_a_refused_key_stops_the_run_with_the_servers_message():
    recorder = Recorder()
    refused = httpx.Response(401, json={"error": {"message": "invalid API key"}})
    calling, _ = calling_for([refused], recorder)
    with pytest.raises(ServerUnusableError, match="HTTP 401: invalid API key"):
        await resolve_model(calling, recorder.note, "tiny")


async def test_an_unreachable_server_stops_the_run():
    recorder = Recorder()
    calling, _ = calling_for([httpx.ConnectError("refused")], recorder, max_attempts=2)
    with pytest.raises(ServerUnusableError, match="cannot reach http://api/v1/: connection failed"):
        await resolve_model(calling, recorder.note, "tiny")
