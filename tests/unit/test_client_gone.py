"""Work that stops when the client leaves, and the messages it heard replayed."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive

from qwenvl_serve.core.client_gone import unless_client_leaves


def receiving(*messages: Message, after: float = 0.0) -> Receive:
    """A receive that returns ``messages`` one by one, each after ``after`` seconds,
    then blocks for ever (a client that stays)."""
    queue = list(messages)

    async def receive() -> Message:
        if not queue:
            await asyncio.Event().wait()
        await asyncio.sleep(after)
        return queue.pop(0)

    return receive


def test_work_that_finishes_gives_its_result_and_the_same_messages_after():
    async def main() -> None:
        outcome = await unless_client_leaves(asyncio.sleep(0.01, "done"), receiving())
        assert outcome is not None
        result, receive = outcome
        assert result == "done"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(receive(), 0.05)  # the client is still there

    asyncio.run(main())


def test_a_client_that_leaves_cancels_the_work():
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def main() -> None:
        disconnect: Message = {"type": "http.disconnect"}
        assert await unless_client_leaves(slow(), receiving(disconnect, after=0.05)) is None
        assert cancelled.is_set()

    asyncio.run(main())


def test_a_message_heard_while_working_reaches_the_next_layers():
    async def main() -> None:
        other: Message = {"type": "http.request", "body": b"", "more_body": False}
        outcome = await unless_client_leaves(asyncio.sleep(0.05, "done"), receiving(other))
        assert outcome is not None
        result, after = outcome
        assert result == "done"
        assert await asyncio.wait_for(after(), 1) == other

    asyncio.run(main())


def test_the_works_exception_is_raised_as_it_is():
    async def failing() -> None:
        raise ValueError("refused")

    async def main() -> None:
        with pytest.raises(ValueError, match="refused"):
            await unless_client_leaves(failing(), receiving())

    asyncio.run(main())
