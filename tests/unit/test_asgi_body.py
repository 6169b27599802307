"""Reading a request body once (capped) and replaying it to the inner app."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from qwenvl_serve.asgi_body import (
    BodyTooLargeError,
    BodyTooSlowError,
    declared_length,
    read_body,
    replaying,
    with_body_length,
)
from qwenvl_serve.body_pace import BodyPace, PaceKeeper


def scope_with(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def receiver(*messages: Message):
    queue = list(messages)
    taken: list[Message] = []

    async def receive() -> Message:
        message = queue.pop(0)
        taken.append(message)
        return message

    return receive, taken


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.anyio
async def test_the_body_is_joined_from_its_chunks():
    receive, _ = receiver(chunk(b"ab"), chunk(b"cd", more=False))
    assert await read_body(scope_with(), receive, limit=4) == (b"abcd", None)


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_body_is_reported_with_what_came():
    receive, _ = receiver(chunk(b"ab"), {"type": "http.disconnect"})
    body, disconnect = await read_body(scope_with(), receive)
    assert (body, disconnect) == (b"ab", {"type": "http.disconnect"})


@pytest.mark.anyio
async def test_a_declared_length_over_the_limit_is_refused_before_reading():
    receive, taken = receiver(chunk(b"x" * 10, more=False))
    with pytest.raises(BodyTooLargeError):
        await read_body(scope_with((b"content-length", b"10")), receive, limit=9)
    assert taken == []


@pytest.mark.anyio
async def test_received_bytes_over_the_limit_stop_the_reading():
    receive, taken = receiver(*[chunk(b"x" * 4)] * 10)
    with pytest.raises(BodyTooLargeError):
        await read_body(scope_with(), receive, limit=10)
    assert len(taken) == 3


@pytest.mark.anyio
async def test_replaying_gives_the_body_then_the_disconnect_or_the_client():
    receive, _ = receiver({"type": "http.disconnect"})
    left = replaying(b"body", receive, {"type": "http.disconnect"})
    assert await left() == chunk(b"body", more=False)
    assert await left() == {"type": "http.disconnect"}
    stayed = replaying(b"body", receive)
    assert await stayed() == chunk(b"body", more=False)
    assert await stayed() == {"type": "http.disconnect"}  # the client's own message


def test_lengths_are_read_and_rewritten():
    scope = scope_with((b"Content-Length", b"12"), (b"transfer-encoding", b"chunked"))
    assert declared_length(scope) == 12
    assert declared_length(scope_with((b"content-length", b"-1"))) is None
    rewritten = with_body_length(scope, 5)
    assert rewritten["headers"] == [(b"content-length", b"5")]
    assert declared_length(rewritten) == 5


def test_the_pace_deadline_grows_with_what_has_arrived():
    pace = BodyPace(timeout_s=60, min_bytes_per_s=1000, grace_s=5)
    assert pace.deadline(started=100, received=0) == 105
    assert pace.deadline(started=100, received=10_000) == 115
    assert pace.deadline(started=100, received=10**9) == 160  # the overall deadline
    assert BodyPace(timeout_s=60, min_bytes_per_s=0).deadline(100, 0) == 160


def trickle(chunks: list[bytes], gap_s: float):
    async def receive():
        await asyncio.sleep(gap_s)
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return receive


@pytest.mark.anyio
async def test_a_body_slower_than_the_minimum_rate_is_refused():
    pace = PaceKeeper(BodyPace(timeout_s=60, min_bytes_per_s=100, grace_s=0.05), tick_s=0.02)
    with pytest.raises(BodyTooSlowError):
        await read_body(scope_with(), trickle([b"a"] * 50, gap_s=0.05), pace=pace)


@pytest.mark.anyio
async def test_a_body_past_its_deadline_is_refused_however_fast_it_was():
    pace = PaceKeeper(BodyPace(timeout_s=0.2, min_bytes_per_s=0), tick_s=0.02)
    with pytest.raises(BodyTooSlowError):
        await read_body(scope_with(), trickle([b"a" * 1000] * 50, gap_s=0.05), pace=pace)


@pytest.mark.anyio
async def test_a_body_within_its_pace_is_read_whole():
    pace = PaceKeeper(BodyPace(timeout_s=10, min_bytes_per_s=10, grace_s=1), tick_s=0.005)
    body, _ = await read_body(scope_with(), trickle([b"ab", b"cd"], gap_s=0.01), pace=pace)
    assert body == b"abcd"


@pytest.mark.anyio
async def test_a_cancellation_that_is_not_the_keeper_s_stays_a_cancellation():
    pace = PaceKeeper(BodyPace(timeout_s=60, min_bytes_per_s=0), tick_s=0.01)
    reading = asyncio.ensure_future(
        read_body(scope_with(), trickle([b"a"] * 50, gap_s=0.05), pace=pace)
    )
    await asyncio.sleep(0.03)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


@pytest.mark.anyio
async def test_a_refused_read_leaves_its_task_usable_and_the_keeper_idles_when_none_is_left():
    pace = PaceKeeper(BodyPace(timeout_s=0.05, min_bytes_per_s=0), tick_s=0.01)
    with pytest.raises(BodyTooSlowError):
        await read_body(scope_with(), trickle([b"a"] * 50, gap_s=0.02), pace=pace)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the keeper's cancel was taken back
    await asyncio.sleep(0.05)  # the task goes on: no cancellation is pending
    assert not pace.ticking  # nothing left to watch: its task ended


@pytest.mark.anyio
async def test_a_cancellation_that_arrives_with_the_keeper_s_stays_a_cancellation():
    pace = PaceKeeper(BodyPace(timeout_s=0.02, min_bytes_per_s=0), tick_s=0.01)

    async def receive() -> Message:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # the keeper's; the server asks for one too
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            raise
        raise AssertionError("unreachable")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(read_body(scope_with(), receive, pace=pace))
