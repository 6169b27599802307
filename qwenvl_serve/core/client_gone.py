"""Work on a request that stops when its client leaves.

Media decoding (an image pool task, a video worker process) can outlast a client that
gave up; this runs such work while listening for ``http.disconnect``. After the intake
the body is consumed, so the only message a client can still send is its disconnect.
Messages heard while listening are replayed to the layers after, so the engine edge
still sees a disconnect that arrived just as the work finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Message, Receive

_T = TypeVar("_T")


async def unless_client_leaves(work: Awaitable[_T], receive: Receive) -> tuple[_T, Receive] | None:
    """``work``'s result and the ``receive`` the next layers must use; None when the
    client left first, in which case ``work`` is cancelled (and awaited). An exception
    of ``work`` is raised as it is."""
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(receive())
    try:
        await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not _is_disconnect(listener):
            await asyncio.wait({task})  # not a disconnect: nothing more to listen for
    finally:
        if not task.done():  # the client left (or this request was cancelled)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not listener.done():
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    if task.cancelled():
        return None
    heard = [listener.result()] if _heard(listener) else []
    return task.result(), _replaying(heard, receive)


def _heard(listener: asyncio.Future[Message]) -> bool:
    return listener.done() and not listener.cancelled() and listener.exception() is None


def _is_disconnect(listener: asyncio.Future[Message]) -> bool:
    """The client left (a receive that fails counts: there is nobody to answer)."""
    return not _heard(listener) or listener.result()["type"] == "http.disconnect"


def _replaying(heard: list[Message], receive: Receive) -> Receive:
    """``receive`` that first returns what was heard."""
    if not heard:
        return receive
    pending = list(heard)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
